"""Connections through the client's tunnel, closed in each way seen in use; run as a process so
that a test can read everything it printed.

    python -m tests.support.relay_closes SSH_CONFIG KNOWN_HOSTS ALIAS SOCKET_DIR

A server on a Unix socket stands for the agent: per connection it sends a greeting, then
either ends (remote EOF) or streams without end. Each scenario relays through a Tunnel over a
real SSH connection (direct-streamlocal, the login's own sshd connecting), then:

- remote-eof: the host's end closes while the client reads;
- local-close: the client closes its end in the middle of a read of a stream;
- connection-closed: the client closes the SSH connection (as HostConnection.close does) while
  relays are still copying;
- connection-lost: the TCP connection under SSH breaks while relays are still copying, and
  the client then closes its ends.
"""

import contextlib
import socket
import sys
import threading
import time
from pathlib import Path

from hatrain.client.transport.ssh import SshConnection, resolve
from hatrain.client.transport.tunnel import Tunnel

GREETING = b"hello\n"


def _serve(path: Path) -> None:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    path.chmod(0o666)
    server.listen(16)

    def handle(conn: socket.socket) -> None:
        with contextlib.suppress(OSError), conn:
            conn.sendall(GREETING)
            if conn.recv(16) == b"end":
                return
            while True:
                conn.sendall(b"x" * 65536)

    while True:
        conn, _ = server.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


def _connect(tunnel: Tunnel, ask: bytes) -> socket.socket:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(str(tunnel.path))
    assert conn.recv(len(GREETING), socket.MSG_WAITALL) == GREETING
    conn.sendall(ask)
    return conn


def _wait_relays_end(tunnel: Tunnel) -> None:
    deadline = time.monotonic() + 10
    while tunnel.relays and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not tunnel.relays, "relays did not end"


def main(ssh_config: str, known_hosts: str, alias: str, socket_dir: str) -> int:
    agent = Path(socket_dir) / "agent.sock"
    threading.Thread(target=_serve, args=(agent,), daemon=True).start()
    while not agent.exists():
        time.sleep(0.01)

    def open_tunnel() -> tuple[SshConnection, Tunnel]:
        ssh = SshConnection(resolve(alias, Path(ssh_config)), Path(known_hosts), Path(ssh_config))
        ssh.connect()
        return ssh, Tunnel(ssh.transport, str(agent), "false", alias)

    for scenario in ("remote-eof", "local-close", "connection-closed", "connection-lost"):
        ssh, tunnel = open_tunnel()
        if scenario == "remote-eof":
            conns = [_connect(tunnel, b"end") for _ in range(4)]
            for conn in conns:
                assert conn.recv(1) == b""  # the host's end closed
                conn.close()
            _wait_relays_end(tunnel)
        elif scenario == "local-close":
            for _ in range(4):
                conn = _connect(tunnel, b"more")
                conn.recv(1000)
                conn.close()
            _wait_relays_end(tunnel)
        else:
            conns = [_connect(tunnel, b"more") for _ in range(4)]
            for conn in conns:
                conn.recv(1000)
            if scenario == "connection-lost":
                # Writes to the host fail from now on, before paramiko has seen the loss.
                ssh.transport.sock.shutdown(socket.SHUT_WR)
                for conn in conns:
                    conn.close()
            else:
                tunnel.close()
                ssh.close()
                for conn in conns:
                    with contextlib.suppress(OSError):
                        while conn.recv(65536):
                            pass
                    conn.close()
            _wait_relays_end(tunnel)
        tunnel.close()
        ssh.close()
        print(scenario, "done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
