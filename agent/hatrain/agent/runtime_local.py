"""The `local` runtime: Axolotl from a virtualenv on the host, one process group per step.

Same contract as the container: the job's config, datasets, run directory, Hugging Face cache and
secrets — only at their host directories. Its copy of the config has every container path
(/workspace/...) replaced by the host directory behind it; GPUs are given by UUID through
CUDA_VISIBLE_DEVICES (empty for CPU jobs).

Each step runs as the job's user (setpriv: their uid, gid and groups, no_new_privs), in its own
session (setsid), with output appended to a log file and its exit code written to a file when it
ends, so it is independent of the agent: when the agent stops or is killed, running steps keep
running; on restart the agent re-attaches to them through the handle in its store (pid + start
time), reads the log from the byte offset it had stored, and takes the exit code from the file.
A step whose process vanished without an exit file fails with `container lost`.

Who owns what: the step's files (log, exit code, handle, its copy of the config) are the agent's,
in the job's local/ directory, which only the agent can write. The agent opens the log and hands
the step its fd; a small wrapper that stays root runs the step as the user, waits for it and
writes the exit file. The user's process can therefore write to its log but cannot forge its exit
code, nor plant a link there for the agent to write through. It owns only its run directory, its
cache and its HOME.
"""

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from .config import LocalConfig, MultiGpuConfig
from .confinement import run_as, user_env
from .events import Progress
from .jobs import Job
from .runtime import BASE_ENV, SECRET_SHIM, ExitStatus, Handle, Probe, RuntimeFailure, step_command
from .states import FailureReason
from .workspace import DATASETS, HF_CACHE, JobDirs, Workspace

_READ = 1024 * 1024
_POLL_SECONDS = 0.02
# Runs the step, then records its exit code atomically; the step itself runs through the secret
# shim so secrets live only in its environment. Stopping signals the whole process group: the
# wrapper traps them (a trap, unlike an ignored signal, is not inherited by the step), outlives
# the step, and records how it ended.
_WRAPPER = (
    'trap : TERM INT; "$@"; code=$?; echo "$code" > "$HATRAIN_EXIT.tmp" && '
    'mv "$HATRAIN_EXIT.tmp" "$HATRAIN_EXIT"'
)


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks (tells a live step from a reused pid)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    return None if fields[0] == "Z" else fields[19]


def localize(value: Any, mapping: dict[str, Path]) -> Any:
    """Replace container path prefixes in every string of a parsed config."""
    if isinstance(value, str):
        for prefix, host in mapping.items():
            if value == prefix or value.startswith(prefix + "/"):
                return str(host) + value[len(prefix) :]
        return value
    if isinstance(value, dict):
        return {k: localize(v, mapping) for k, v in value.items()}
    if isinstance(value, list):
        return [localize(v, mapping) for v in value]
    return value


class LocalRuntime:
    name = "local"

    def __init__(
        self, config: LocalConfig, workspace: Workspace, multi_gpu: MultiGpuConfig | None = None
    ) -> None:
        self.config = config
        self.multi_gpu = multi_gpu or MultiGpuConfig()
        self.workspace = workspace
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    def _axolotl(self) -> Path:
        return self.config.venv / "bin" / "axolotl"

    def prepare(self, job: Job, progress: Callable[[Progress], None]) -> None:
        if not os.access(self._axolotl(), os.X_OK):
            raise RuntimeFailure(
                FailureReason.RUNTIME_ERROR,
                f"no axolotl at {self._axolotl()}: set local.venv in agent.yml to Axolotl's venv",
            )

    def _step_dir(self, job_id: str) -> Path:
        return self.workspace.root / "jobs" / job_id / "local"

    def start(self, job: Job, step: str, dirs: JobDirs) -> Handle:
        work = self._step_dir(job.id)
        work.mkdir(parents=True, exist_ok=True)
        mapping = dirs.container_to_host()
        config = localize(yaml.safe_load(job.spec.config_yaml), mapping)
        (work / job.spec.config_name).write_text(yaml.safe_dump(config, sort_keys=False))
        log_path, exit_path = work / f"{step}.log", work / f"{step}.exit"
        exit_path.unlink(missing_ok=True)
        args, launch_env = step_command(step, job, self.multi_gpu, str(work))
        hub = None if dirs.shared_hub is None else str(dirs.shared_hub)
        env = {
            "PATH": f"{self.config.venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            **BASE_ENV,
            **user_env(dirs.owner, str(dirs.home), hub),
            "HF_HOME": str(mapping[HF_CACHE]),
            "PYTHONPATH": str(mapping[DATASETS] / "python"),
            "CUDA_VISIBLE_DEVICES": ",".join(job.gpu_uuids),
            **self.config.env,
            **launch_env,
            "HATRAIN_SECRETS": str(dirs.secrets),
            "HATRAIN_EXIT": str(exit_path),
        }
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                [
                    *("/bin/sh", "-c", _WRAPPER, "hatrain-step", *run_as(dirs.owner)),
                    *("/bin/sh", "-c", SECRET_SHIM, "hatrain", str(self._axolotl()), *args),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=dirs.run,
                env=env,
                start_new_session=True,
            )
        self._children[proc.pid] = proc
        handle = {
            "pid": proc.pid,
            "start_time": _start_time(proc.pid),
            "log": str(log_path),
            "exit": str(exit_path),
        }
        (work / f"{step}.handle").write_text(json.dumps(handle))
        return handle

    def find(self, job: Job, step: str) -> Handle | None:
        try:
            handle: Handle = json.loads((self._step_dir(job.id) / f"{step}.handle").read_text())
        except (OSError, ValueError):
            return None
        return handle

    def _alive(self, handle: Handle) -> bool:
        child = self._children.get(handle["pid"])
        if child is not None:
            return child.poll() is None
        return bool(_start_time(handle["pid"]) == handle["start_time"])

    def _exit_code(self, handle: Handle) -> int | None:
        try:
            return int(Path(handle["exit"]).read_text().strip())
        except (OSError, ValueError):
            return None

    def probe(self, handle: Handle) -> Probe:
        if self._exit_code(handle) is not None:
            return "exited"
        return "running" if self._alive(handle) else "missing"

    def logs(self, handle: Handle, cursor: Any) -> Iterator[tuple[str, Any]]:
        offset = int(cursor or 0)
        with open(handle["log"], "rb") as fh:
            while True:
                fh.seek(offset)
                data = fh.read(_READ)
                if data:
                    # Hand out whole lines (or \r-ended bar updates) so no UTF-8 sequence is cut.
                    end = max(data.rfind(b"\n"), data.rfind(b"\r")) + 1
                    if end == 0 and len(data) < _READ and self.probe(handle) == "running":
                        time.sleep(_POLL_SECONDS)
                        continue
                    chunk = data[: end or len(data)]
                    offset += len(chunk)
                    yield chunk.decode("utf-8", errors="replace"), offset
                elif self.probe(handle) != "running":
                    if fh.seek(0, os.SEEK_END) == offset:
                        return
                else:
                    time.sleep(_POLL_SECONDS)

    def wait(self, handle: Handle) -> ExitStatus:
        deadline = None
        while True:
            code = self._exit_code(handle)
            if code is not None:
                self._reap(handle)
                return ExitStatus(code)
            if not self._alive(handle):
                # The wrapper writes the file just before it exits; give a stop() racing with
                # us the moment it needs to record the signal.
                deadline = deadline or time.monotonic() + 2
                if time.monotonic() > deadline:
                    self._reap(handle)
                    raise RuntimeFailure(
                        FailureReason.CONTAINER_LOST,
                        "the step's process vanished without recording an exit code",
                    )
            time.sleep(_POLL_SECONDS)

    def _reap(self, handle: Handle) -> None:
        child = self._children.pop(handle["pid"], None)
        if child is not None:
            child.wait()

    def stop(self, handle: Handle, grace_seconds: float) -> None:
        """SIGTERM to the step's process group, SIGKILL after the grace period; the exit file
        records the signal when the wrapper itself was stopped."""
        pid = handle["pid"]
        signum = signal.SIGTERM
        with contextlib.suppress(ProcessLookupError):
            if self._alive(handle):
                os.killpg(pid, signal.SIGTERM)
                deadline = time.monotonic() + grace_seconds
                while self._alive(handle) and time.monotonic() < deadline:
                    time.sleep(_POLL_SECONDS)
                if self._alive(handle):
                    signum = signal.SIGKILL
                    os.killpg(pid, signal.SIGKILL)
        self._reap(handle)
        exit_path = Path(handle["exit"])
        if not exit_path.exists():
            exit_path.write_text(f"{128 + signum}\n")

    def remove(self, handle: Handle) -> None:
        """Nothing to remove: the step's log stays with the job's files."""

    def leftovers(self) -> Iterator[tuple[str, Handle]]:
        return iter(())  # processes end by themselves; their files belong to the job
