"""gRPC to the agent's loopback listener, carried over the host's SSH connection.

A private Unix socket (in a 0700 directory) accepts the gRPC channel's connections; each one is
relayed through an SSH direct-tcpip channel to the agent's address as seen on the host.
"""

import contextlib
import select
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import paramiko

from ..errors import AgentUnavailable

_CHUNK = 256 * 1024


class Tunnel:
    def __init__(
        self,
        transport: paramiko.Transport,
        remote: tuple[str, int],
        host: str,
        path: Path | None = None,
    ) -> None:
        """path: where to listen (its directory must be private); default a new temp dir."""
        self.transport = transport
        self.remote = remote
        self.host = host
        self._dir = None if path else Path(tempfile.mkdtemp(prefix="hatrain-"))
        self.path = path or self._dir / "agent.sock"  # type: ignore[operator]
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(self.path))
        self._server.listen(16)
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self.relays = 0
        self.last_activity = time.monotonic()
        threading.Thread(target=self._accept, name="hatrain-tunnel", daemon=True).start()

    @property
    def target(self) -> str:
        return f"unix:{self.path}"

    def open_channel(self) -> paramiko.Channel:
        try:
            return self.transport.open_channel(
                "direct-tcpip", self.remote, ("127.0.0.1", 0), timeout=10
            )
        except paramiko.ChannelException as exc:
            address = f"{self.remote[0]}:{self.remote[1]}"
            raise AgentUnavailable(
                f"no hatrain agent is listening on {address} on {self.host} ({exc.text})",
                fix=f"start it on {self.host}: sudo systemctl start hatrain-agent "
                "(`hatrain-agent doctor` says what is missing)",
            ) from exc

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            try:
                channel = self.open_channel()
            except (AgentUnavailable, paramiko.SSHException):
                conn.close()
                continue
            with self._lock:
                self.relays += 1
            threading.Thread(target=self._relay, args=(conn, channel), daemon=True).start()

    def _relay(self, conn: socket.socket, channel: paramiko.Channel) -> None:
        try:
            _relay(conn, channel)
        finally:
            with self._lock:
                self.relays -= 1
                self.last_activity = time.monotonic()

    def idle_for(self) -> float:
        """Seconds since the last relay ended (0 while one is open)."""
        with self._lock:
            return 0.0 if self.relays else time.monotonic() - self.last_activity

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._server.close()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
        else:
            self.path.unlink(missing_ok=True)


def _relay(conn: socket.socket, channel: paramiko.Channel) -> None:
    try:
        while True:
            readable, _, _ = select.select([conn, channel], [], [], 30)  # type: ignore[type-var]
            if conn in readable:
                data = conn.recv(_CHUNK)
                if not data:
                    break
                channel.sendall(data)
            if channel in readable:
                data = channel.recv(_CHUNK)
                if not data:
                    break
                conn.sendall(data)
    except (OSError, EOFError, paramiko.SSHException):
        pass  # either side went away (paramiko raises EOFError once the SSH connection is gone)
    finally:
        channel.close()
        conn.close()
