"""What the agent keeps of each step of a job: how to reach it again, how far its output was
read, and how it ended. Typed records; the store alone turns them into JSON and back."""

from dataclasses import dataclass

from .states import FailureReason

STEPS = ("preprocess", "train")


@dataclass(frozen=True)
class ContainerHandle:
    """A step run as a Docker container."""

    container: str  # the container's id
    name: str


@dataclass(frozen=True)
class ProcessHandle:
    """A step run as a process group on the host (the `local` runtime)."""

    pid: int
    # The process's start time in clock ticks, which tells the step from a later process that
    # reused its pid; None when it had ended before it could be read.
    start_time: str | None
    log: str  # the file its output is appended to
    exit: str  # the file its exit code is written to when it ends


Handle = ContainerHandle | ProcessHandle

# How far a step's output has been read: bytes of the log file (local), or bytes of stdout and
# of stderr (Docker, whose two streams reach the agent apart).
LogCursor = int | tuple[int, int]


@dataclass(frozen=True)
class ExitStatus:
    code: int
    oom_killed: bool = False


@dataclass(frozen=True)
class StepEnd:
    """How a step ended: its exit status and what its output said about it."""

    exit_code: int
    oom_killed: bool = False
    # A known failure recognised in the output, with its hint.
    failure: tuple[FailureReason, str] | None = None
    last_error_line: str = ""
    preprocess_succeeded: bool = False

    @property
    def status(self) -> ExitStatus:
        return ExitStatus(self.exit_code, self.oom_killed)


@dataclass(frozen=True)
class StepRecord:
    """One step of a job as the store keeps it: written when the step starts, as its output is
    read (in the same transaction as the events made of that output), and when it ends."""

    step: str
    handle: Handle | None = None
    cursor: LogCursor | None = None
    # The train bar's total and position so far, so that a resumed parser goes on from them.
    train_total: int | None = None
    train_position: int = 0
    end: StepEnd | None = None
