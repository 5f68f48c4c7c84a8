"""What the agent knows of a job: its spec (as submitted) and its current record."""

__all__ = ["Job", "JobFile", "JobSpec"]

from dataclasses import dataclass, field
from typing import Any

from hatrain.rpc.spec import JobFile, JobSpec

from .events import Progress
from .states import JobState


@dataclass(frozen=True)
class Job:
    id: str
    spec: JobSpec
    user: str
    state: JobState
    created_at: float
    failure_reason: str = ""
    hint: str = ""
    exit_code: int | None = None
    gpu_uuids: tuple[str, ...] = ()
    started_at: float = 0.0
    finished_at: float = 0.0
    progress: Progress | None = None
    last_metrics: dict[str, float] = field(default_factory=dict)
    last_seq: int = 0
    secret_names: tuple[str, ...] = ()
    # What the runtime needs to find the job's processes again after a restart.
    runtime: dict[str, Any] = field(default_factory=dict)
    queue_position: int = 0
    # Why the job was asked to stop while running ("cancel" or "timeout"); empty if it was not.
    stop_reason: str = ""
