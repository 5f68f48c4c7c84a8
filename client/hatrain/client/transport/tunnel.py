"""gRPC to the agent's socket, carried over the host's SSH connection.

A private Unix socket (in a 0700 directory) accepts the gRPC channel's connections; each one is
relayed through an SSH channel to the agent's socket on the host, connected there by a process
of the SSH login's own, so that the agent knows who calls from the kernel:

- a forwarding channel to the socket (OpenSSH's direct-streamlocal), which the login's sshd
  process connects: no process to start, as fast as a TCP forward;
- where the host's sshd allows no forwarding (AllowStreamLocalForwarding, DisableForwarding),
  a session running `hatrain-agent bridge`, which connects and relays stdin and stdout.
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
from .ssh import open_socket_channel

_CHUNK = 256 * 1024


class Tunnel:
    def __init__(
        self,
        transport: paramiko.Transport,
        agent_socket: str,
        bridge: str,
        host: str,
        path: Path | None = None,
        keep_spare: bool = False,
    ) -> None:
        """agent_socket: the agent's socket on the host; bridge: the command that reaches it
        where forwarding is refused. path: where to listen (its directory must be private);
        default a new temp dir. keep_spare: keep a bridge started ahead of the next connection
        (for the shared connection: a bridge takes a moment to start)."""
        self.transport = transport
        self.agent_socket = agent_socket
        self.bridge = bridge
        # Whether the host forwards to its Unix sockets; None until the first try.
        self.forwarding: bool | None = None
        self.forward_refused = ""
        self.keep_spare = keep_spare
        self._spare: paramiko.Channel | None = None
        # What the last bridge that failed said (e.g. that no agent listens), for the error.
        self.last_failure = ""
        # Why the last channel could not be opened at all.
        self.refused: AgentUnavailable | None = None
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
        """A channel to the agent's socket: forwarded, or through the bridge. sshd answers
        "connect failed" alike when nothing listens and when it forbids forwarding: until a
        forward has worked, the bridge is tried next, and says which it is."""
        if self.forwarding is not False:
            try:
                channel = open_socket_channel(self.transport, self.agent_socket)
            except paramiko.ChannelException as exc:
                if self.forwarding:
                    raise AgentUnavailable(
                        f"no hatrain agent is listening at {self.agent_socket} on "
                        f"{self.host} ({exc.text})",
                        fix=f"start it on {self.host}: sudo systemctl start hatrain-agent "
                        "(`hatrain-agent doctor` says what is missing)",
                    ) from exc
                self.forwarding = False
                self.forward_refused = exc.text
            else:
                self.forwarding = True
                return channel
        return self._bridge_channel()

    def _bridge_channel(self) -> paramiko.Channel:
        """A session running the bridge on the host; its stdin and stdout are the socket."""
        try:
            channel = self.transport.open_session(timeout=10)
            channel.exec_command(self.bridge)
        except paramiko.SSHException as exc:
            raise AgentUnavailable(
                f"cannot start `{self.bridge}` on {self.host} over SSH ({exc})",
                fix="check that your SSH login on the host may run commands",
            ) from exc
        return channel

    def failure(self, wait: float = 2.0) -> AgentUnavailable | None:
        """Why the last bridge ended in failure, as an error for the user; None if none did.
        Waits up to `wait` seconds for relays still ending (their bridge's status comes last)."""
        if self.refused is not None:
            return self.refused
        deadline = time.monotonic() + wait
        while self.relays and not self.last_failure and time.monotonic() < deadline:
            time.sleep(0.01)
        said = self.last_failure
        if not said:
            return None
        if "not found" in said:
            tried = (
                f"forwarding to {self.agent_socket} failed ({self.forward_refused}), and "
                if self.forward_refused
                else ""
            )
            return AgentUnavailable(
                f"no hatrain agent answers on {self.host}: {tried}`{self.bridge}` is not a "
                f"command there ({said})",
                fix=f"check that the agent runs on {self.host} (`hatrain-agent doctor`); if "
                "its sshd forbids forwarding, set `bridge:` for this host in the client config "
                "to the agent's hatrain-agent, e.g. /opt/hatrain/venv/bin/hatrain-agent bridge",
            )
        return AgentUnavailable(
            f"{self.host}: {said}",
            fix=f"start it on {self.host} (`hatrain-agent doctor` there says what is missing):",
            commands=("sudo systemctl start hatrain-agent",),
        )

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            try:
                channel = self._take_spare() or self.open_channel()
            except AgentUnavailable as exc:
                self.refused = exc
                conn.close()
                continue
            except paramiko.SSHException:
                conn.close()
                continue
            with self._lock:
                self.relays += 1
            threading.Thread(target=self._relay, args=(conn, channel), daemon=True).start()
            if self.keep_spare and self.forwarding is False:
                threading.Thread(target=self._open_spare, daemon=True).start()

    def _open_spare(self) -> None:
        if self.forwarding is not False:
            return  # forwarding opens at once: nothing to start ahead
        try:
            spare = self._bridge_channel()
        except (AgentUnavailable, paramiko.SSHException, EOFError, OSError):
            return
        with self._lock:
            old, self._spare = self._spare, spare
        if old is not None:
            old.close()

    def _take_spare(self) -> paramiko.Channel | None:
        """The bridge started ahead, if it is still there (not ended: a restarted agent ends
        it, and then a new one is started instead). What the agent already sent through it
        (its HTTP/2 greeting) waits in the channel for the connection that takes it."""
        with self._lock:
            spare, self._spare = self._spare, None
        if spare is None or spare.closed or spare.exit_status_ready():
            if spare is not None:
                spare.close()
            return None
        return spare

    def _relay(self, conn: socket.socket, channel: paramiko.Channel) -> None:
        try:
            if failure := _relay(conn, channel):
                self.last_failure = failure
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
        with self._lock:
            spare, self._spare = self._spare, None
        if spare is not None:
            spare.close()
        with contextlib.suppress(OSError):
            self._server.close()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
        else:
            self.path.unlink(missing_ok=True)


def _relay(conn: socket.socket, channel: paramiko.Channel) -> str:
    """Copy bytes both ways until a side ends; returns the bridge's complaint if it was the
    bridge that ended, with a failure status ("" otherwise)."""
    remote_ended = False
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
                    remote_ended = True
                    break
                conn.sendall(data)
        if remote_ended and channel.recv_exit_status() not in (0, -1):
            said = channel.recv_stderr(4096).decode(errors="replace").strip()
            return said.splitlines()[-1] if said else "the bridge on the host failed"
    except (OSError, EOFError, paramiko.SSHException):
        pass  # either side went away (paramiko raises EOFError once the SSH connection is gone)
    finally:
        channel.close()
        conn.close()
    return ""
