"""Real Unix accounts of this machine for the tests of who may do what, and gRPC calls made as
one of them: through `hatrain-agent bridge` run as that account, so that the agent learns who
calls from the kernel, exactly as over SSH.
"""

import contextlib
import os
import pwd
import select
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
from hatrain.rpc.v1 import agent_pb2_grpc as pb_grpc

from tests.support.harness import TEST_USER, poll

REPO = Path(__file__).resolve().parent.parent.parent
ALICE, BOB, CAROL, ADMIN = TEST_USER, "hatrain-bob", "hatrain-carol", "hatrain-admin"
# The bridge as any account can run it: the system's Python and the file itself (the project's
# virtualenv lives under root's home, which other accounts cannot enter).
USER_BRIDGE = f"/usr/bin/python3 {REPO / 'agent/hatrain/agent/bridge.py'}"


# /etc/passwd is locked while another useradd (a test run beside this one) writes it.
_PASSWD_BUSY = 10


def ensure_user(name: str) -> pwd.struct_passwd:
    """The account, created if it is missing: an ordinary login with a home, a group of its
    own and no password (logins by key)."""

    def created() -> pwd.struct_passwd | None:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            pass
        done = subprocess.run(
            ["useradd", "--create-home", "--user-group", "--shell", "/bin/sh", name],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode not in (0, 9, _PASSWD_BUSY):  # 9: it exists (created meanwhile)
            raise RuntimeError(f"useradd {name} exited {done.returncode}: {done.stderr.strip()}")
        return None

    entry = poll(created, 30, f"the account {name}", every=0.2)
    if _shadow_password(name) != "*":
        # A locked account ("!" in shadow) may not log in even by key: "*" is no password.
        subprocess.run(["usermod", "--password", "*", name], check=True, capture_output=True)
    return entry


def _shadow_password(name: str) -> str:
    for line in Path("/etc/shadow").read_text().splitlines():
        login, _, rest = line.partition(":")
        if login == name:
            return rest.partition(":")[0]
    return ""


def as_user(name: str | int, *argv: str) -> list[str]:
    """A command line that runs argv as the account, with its groups and no new privileges; a
    number is a uid, which needs no account (and gets no groups)."""
    return [
        "setpriv",
        f"--reuid={name}",
        f"--regid={name}",
        "--clear-groups" if isinstance(name, int) else "--init-groups",
        "--no-new-privs",
        "--reset-env",
        *argv,
    ]


def run_as(name: str, *argv: str, **kwargs: object) -> "subprocess.CompletedProcess[str]":
    """Run argv as a process of the account's own, as from its login (its uid, gid and groups;
    a setuid file works for it as it would there)."""
    return subprocess.run(  # type: ignore[call-overload]
        ["setpriv", f"--reuid={name}", f"--regid={name}", "--init-groups", "--reset-env", *argv],
        capture_output=True,
        text=True,
        check=False,
        **kwargs,
    )


def reachable_dir(prefix: str) -> Path:
    """A new directory under /tmp that every account can pass through (0755; pytest's own
    tmp_path is in a 0700 directory of root's)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(path, 0o755)
    return path


@contextlib.contextmanager
def channel_as(name: str | int, agent_socket: Path) -> Iterator[grpc.Channel]:
    """A gRPC channel whose every connection is the account's own: a local socket (private to
    the tests) relayed to `hatrain-agent bridge` run as that account."""
    directory = Path(tempfile.mkdtemp(prefix="hatrain-as-"))
    local = directory / "relay.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(local))
    server.listen(8)
    closed = threading.Event()

    def serve() -> None:
        while not closed.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            bridge = subprocess.Popen(
                as_user(name, *USER_BRIDGE.split(), "--socket", str(agent_socket)),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
            threading.Thread(target=_pump, args=(conn, bridge), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    channel = grpc.insecure_channel(f"unix:{local}")
    try:
        yield channel
    finally:
        channel.close()
        closed.set()
        server.close()
        shutil.rmtree(directory, ignore_errors=True)


def stub_as(channel: grpc.Channel) -> Any:
    return pb_grpc.AgentServiceStub(channel)


def _pump(conn: socket.socket, bridge: "subprocess.Popen[bytes]") -> None:
    assert bridge.stdin is not None and bridge.stdout is not None
    out = bridge.stdout.fileno()
    try:
        while True:
            readable, _, _ = select.select([conn.fileno(), out], [], [])
            if conn.fileno() in readable:
                data = conn.recv(65536)
                if not data:
                    break
                bridge.stdin.write(data)
                bridge.stdin.flush()
            if out in readable:
                data = os.read(out, 65536)
                if not data:
                    break
                conn.sendall(data)
    except OSError:
        pass
    finally:
        conn.close()
        with contextlib.suppress(OSError):
            bridge.stdin.close()
        try:
            bridge.wait(timeout=10)
        except subprocess.TimeoutExpired:  # the agent keeps a connection nobody uses any more
            bridge.kill()
            bridge.wait()
