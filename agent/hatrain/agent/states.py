"""The job state machine: states, the allowed (monotone) transitions and typed failure reasons."""

from enum import StrEnum

from hatrain.rpc.contract import RUNNING_STATES as RUNNING
from hatrain.rpc.contract import TERMINAL_STATES as TERMINAL
from hatrain.rpc.contract import JobState

__all__ = ["RUNNING", "TERMINAL", "FailureReason", "JobState", "StopReason", "can_transition"]
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
    NO_ACCOUNT = "no account"
    EXIT_CODE = "exit code"


class StopReason(StrEnum):
    """Why a running job was asked to stop; kept with the job, so that it ends as asked even
    across an agent restart or a step killed during its grace period."""

    CANCEL = "cancel"
    TIMEOUT = "timeout"
