"""The job state machine: states, the allowed (monotone) transitions and typed failure reasons."""

from enum import StrEnum


class JobState(StrEnum):
    QUEUED = "queued"
    STARTING = "starting"
    PREPROCESSING = "preprocessing"
    TRAINING = "training"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL

    @property
    def running(self) -> bool:
        return self in RUNNING


TERMINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
RUNNING = frozenset({JobState.STARTING, JobState.PREPROCESSING, JobState.TRAINING})
_RANK = {
    JobState.QUEUED: 0,
    JobState.STARTING: 1,
    JobState.PREPROCESSING: 2,
    JobState.TRAINING: 3,
}


def can_transition(old: JobState, new: JobState) -> bool:
    """Transitions only move forward; a terminal state is final."""
    if old.terminal:
        return False
    if new.terminal:
        return True
    return _RANK[new] > _RANK[old]


class FailureReason(StrEnum):
    GPU_OUT_OF_MEMORY = "gpu out of memory"
    HOST_OUT_OF_MEMORY = "host out of memory"
    BAD_CONFIG = "bad config"
    DATASET_ERROR = "dataset error"
    GATED_MODEL = "gated model or token"
    MODEL_UNAVAILABLE = "model unavailable"
    IMAGE_PULL_FAILED = "image pull failed"
    CONTAINER_LOST = "container lost"
    TIMEOUT = "timeout"
    NCCL_TIMEOUT = "nccl timeout"
    SHARED_MEMORY = "shared memory"
    PREPROCESS_INCOMPLETE = "preprocess incomplete"
    GPU_UNAVAILABLE = "gpu unavailable"
    DISK_FULL = "disk full"
    STORAGE_ERROR = "storage error"
    RUNTIME_ERROR = "runtime error"
    EXIT_CODE = "exit code"
