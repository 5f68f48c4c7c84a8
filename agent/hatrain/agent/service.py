"""The gRPC servicer: decode the request, call the domain, encode the answer.

Domain errors become gRPC status codes here and nowhere else.
"""

import functools
import inspect
import socket
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc
import structlog
from hatrain.rpc import __version__
from hatrain.rpc.v1 import agent_pb2 as pb
from hatrain.rpc.v1 import agent_pb2_grpc as pb_grpc

from . import wire
from .config import AgentConfig
from .errors import (
    FailedPrecondition,
    HatrainError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
)
from .gpu_usage import GpuUsageSampler
from .objects import ObjectStore, check_sha256
from .scheduler import GpuSlot
from .states import RUNNING, JobState
from .store import Store
from .submission import check_submission
from .supervisor import Supervisor
from .workspace import Workspace

log = structlog.get_logger(__name__)

WIRE_VERSION = "v1"
USER_METADATA = "x-hatrain-user"
_STATUS = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
}
_WATCH_BATCH = 10_000
# Well under the 4 MB a gRPC client accepts by default.
_WATCH_BYTES = 1024 * 1024
F = TypeVar("F", bound=Callable[..., Any])


def _abort(context: grpc.ServicerContext, exc: HatrainError) -> None:
    code = _STATUS.get(type(exc), grpc.StatusCode.UNKNOWN)
    context.abort(code, str(exc))


def translate_errors(method: F) -> F:
    @functools.wraps(method)
    def unary(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except HatrainError as exc:
            _abort(context, exc)

    @functools.wraps(method)
    def stream(self: Any, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            yield from method(self, request, context)
        except HatrainError as exc:
            _abort(context, exc)

    return stream if inspect.isgeneratorfunction(method) else unary  # type: ignore[return-value]


def caller(context: grpc.ServicerContext) -> str:
    for key, value in context.invocation_metadata():
        if key == USER_METADATA and value:
            return str(value)[:64]
    return "anonymous"


class AgentService(pb_grpc.AgentServiceServicer):
    def __init__(
        self,
        config: AgentConfig,
        store: Store,
        objects: ObjectStore,
        workspace: Workspace,
        supervisor: Supervisor,
        gpus: list[GpuSlot],
        gpu_source: str,
        gpu_usage: GpuUsageSampler | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.objects = objects
        self.workspace = workspace
        self.supervisor = supervisor
        self.gpus = gpus
        self.gpu_source = gpu_source
        self.gpu_usage = gpu_usage

    @translate_errors
    def GetAgentInfo(self, request: pb.GetAgentInfoRequest, context: Any) -> pb.AgentInfo:
        holders = {u: j.id for j in self.store.jobs_in(RUNNING) for u in j.gpu_uuids}
        counts = self.store.counts()
        return pb.AgentInfo(
            agent_version=__version__,
            wire_version=WIRE_VERSION,
            hostname=socket.gethostname(),
            runtime=self.config.runtime,
            gpu_source=self.gpu_source,
            gpus=[wire.gpu_to_wire(g, holders.get(g.uuid, "")) for g in self.gpus],
            queue=pb.QueueSummary(
                queued=counts.get(JobState.QUEUED, 0),
                running=sum(counts.get(s, 0) for s in RUNNING),
                succeeded=counts.get(JobState.SUCCEEDED, 0),
                failed=counts.get(JobState.FAILED, 0),
                cancelled=counts.get(JobState.CANCELLED, 0),
            ),
            allowed_images=self.config.docker.allowed_images,
            default_image=self.config.docker.default_image,
            upload_dir=str(self.objects.staging),
            user=caller(context),
        )

    @translate_errors
    def PrepareUpload(
        self, request: pb.PrepareUploadRequest, context: Any
    ) -> pb.PrepareUploadResponse:
        response = pb.PrepareUploadResponse()
        for i, sha in enumerate(dict.fromkeys(request.sha256)):
            check_sha256(sha, f"sha256[{i}]")
            if self.objects.has(sha):
                response.present.append(sha)
            else:
                response.missing.append(
                    pb.StagedUpload(
                        sha256=sha,
                        staging_path=str(self.objects.staging_path(sha)),
                        bytes_present=self.objects.staged_bytes(sha),
                    )
                )
        return response

    @translate_errors
    def CommitUpload(
        self, request: pb.CommitUploadRequest, context: Any
    ) -> pb.CommitUploadResponse:
        size = self.objects.commit(request.sha256, request.size)
        return pb.CommitUploadResponse(sha256=request.sha256, size=size)

    def _job(self, job_id: str) -> pb.Job:
        job = self.store.get(job_id)
        usage = self.gpu_usage.latest(job.id) if self.gpu_usage is not None else ()
        return wire.job_to_wire(job, str(self.workspace.dirs(job.id).run), usage)

    @translate_errors
    def SubmitJob(self, request: pb.SubmitJobRequest, context: Any) -> pb.SubmitJobResponse:
        spec, secrets = check_submission(request, self.config, self.gpus, self.objects)
        job, created = self.store.submit(
            spec,
            caller(context),
            client_request_id=request.client_request_id,
            secret_names=secrets.keys(),
        )
        if created:
            if secrets:
                self.workspace.write_secrets(job.id, secrets)
            log.info("job queued", job_id=job.id, user=job.user, gpus=spec.gpus)
            self.supervisor.wake()
        # The job as submitted (queued, with its position), even if it has started since.
        return pb.SubmitJobResponse(job=wire.job_to_wire(job, str(self.workspace.dirs(job.id).run)))

    @translate_errors
    def GetJob(self, request: pb.GetJobRequest, context: Any) -> pb.Job:
        return self._job(request.job_id)

    @translate_errors
    def ListJobs(self, request: pb.ListJobsRequest, context: Any) -> pb.ListJobsResponse:
        jobs, token, total = self.store.list_jobs(
            states=[wire.STATE_FROM_WIRE[s] for s in request.states if s in wire.STATE_FROM_WIRE],
            user=request.user,
            page_size=request.page_size or 50,
            page_token=request.page_token,
        )
        return pb.ListJobsResponse(
            jobs=[wire.job_to_wire(j, str(self.workspace.dirs(j.id).run)) for j in jobs],
            next_page_token=token,
            total=total,
        )

    @translate_errors
    def CancelJob(self, request: pb.CancelJobRequest, context: Any) -> pb.Job:
        job = self.supervisor.cancel(request.job_id, caller(context))
        log.info("cancel requested", job_id=job.id, user=caller(context))
        return self._job(job.id)

    @translate_errors
    def WatchJob(
        self, request: pb.WatchJobRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.WatchJobResponse]:
        job = self.store.get(request.job_id)
        kinds = [wire.KIND_FROM_WIRE[k] for k in request.kinds if k in wire.KIND_FROM_WIRE]
        after = max(request.from_seq, 0)
        if request.tail > 0:
            after = max(after, self.store.tail_start(job.id, kinds, request.tail))
        while context.is_active():
            generation = self.store.generation
            # The state is read first: if it is terminal, every event is already committed.
            state = self.store.get(job.id).state
            runs = self.store.event_runs(job.id, after, limit=_WATCH_BATCH, kinds=kinds)
            if runs:
                response = pb.WatchJobResponse(state=wire.STATE_TO_WIRE[state])
                wire.add_runs(response.events, runs, _WATCH_BYTES)
                after = response.events[-1].seq
                yield response
                continue
            if state.terminal or not request.follow:
                return
            self.store.wait_for_change(generation, timeout=1.0)
