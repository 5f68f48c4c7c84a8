"""What the agent knows of a job: its spec (as submitted) and its current record."""

from dataclasses import dataclass, field
from typing import Any

from .events import Progress
from .states import JobState


@dataclass(frozen=True)
class JobFile:
    """A file the job sees at /workspace/data/datasets/<path>, by content hash."""

    path: str
    sha256: str
    size: int


@dataclass(frozen=True)
class JobSpec:
    config_name: str
    config_yaml: str
    image: str
    name: str = ""
    files: tuple[JobFile, ...] = ()
    gpus: int = 0
    min_gpu_memory_mb: int = 0
    gpu_type: str = ""
    priority: int = 0
    time_limit_seconds: int = 0
    team: str = ""
    retry_of: str = ""

    def to_record(self) -> dict[str, Any]:
        rec = dict(self.__dict__)
        rec["files"] = [f.__dict__ for f in self.files]
        return rec

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> "JobSpec":
        rec = dict(rec)
        rec["files"] = tuple(JobFile(**f) for f in rec.get("files", ()))
        return cls(**rec)


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
