"""What every job becomes when the agent starts again (after a crash, SIGKILL or an upgrade)."""

from dataclasses import replace

import structlog

from .errors import NotFound
from .jobs import Job
from .runner import STEP_OF_STATE
from .runtime import Runtime
from .states import RUNNING, FailureReason, JobState
from .store import Store

log = structlog.get_logger(__name__)


def reconcile(store: Store, runtime: Runtime) -> list[Job]:
    """Reconcile the queue with the runtime; returns the jobs whose runners must resume.

    - QUEUED: stays queued; the scheduler places it as usual.
    - STARTING: its runner starts again from preparing the image. A first step that was
      started but not recorded yet (a step's state and handle are written once it runs) is
      found by the runtime and re-attached to, not started again.
    - PREPROCESSING / TRAINING: the step's container (or process) is looked up by its recorded
      handle or its labels. Running: re-attached, logs continue from the stored cursor (no gap, no
      duplicate). Exited: the rest of its output is read and its real exit code decides. Never
      started: started now. Recorded but gone: FAILED with reason `container lost`.
    - A running job that was asked to stop before the restart (a cancel or its time limit, kept
      in `stop_reason`) resumes as above and is stopped again; whatever its step's exit code
      (a SIGKILL during the grace period included), it ends CANCELLED, or FAILED with reason
      `timeout`. One whose step is gone ends the same way, not as `container lost`.
    - SUCCEEDED / FAILED / CANCELLED: final; containers of theirs that a crash left behind are
      removed (only of this agent's own jobs: other agents may share the Docker engine).
    """
    for job_id, leftover in list(runtime.leftovers()):
        try:
            finished = store.get(job_id).state.terminal
        except NotFound:
            continue
        if finished:
            log.info("removing a finished job's leftover step", job_id=job_id)
            runtime.remove(leftover)
    resume: list[Job] = []
    for job in store.jobs_in(RUNNING):
        if job.state == JobState.STARTING:
            resume.append(job)
            continue
        step = STEP_OF_STATE[job.state]
        record = job.step(step)
        if record.end is not None:
            resume.append(job)
            continue
        handle = record.handle or runtime.find(job, step)
        if handle is None:
            resume.append(job)
            continue
        if runtime.probe(handle) == "missing":
            if job.stop_reason:
                resume.append(job)  # its runner ends it as asked: the step is gone already
                continue
            log.warning("container lost", job_id=job.id, step=step)
            store.transition(
                job.id,
                JobState.FAILED,
                reason=FailureReason.CONTAINER_LOST,
                hint=f"the {step} container disappeared while the agent was down",
            )
            continue
        if record.handle is None:
            store.update_step(job.id, replace(record, handle=handle))
        resume.append(store.get(job.id))
    return resume
