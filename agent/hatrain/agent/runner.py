"""One job's life after the scheduler starts it: prepare, preprocess, train, and the verdict."""

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import structlog

from .events import Event, EventKind, Progress
from .jobs import Job
from .output_parser import PREPROCESS_SUCCESS, OutputParser, models_of
from .runtime import STEPS, ExitStatus, Handle, Runtime, RuntimeFailure
from .states import FailureReason, JobState
from .store import Store
from .workspace import Workspace

log = structlog.get_logger(__name__)

STATE_OF_STEP = {"preprocess": JobState.PREPROCESSING, "train": JobState.TRAINING}
STEP_OF_STATE = {state: step for step, state in STATE_OF_STEP.items()}
_FLUSH_LINES = 8192  # a LOG event holds a run of lines: count lines, not events
_FLUSH_SECONDS = 0.02
_DONE = object()


@dataclass
class RunControl:
    """Shared between a job's runner and the supervisor (which may ask it to stop)."""

    job_id: str
    stop_reason: str = ""  # "cancel" or "timeout"
    handle: Handle | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass(frozen=True)
class Verdict:
    state: JobState
    reason: str = ""
    hint: str = ""
    exit_code: int | None = None


def classify(step: str, status: ExitStatus, parser: OutputParser) -> tuple[FailureReason, str]:
    if parser.failure is not None:
        return parser.failure
    if status.oom_killed:
        return FailureReason.HOST_OUT_OF_MEMORY, (
            "the kernel's out-of-memory killer stopped the container: the host ran out of RAM"
        )
    if status.code == 137:
        return FailureReason.HOST_OUT_OF_MEMORY, (
            "killed by SIGKILL (exit 137), most often the host's out-of-memory killer"
        )
    return FailureReason.EXIT_CODE, (
        parser.last_error_line or f"axolotl {step} exited with code {status.code}"
    )


class JobRunner:
    def __init__(self, store: Store, runtime: Runtime, workspace: Workspace) -> None:
        self.store = store
        self.runtime = runtime
        self.workspace = workspace

    def run(self, job: Job, control: RunControl) -> None:
        handles: list[Handle] = []
        try:
            verdict = self._run(job, control, handles)
        except RuntimeFailure as failure:
            verdict = Verdict(JobState.FAILED, failure.reason, failure.hint)
        except Exception as exc:  # a bug or an unexpected runtime error must not strand the job
            log.exception("runner failed", job_id=job.id)
            verdict = Verdict(JobState.FAILED, FailureReason.RUNTIME_ERROR, f"agent: {exc}")
        # Clean up first, so that whoever sees the terminal state sees no leftovers.
        for handle in handles:
            try:
                self.runtime.remove(handle)
            except Exception:
                log.warning("could not remove a finished step", job_id=job.id, exc_info=True)
        self.workspace.drop_secrets(job.id)
        if not self.store.get(job.id).state.terminal:
            self.store.transition(
                job.id,
                verdict.state,
                reason=verdict.reason,
                hint=verdict.hint,
                exit_code=verdict.exit_code,
            )

    @staticmethod
    def _stopped(control: RunControl, exit_code: int | None) -> "Verdict | None":
        if control.stop_reason == "cancel":
            return Verdict(JobState.CANCELLED, hint="cancelled", exit_code=exit_code)
        if control.stop_reason == "timeout":
            return Verdict(
                JobState.FAILED, FailureReason.TIMEOUT, "the job ran past its time limit", exit_code
            )
        return None

    def _run(self, job: Job, control: RunControl, handles: list[Handle]) -> "Verdict":
        if job.state == JobState.STARTING:
            self.runtime.prepare(job, self._pull_progress(job.id))
        dirs = self.workspace.materialize(job)
        for step in STEPS:
            if stopped := self._stopped(control, None):
                return stopped
            job = self.store.get(job.id)
            info: dict[str, Any] = dict(job.runtime.get(step, {}))
            if "exit_code" not in info:
                if (
                    job.state in (JobState.STARTING, JobState.PREPROCESSING)
                    and STATE_OF_STEP[step] != job.state
                ):
                    job = self.store.transition(job.id, STATE_OF_STEP[step], step=step)
                handle = info.get("handle")
                if handle is None:
                    handle = self.runtime.start(job, step, dirs)
                    info["handle"] = handle
                    self.store.update_runtime(job.id, **{step: info})
                handles.append(handle)
                with control.lock:
                    control.handle = handle
                    if control.stop_reason:
                        self.runtime.stop(handle, 0)
                status, parser = self._follow(job, step, handle, info)
                info["exit_code"] = status.code
                info["oom_killed"] = status.oom_killed
                info["failure"] = list(parser.failure) if parser.failure else None
                info["last_error_line"] = parser.last_error_line
                info["preprocess_succeeded"] = parser.preprocess_succeeded
                self.store.update_runtime(job.id, **{step: info})
            else:
                handles.append(info["handle"])
            status = ExitStatus(info["exit_code"], info.get("oom_killed", False))
            if stopped := self._stopped(control, status.code):
                return stopped
            if status.code != 0:
                parser = OutputParser(step)
                failure = info.get("failure")
                parser.failure = (FailureReason(failure[0]), failure[1]) if failure else None
                parser.last_error_line = info.get("last_error_line", "")
                reason, hint = classify(step, status, parser)
                return Verdict(JobState.FAILED, reason, hint, status.code)
            if step == "preprocess" and not (
                info.get("preprocess_succeeded")
                or self.store.has_line(job.id, step, PREPROCESS_SUCCESS)
            ):
                return Verdict(
                    JobState.FAILED,
                    FailureReason.PREPROCESS_INCOMPLETE,
                    f"preprocess exited 0 but never printed '{PREPROCESS_SUCCESS}'",
                    0,
                )
        return Verdict(JobState.SUCCEEDED, exit_code=0)

    def _pull_progress(self, job_id: str) -> Any:
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
        self, job: Job, step: str, handle: Handle, info: dict[str, Any]
    ) -> tuple[ExitStatus, OutputParser]:
        """Stream the step's output into events until it ends; returns its exit status."""
        parser = OutputParser(
            step,
            train_total=info.get("train_total"),
            train_position=info.get("train_position", 0),
            models=models_of(job.spec.config_yaml),
        )
        chunks: queue.Queue[Any] = queue.Queue(maxsize=10_000)

        def read() -> None:
            try:
                for item in self.runtime.logs(handle, info.get("cursor")):
                    chunks.put(item)
            finally:
                chunks.put(_DONE)

        threading.Thread(target=read, name=f"logs-{job.id}-{step}", daemon=True).start()
        pending: list[Event] = []
        pending_lines = 0
        cursor = info.get("cursor")
        first_pending = 0.0
        done = False
        while not done:
            try:
                item = chunks.get(timeout=_FLUSH_SECONDS)
            except queue.Empty:
                item = None
            if item is _DONE:
                done = True
            elif item is not None:
                text, cursor = item
                new = parser.feed(text)
                if new and not pending:
                    first_pending = time.monotonic()
                pending += new
                pending_lines += sum(ev.line_count() for ev in new)
            due = pending and (
                pending_lines >= _FLUSH_LINES or time.monotonic() - first_pending >= _FLUSH_SECONDS
            )
            if done or due or (item is None and cursor != info.get("cursor")):
                if done:
                    pending += parser.flush()
                info["cursor"] = cursor
                info["train_total"] = parser.train_total
                info["train_position"] = parser.train_position
                self.store.append(job.id, pending, runtime={step: dict(info)})
                pending, pending_lines = [], 0
        return self.runtime.wait(handle), parser
