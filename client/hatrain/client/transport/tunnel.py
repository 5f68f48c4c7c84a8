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
# How long an ended bridge is given to report its exit status.
_STATUS_WAIT = 5.0
# How long close() waits for the relays it ended.
_CLOSE_WAIT = 2.0


class Tunnel:
    def __init__(
        self,
        transport: paramiko.Transport,
        agent_socket: str,
        bridge: str,
        host: str,
        path: Path | None = None,
        keep_spare: bool = False,
        listener: socket.socket | None = None,
    ) -> None:
        """agent_socket: the agent's socket on the host; bridge: the command that reaches it
        where forwarding is refused. path: where to listen (its directory must be private);
        default a new temp dir. keep_spare: keep a bridge started ahead of the next connection
        (for the shared connection: a bridge takes a moment to start). listener: a listening
        socket to accept from instead (e.g. a loopback TCP port for a browser)."""
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
        self._dir = None if path or listener else Path(tempfile.mkdtemp(prefix="hatrain-"))
        self.path = path or (self._dir / "agent.sock" if self._dir else None)
        if listener is not None:
            self._server = listener
        else:
            self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._server.bind(str(self.path))
            self._server.listen(16)
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._relay_ended = threading.Condition(self._lock)
        self.relays = 0
        # The local ends of the relays running, so that close() can end them first.
        self._relaying: set[socket.socket] = set()
        self.last_activity = time.monotonic()
        threading.Thread(target=self._accept, name="hatrain-tunnel", daemon=True).start()

    @property
    def target(self) -> str:
        assert self.path is not None, "listening on a socket given"
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
            except (paramiko.SSHException, OSError, EOFError) as exc:
                # The SSH connection is gone (paramiko re-raises what ended it, of any kind).
                self.refused = AgentUnavailable(
                    f"the SSH connection to {self.host} was lost ({exc or type(exc).__name__})",
                    fix="run the command again",
                )
                conn.close()
                continue
            with self._lock:
                self.relays += 1
                self._relaying.add(conn)
            bridged = self.forwarding is False
            threading.Thread(
                target=self._relay, args=(conn, channel, bridged), name="hatrain-relay", daemon=True
            ).start()
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

    def _relay(self, conn: socket.socket, channel: paramiko.Channel, bridged: bool) -> None:
        try:
            if failure := _relay(conn, channel, bridged):
                self.last_failure = failure
        finally:
            with self._lock:
                self.relays -= 1
                self._relaying.discard(conn)
                self._relay_ended.notify_all()
                self.last_activity = time.monotonic()

    def idle_for(self) -> float:
        """Seconds since the last relay ended (0 while one is open)."""
        with self._lock:
            return 0.0 if self.relays else time.monotonic() - self.last_activity

    def close(self) -> None:
        """Stop accepting and end the relays, each closing its channel while the SSH
        connection is still there (the caller closes that next)."""
        self._closed.set()
        with self._lock:
            spare, self._spare = self._spare, None
            relaying = list(self._relaying)
        if spare is not None:
            with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
                spare.close()
        for conn in relaying:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        with self._relay_ended:
            self._relay_ended.wait_for(lambda: not self.relays, _CLOSE_WAIT)
        with contextlib.suppress(OSError):
            self._server.close()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
        elif self.path is not None:
            self.path.unlink(missing_ok=True)


def _relay(conn: socket.socket, channel: paramiko.Channel, bridged: bool) -> str:
    """Copy bytes both ways until a side ends; returns the bridge's complaint if it was the
    bridge that ended, with a failure status ("" otherwise). Never raises: a connection that
    went away, on either side or under SSH, is how every relay ends.

    One thread per direction, in blocking reads. Not select(): a paramiko channel's fileno()
    makes a pipe that close() then closes while the SSH reader thread may be writing to it,
    and the EBADF that raises there ends the whole SSH connection."""
    local_ended = threading.Event()
    upstream = threading.Thread(
        target=_copy_up, args=(conn, channel, local_ended), name="hatrain-relay-up", daemon=True
    )
    upstream.start()
    try:
        _copy_down(channel, conn)
        remote_ended = not local_ended.is_set()
        return _bridge_complaint(channel) if remote_ended and bridged else ""
    except (OSError, EOFError, paramiko.SSHException):
        return ""  # either side went away (paramiko raises EOFError once SSH is gone)
    finally:
        _end(conn, channel)
        upstream.join(_CLOSE_WAIT)
        conn.close()


def _copy_up(conn: socket.socket, channel: paramiko.Channel, ended: threading.Event) -> None:
    """The local side to the host's, until the local side ends; then end both."""
    try:
        while data := conn.recv(_CHUNK):
            channel.sendall(data)
        ended.set()
    except (OSError, EOFError, paramiko.SSHException):
        ended.set()
    finally:
        _end(conn, channel)


def _copy_down(channel: paramiko.Channel, conn: socket.socket) -> None:
    """The host's side to the local one, until the host's side ends (or is closed)."""
    while data := channel.recv(_CHUNK):
        conn.sendall(data)


def _end(conn: socket.socket, channel: paramiko.Channel) -> None:
    """Wake both copiers: a shut-down socket ends its reads, a closed channel its receives.
    Closing tells the host over SSH; when the SSH connection is already gone (or going,
    closed by another thread), there is nobody left to tell."""
    with contextlib.suppress(OSError):
        conn.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
        channel.close()


def _bridge_complaint(channel: paramiko.Channel) -> str:
    """What a bridge that ended with a failure status said. A forwarded socket has no status
    (waiting for one would hang until the host closes the channel), hence bridges only, and
    only as long as the bridge takes to report."""
    if not channel.status_event.wait(_STATUS_WAIT) or channel.exit_status in (0, -1):
        return ""
    said = channel.recv_stderr(4096).decode(errors="replace").strip()
    return said.splitlines()[-1] if said else "the bridge on the host failed"
