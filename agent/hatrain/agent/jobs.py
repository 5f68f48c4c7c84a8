"""What the agent knows of a job: its spec (as submitted) and its current record."""

__all__ = ["Job", "JobFile", "JobSpec", "TeamAttempt"]

from dataclasses import dataclass, field

from hatrain.rpc.spec import JobFile, JobSpec

from .events import Progress
from .states import JobState, StopReason
from .steps import StepRecord


@dataclass(frozen=True)
class TeamAttempt:
    """A job of the team queue that this host runs: which attempt of it (the team counts a
    claim as one), claimed under which of this host's epochs (see team/hosts.py)."""

    attempt: int
    epoch: int


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
    # Its steps so far, by name: what the runtime needs to reach them again after a restart, and
    # how each one ended.
    steps: dict[str, StepRecord] = field(default_factory=dict)
    queue_position: int = 0
    # Why the job was asked to stop while running; None if it was not.
    stop_reason: StopReason | None = None
    # Set for a job of the team queue that this host runs; None for its own queue's jobs.
    team_attempt: TeamAttempt | None = None

    def step(self, name: str) -> StepRecord:
        """The record of one of its steps; an empty one if the step never started."""
        return self.steps.get(name) or StepRecord(name)
