"""The agent's exception tree. The gRPC boundary (service.py) maps each class to one status code.

HatrainError
├── InvalidArgument      bad input: names the field and what was expected; nothing was changed
├── NotFound             unknown job or object
├── Unauthenticated      the call did not come through the agent's socket
├── PermissionDenied     acting on somebody else's job
├── FailedPrecondition   the request is valid but the job's state does not allow it
├── ResourceExhausted    over a size limit
│   └── StorageFault     the data root cannot take a write (disk full, I/O error, read-only)
└── Unavailable          a service the call needs (the team database) did not answer in time

A refusal of one job of a batch (SubmitJobs) names it: `jobs[3].spec.gpus: ...` (in_batch).
"""

import contextlib
from collections.abc import Iterator


class HatrainError(Exception):
    """Base of every error the agent reports to a client."""


class InvalidArgument(HatrainError):
    def __init__(self, field: str, expected: str) -> None:
        super().__init__(f"{field}: {expected}")
        self.field = field


class NotFound(HatrainError):
    pass


class Unauthenticated(HatrainError):
    pass


class PermissionDenied(HatrainError):
    pass


class FailedPrecondition(HatrainError):
    pass


class ResourceExhausted(HatrainError):
    pass


class StorageFault(ResourceExhausted):
    """The data root refused a write. Nothing of the request was kept."""

    def __init__(self, message: str, *, full: bool = True) -> None:
        super().__init__(message)
        self.full = full


class Unavailable(HatrainError):
    pass


@contextlib.contextmanager
def in_batch(index: int) -> Iterator[None]:
    """An error raised inside is about the batch's job `index`, and says so."""
    try:
        yield
    except HatrainError as exc:
        joint = "." if isinstance(exc, InvalidArgument) else ": "
        exc.args = (f"jobs[{index}]{joint}{exc}", *exc.args[1:])
        if isinstance(exc, InvalidArgument):
            exc.field = f"jobs[{index}].{exc.field}"
        raise


class ConfigError(Exception):
    """agent.yml is invalid; the message names the field."""
