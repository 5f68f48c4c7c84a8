"""Places queued jobs on GPUs (through the scheduler) and runs, cancels and times out jobs.

Its loop also keeps the host in order: a running job whose runner thread has died is resumed
(as after a restart), the disk reserve is taken again once there is room, abandoned upload
staging files are removed, and the retention sweep is started when due (on a thread of its
own: walking a large data root must not hold up scheduling, nor the watchdog's keepalives).
While the data root's free space is below the low watermark no job starts.
"""

import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog

from .disk import DiskReserve
from .errors import NotFound
from .fair_share import UsageBook
from .jobs import Job
from .objects import ObjectStore
from .pending import Waiting
from .recovery import reconcile
from .runner import JobRunner, RunControl
from .runtime import Runtime
from .scheduler import GpuSlot, Host, Policy, RunningJob, plan
from .start_gate import StartGate
from .states import RUNNING, JobState, StopReason
from .store import Store
from .sweep import Sweeper
from .watermarks import Watermarks
from .workers import Workers
from .workspace import Workspace

log = structlog.get_logger(__name__)
RUNNERS = Workers("runner")
# A pass runs on every wake-up (a submit, a job's end, a cancel); without one, at least this
# often, for time limits and housekeeping.
_IDLE_PASS_SECONDS = 1.0
_HOUSEKEEPING_SECONDS = 5.0
# While nothing can start, the reasons jobs wait are worked out again at most this often; a job
# queued since (which has no reason yet) gets one sooner, as planning's cost allows.
_REASONS_REFRESH_SECONDS = 2.0
# Planning, while nothing can start, takes at most this share of the scheduler's time.
_PLANNING_SHARE = 1 / 20
TEST_HOOK_WEDGE_ENV = "HATRAIN_TEST_HOOK_WEDGE_SUPERVISOR"
# Below the high watermark, retention sweeps at least this often.
_PRESSED_SWEEP_SECONDS = 60.0


@dataclass(frozen=True)
class CancelOutcome:
    """What a cancel request did: the job as it is now, and one line saying so."""

    job: Job
    message: str


def _running(job: Job) -> RunningJob:
    limit = job.spec.time_limit_seconds
    return RunningJob(
        job.id,
        job.user,
        job.gpu_uuids,
        ends_by=job.started_at + limit if limit else None,
        team=job.spec.team,
        started_at=job.started_at or None,
    )


class Supervisor:
    def __init__(
        self,
        store: Store,
        runtime: Runtime,
        workspace: Workspace,
        gpus: list[GpuSlot],
        policy: Policy,
        grace_seconds: float,
        *,
        reserve: DiskReserve | None = None,
        objects: ObjectStore | None = None,
        staging_max_age_seconds: float = 86400.0,
        watermarks: Watermarks | None = None,
        sweeper: Sweeper | None = None,
        sweep_interval_seconds: float = 3600.0,
        heartbeat: Callable[[], None] | None = None,
        max_idle_seconds: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """heartbeat: called after every pass of the loop (the watchdog's keepalive); the loop
        passes at least every max_idle_seconds, busy or idle. clock: the wall clock that time
        limits and reservations are judged by."""
        self.store = store
        self.runtime = runtime
        self.workspace = workspace
        self.gpus = gpus
        self.policy = policy
        self.grace_seconds = grace_seconds
        self.reserve = reserve or DiskReserve(workspace.root)
        self.objects = objects
        self.staging_max_age_seconds = staging_max_age_seconds
        self.clock = clock
        self.watermarks = watermarks
        self.sweeper = sweeper
        self.sweep_interval_seconds = sweep_interval_seconds
        self._last_sweep = time.monotonic()
        self._sweeping: threading.Thread | None = None
        self.heartbeat = heartbeat
        self.max_idle_seconds = min(max_idle_seconds, 1.0)
        self._wedge_file = os.environ.get(TEST_HOOK_WEDGE_ENV, "")
        self._gate = StartGate()
        self._runner = JobRunner(store, runtime, workspace, self.reserve, grace_seconds, self._gate)
        self._controls: dict[str, RunControl] = {}
        self._runners: set[str] = set()  # jobs whose runner is running
        self._last_housekeeping = 0.0
        self.usage = UsageBook(policy.usage_half_life_seconds)
        # Why each queued job waits, as of the last scheduling pass.
        self._waiting: dict[str, Waiting] = {}
        self._waiting_at = -_REASONS_REFRESH_SECONDS
        self._plan_seconds = 0.0
        # When the reasons are next due, if a pass was spared before they were.
        self._refresh_due: float | None = None
        # The job the last pass reserved GPUs for: it keeps them until it starts.
        self._reserved: str | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.reserve.take()
        for job in reconcile(self.store, self.runtime):
            self._spawn(job)
        self._thread = threading.Thread(target=self._loop, name="scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop scheduling. Running containers keep running; the next start re-attaches."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def wake(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        self._wake.set()  # a first pass at once, for jobs queued while the agent was down
        while not self._stopping.is_set():
            self._wake.wait(timeout=min(self._next_pass_in(), self.max_idle_seconds))
            # Cleared before the pass: whatever happens during it wakes the next one, and a
            # burst of wake-ups meanwhile makes one pass, not one each.
            self._wake.clear()
            if self._stopping.is_set():
                return
            try:
                self.schedule_once()
                self.enforce_time_limits()
                self._housekeeping()
            except Exception:
                log.exception("scheduling pass failed")
            self._test_hook_wedge()
            if self.heartbeat is not None:
                self.heartbeat()

    def _next_pass_in(self) -> float:
        """Seconds until a pass is due with no wake-up: the idle interval, or sooner when a
        spared pass left reasons to work out."""
        due = self._refresh_due
        if due is None:
            return _IDLE_PASS_SECONDS
        return max(0.0, min(_IDLE_PASS_SECONDS, due - time.monotonic()))

    def _test_hook_wedge(self) -> None:
        """Test hook: while the file named by $HATRAIN_TEST_HOOK_WEDGE_SUPERVISOR exists, the
        loop is stuck here, as a wedged pass would be (the watchdog test stops it on purpose)."""
        if not self._wedge_file:
            return
        while os.path.exists(self._wedge_file) and not self._stopping.is_set():
            time.sleep(0.05)

    def schedule_once(self) -> None:
        with self._lock:
            now = self.clock()
            self._refresh_due = None
            needs = self.store.queued_by_gpus()
            if not needs:
                self._waiting = {}
                return
            active = self.store.jobs_in(RUNNING)
            busy = {u for j in active for u in j.gpu_uuids}
            cpu_jobs = sum(1 for j in active if not j.gpu_uuids)
            free = sum(1 for g in self.gpus if g.uuid not in busy)
            could_start = any(0 < n <= free for n in needs) or (
                0 in needs and cpu_jobs < self.policy.max_cpu_jobs
            )
            if not could_start:
                # Every queued job has its reason (none queued or gone since the last plan)?
                covered = len(self._waiting) == sum(needs.values())
                due = self._waiting_at + max(
                    _REASONS_REFRESH_SECONDS if covered else 0.0,
                    self._plan_seconds / _PLANNING_SHARE,
                )
                if time.monotonic() < due:
                    self._refresh_due = due
                    return  # nothing queued could start: spare reading the whole queue
            began = time.monotonic()
            queued = self.store.queued_for_planner()
            if not queued:
                self._waiting = {}
                return
            self.usage.add(self.store.usage_after(self.usage.last_seen), now)
            hold = self.watermarks.start_hold() if self.watermarks is not None else ""
            result = plan(
                queued,
                [_running(j) for j in active],
                [Host("", tuple(self.gpus), hold)],
                self.policy,
                self.usage.at(now),
                now,
                self._reserved,
            )
            self._waiting, self._waiting_at = result.waiting, time.monotonic()
            self._plan_seconds = self._waiting_at - began
            self._reserved = result.reserved
            if not result.placements:
                return
            placed = self.store.place([(p.job_id, p.gpu_uuids) for p in result.placements])
            for job in placed:
                self._spawn(job, placed=True)
            for job in placed:
                log.info("job placed", job_id=job.id, gpus=list(job.gpu_uuids))

    def start_placed(self, gpu_uuids: Sequence[str], adopt: Callable[[], Job]) -> Job | None:
        """Start a job placed on this host from elsewhere (the team queue): adopt() records it
        here, started on gpu_uuids. None, and nothing recorded, if those GPUs (or, for a job
        without GPUs, every CPU job slot) were taken here meanwhile."""
        with self._lock:
            active = self.store.jobs_in(RUNNING)
            busy = {u for j in active for u in j.gpu_uuids}
            cpu_jobs = sum(1 for j in active if not j.gpu_uuids)
            if busy & set(gpu_uuids) or (not gpu_uuids and cpu_jobs >= self.policy.max_cpu_jobs):
                return None
            job = adopt()
            self._spawn(job, placed=True)
            return job

    def waiting(self, job_id: str) -> Waiting | None:
        """Why a queued job waits, as of the last scheduling pass (None: not known yet)."""
        return self._waiting.get(job_id)

    def _spawn(self, job: Job, *, placed: bool = False) -> None:
        """Run the job's runner. placed: the job starts now (not found again after a restart):
        it launches with the others placed, and runners of other jobs put off their steps'
        bookkeeping until it has started."""
        control = RunControl(job.id, fresh=placed)
        if placed:
            self._gate.placed()
            control.on_prepared = self._gate.prepared
            control.on_started = self._gate.started
        self._controls[job.id] = control

        def run() -> None:
            try:
                self._runner.run(job, control)
            finally:
                self._controls.pop(job.id, None)
                self._runners.discard(job.id)
                self.wake()

        self._runners.add(job.id)
        try:
            RUNNERS.run(f"job-{job.id}", run)
        except BaseException:
            control.prepared()  # no runner will: the gate must not wait for it
            control.started()
            self._controls.pop(job.id, None)
            self._runners.discard(job.id)
            raise

    def enforce_time_limits(self) -> None:
        """Ask every running job past its time limit to stop (each pass does this)."""
        for job_id in self.store.past_time_limit(self.clock()):
            self.store.request_stop(job_id, StopReason.TIMEOUT)
            self._stop(job_id, StopReason.TIMEOUT)

    def _housekeeping(self) -> None:
        now = time.monotonic()
        if now - self._last_housekeeping < _HOUSEKEEPING_SECONDS:
            return
        self._last_housekeeping = now
        self.resume_orphans()
        self.drop_ended_secrets()
        self.reserve.take()
        if self.objects is not None:
            self.objects.remove_stale_staging(self.staging_max_age_seconds)
        self._sweep_when_due(now)

    def _sweep_when_due(self, now: float) -> None:
        if self.sweeper is None or (self._sweeping is not None and self._sweeping.is_alive()):
            return
        pressed = self.watermarks is not None and self.watermarks.below_high()
        interval = (
            min(_PRESSED_SWEEP_SECONDS, self.sweep_interval_seconds)
            if pressed
            else (self.sweep_interval_seconds)
        )
        if now - self._last_sweep < interval:
            return
        self._last_sweep = now
        sweeper = self.sweeper

        def run() -> None:
            try:
                sweeper.sweep()
            except Exception:
                log.exception("retention sweep failed")
            self.wake()  # room may have been made for a job held by the low watermark

        self._sweeping = threading.Thread(target=run, name="retention-sweep", daemon=True)
        self._sweeping.start()

    def drop_ended_secrets(self) -> None:
        """Secrets go when their job ends, however it ends (a path that did not drop them, a
        crash in between): whatever is left of an ended or unknown job's is removed."""
        for job_id in self.workspace.jobs_with_secrets():
            try:
                ended = self.store.get(job_id).state.terminal
            except NotFound:
                ended = True
            if ended:
                self.workspace.drop_secrets(job_id)

    def resume_orphans(self) -> list[str]:
        """Resume running jobs whose runner thread is gone without having ended them (the
        thread died): they are re-attached as after a restart. Returns their ids."""
        resumed = []
        with self._lock:
            for job in self.store.jobs_in(RUNNING):
                if job.id in self._runners:
                    continue
                current = self.store.get(job.id)  # it may have ended since the listing
                if current.state.terminal:
                    continue
                log.warning("running job has no runner; resuming it", job_id=job.id)
                self._spawn(current)
                resumed.append(job.id)
        return resumed

    def _stop(self, job_id: str, reason: StopReason) -> None:
        control = self._controls.get(job_id)
        if control is None:
            return  # its runner reads the stored reason when it starts
        with control.lock:
            if control.stop_reason:
                return
            control.stop_reason = reason
            handle = control.handle
        if handle is not None:
            threading.Thread(
                target=self.runtime.stop, args=(handle, self.grace_seconds), daemon=True
            ).start()

    def cancel(self, job_id: str) -> CancelOutcome:
        """Cancel a queued job at once, or ask a running one to stop. The request is stored
        before anything is signalled, so the job ends cancelled whatever happens next. (Who
        may cancel is the service's to check.)"""
        with self._lock:
            job = self.store.get(job_id)
            if job.state == JobState.QUEUED:
                job = self.store.transition(job_id, JobState.CANCELLED, hint="cancelled")
                self.workspace.drop_secrets(job_id)
                return CancelOutcome(job, "cancelled while queued; it never ran")
            if job.state.terminal:
                return CancelOutcome(job, f"not cancelled: it had already {job.state.value}")
            job = self.store.request_stop(job_id, StopReason.CANCEL)
        self._stop(job_id, StopReason.CANCEL)
        return CancelOutcome(
            job,
            f"cancel requested: stopping it (SIGTERM, then SIGKILL after {self.grace_seconds:g} s)",
        )
