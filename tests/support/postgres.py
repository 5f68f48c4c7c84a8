"""A real PostgreSQL 15 (Debian's package) for the team queue's tests: a primary on a free
loopback port in a temporary directory, run as the `postgres` account, and a streaming standby
made with `pg_basebackup -R -X stream`, synchronous, that a test may promote.

`make test` installs the package (scripts/setup-host.sh); nothing here starts a server of the
system's own.
"""

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.harness import free_port, poll

BIN = Path(os.environ.get("HATRAIN_PG_BIN", "/usr/lib/postgresql/15/bin"))
OWNER = "postgres"


def _as_owner(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a PostgreSQL program as its own account (initdb refuses root)."""
    return subprocess.run(
        ["setpriv", f"--reuid={OWNER}", f"--regid={OWNER}", "--init-groups", *argv],
        capture_output=True,
        text=True,
        check=check,
        cwd="/",
    )


@dataclass
class Server:
    """One PostgreSQL server (cluster) of the tests."""

    data: Path
    port: int
    log: Path

    @property
    def conninfo(self) -> str:
        return f"host=127.0.0.1 port={self.port} user={OWNER} dbname=postgres"

    def start(self) -> None:
        result = _as_owner(
            str(BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
            "start", check=False,
        )  # fmt: skip
        if result.returncode:
            raise RuntimeError(
                f"pg_ctl start failed: {result.stderr}\n{self.log.read_text(errors='replace')}"
            )

    def stop(self, mode: str = "fast") -> None:
        _as_owner(str(BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def promote(self) -> None:
        _as_owner(str(BIN / "pg_ctl"), "-D", str(self.data), "-w", "-t", "60", "promote")

    def sql(self, statement: str) -> str:
        result = _as_owner(
            str(BIN / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", OWNER,
            "-d", "postgres", "-At", "-v", "ON_ERROR_STOP=1", "-c", statement,
        )  # fmt: skip
        return result.stdout.strip()


class Cluster:
    """A primary, and a standby once asked for; everything under one temporary directory."""

    def __init__(self) -> None:
        if not (BIN / "initdb").exists():
            raise RuntimeError(
                f"PostgreSQL 15 is not installed ({BIN}/initdb is missing): run `make test` "
                "(scripts/setup-host.sh installs postgresql-15)"
            )
        owner = pwd.getpwnam(OWNER)
        self.root = Path(tempfile.mkdtemp(prefix="hatrain-pg-"))
        os.chown(self.root, owner.pw_uid, owner.pw_gid)
        self.primary = self._init(self.root / "primary")
        self.standby: Server | None = None

    def _init(self, data: Path) -> Server:
        _as_owner(str(BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", OWNER, "--no-sync")
        port = free_port()
        (data / "postgresql.auto.conf").write_text(
            f"port = {port}\n"
            "listen_addresses = '127.0.0.1'\n"
            f"unix_socket_directories = '{data}'\n"
            "max_connections = 300\n"
            "wal_level = replica\n"
            "max_wal_senders = 5\n"
            "synchronous_commit = on\n"
            "fsync = on\n"
        )
        with (data / "pg_hba.conf").open("a") as hba:
            hba.write("host replication all 127.0.0.1/32 trust\n")
        server = Server(data, port, self.root / f"{data.name}.log")
        server.start()
        return server

    def add_standby(self) -> Server:
        """A streaming standby of the primary, made synchronous: a commit is acknowledged only
        once the standby has it."""
        data = self.root / "standby"
        _as_owner(
            str(BIN / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(self.primary.port),
            "-U", OWNER, "-D", str(data), "-R", "-X", "stream", "--no-sync",
        )  # fmt: skip
        port = free_port()
        with (data / "postgresql.auto.conf").open("a") as conf:
            # Its own port and socket; and, once promoted, no standby of its own to wait for.
            conf.write(
                f"port = {port}\nunix_socket_directories = '{data}'\n"
                "synchronous_standby_names = ''\n"
            )
        standby = Server(data, port, self.root / "standby.log")
        standby.start()
        self.primary.sql("ALTER SYSTEM SET synchronous_standby_names = '*'")
        self.primary.sql("SELECT pg_reload_conf()")
        poll(
            lambda: self.primary.sql("SELECT sync_state FROM pg_stat_replication") == "sync",
            60,
            "the standby to stream synchronously",
        )
        self.standby = standby
        return standby

    @property
    def conninfo(self) -> str:
        """The team's connection string: both servers, the writable one wanted."""
        if self.standby is None:
            return self.primary.conninfo
        return (
            f"host=127.0.0.1,127.0.0.1 port={self.primary.port},{self.standby.port} "
            f"user={OWNER} dbname=postgres target_session_attrs=read-write"
        )

    def fail_over(self) -> None:
        """The primary dies (immediate stop: no checkpoint, clients cut) and the synchronous
        standby is promoted."""
        assert self.standby is not None
        self.primary.stop("immediate")
        self.standby.promote()
        poll(
            lambda: (
                self.standby is not None and self.standby.sql("SELECT pg_is_in_recovery()") == "f"
            ),
            60,
            "the standby to be promoted",
        )

    def close(self) -> None:
        for server in (self.standby, self.primary):
            if server is not None:
                server.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def cluster() -> Iterator[Cluster]:
    made = Cluster()
    try:
        yield made
    finally:
        made.close()
