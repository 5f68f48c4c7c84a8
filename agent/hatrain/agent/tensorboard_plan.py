"""TensorBoard over jobs' run directories: which Python runs it, and which runs a caller gets.

The agent serves nothing itself: `hatrain-agent tensorboard`, started by the client over the
user's SSH login, runs as that user, asks the agent (through its socket, so the kernel says who
asks) for the plan below, and serves TensorBoard on a Unix socket of its own (see
tensorboard_runner.py).
"""

import subprocess
from pathlib import Path

from hatrain.rpc import limits
from hatrain.rpc.v1 import agent_pb2 as pb

from . import wire
from .config import AgentConfig
from .errors import FailedPrecondition, InvalidArgument
from .identity import Caller, Identities
from .jobs import Job
from .store import Store
from .submission import check_count, check_job_id
from .workspace import Workspace

_FIX = (
    "set `tensorboard: {venv: /path/to/venv}` in agent.yml to a virtualenv with TensorBoard "
    "(python -m venv /opt/tensorboard && /opt/tensorboard/bin/pip install tensorboard)"
)


def tensorboard_python(config: AgentConfig) -> Path:
    """The Python that runs TensorBoard: `tensorboard.venv`'s, else the local runtime's
    Axolotl venv's (the jobs' own environment). FailedPrecondition, with the fix, if neither."""
    if config.tensorboard.venv is not None:
        python = config.tensorboard.venv / "bin" / "python"
        if not python.exists():
            raise FailedPrecondition(
                f"tensorboard.venv: {config.tensorboard.venv} has no bin/python; {_FIX}"
            )
        return python
    if config.runtime == "local" and (config.local.venv / "bin" / "python").exists():
        return config.local.venv / "bin" / "python"
    raise FailedPrecondition(f"tensorboard.venv: not set, and this host has no TensorBoard; {_FIX}")


def tensorboard_version(python: Path) -> str:
    """TensorBoard's version under that Python; FailedPrecondition saying why if it has none."""
    try:
        done = subprocess.run(
            [str(python), "-c", "import tensorboard; print(tensorboard.__version__)"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FailedPrecondition(f"cannot run {python} ({exc}); {_FIX}") from exc
    if done.returncode != 0:
        said = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise FailedPrecondition(f"{python} cannot import tensorboard ({said}); {_FIX}")
    return done.stdout.strip()


def plan(
    request: pb.PlanTensorBoardRequest,
    caller: Caller,
    config: AgentConfig,
    store: Store,
    identities: Identities,
    workspace: Workspace,
) -> pb.TensorBoardPlan:
    """The named jobs (each readable by the caller, else PermissionDenied naming it) and, with
    `mine`, the caller's own; with the Python that runs TensorBoard."""
    check_count(request.job_ids, "job_ids", limits.TENSORBOARD_JOBS)
    jobs: dict[str, Job] = {}
    for job_id in request.job_ids:
        job = store.get(check_job_id(job_id))
        identities.check_read(caller, job)
        jobs[job.id] = job
    if request.mine:
        own, _, _ = store.list_jobs(user=caller.user, page_size=limits.TENSORBOARD_JOBS)
        jobs.update((job.id, job) for job in own)
    if not jobs:
        raise InvalidArgument(
            "job_ids", "at least one job (or `mine`, once you have jobs): there is none to show"
        )
    python = tensorboard_python(config)
    return pb.TensorBoardPlan(
        runs=[
            pb.TensorBoardRun(
                job_id=job.id,
                name=job.spec.name,
                run_dir=str(workspace.dirs(job.id).run),
                state=wire.STATE_TO_WIRE[job.state],
            )
            for job in jobs.values()
        ],
        python=str(python),
    )
