"""What a runtime (Docker, or a local virtualenv) must do to run one step of a job."""

from collections.abc import Callable, Iterator
from typing import Literal, Protocol

from hatrain.rpc.contract import CONFIGS, HF_CACHE, PYTHON_MODULES, SECRETS

from .config import MultiGpuConfig
from .events import Progress
from .jobs import Job
from .states import FailureReason
from .steps import STEPS, ContainerHandle, ExitStatus, Handle, LogCursor, ProcessHandle
from .workspace import JobDirs

__all__ = [
    "BASE_ENV",
    "LABEL_JOB",
    "LABEL_STEP",
    "LABEL_USER",
    "SECRET_SHIM",
    "STEPS",
    "ContainerHandle",
    "ExitStatus",
    "Handle",
    "LogCursor",
    "Probe",
    "ProcessHandle",
    "Runtime",
    "RuntimeFailure",
    "axolotl_args",
    "foreign_handle",
    "launcher_args",
    "step_command",
]
LABEL_JOB = "hatrain.job"
LABEL_STEP = "hatrain.step"
LABEL_USER = "hatrain.user"

# Exports each secret file as an environment variable inside the process only, so secrets never
# show in `docker inspect` or `ps e`; then runs the step's command.
SECRET_SHIM = (
    'for f in "${HATRAIN_SECRETS:-' + SECRETS + '}"/*; do '
    '[ -f "$f" ] && export "${f##*/}=$(cat "$f")"; done; exec "$@"'
)
# The same, with the step's stderr joined to its stdout: Docker reads a container's two pipes
# apart, and could hand on a bar (stderr) before the log line that announced it (stdout). One
# pipe keeps the order the process wrote in, as the local runtime's single log file does.
SECRET_SHIM_ONE_PIPE = SECRET_SHIM + " 2>&1"

BASE_ENV = {
    "AXOLOTL_DO_NOT_TRACK": "1",
    "HF_HOME": HF_CACHE,
    "JUPYTER_DISABLE": "1",
    "PYTHONUNBUFFERED": "1",
    "PYTHONPATH": PYTHON_MODULES,
}

Probe = Literal["running", "exited", "missing"]


class RuntimeFailure(Exception):
    """The runtime could not run the step; ends the job FAILED with this reason."""

    def __init__(self, reason: FailureReason, hint: str) -> None:
        super().__init__(hint)
        self.reason = reason
        self.hint = hint


def foreign_handle(runtime: str, handle: Handle) -> RuntimeFailure:
    """A step recorded by another runtime (the agent's runtime was changed while it ran)."""
    return RuntimeFailure(
        FailureReason.RUNTIME_ERROR,
        f"the step was started by another runtime ({type(handle).__name__}); this agent runs "
        f"the {runtime} runtime: set `runtime` in agent.yml back to finish it",
    )


def axolotl_args(step: str, config_name: str, configs_dir: str = CONFIGS) -> list[str]:
    args = [step, f"{configs_dir}/{config_name}"]
    return [*args, "--debug"] if step == "preprocess" else args


def launcher_args(gpus: int, multi_gpu: MultiGpuConfig) -> list[str]:
    """What `axolotl train` needs to run data-parallel over exactly the job's GPUs, as Axolotl's
    multi-GPU guide launches it: one process per GPU, and a rendezvous port of the job's own
    (0 / --standalone: a free one), so that several multi-GPU jobs can share a host."""
    if gpus < 2:
        return []
    if multi_gpu.launcher == "torchrun":
        launch = ["--nproc_per_node", str(gpus), "--standalone"]
    else:
        launch = ["--multi_gpu", "--num_processes", str(gpus), "--num_machines", "1"]
        launch += ["--main_process_port", "0"]
    return ["--launcher", multi_gpu.launcher, "--", *launch]


def step_command(
    step: str, job: Job, multi_gpu: MultiGpuConfig, configs_dir: str = CONFIGS
) -> tuple[list[str], dict[str, str]]:
    """The step's `axolotl` arguments, and the environment it adds for a multi-GPU job."""
    args = axolotl_args(step, job.spec.config_name, configs_dir)
    gpus = len(job.gpu_uuids)
    if step != "train" or gpus < 2:
        return args, {}
    return [*args, *launcher_args(gpus, multi_gpu)], dict(multi_gpu.env)


class Runtime(Protocol):
    name: str

    def prepare(self, job: Job, progress: Callable[[Progress], None]) -> None:
        """Make sure the job can start (e.g. pull its image); raises RuntimeFailure."""

    def start(self, job: Job, step: str, dirs: JobDirs, ready: Callable[[], None]) -> Handle:
        """Start the step; returns what find() and the other calls need to reach it again.
        ready(): called once the step is ready to launch, just before its process or container
        is launched (it may wait)."""

    def find(self, job: Job, step: str) -> Handle | None:
        """The step's process or container, after an agent restart."""

    def logs(self, handle: Handle, cursor: LogCursor | None) -> Iterator[tuple[str, LogCursor]]:
        """Output after cursor (None: from the start) as (text, cursor after it), until the
        step ends."""

    def wait(self, handle: Handle) -> ExitStatus: ...

    def probe(self, handle: Handle) -> Probe: ...

    def stop(self, handle: Handle, grace_seconds: float) -> None:
        """SIGTERM, then SIGKILL after the grace period."""

    def remove(self, handle: Handle) -> None: ...

    def leftovers(self) -> Iterator[tuple[str, Handle]]:
        """(job id, handle) of every step this runtime still keeps, finished or not."""
