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

REPO = Path(__file__).resolve().parent.parent.parent
ALICE, BOB, CAROL, ADMIN = "hatrain-alice", "hatrain-bob", "hatrain-carol", "hatrain-admin"
# The bridge as any account can run it: the system's Python and the file itself (the project's
# virtualenv lives under root's home, which other accounts cannot enter).
USER_BRIDGE = f"/usr/bin/python3 {REPO / 'agent/hatrain/agent/bridge.py'}"


def ensure_user(name: str) -> pwd.struct_passwd:
    """The account, created if it is missing (with a home and no password: logins by key)."""
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            ["useradd", "--create-home", "--shell", "/bin/sh", name],
            check=True,
            capture_output=True,
        )
    # A locked account ("!" in shadow) may not log in even by key: "*" is no password at all.
    subprocess.run(["usermod", "--password", "*", name], check=True, capture_output=True)
    return pwd.getpwnam(name)


def as_user(name: str, *argv: str) -> list[str]:
    """A command line that runs argv as the account, with its groups and no new privileges."""
    return [
        "setpriv",
        f"--reuid={name}",
        f"--regid={name}",
        "--init-groups",
        "--no-new-privs",
        "--reset-env",
        *argv,
    ]


def run_as(name: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(as_user(name, *argv), capture_output=True, text=True, check=False)


@contextlib.contextmanager
def channel_as(name: str, agent_socket: Path) -> Iterator[grpc.Channel]:
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
        bridge.wait(timeout=10)
