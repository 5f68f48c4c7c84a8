"""A host reached: its SSH connection, the gRPC channel through it, one typed method per call.

The agent learns who calls from the SSH login. Every gRPC error is turned into a ClientError
here and nowhere else.
"""

import contextlib
import queue
import sys
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import grpc
from hatrain.rpc import __version__
from hatrain.rpc.v1 import agent_pb2 as pb
from hatrain.rpc.v1 import agent_pb2_grpc as pb_grpc

from ..errors import AgentRefused, AgentUnavailable, ClientError, HostUnreachable
from ..settings import ClientSettings, HostEntry
from .opening import open_ssh

if TYPE_CHECKING:
    import paramiko

    from .ssh import SshConnection
    from .tunnel import Tunnel

_END = object()
_TIMEOUT = 60.0
# The largest answer taken from an agent (a page of events is about 1 MB).
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
# gRPC's words when a request is over the receiver's max_receive_message_length.
_TOO_LARGE = "larger than max"


def client_version() -> str:
    return __version__


class HostConnection:
    """One host's agent, reached through the host's SSH login."""

    def __init__(self, alias: str, entry: HostEntry, settings: ClientSettings) -> None:
        self.alias = alias
        self.entry = entry
        self.settings = settings
        self.ssh: SshConnection | None = None
        self._tunnel: Tunnel | None = None
        self._channel: grpc.Channel | None = None
        self._stub: pb_grpc.AgentServiceStub | None = None
        self._info: pb.AgentInfo | None = None

    def open(self, warn: Callable[[str], None] | None = None) -> "HostConnection":
        """Through the host's shared connection when one is running, else over a new one."""
        from . import mux

        shared = mux.find(self.alias, self.entry, self.settings)
        if shared is not None:
            try:
                self._connect_grpc(shared.target)
            except AgentUnavailable:  # it just went away, or the agent did: connect anew
                self._close_grpc()
            else:
                return self._check_versions(warn)
        self.ssh = open_ssh(self.entry.ssh, self.settings)
        from .tunnel import Tunnel

        self._tunnel = Tunnel(
            self.ssh.transport, self.entry.agent, self.entry.bridge_command(), self.alias
        )
        try:
            self._connect_grpc(self._tunnel.target)
        except AgentUnavailable as exc:
            raise self._tunnel.failure() or exc from exc
        mux.start(self.alias, self.settings)
        return self._check_versions(warn)

    def open_shared(self) -> bool:
        """Connect through the host's shared connection only; False when none is running (or
        it does not answer)."""
        from . import mux

        shared = mux.find(self.alias, self.entry, self.settings)
        if shared is None:
            return False
        try:
            self._connect_grpc(shared.target)
        except ClientError:
            self._close_grpc()
            return False
        return True

    def _connect_grpc(self, target: str) -> None:
        self._channel = grpc.insecure_channel(
            target, options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]
        )
        self._stub = pb_grpc.AgentServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self._info = self._call(self._rpc().GetAgentInfo, pb.GetAgentInfoRequest())

    def _close_grpc(self) -> None:
        if self._channel is not None:
            self._channel.close()
        self._channel = self._stub = None

    def _check_versions(self, warn: Callable[[str], None] | None) -> "HostConnection":
        if self.info.agent_version != client_version():
            (warn or _stderr)(
                f"warning: {self.alias} runs hatrain-agent {self.info.agent_version}, "
                f"this client is {client_version()}"
            )
        return self

    @property
    def info(self) -> pb.AgentInfo:
        """What the agent said of itself when the connection was made."""
        assert self._info is not None, "not open"
        return self._info

    @property
    def user(self) -> str:
        """Who the agent knows this connection as (the login the kernel reported)."""
        return self.info.user

    # -- the calls -------------------------------------------------------------------------

    def agent_info(self) -> pb.AgentInfo:
        return self._call(self._rpc().GetAgentInfo, pb.GetAgentInfoRequest())  # type: ignore[no-any-return]

    def prepare_upload(self, hashes: list[str]) -> pb.PrepareUploadResponse:
        request = pb.PrepareUploadRequest(sha256=hashes)
        return self._call(self._rpc().PrepareUpload, request)  # type: ignore[no-any-return]

    def commit_upload(self, sha256: str, size: int) -> pb.CommitUploadResponse:
        request = pb.CommitUploadRequest(sha256=sha256, size=size)
        return self._call(self._rpc().CommitUpload, request)  # type: ignore[no-any-return]

    def submit_job(self, request: pb.SubmitJobRequest) -> pb.Job:
        return self._call(self._rpc().SubmitJob, request).job  # type: ignore[no-any-return]

    def submit_jobs(self, request: pb.SubmitJobsRequest) -> list[pb.Job]:
        """Several jobs in one call: the agent checks all before it queues any."""
        try:
            return list(self._call(self._rpc().SubmitJobs, request).jobs)
        except AgentRefused as exc:
            if exc.code == grpc.StatusCode.RESOURCE_EXHAUSTED.name and _TOO_LARGE in exc.message:
                raise AgentRefused(
                    f"configs: the {len(request.jobs)} jobs make one call of "
                    f"{request.ByteSize():,} bytes, more than the agent on {self.alias} takes "
                    "in one call (limits.max_request_bytes in its agent.yml); nothing was queued",
                    fix="submit the configs in smaller groups",
                    code=exc.code,
                ) from exc
            if exc.code != grpc.StatusCode.UNIMPLEMENTED.name:
                raise
            raise AgentRefused(
                f"{self.alias}: its hatrain-agent ({self.info.agent_version}) takes one job a "
                "call: it cannot queue several configs at once",
                fix=f"upgrade the agent on {self.alias}, or submit the configs one at a time",
                code=exc.code,
            ) from exc

    def get_job(self, job_id: str) -> pb.Job:
        request = pb.GetJobRequest(job_id=job_id)
        return self._call(self._rpc().GetJob, request)  # type: ignore[no-any-return]

    def list_jobs(self, request: pb.ListJobsRequest) -> pb.ListJobsResponse:
        return self._call(self._rpc().ListJobs, request)  # type: ignore[no-any-return]

    def cancel_job(self, job_id: str) -> pb.Job:
        request = pb.CancelJobRequest(job_id=job_id)
        return self._call(self._rpc().CancelJob, request)  # type: ignore[no-any-return]

    def pin_job(self, job_id: str, pinned: bool) -> pb.PinJobResponse:
        request = pb.PinJobRequest(job_id=job_id, pinned=pinned)
        return self._call(self._rpc().PinJob, request)  # type: ignore[no-any-return]

    def watch_job(self, request: pb.WatchJobRequest) -> Iterator[pb.Event]:
        """The job's events, read by a helper thread.

        Ctrl-C then interrupts the main thread in a plain queue wait, never inside grpc's own
        locks (where it could leave the channel unable to close), and leaving the loop for any
        reason cancels the call.
        """
        call = self._rpc().WatchJob(request)
        responses: queue.SimpleQueue[Any] = queue.SimpleQueue()

        def pump() -> None:
            try:
                for response in call:
                    responses.put(response)
                responses.put(_END)
            except grpc.RpcError as exc:
                responses.put(exc)

        threading.Thread(target=pump, name="hatrain-watch", daemon=True).start()
        try:
            while (item := responses.get()) is not _END:
                if isinstance(item, grpc.RpcError):
                    raise self._translate(item)
                yield from item.events
        finally:
            call.cancel()

    # -- plumbing --------------------------------------------------------------------------

    def _rpc(self) -> Any:
        assert self._stub is not None, "not open"
        return self._stub

    def _call(self, method: Any, request: Any, timeout: float = _TIMEOUT) -> Any:
        try:
            return method(request, timeout=timeout)
        except grpc.RpcError as exc:
            raise self._translate(exc) from exc

    def _translate(self, exc: grpc.RpcError) -> ClientError:
        code = exc.code() if isinstance(exc, grpc.Call) else None
        details = (exc.details() if isinstance(exc, grpc.Call) else None) or str(exc)
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            return AgentUnavailable(
                f"the agent on {self.alias} is not answering ({details})",
                fix=f"on {self.alias}, check the agent and its log:",
                commands=("hatrain-agent doctor", "journalctl -u hatrain-agent -n 50"),
            )
        return AgentRefused(f"{self.alias}: {details}", code=code.name if code else "")

    # -- files -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def transferring(self, what: str) -> Iterator["paramiko.SFTPClient"]:
        """SFTP for one transfer; a connection lost on the way is one error saying it resumes."""
        sftp = self.sftp()
        from paramiko import SSHException

        try:
            yield sftp
        except (OSError, EOFError, SSHException) as exc:
            raise HostUnreachable(
                f"the SSH connection to {self.alias} was lost while {what} "
                f"({exc or type(exc).__name__})",
                fix="run the same command again: it resumes where it stopped",
            ) from exc

    def sftp(self) -> "paramiko.SFTPClient":
        """SFTP on this host (over a connection of this command's own when calls go through the
        shared one)."""
        return self.ssh_connection().sftp()

    def ssh_connection(self) -> "SshConnection":
        """This host's SSH connection: this command's own (opened now when calls go through
        the shared one)."""
        if self.ssh is None:
            self.ssh = open_ssh(self.entry.ssh, self.settings)
        return self.ssh

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
        if self._tunnel is not None:
            self._tunnel.close()
        if self.ssh is not None:
            self.ssh.close()

    def __enter__(self) -> "HostConnection":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)
