"""InMemoryRuntime: a test double of the Runtime protocol, for the fast tier.

It stands for the Docker engine under the agent: each step is a "container" held in memory,
reached through a ContainerHandle as Docker's are, which prints what its script says, ends with
the script's exit status (or when the test ends it), honours or ignores SIGTERM, can be removed
behind the agent's back, and outlives the agent that started it (a new Supervisor on the same
store and the same InMemoryRuntime is an agent restarted over running containers). Nothing else
is doubled: the store is real SQLite, and the runner, supervisor and recovery are the real ones.

The real runtimes are tested against a real dockerd and real processes elsewhere in tests/.
"""

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from hatrain.agent.events import Progress
from hatrain.agent.jobs import Job
from hatrain.agent.output_parser import PREPROCESS_SUCCESS
from hatrain.agent.runtime import (
    ContainerHandle,
    ExitStatus,
    Handle,
    LogCursor,
    Probe,
    RuntimeFailure,
)
from hatrain.agent.states import FailureReason
from hatrain.agent.workspace import JobDirs

SIGTERM_EXIT = 128 + 15
SIGKILL_EXIT = 128 + 9
PREPROCESS_OK = f"{PREPROCESS_SUCCESS}: /workspace/data/prepared\n"


class RunnerKilled(BaseException):
    """Raised into a runner thread to kill it (what no `except Exception` catches)."""


@dataclass(frozen=True, kw_only=True)
class StepScript:
    """What one step does once started."""

    output: tuple[str, ...] = ()  # printed at once, chunk by chunk
    exit_code: int | None = 0  # None: runs until the test ends it, or it is stopped
    oom_killed: bool = False
    ignores_sigterm: bool = False  # a stop then ends it with SIGKILL after the grace period
    start_failure: Exception | None = None  # start() raises this
    vanishes: bool = False  # its container is removed behind the agent's back as it starts
    kills_runner: bool = False  # the first wait() for it kills the runner thread


@dataclass(frozen=True, kw_only=True)
class JobScript:
    preprocess: StepScript = StepScript(output=("preprocessing\n", PREPROCESS_OK))
    train: StepScript = StepScript(output=("training\n",))
    prepare_failure: Exception | None = None
    holds_prepare: bool = False  # prepare() waits until release_prepare()

    def of(self, step: str) -> StepScript:
        return self.preprocess if step == "preprocess" else self.train


@dataclass
class Container:
    """One step's container, as the double keeps it."""

    handle: ContainerHandle
    job_id: str
    step: str
    gpu_uuids: tuple[str, ...]
    script: StepScript
    chunks: list[str] = field(default_factory=list)
    status: ExitStatus | None = None  # None while it runs
    removed: bool = False
    signals: list[str] = field(default_factory=list)


class InMemoryRuntime:
    """Test double for the Docker runtime: see the module's docstring."""

    name = "memory"

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._containers: dict[str, Container] = {}
        self._scripts: dict[str, JobScript] = {}
        self._ids = itertools.count(1)
        self._gone: list[Container] = []  # removed, kept for the tests to look at
        self._prepare_released = threading.Event()
        self.prepared: list[str] = []
        self.ready: list[str] = []  # jobs whose step was ready to launch (ready() called)
        self.removed: list[str] = []

    # -- what tests use ---------------------------------------------------------------------

    def script(self, config_name: str, script: JobScript) -> None:
        """How jobs of this config name behave (others: preprocess and train succeed)."""
        self._scripts[config_name] = script

    def _script(self, job: Job) -> JobScript:
        return self._scripts.get(job.spec.config_name, JobScript())

    def container(self, job_id: str, step: str, timeout: float = 2.0) -> Container:
        """The step's container once started (live or removed); fails after timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [c for c in self._all() if c.job_id == job_id and c.step == step]
                if found:
                    return found[-1]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{job_id} {step} never started")
                self._changed.wait(left)

    def _all(self) -> list[Container]:
        return [*self._containers.values(), *self._gone]

    def started(self, job_id: str, step: str) -> bool:
        with self._changed:
            return any(c.job_id == job_id and c.step == step for c in self._all())

    def write(self, job_id: str, step: str, text: str) -> None:
        """The running step prints text."""
        with self._changed:
            self.container(job_id, step).chunks.append(text)
            self._changed.notify_all()

    def finish(self, job_id: str, step: str, code: int = 0, oom_killed: bool = False) -> None:
        """The running step exits."""
        with self._changed:
            container = self.container(job_id, step)
            if container.status is None:
                container.status = ExitStatus(code, oom_killed)
            self._changed.notify_all()

    def vanish(self, job_id: str, step: str) -> None:
        """Its container is removed behind the agent's back (`docker rm -f` by hand)."""
        with self._changed:
            self._drop(self.container(job_id, step))

    def release_prepare(self) -> None:
        self._prepare_released.set()

    def running(self) -> list[Container]:
        with self._changed:
            return [c for c in self._containers.values() if c.status is None]

    def launch(self, job: Job, step: str, job_label: str = "") -> ContainerHandle:
        """Start a step as an earlier agent would have (for restart tests); job_label: the
        job id its labels name, when not the job's own (another agent's container)."""
        handle = self._create(job, step)
        if job_label:
            with self._changed:
                self._containers[handle.container].job_id = job_label
        return handle

    def containers(self) -> list[Container]:
        """Every container started so far, removed ones included."""
        with self._changed:
            return self._all()

    # -- the Runtime protocol ----------------------------------------------------------------

    def prepare(self, job: Job, progress: Callable[[Progress], None]) -> None:
        script = self._script(job)
        self.prepared.append(job.id)
        if script.holds_prepare:
            self._prepare_released.wait(timeout=10)
        if script.prepare_failure is not None:
            raise script.prepare_failure

    def start(self, job: Job, step: str, dirs: JobDirs, ready: Callable[[], None]) -> Handle:
        failure = self._script(job).of(step).start_failure
        if failure is not None:
            raise failure
        self.ready.append(job.id)
        ready()
        return self._create(job, step)

    def _create(self, job: Job, step: str) -> ContainerHandle:
        script = self._script(job).of(step)
        number = next(self._ids)
        handle = ContainerHandle(f"mem{number:04d}", f"hatrain-{job.id}-{step}")
        container = Container(handle, job.id, step, job.gpu_uuids, script, list(script.output))
        if script.exit_code is not None:
            container.status = ExitStatus(script.exit_code, script.oom_killed)
        with self._changed:
            self._containers[handle.container] = container
            if script.vanishes:
                self._drop(container)
            self._changed.notify_all()
        return handle

    def _drop(self, container: Container) -> None:
        self._containers.pop(container.handle.container, None)
        if not container.removed:
            container.removed = True
            self._gone.append(container)
        self._changed.notify_all()

    def _get(self, handle: Handle) -> Container | None:
        assert isinstance(handle, ContainerHandle), handle
        return self._containers.get(handle.container)

    def find(self, job: Job, step: str) -> Handle | None:
        with self._changed:
            for container in self._containers.values():
                if container.job_id == job.id and container.step == step:
                    return container.handle
        return None

    def logs(self, handle: Handle, cursor: LogCursor | None) -> Iterator[tuple[str, LogCursor]]:
        assert cursor is None or isinstance(cursor, int), cursor
        position = cursor or 0
        while True:
            with self._changed:
                container = self._get(handle)
                if container is None:
                    return
                while position == len(container.chunks) and container.status is None:
                    self._changed.wait()
                    if self._get(handle) is None:
                        return
                chunks = container.chunks[position:]
                ended = container.status is not None
            for chunk in chunks:
                position += 1
                yield chunk, position
            if ended and not chunks:
                return

    def wait(self, handle: Handle) -> ExitStatus:
        with self._changed:
            container = self._get(handle)
            while container is not None and container.status is None:
                self._changed.wait()
                container = self._get(handle)
            if container is None or container.status is None:
                raise RuntimeFailure(
                    FailureReason.CONTAINER_LOST, "the container disappeared while it ran"
                )
            if container.script.kills_runner and "runner killed" not in container.signals:
                container.signals.append("runner killed")
                raise RunnerKilled(container.handle.container)
            return container.status

    def probe(self, handle: Handle) -> Probe:
        with self._changed:
            container = self._get(handle)
        if container is None:
            return "missing"
        return "running" if container.status is None else "exited"

    def stop(self, handle: Handle, grace_seconds: float) -> None:
        with self._changed:
            container = self._get(handle)
            if container is None or container.status is not None:
                return
            container.signals.append("SIGTERM")
            if not container.script.ignores_sigterm:
                container.status = ExitStatus(SIGTERM_EXIT)
                self._changed.notify_all()
                return
            deadline = time.monotonic() + grace_seconds
            while container.status is None and (left := deadline - time.monotonic()) > 0:
                self._changed.wait(left)  # it may still end by itself meanwhile
            if container.status is None:
                container.signals.append("SIGKILL")
                container.status = ExitStatus(SIGKILL_EXIT)
            self._changed.notify_all()

    def remove(self, handle: Handle) -> None:
        with self._changed:
            container = self._get(handle)
            if container is not None:
                self.removed.append(container.handle.container)
                if container.status is None:
                    container.status = ExitStatus(SIGKILL_EXIT)
                self._drop(container)

    def leftovers(self) -> Iterator[tuple[str, Handle]]:
        with self._changed:
            found = [(c.job_id, c.handle) for c in self._containers.values()]
        return iter(found)
