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

The end of a step is noticed from the process itself, through a pidfd (the kernel makes it
readable when the process ends): no polling interval lies between the step's end, a stop's
SIGKILL, and the job's verdict.
"""

import contextlib
import os
import select
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml
from hatrain.rpc.config_yaml import load_config_yaml

from .config import LocalConfig, MultiGpuConfig
from .confinement import run_as, user_env
from .events import Progress
from .jobs import Job
from .runtime import (
    BASE_ENV,
    SECRET_SHIM,
    ExitStatus,
    Handle,
    LogCursor,
    Probe,
    ProcessHandle,
    RuntimeFailure,
    foreign_handle,
    step_command,
)
from .states import FailureReason
from .store import decode_handle, encode_handle
from .workspace import DATASETS, HF_CACHE, JobDirs, Workspace

_READ = 1024 * 1024
# How long a read of the log waits for new output before it looks again (the step's end cuts it
# short).
_POLL_SECONDS = 0.02
_KILLED_SECONDS = 10.0
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
# Runs the step (its arguments: setpriv, then the secret shim, so secrets live only in the step's
# environment), then records its exit code: one write of "CODE\n" by the shell itself, no process
# more (a step's start is mostly the cost of its processes). A file without its newline is not
# read as a code: a read that met the write half done, or a wrapper killed in between. Stopping
# signals the whole process group: the wrapper traps them (a trap, unlike an ignored signal, is
# not inherited by the command it runs), outlives the step, and records how it ended.
_WRAPPER = 'trap : TERM INT; "$@"; echo "$?" > "$HATRAIN_EXIT"'


def wrapped(argv: list[str]) -> list[str]:
    """The command line of a step: argv run by the wrapper, which records its exit code in the
    file named by $HATRAIN_EXIT."""
    return ["/bin/sh", "-c", _WRAPPER, "hatrain-step", *argv]


def _secrets_shim(secrets: Path) -> tuple[str, ...]:
    """The shell that exports the job's secrets before it runs the step; none when the job has
    no secrets (one process less in every step's start)."""
    try:
        with os.scandir(secrets) as entries:
            if not any(True for _ in entries):
                return ()
    except FileNotFoundError:
        return ()
    return ("/bin/sh", "-c", SECRET_SHIM, "hatrain")


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


class _ProcessEnd:
    """The end of a step's process, from a pidfd: wait(timeout) returns whether it has ended."""

    def __init__(self, handle: ProcessHandle, child: bool) -> None:
        try:
            self._fd: int | None = os.pidfd_open(handle.pid)
        except ProcessLookupError:
            self._fd = None
            return
        # Not our child: the pid may belong to another process by now.
        if not child and _start_time(handle.pid) != handle.start_time:
            self.close()

    def wait(self, timeout: float | None) -> bool:
        if self._fd is None:
            return True
        # poll, not select: an agent holding many connections has fds past select's 1024.
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        return bool(poller.poll(None if timeout is None else timeout * 1000))

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "_ProcessEnd":
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _process(handle: Handle) -> ProcessHandle:
    if not isinstance(handle, ProcessHandle):
        raise foreign_handle(LocalRuntime.name, handle)
    return handle


class LocalRuntime:
    name = "local"

    def __init__(
        self, config: LocalConfig, workspace: Workspace, multi_gpu: MultiGpuConfig | None = None
    ) -> None:
        self.config = config
        self.multi_gpu = multi_gpu or MultiGpuConfig()
        self.workspace = workspace
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        # Notified when stop() records the exit code of a step it had to kill.
        self._recorded = threading.Condition()

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

    def start(self, job: Job, step: str, dirs: JobDirs, ready: Callable[[], None]) -> Handle:
        work = self._step_dir(job.id)
        work.mkdir(parents=True, exist_ok=True)
        mapping = dirs.container_to_host()
        config = localize(load_config_yaml(job.spec.config_yaml), mapping)
        (work / job.spec.config_name).write_text(yaml.dump(config, Dumper=_DUMPER, sort_keys=False))
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
            ready()
            proc = subprocess.Popen(
                wrapped(
                    [
                        *run_as(dirs.owner),
                        *_secrets_shim(dirs.secrets),
                        str(self._axolotl()),
                        *args,
                    ]
                ),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=dirs.run,
                env=env,
                start_new_session=True,
            )
        self._children[proc.pid] = proc
        handle = ProcessHandle(proc.pid, _start_time(proc.pid), str(log_path), str(exit_path))
        # Kept beside the step too, for find(): the agent may stop before the store has it.
        (work / f"{step}.handle").write_text(encode_handle(handle))
        return handle

    def find(self, job: Job, step: str) -> Handle | None:
        try:
            return decode_handle((self._step_dir(job.id) / f"{step}.handle").read_text())
        except (OSError, ValueError):
            return None

    def _alive(self, handle: ProcessHandle) -> bool:
        child = self._children.get(handle.pid)
        if child is not None:
            return child.poll() is None
        return _start_time(handle.pid) == handle.start_time

    def _exit_code(self, handle: ProcessHandle) -> int | None:
        try:
            text = Path(handle.exit).read_text()
            return int(text) if text.endswith("\n") else None
        except (OSError, ValueError):
            return None

    def probe(self, handle: Handle) -> Probe:
        process = _process(handle)
        if self._exit_code(process) is not None:
            return "exited"
        return "running" if self._alive(process) else "missing"

    def _end(self, handle: ProcessHandle) -> _ProcessEnd:
        return _ProcessEnd(handle, child=handle.pid in self._children)

    def logs(self, handle: Handle, cursor: LogCursor | None) -> Iterator[tuple[str, LogCursor]]:
        process = _process(handle)
        offset = cursor if isinstance(cursor, int) else 0
        with self._end(process) as end, open(process.log, "rb") as fh:
            while True:
                # Whether the process had ended before this read: then the read takes all.
                ended = end.wait(0)
                fh.seek(offset)
                data = fh.read(_READ)
                if data:
                    # Hand out whole lines (or \r-ended bar updates) so no UTF-8 sequence is cut.
                    cut = max(data.rfind(b"\n"), data.rfind(b"\r")) + 1
                    if cut == 0 and len(data) < _READ and not ended:
                        end.wait(_POLL_SECONDS)  # the rest of the line, or the end
                        continue
                    chunk = data[: cut or len(data)]
                    offset += len(chunk)
                    yield chunk.decode("utf-8", errors="replace"), offset
                elif ended:
                    return
                else:
                    # New output shows in the file only; the end wakes this wait at once.
                    end.wait(_POLL_SECONDS)

    def wait(self, handle: Handle) -> ExitStatus:
        process = _process(handle)
        code = self._exit_code(process)
        if code is None:
            with self._end(process) as end:
                end.wait(None)
            # The wrapper writes the file before it exits; a step killed by stop() gets its
            # code from stop(), which may still be on its way to writing it.
            with self._recorded:
                self._recorded.wait_for(lambda: self._exit_code(process) is not None, 2.0)
            code = self._exit_code(process)
        self._reap(process)
        if code is None:
            raise RuntimeFailure(
                FailureReason.CONTAINER_LOST,
                "the step's process vanished without recording an exit code",
            )
        return ExitStatus(code)

    def _reap(self, handle: ProcessHandle) -> None:
        child = self._children.pop(handle.pid, None)
        if child is not None:
            child.wait()

    def stop(self, handle: Handle, grace_seconds: float) -> None:
        """SIGTERM to the step's process group, SIGKILL after the grace period; the exit file
        records the signal when the wrapper itself was stopped."""
        process = _process(handle)
        pid = process.pid
        signum = signal.SIGTERM
        with self._end(process) as end, contextlib.suppress(ProcessLookupError):
            if not end.wait(0):
                os.killpg(pid, signal.SIGTERM)
                if not end.wait(grace_seconds):
                    signum = signal.SIGKILL
                    os.killpg(pid, signal.SIGKILL)
                    end.wait(_KILLED_SECONDS)
        self._reap(process)
        with self._recorded:
            if self._exit_code(process) is None:
                Path(process.exit).write_text(f"{128 + signum}\n")
            self._recorded.notify_all()

    def remove(self, handle: Handle) -> None:
        """Nothing to remove: the step's log stays with the job's files."""

    def leftovers(self) -> Iterator[tuple[str, Handle]]:
        return iter(())  # processes end by themselves; their files belong to the job
