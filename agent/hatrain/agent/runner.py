"""One job's life after the scheduler starts it: prepare, preprocess, train, and the verdict."""

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import structlog

from .disk import DiskReserve, storage_fault
from .errors import StorageFault
from .events import Event, EventKind, Progress
from .jobs import Job
from .output_parser import PREPROCESS_SUCCESS, OutputParser
from .runtime import STEPS, ExitStatus, Handle, LogCursor, Runtime, RuntimeFailure
from .start_gate import StartGate
from .states import FailureReason, JobState, StopReason
from .steps import StepEnd, StepRecord
from .store import Store
from .workers import Workers
from .workspace import Workspace

log = structlog.get_logger(__name__)
READERS = Workers("reader")

STATE_OF_STEP = {"preprocess": JobState.PREPROCESSING, "train": JobState.TRAINING}
STEP_OF_STATE = {state: step for step, state in STATE_OF_STEP.items()}
_FLUSH_LINES = 8192  # a LOG event holds a run of lines: count lines, not events
_FLUSH_SECONDS = 0.02  # the longest output waits to be stored while more keeps coming
# Output is stored as soon as nothing more has been read, but not sooner than this after the
# last store: a watcher sees a line within about this long, and each store (a commit, and a
# page sent to each watcher) costs the agent about a millisecond, so a step printing without
# pause costs at most a hundred of them a second.
_STORE_GAP_SECONDS = 0.01
_SETTLE_FIRST_DELAY = 0.1
_SETTLE_MAX_DELAY = 5.0
_DONE = object()


@dataclass
class RunControl:
    """Shared between a job's runner and the supervisor (which may ask it to stop)."""

    job_id: str
    stop_reason: StopReason | None = None
    handle: Handle | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Called once, when the job's first step is ready to launch (or its runner ends before).
    on_prepared: Callable[[], None] | None = None
    # Called once, when the job's first process has started (or its runner ends without one).
    on_started: Callable[[], None] | None = None
    # Placed just now: none of its steps can have started before (no restart in between), so
    # there is nothing of it for the runtime to find.
    fresh: bool = False

    def prepared(self) -> bool:
        """Report the job ready to launch; whether this call was the one that did."""
        call, self.on_prepared = self.on_prepared, None
        if call is not None:
            call()
        return call is not None

    def started(self) -> None:
        call, self.on_started = self.on_started, None
        if call is not None:
            call()


@dataclass(frozen=True)
class Verdict:
    state: JobState
    reason: str = ""
    hint: str = ""
    exit_code: int | None = None


def classify(step: str, end: StepEnd) -> tuple[FailureReason, str]:
    """Why a step that exited with an error failed, and the hint the user gets."""
    if end.failure is not None:
        return end.failure
    if end.oom_killed:
        return FailureReason.HOST_OUT_OF_MEMORY, (
            "the kernel's out-of-memory killer stopped the container: the host ran out of RAM"
        )
    if end.exit_code == 137:
        return FailureReason.HOST_OUT_OF_MEMORY, (
            "killed by SIGKILL (exit 137), most often the host's out-of-memory killer"
        )
    return FailureReason.EXIT_CODE, (
        end.last_error_line or f"axolotl {step} exited with code {end.exit_code}"
    )


def step_end(status: ExitStatus, parser: OutputParser) -> StepEnd:
    return StepEnd(
        exit_code=status.code,
        oom_killed=status.oom_killed,
        failure=parser.failure,
        last_error_line=parser.last_error_line,
        preprocess_succeeded=parser.preprocess_succeeded,
    )


class _StepOutputLost(Exception):
    """The store refused a step's output: the step was stopped, since it could not be
    recorded."""

    def __init__(self, fault: StorageFault) -> None:
        super().__init__(str(fault))
        self.fault = fault


class JobRunner:
    def __init__(
        self,
        store: Store,
        runtime: Runtime,
        workspace: Workspace,
        reserve: DiskReserve,
        grace_seconds: float,
        gate: StartGate | None = None,
    ) -> None:
        self.store = store
        self.runtime = runtime
        self.workspace = workspace
        self.reserve = reserve
        self.grace_seconds = grace_seconds
        self.gate = gate or StartGate()

    def run(self, job: Job, control: RunControl) -> None:
        """Run the job to its end and record the verdict; never leaves it without one."""
        handles: list[Handle] = []
        try:
            try:
                verdict = self._run(job, control, handles)
            finally:
                control.prepared()
                control.started()
        except RuntimeFailure as failure:
            # A step that was asked to stop may vanish on the way (killed, removed): it ends
            # as asked, not as a failure.
            verdict = self._stopped(control, None) or Verdict(
                JobState.FAILED, failure.reason, failure.hint
            )
        except _StepOutputLost as lost:
            verdict = self._storage_verdict(lost.fault, control)
        except Exception as exc:  # a bug or an unexpected runtime error must not strand the job
            fault = storage_fault(exc, self.workspace.root)
            if fault is not None:
                verdict = self._storage_verdict(fault, control)
            else:
                log.exception("runner failed", job_id=job.id)
                verdict = Verdict(JobState.FAILED, FailureReason.RUNTIME_ERROR, f"agent: {exc}")
        # Clean up first, so that whoever sees the terminal state sees no leftovers.
        for handle in handles:
            try:
                self.runtime.remove(handle)
            except Exception:
                log.warning("could not remove a finished step", job_id=job.id, exc_info=True)
        self.workspace.drop_secrets(job.id)
        self._settle(job.id, verdict)

    def _storage_verdict(self, fault: StorageFault, control: RunControl) -> Verdict:
        if fault.full:
            self.reserve.release()  # room for the writes that end this job and the others
        if stopped := self._stopped(control, None):
            return stopped
        reason = FailureReason.DISK_FULL if fault.full else FailureReason.STORAGE_ERROR
        return Verdict(JobState.FAILED, reason, str(fault))

    def _settle(self, job_id: str, verdict: Verdict) -> None:
        """Record the verdict, retrying with backoff while the store cannot take the write."""
        delay = _SETTLE_FIRST_DELAY
        while True:
            try:
                if not self.store.get(job_id).state.terminal:
                    self.store.transition(
                        job_id,
                        verdict.state,
                        reason=verdict.reason,
                        hint=verdict.hint,
                        exit_code=verdict.exit_code,
                    )
                return
            except StorageFault as fault:
                if fault.full:
                    self.reserve.release()
                log.warning(
                    "cannot record how the job ended yet; retrying",
                    job_id=job_id,
                    state=verdict.state.value,
                    error=str(fault),
                    retry_in=delay,
                )
            time.sleep(delay)
            delay = min(delay * 2, _SETTLE_MAX_DELAY)

    @staticmethod
    def _stopped(control: RunControl, exit_code: int | None) -> "Verdict | None":
        if control.stop_reason is StopReason.CANCEL:
            return Verdict(JobState.CANCELLED, hint="cancelled", exit_code=exit_code)
        if control.stop_reason is StopReason.TIMEOUT:
            return Verdict(
                JobState.FAILED, FailureReason.TIMEOUT, "the job ran past its time limit", exit_code
            )
        return None

    def _run(self, job: Job, control: RunControl, handles: list[Handle]) -> "Verdict":
        job = self.store.get(job.id)
        if job.state.terminal:
            return Verdict(job.state, job.failure_reason, job.hint, job.exit_code)
        with control.lock:
            control.stop_reason = control.stop_reason or job.stop_reason
        if job.state == JobState.STARTING and not control.stop_reason:
            self.runtime.prepare(job, self._pull_progress(job.id))
        dirs = self.workspace.materialize(job)
        for step in STEPS:
            job = self.store.get(job.id)
            record = job.step(step)
            if record.end is None:
                handle = record.handle
                entering = (
                    STATE_OF_STEP[step]
                    if job.state in (JobState.STARTING, JobState.PREPROCESSING)
                    and STATE_OF_STEP[step] != job.state
                    else None
                )
                if handle is None and not control.fresh:
                    # Started before the agent stopped, and not recorded yet: re-attached to,
                    # never started twice.
                    handle = self.runtime.find(job, step)
                if handle is None:
                    # Asked to stop: a step not started yet is not started. One that is
                    # (found again after a restart) is stopped below and its end collected.
                    if stopped := self._stopped(control, None):
                        return stopped
                    handle = self.runtime.start(
                        job, step, dirs, ready=lambda: self._launch_together(control)
                    )
                    control.started()
                if record.handle is None:
                    # The step's state and its handle are written once it runs, in one
                    # transaction: no start waits for the store's other writers.
                    record = replace(record, handle=handle)
                    job = self.store.record_start(job.id, record, entering)
                handles.append(handle)
                with control.lock:
                    control.handle = handle
                    stop_now = bool(control.stop_reason)
                if stop_now:  # asked to stop before the step could be signalled
                    self.runtime.stop(handle, self.grace_seconds)
                status, parser, record = self._follow(job, handle, record)
                self.gate.wait_for_starts()
                end = step_end(status, parser)
                self.store.update_step(job.id, replace(record, end=end))
            else:
                end = record.end
                if record.handle is not None:
                    handles.append(record.handle)
            if end.exit_code == 0 and step != STEPS[-1]:
                pass  # the next step answers a stop request, with its own exit code
            elif stopped := self._stopped(control, end.exit_code):
                return stopped
            if end.exit_code != 0:
                reason, hint = classify(step, end)
                return Verdict(JobState.FAILED, reason, hint, end.exit_code)
            if step == "preprocess" and not (
                end.preprocess_succeeded or self.store.has_line(job.id, step, PREPROCESS_SUCCESS)
            ):
                return Verdict(
                    JobState.FAILED,
                    FailureReason.PREPROCESS_INCOMPLETE,
                    f"preprocess exited 0 but never printed '{PREPROCESS_SUCCESS}'",
                    0,
                )
        return Verdict(JobState.SUCCEEDED, exit_code=0)

    def _launch_together(self, control: RunControl) -> None:
        """The step is ready to launch: a job placed with others waits for theirs to be ready
        too, so that they start together (start_gate.py says why)."""
        if control.prepared():
            self.gate.wait_for_preparations()

    def _pull_progress(self, job_id: str) -> Callable[[Progress], None]:
        last = [0.0]

        def report(progress: Progress) -> None:
            now = time.monotonic()
            if now - last[0] >= 0.5 or progress.current == progress.total:
                last[0] = now
                self.store.append(
                    job_id, [Event(EventKind.PROGRESS, step="pull", progress=progress)]
                )

        return report

    def _follow(
        self, job: Job, handle: Handle, record: StepRecord
    ) -> tuple[ExitStatus, OutputParser, StepRecord]:
        """Stream the step's output into events until it ends; returns its exit status, the
        parser that read its output, and its record as last stored."""
        step = record.step
        parser = OutputParser(
            step,
            train_total=record.train_total,
            train_position=record.train_position,
            config_yaml=job.spec.config_yaml,
        )
        chunks: queue.Queue[tuple[str, LogCursor] | object] = queue.Queue(maxsize=10_000)

        def read() -> None:
            try:
                for item in self.runtime.logs(handle, record.cursor):
                    chunks.put(item)
            finally:
                chunks.put(_DONE)

        READERS.run(f"logs-{job.id}-{step}", read)
        lost: StorageFault | None = None
        pending: list[Event] = []
        pending_lines = 0
        cursor = record.cursor
        first_pending = last_store = 0.0
        done = False
        while not done:
            # Idle (nothing read and not stored yet), it sleeps until the step prints or ends.
            if pending:
                store_at = min(first_pending + _FLUSH_SECONDS, last_store + _STORE_GAP_SECONDS)
                wait: float | None = max(0.0, store_at - time.monotonic())
            else:
                wait = _FLUSH_SECONDS if cursor != record.cursor else None
            try:
                item = chunks.get(timeout=wait)
            except queue.Empty:
                item = None
            if item is _DONE:
                done = True
            elif isinstance(item, tuple):
                text, cursor = item
                new = parser.feed(text)
                if new and not pending:
                    first_pending = time.monotonic()
                pending += new
                pending_lines += sum(ev.line_count() for ev in new)
            now = time.monotonic()
            due = pending and (
                pending_lines >= _FLUSH_LINES
                or now - first_pending >= _FLUSH_SECONDS
                or (chunks.empty() and now - last_store >= _STORE_GAP_SECONDS)
            )
            if done or due or (item is None and cursor != record.cursor):
                last_store = now
                if done:
                    pending += parser.flush()
                record = replace(
                    record,
                    cursor=cursor,
                    train_total=parser.train_total,
                    train_position=parser.train_position,
                )
                if lost is None:
                    try:
                        self.store.append(job.id, pending, step=record)
                    except StorageFault as fault:
                        # Its output can no longer be recorded: stop the step, and read what
                        # is left of it without keeping it.
                        lost = fault
                        log.error(
                            "cannot record the step's output", job_id=job.id, error=str(fault)
                        )
                        self.runtime.stop(handle, 0)
                pending, pending_lines = [], 0
        if lost is not None:
            raise _StepOutputLost(lost)
        return self.runtime.wait(handle), parser, record
