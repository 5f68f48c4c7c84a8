"""The gRPC servicer: decode the request, call the domain, encode the answer.

Domain errors become gRPC status codes here and nowhere else. Unary calls run on the server's
thread pool; WatchJob streams are coroutines on its event loop, so that any number of open
watchers never takes a thread from the calls.
"""

import asyncio
import contextlib
import functools
import gc
import socket
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
import structlog
from hatrain.rpc import __version__, limits
from hatrain.rpc.contract import WIRE_VERSION, last_seq
from hatrain.rpc.v1 import agent_pb2 as pb
from hatrain.rpc.v1 import agent_pb2_grpc as pb_grpc

from . import wire
from .accounts import Account, of_uid
from .config import AgentConfig
from .disk import DiskReserve, storage_fault
from .errors import (
    FailedPrecondition,
    HatrainError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    in_batch,
)
from .events import GpuUsage
from .gpu_usage import GpuUsageSampler
from .identity import Caller, Identities
from .jobs import Job, JobSpec
from .metrics import AgentMetrics
from .objects import ObjectStore, check_sha256
from .queue_caps import queue_cap_check
from .scheduler import GpuSlot
from .states import RUNNING, JobState
from .store import NewJob, Store
from .submission import check_count, check_job_id, check_submission, check_text
from .supervisor import Supervisor
from .watermarks import Watermarks
from .workspace import Workspace

if TYPE_CHECKING:  # the team's modules load its database driver: only on a team host
    from .team.front import TeamFront
    from .team.queue import TeamJob

log = structlog.get_logger(__name__)

_STATUS = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
}
_COLLECT_BEFORE_BYTES = 1024 * 1024
_WATCH_BATCH = 10_000
# Well under the 4 MB a gRPC client accepts by default.
_WATCH_BYTES = 1024 * 1024
# A watcher re-reads its job at least this often, should a change notice ever be missed.
_WATCH_RECHECK_SECONDS = 30.0
F = TypeVar("F", bound=Callable[..., Any])


def _status(exc: HatrainError) -> grpc.StatusCode:
    for cls in type(exc).__mro__:
        if cls in _STATUS:
            return _STATUS[cls]
    return grpc.StatusCode.UNKNOWN


def _domain_error(exc: Exception, data_root: Any) -> HatrainError | None:
    if isinstance(exc, HatrainError):
        return exc
    return storage_fault(exc, data_root)


def translate_errors(method: F) -> F:
    """Domain errors (and storage faults) as gRPC status codes, for a unary call.

    Also frees what earlier large requests left behind: the server's per-call objects form
    reference cycles that keep the request alive until the garbage collector's next full
    pass, and a few multi-megabyte requests are far too few allocations to bring one about,
    so without this each would stay resident."""

    @functools.wraps(method)
    def unary(self: "AgentService", request: Any, context: grpc.ServicerContext) -> Any:
        if request.ByteSize() > _COLLECT_BEFORE_BYTES:
            gc.collect()
        try:
            return method(self, request, context)
        except Exception as exc:
            error = _domain_error(exc, self.config.data_root)
            if error is None:
                raise
        context.abort(_status(error), str(error))

    return unary  # type: ignore[return-value]


_NO_TEAM = (
    "this host is in no team queue (no `team:` in its agent.yml); submit without --team-queue, "
    "or to a host of the team"
)


class JobWaiters:
    """Wakes the coroutines watching a job when the store commits a change to it.

    The store calls notify() from whichever thread wrote; the watchers live on the server's
    event loop, so the wake-up is handed over to the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._events: defaultdict[str, set[asyncio.Event]] = defaultdict(set)

    def notify(self, job_id: str) -> None:
        # Most commits concern a job nobody watches: no hand-over to the loop for those. A
        # watcher registers before it reads, so a commit it has not read still finds it here.
        if self._events.get(job_id) if job_id else self._events:
            self._loop.call_soon_threadsafe(self._wake, job_id)

    def _wake(self, job_id: str) -> None:
        targets = self._events.get(job_id, set()) if job_id else set().union(*self._events.values())
        for event in targets:
            event.set()

    def register(self, job_id: str) -> asyncio.Event:
        event = asyncio.Event()
        self._events[job_id].add(event)
        return event

    def unregister(self, job_id: str, event: asyncio.Event) -> None:
        waiting = self._events.get(job_id)
        if waiting is not None:
            waiting.discard(event)
            if not waiting:
                del self._events[job_id]


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
        reserve: DiskReserve,
        waiters: JobWaiters,
        reads: ThreadPoolExecutor,
        identities: Identities,
        gpu_usage: GpuUsageSampler | None = None,
        watermarks: Watermarks | None = None,
        metrics: AgentMetrics | None = None,
        team: "TeamFront | None" = None,
    ) -> None:
        self.config = config
        self.store = store
        self.objects = objects
        self.workspace = workspace
        self.supervisor = supervisor
        self.gpus = gpus
        self.gpu_source = gpu_source
        self.reserve = reserve
        self.waiters = waiters
        # Store reads of watch streams: off the event loop, and never more than a few at once.
        self.reads = reads
        self._streams: Counter[str] = Counter()
        self.identities = identities
        self.gpu_usage = gpu_usage
        self.watermarks = watermarks
        self.metrics = metrics
        self.team = team
        self._queue_cap_check = queue_cap_check(config.scheduler, store.queued_by)

    def caller(self, context: Any) -> Caller:
        """Who calls: the uid the front door learnt from the kernel (see listener.py)."""
        return self.identities.caller(context.peer())

    def account(self, context: Any) -> Account:
        """The caller's login on this host, from the same uid: what their uploads are staged
        as and their jobs run as. NoAccount (PERMISSION_DENIED) for a uid without one."""
        return of_uid(self.caller(context).uid)

    @translate_errors
    def GetAgentInfo(self, request: pb.GetAgentInfoRequest, context: Any) -> pb.AgentInfo:
        caller = self.caller(context)
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
            upload_dir=str(self.objects.staging / caller.user),
            user=caller.user,
            team_host=self.team.host if self.team else "",
            team=self._team_hosts(),
        )

    def _team_hosts(self) -> list[pb.TeamHost]:
        if self.team is None:
            return []
        used = self.team.gpus_used()
        return [
            pb.TeamHost(
                name=h.name,
                state=h.state,
                heartbeat_age_seconds=h.heartbeat_age_seconds,
                gpus=len(h.gpus),
                gpus_used=used.get(h.name, 0) + sum(len(r.gpu_uuids) for r in h.local_running),
                epoch=h.epoch,
            )
            for h in self.team.hosts()
        ]

    @translate_errors
    def PrepareUpload(
        self, request: pb.PrepareUploadRequest, context: Any
    ) -> pb.PrepareUploadResponse:
        check_count(request.sha256, "sha256", self.config.limits.max_files)
        owner = self.account(context)
        self.reserve.check_room()
        response = pb.PrepareUploadResponse()
        for i, sha in enumerate(dict.fromkeys(request.sha256)):
            check_sha256(sha, f"sha256[{i}]")
            if self.objects.has(sha):
                self.objects.mark_used(sha)
                response.present.append(sha)
            else:
                if self.watermarks is not None:
                    self.watermarks.check_upload()
                response.missing.append(
                    pb.StagedUpload(
                        sha256=sha,
                        staging_path=str(self.objects.staging_path(sha, owner)),
                        bytes_present=self.objects.staged_bytes(sha, owner),
                    )
                )
        return response

    @translate_errors
    def CommitUpload(
        self, request: pb.CommitUploadRequest, context: Any
    ) -> pb.CommitUploadResponse:
        new = not self.objects.has(request.sha256)
        size = self.objects.commit(request.sha256, request.size, self.account(context))
        if new and self.metrics is not None:
            self.metrics.upload_committed(size)
        return pb.CommitUploadResponse(sha256=request.sha256, size=size)

    def _job(self, job: Job, caller: Caller) -> pb.Job:
        """The job as this caller may see it: whole for its readers, else its summary."""
        if not self.identities.may_read(caller, job):
            return wire.job_summary_to_wire(job, self.supervisor.waiting(job.id))
        usage = self.gpu_usage.latest(job.id) if self.gpu_usage is not None else ()
        return self._wire_job(job, usage)

    def _wire_job(self, job: Job, usage: tuple[GpuUsage, ...] = ()) -> pb.Job:
        run_dir = str(self.workspace.dirs(job.id).run)
        return wire.job_to_wire(job, run_dir, usage, self.supervisor.waiting(job.id))

    @translate_errors
    def SubmitJob(self, request: pb.SubmitJobRequest, context: Any) -> pb.SubmitJobResponse:
        caller = self.caller(context)
        spec, secrets = self._checked_submission(request, caller)
        owner = of_uid(caller.uid)  # the job runs as this account: the kernel's uid, no name
        self.reserve.check_room()
        if request.team_queue:
            return self._submit_to_team(spec, secrets, owner.name, request.client_request_id)
        job, created = self.store.submit(
            spec,
            owner.name,
            client_request_id=request.client_request_id,
            secret_names=secrets.keys(),
            admit=lambda: self._queue_cap_check(caller.user, spec.team, 0, 0),
            on_created=lambda job: self._write_secrets(job, secrets, owner.uid),
        )
        if created:
            log.info("job queued", job_id=job.id, user=job.user, gpus=spec.gpus)
            self.supervisor.wake()
        # The job as submitted (queued, with its position), even if it has started since.
        return pb.SubmitJobResponse(job=wire.job_to_wire(job, str(self.workspace.dirs(job.id).run)))

    @translate_errors
    def SubmitJobs(self, request: pb.SubmitJobsRequest, context: Any) -> pb.SubmitJobsResponse:
        """Every job is checked before any is queued (a refusal names jobs[i]); on this host's
        queue they are queued in one transaction and placed by one pass, as one job array."""
        if not request.jobs:
            raise InvalidArgument("jobs", "at least one job")
        check_count(request.jobs, "jobs", limits.BATCH_JOBS)
        if len({r.team_queue for r in request.jobs}) > 1:
            raise InvalidArgument("jobs", "all for the team queue, or all for this host's own")
        first_with: dict[str, int] = {}
        for index, one in enumerate(request.jobs):
            if one.client_request_id:
                earlier = first_with.setdefault(one.client_request_id, index)
                if earlier != index:
                    raise InvalidArgument(
                        f"jobs[{index}].client_request_id",
                        f"one of its own (jobs[{earlier}] has it)",
                    )
        caller = self.caller(context)
        team = request.jobs[0].team_queue
        if team and self.team is None:
            raise FailedPrecondition(_NO_TEAM)
        checked = []
        for index, one in enumerate(request.jobs):
            with in_batch(index):
                spec, secrets = self._checked_submission(one, caller)
                if team:
                    assert self.team is not None
                    self.team.check_fits(spec)
                checked.append((spec, secrets))
        owner = of_uid(caller.uid)
        self.reserve.check_room()
        if team:
            # The team queue takes them one at a time (each its own transaction, resent safely
            # by its request id): every one was checked above, before any was queued.
            queued = []
            for index, (one, (spec, secrets)) in enumerate(zip(request.jobs, checked, strict=True)):
                with in_batch(index):
                    queued.append(
                        self._submit_to_team(spec, secrets, owner.name, one.client_request_id).job
                    )
            return pb.SubmitJobsResponse(jobs=queued)
        specs = [spec for spec, _ in checked]

        def admit(index: int, added: Sequence[int]) -> None:
            team = specs[index].team
            with in_batch(index):
                self._queue_cap_check(
                    caller.user, team, len(added), sum(specs[i].team == team for i in added)
                )

        def created(index: int, job: Job) -> None:
            with in_batch(index):
                self._write_secrets(job, checked[index][1], owner.uid)

        results = self.store.submit_all(
            [
                NewJob(spec, owner.name, one.client_request_id, tuple(sorted(secrets)))
                for one, (spec, secrets) in zip(request.jobs, checked, strict=True)
            ],
            admit=admit,
            on_created=created,
        )
        for job, was_created in results:
            if was_created:
                log.info("job queued", job_id=job.id, user=job.user, gpus=job.spec.gpus)
        self.supervisor.wake()
        return pb.SubmitJobsResponse(
            jobs=[wire.job_to_wire(job, str(self.workspace.dirs(job.id).run)) for job, _ in results]
        )

    def _checked_submission(
        self, request: pb.SubmitJobRequest, caller: Caller
    ) -> tuple[JobSpec, dict[str, str]]:
        """The job's spec and secrets, checked, and the caller allowed to submit it."""
        for file in request.spec.files[: self.config.limits.max_files]:
            self.objects.mark_used(file.sha256)  # before they are checked: see sweep.py
        spec, secrets = check_submission(request, self.config, self.gpus, self.objects)
        self.identities.check_submit(caller, spec)
        if spec.retry_of:
            self.identities.check_read(caller, self._any_job(spec.retry_of))
        return spec, secrets

    def _write_secrets(self, job: Job, secrets: dict[str, str], uid: int) -> None:
        """Before the job's commit: no pass may place it without them. Left by a submit that
        did not commit, they are removed as an unknown job's (Supervisor.drop_ended_secrets)."""
        if secrets:
            self.workspace.write_secrets(job.id, secrets, uid)

    def _submit_to_team(
        self, spec: Any, secrets: dict[str, str], user: str, request_id: str
    ) -> pb.SubmitJobResponse:
        if self.team is None:
            raise FailedPrecondition(_NO_TEAM)
        self.team.check_fits(spec)
        job, created = self.team.submit(spec, user, request_id, secrets)
        if created:
            log.info("job queued in the team queue", job_id=job.id, user=job.user, gpus=spec.gpus)
        return pb.SubmitJobResponse(job=wire.team_job_to_wire(job, True))

    def _local(self, job_id: str) -> Job | None:
        try:
            return self.store.get(job_id)
        except NotFound:
            return None

    def _any_job(self, job_id: str) -> Job:
        """The job from this host's store, else from the team queue."""
        local = self._local(job_id)
        if local is not None:
            return local
        if self.team is None:
            raise NotFound(f"no job {job_id!r} on this host")
        return self.team.get(job_id).as_job()

    def _team_record(self, local: Job | None, job_id: str) -> "TeamJob | None":
        """The team queue's record of a job when it, rather than this host's store, has the
        job as it is now: the job runs elsewhere, waits, or ran here in an attempt that the
        team has since given to another host."""
        if self.team is None or (local is not None and local.team_attempt is None):
            return None
        record = self.team.find(job_id)
        if record is None or local is None:
            return record
        attempt = local.team_attempt.attempt if local.team_attempt else None
        here = record.host == self.team.host and record.attempt == attempt
        return None if here else record

    @translate_errors
    def GetJob(self, request: pb.GetJobRequest, context: Any) -> pb.Job:
        job_id = check_job_id(request.job_id)
        caller = self.caller(context)
        local = self._local(job_id)
        record = self._team_record(local, job_id)
        if record is not None:
            return wire.team_job_to_wire(record, self.identities.may_read(caller, record.as_job()))
        if local is None:
            raise NotFound(f"no job {job_id!r} on this host")
        msg = self._job(local, caller)
        if self.team is not None and local.team_attempt is not None:
            msg.team_host = self.team.host
        return msg

    @translate_errors
    def ListJobs(self, request: pb.ListJobsRequest, context: Any) -> pb.ListJobsResponse:
        check_count(request.states, "states", limits.STATES)
        check_text(request.user, "user", limits.USER_CHARS)
        check_text(request.page_token, "page_token", limits.PAGE_TOKEN_CHARS)
        caller = self.caller(context)
        if request.id_prefix:
            prefix = check_job_id(request.id_prefix, "id_prefix")
            limit = min(request.page_size or 50, 1000)
            found = self.store.with_id_prefix(prefix, limit)
            matches = [self._job(j, caller) for j in found]
            if self.team is not None:
                # The team queue's jobs too: one still waiting is in no host's store yet.
                here = {j.id for j in found}
                matches += [
                    wire.team_job_to_wire(t, self.identities.may_read(caller, t.as_job()))
                    for t in self.team.with_id_prefix(prefix, limit)
                    if t.id not in here
                ]
                matches.sort(key=lambda j: j.id)
                del matches[limit:]
            return pb.ListJobsResponse(jobs=matches, total=len(matches))
        states = [wire.STATE_FROM_WIRE[s] for s in request.states if s in wire.STATE_FROM_WIRE]
        if request.team_queue:
            if self.team is None:
                raise FailedPrecondition("this host is in no team queue (no `team:` in agent.yml)")
            listed, token, total = self.team.listing(
                states, request.user, request.page_size or 50, request.page_token
            )
            return pb.ListJobsResponse(
                jobs=[
                    wire.team_job_to_wire(j, self.identities.may_read(caller, j.as_job()))
                    for j in listed
                ],
                next_page_token=token,
                total=total,
            )
        jobs, token, total = self.store.list_jobs(
            states=states,
            user=request.user,
            page_size=request.page_size or 50,
            page_token=request.page_token,
        )
        return pb.ListJobsResponse(
            jobs=[self._job(j, caller) for j in jobs],
            next_page_token=token,
            total=total,
        )

    @translate_errors
    def CancelJob(self, request: pb.CancelJobRequest, context: Any) -> pb.Job:
        caller = self.caller(context)
        job_id = check_job_id(request.job_id)
        local = self._local(job_id)
        if local is None or self._team_record(local, job_id) is not None:
            if self.team is None:
                raise NotFound(f"no job {job_id!r} on this host")
            record = self.team.get(job_id)
            self.identities.check_cancel(caller, record.as_job())
            record = self.team.cancel(job_id)
            log.info("cancel in the team queue", job_id=job_id, user=caller.user)
            return wire.team_job_to_wire(record, True)
        job = local
        self.identities.check_cancel(caller, job)
        outcome = self.supervisor.cancel(job.id)
        log.info("cancel", job_id=job.id, user=caller.user, outcome=outcome.message)
        return self._job(self.store.get(job.id), caller)

    @translate_errors
    def PinJob(self, request: pb.PinJobRequest, context: Any) -> pb.PinJobResponse:
        caller = self.caller(context)
        job = self.store.get(check_job_id(request.job_id))
        self.identities.check_pin(caller, job)
        was = self.store.set_pinned(job.id, request.pinned, caller.user)
        if was != request.pinned:
            log.info("pin" if request.pinned else "unpin", job_id=job.id, user=caller.user)
        return pb.PinJobResponse(job_id=job.id, pinned=request.pinned, was_pinned=was)

    @translate_errors
    def PlanTensorBoard(
        self, request: pb.PlanTensorBoardRequest, context: Any
    ) -> pb.TensorBoardPlan:
        from .tensorboard_plan import plan

        caller = self.caller(context)
        return plan(request, caller, self.config, self.store, self.identities, self.workspace)

    async def WatchJob(
        self, request: pb.WatchJobRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.WatchJobResponse]:
        try:
            caller = self.caller(context)
            self._open_stream(caller.user)
        except HatrainError as exc:
            await context.abort(_status(exc), str(exc))
        user = caller.user
        try:
            async for response in self._watch(request, caller):
                yield response
        except HatrainError as exc:
            await context.abort(_status(exc), str(exc))
        finally:
            self._streams[user] -= 1

    def _open_stream(self, user: str) -> None:
        cap = self.config.limits.max_watch_streams_per_user
        if self._streams[user] >= cap:
            raise ResourceExhausted(
                f"{user} has {cap} watch streams open (limits.max_watch_streams_per_user); "
                "close some (watch, logs -f, followed submits) and try again"
            )
        self._streams[user] += 1

    async def _read(self, call: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.reads, call, *args)

    async def _watch(
        self, request: pb.WatchJobRequest, caller: Caller
    ) -> AsyncIterator[pb.WatchJobResponse]:
        job_id = check_job_id(request.job_id)
        check_count(request.kinds, "kinds", limits.KINDS)
        if not 0 <= request.tail <= limits.TAIL:
            raise InvalidArgument("tail", f"0 (all) to {limits.TAIL}")
        try:
            job = await self._read(self.store.get, job_id)  # NotFound before anything is sent
        except NotFound:
            record = await self._read(self._team_record, None, job_id)
            if record is None:
                raise
            where = f"it runs on {record.host}" if record.host else "it waits in the team queue"
            raise FailedPrecondition(
                f"job {job_id} is not on this host: {where}; its events are kept by the host "
                "that runs it"
            ) from None
        self.identities.check_read(caller, job)
        kinds = [wire.KIND_FROM_WIRE[k] for k in request.kinds if k in wire.KIND_FROM_WIRE]
        after = max(request.from_seq, 0)
        if request.tail > 0:
            start = await self._read(lambda: self.store.tail_start(job_id, kinds, request.tail))
            after = max(after, start)
        while True:
            # Registered before reading: a change committed after the read still wakes us.
            changed = self.waiters.register(job_id)
            try:
                state, response, more = await self._read(
                    self._page, job_id, after, kinds, request.packed_lines
                )
                if response is not None:
                    after = last_seq(response.events[-1])
                    yield response
                    if more:
                        continue
                # Everything up to the read is sent: a commit since has set `changed`.
                if state.terminal or not request.follow:
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), _WATCH_RECHECK_SECONDS)
            finally:
                self.waiters.unregister(job_id, changed)

    def _page(
        self, job_id: str, after: int, kinds: list[Any], packed: bool
    ) -> tuple[JobState, pb.WatchJobResponse | None, bool]:
        """The job's state, then a page of its events after `after` (None: none), and whether
        more may be stored than the page holds."""
        # The state is read first: if it is terminal, every event is already committed.
        state = self.store.state(job_id)
        runs = self.store.event_runs(job_id, after, limit=_WATCH_BATCH, kinds=kinds)
        if not runs:
            return state, None, False
        response = pb.WatchJobResponse(state=wire.STATE_TO_WIRE[state])
        wire.add_runs(response.events, runs, _WATCH_BYTES, packed=packed)
        # event_runs stops at _WATCH_BATCH lines (a row holds a run of them), and the page at
        # _WATCH_BYTES: either may have left events unread.
        read = sum(wire.run_last_seq(run) - run[0] + 1 for run in runs)
        more = read >= _WATCH_BATCH or last_seq(response.events[-1]) < wire.run_last_seq(runs[-1])
        return state, response, more
