"""A real OpenSSH server on a loopback port, with its own host key, user key and known_hosts."""

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.support.harness import free_port, wait_for_port

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
        check=True,
        capture_output=True,
    )


@dataclass
class SshServer:
    root: Path
    port: int
    user: str
    proc: subprocess.Popen[bytes]
    keys: Path

    def add_login(self, user: str) -> str:
        """Let `user` (an account of this machine) log in with a key of its own; returns the
        ssh_config alias (`hatrain-test-USER`) that logs in as them."""
        key = self.root / f"key-{user}"
        if not key.exists():
            keygen(key)
        _authorize(self.keys, user, key.with_suffix(".pub"))
        alias = f"hatrain-test-{user}"
        entry = (
            f"Host {alias}\n  HostName 127.0.0.1\n  Port {self.port}\n  User {user}\n"
            f"  IdentityFile {key}\n"
        )
        if entry not in self.ssh_config.read_text():
            with self.ssh_config.open("a") as fh:
                fh.write(entry)
        return alias

    @property
    def user_key(self) -> Path:
        return self.root / "user_key"

    @property
    def known_hosts(self) -> Path:
        return self.root / "known_hosts"

    @property
    def ssh_config(self) -> Path:
        return self.root / "ssh_config"

    def host_public_key(self) -> str:
        return (self.root / "host_key.pub").read_text().strip()

    def stop(self) -> None:
        """Stop the server and end the connections it still serves."""
        sessions = self.session_pids()
        self.proc.terminate()
        self.proc.wait(timeout=10)
        for pid in sessions:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        shutil.rmtree(self.keys, ignore_errors=True)

    def session_pids(self) -> list[int]:
        """The per-connection sshd processes (killing one drops that client's connection)."""
        out = subprocess.run(
            ["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True, check=False
        ).stdout
        return [int(p) for p in out.split()]


def start_sshd(root: Path, alias: str = "hatrain-test", extra_config: str = "") -> SshServer:
    """extra_config: more sshd_config lines (e.g. to forbid forwarding)."""
    if not os.path.exists(SSHD):
        raise RuntimeError("sshd is missing: run scripts/setup-host.sh (installs openssh-server)")
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation directory
    keygen(root / "host_key")
    keygen(root / "user_key")
    # Public keys where every login may read its own (sshd reads them as the user).
    keys = Path(tempfile.mkdtemp(prefix="hatrain-keys-", dir="/tmp"))
    keys.chmod(0o755)
    user = os.environ.get("USER") or "root"
    _authorize(keys, user, root / "user_key.pub")
    port = free_port()
    (root / "sshd_config").write_text(
        f"""Port {port}
ListenAddress 127.0.0.1
HostKey {root / "host_key"}
PidFile {root / "sshd.pid"}
AuthorizedKeysFile {keys}/%u
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
AllowTcpForwarding yes
MaxSessions 64
MaxStartups 64
Subsystem sftp internal-sftp
{extra_config}
"""
    )
    proc = subprocess.Popen(
        [SSHD, "-D", "-e", "-f", str(root / "sshd_config")],
        stdout=(root / "sshd.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    wait_for_port(port, proc, root / "sshd.log", timeout=15)
    host_key = (root / "host_key.pub").read_text().split()
    (root / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    (root / "ssh_config").write_text(
        f"Host {alias}\n  HostName 127.0.0.1\n  Port {port}\n  User {user}\n"
        f"  IdentityFile {root / 'user_key'}\n"
    )
    return SshServer(root, port, user, proc, keys)


def _authorize(keys: Path, user: str, public_key: Path) -> None:
    target = keys / user
    shutil.copy(public_key, target)
    target.chmod(0o644)
