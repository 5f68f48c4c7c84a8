"""What the agent and the client must agree on besides the messages of agent.proto.

The two sides share nothing else: each imports this package (`hatrain.rpc`) and never the
other's modules.
"""

from enum import StrEnum
from typing import cast

from hatrain.rpc.v1 import agent_pb2 as pb

WIRE_VERSION = "v1"
# The caller's SSH login, as the client's connection presents it (gRPC metadata).
USER_METADATA = "x-hatrain-user"

# Where a job's files are in its container (the seed's `docker run` mounts).
CONFIGS = "/workspace/configs"
DATASETS = "/workspace/data/datasets"
RUNS = "/workspace/data/training-runs"
HF_CACHE = "/workspace/data/huggingface-cache"
SECRETS = "/run/hatrain/secrets"
# Custom dataset `type:` modules, uploaded beside the datasets; on the job's PYTHONPATH.
PYTHON_MODULES_DIR = "python"
PYTHON_MODULES = f"{DATASETS}/{PYTHON_MODULES_DIR}"


class JobState(StrEnum):
    """A job's state, as users write it. It only moves forward: queued → starting →
    preprocessing → training → succeeded | failed | cancelled."""

    QUEUED = "queued"
    STARTING = "starting"
    PREPROCESSING = "preprocessing"
    TRAINING = "training"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES

    @property
    def running(self) -> bool:
        return self in RUNNING_STATES

    def to_wire(self) -> "pb.JobState":
        return cast("pb.JobState", pb.JobState.Value(f"JOB_STATE_{self.name}"))

    @classmethod
    def from_wire(cls, value: int) -> "JobState":
        return cls[pb.JobState.Name(value).removeprefix("JOB_STATE_")]

    @classmethod
    def parse(cls, text: str) -> "JobState":
        """The state a user wrote; ValueError naming the choices."""
        try:
            return cls(text.lower())
        except ValueError:
            names = ", ".join(s.value for s in cls)
            raise ValueError(f"state {text!r}: expected one of {names}") from None


TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
RUNNING_STATES = frozenset({JobState.STARTING, JobState.PREPROCESSING, JobState.TRAINING})
ACTIVE_STATES = (JobState.QUEUED, JobState.STARTING, JobState.PREPROCESSING, JobState.TRAINING)


def gpu_accepts(
    gpu_name: str, gpu_memory_mb: int, min_gpu_memory_mb: int = 0, gpu_type: str = ""
) -> bool:
    """Whether a GPU meets a job's request: at least its memory, and its type (a substring of
    the GPU's name, any case)."""
    if min_gpu_memory_mb and gpu_memory_mb < min_gpu_memory_mb:
        return False
    return not gpu_type or gpu_type.lower() in gpu_name.lower()


def last_seq(event: pb.Event) -> int:
    """The seq of the last line a wire event carries: its own, or, for a run of log lines sent
    packed (`lines`, the first at the event's seq), its last line's."""
    return int(event.seq) + max(len(event.lines) - 1, 0)
