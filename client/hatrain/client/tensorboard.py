"""TensorBoard of jobs on a host, in the browser here: `hatrain-client tensorboard JOB…`.

Over the user's SSH connection the client runs `hatrain-agent tensorboard`, which runs as the
user, asks the agent which of the jobs they may read, and serves TensorBoard on a Unix socket
of its own. Once it says where, the client listens on a loopback port here and relays each
browser connection to that socket through the same SSH connection (OpenSSH's forwarding, or a
bridge where sshd forbids it: transport/tunnel.py). Closing this ends the SSH session, and with
it TensorBoard on the host.
"""

import json
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import AgentRefused, AgentUnavailable, BadInput, ClientError
from .settings import HostEntry
from .text import safe

if TYPE_CHECKING:
    import paramiko

    from .transport.ssh import SshConnection
    from .transport.tunnel import Tunnel

# TensorBoard loads its plugins before it listens: seconds, more on a busy host.
START_TIMEOUT = 240.0
_COMMAND_NOT_FOUND = 127


@dataclass(frozen=True)
class TensorBoardRun:
    job_id: str
    name: str
    run_dir: str


class TensorBoardSession:
    """TensorBoard serving on the host and forwarded to `url` until close()."""

    def __init__(
        self,
        alias: str,
        entry: HostEntry,
        ssh: "SshConnection",
        job_ids: list[str],
        mine: bool,
        port: int = 0,
    ) -> None:
        self.alias = alias
        command = entry.agent_command(
            "tensorboard", "--socket", entry.agent, *(["--mine"] if mine else []), *job_ids
        )
        self._channel = ssh.transport.open_session(timeout=10)
        self._channel.exec_command(command)
        self._tunnel: Tunnel | None = None
        try:
            said = self._first_line()
            self.host_socket: str = said["socket"]
            self.runs = [TensorBoardRun(r["job_id"], r["name"], r["run_dir"]) for r in said["runs"]]
            try:
                listener = socket.create_server(("127.0.0.1", port))
            except OSError as exc:
                raise BadInput(
                    f"--port {port}: cannot listen there ({exc.strerror})",
                    fix="pick another port, or leave --port out for a free one",
                ) from exc
            from .transport import tunnel

            self._tunnel = tunnel.Tunnel(
                ssh.transport,
                self.host_socket,
                entry.agent_command("bridge", "--socket", self.host_socket),
                alias,
                listener=listener,
            )
        except BaseException:
            self.close()
            raise
        self.port: int = listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/"

    def _first_line(self) -> dict[str, Any]:
        """What the host side says once TensorBoard answers; its complaint as an error if it
        ended first."""
        channel = self._channel
        channel.settimeout(1.0)
        data = b""
        deadline = time.monotonic() + START_TIMEOUT
        while b"\n" not in data:
            try:
                chunk = channel.recv(4096)
            except TimeoutError:
                chunk = None
            if chunk == b"":
                raise self._failure()
            data += chunk or b""
            if time.monotonic() > deadline:
                raise AgentUnavailable(
                    f"TensorBoard did not start on {self.alias} within {START_TIMEOUT:.0f} s",
                    fix=f"check `hatrain-agent doctor` on {self.alias} (its tensorboard line)",
                )
        try:
            said: dict[str, Any] = json.loads(data.split(b"\n", 1)[0])
            said["socket"], said["runs"]
        except (ValueError, KeyError, TypeError) as exc:
            raise AgentUnavailable(
                f"{self.alias}: `hatrain-agent tensorboard` said {data[:200]!r}, not where it "
                "serves",
                fix="the host's hatrain-agent may be older than this client: upgrade it",
            ) from exc
        return said

    def _failure(self) -> ClientError:
        status = self._channel.recv_exit_status()
        said = _stderr(self._channel)
        if status == _COMMAND_NOT_FOUND or "No such command" in said:
            return AgentUnavailable(
                f"{self.alias}: `hatrain-agent tensorboard` cannot run there ({said or status})",
                fix="install a hatrain-agent with the tensorboard command on the host, and set "
                "`bridge:` for this host to its hatrain-agent",
            )
        return AgentRefused(f"{self.alias}: {said or f'exit status {status}'}")

    def wait(self) -> None:
        """Until TensorBoard on the host ends (or the connection drops); Ctrl-C interrupts."""
        while not self._channel.status_event.wait(0.5):
            if self._channel.closed:
                return

    def close(self) -> None:
        """Stop forwarding and end the host's TensorBoard (its stdin ends with the channel)."""
        if self._tunnel is not None:
            self._tunnel.close()
        _close_quietly(self._channel)


def _stderr(channel: "paramiko.Channel") -> str:
    data = b""
    while channel.recv_stderr_ready():
        chunk = channel.recv_stderr(4096)
        if not chunk:
            break
        data += chunk
    lines = data.decode(errors="replace").strip().splitlines()
    return safe(lines[-1]) if lines else ""  # the host's words, printed as text


def _close_quietly(channel: "paramiko.Channel") -> None:
    import contextlib

    from paramiko import SSHException

    with contextlib.suppress(OSError, EOFError, SSHException):
        channel.close()
