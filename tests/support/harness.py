"""Helpers shared by the tests: polling with a deadline, agents in-process or as a process."""

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc
import yaml
from hatrain.rpc.v1 import agent_pb2 as pb
from hatrain.rpc.v1 import agent_pb2_grpc as pb_grpc

T = TypeVar("T")
# Who the tests submit as unless they say otherwise: a real, ordinary account (jobs run as their
# user), which tests/support/users.py creates.
TEST_USER = "hatrain-alice"
TERMINAL = {pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED}
# The states of a job that runs to success, in order.
SUCCESSFUL_RUN = [
    pb.JOB_STATE_QUEUED,
    pb.JOB_STATE_STARTING,
    pb.JOB_STATE_PREPROCESSING,
    pb.JOB_STATE_TRAINING,
    pb.JOB_STATE_SUCCEEDED,
]


def poll(check: Callable[[], T | None], timeout: float, what: str, every: float = 0.05) -> T:
    """Call check until it returns something truthy; fail after timeout naming what was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


def kill_processes_naming(path: Path) -> int:
    """SIGKILL every process whose command line names something under path; returns how many.
    A local-runtime step outlives its agent by design, so a test that kills an agent (or
    ends before its jobs) leaves them: its fixture's teardown ends them here."""
    needle = str(path).encode()
    killed = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle not in (entry / "cmdline").read_bytes():
                continue
            os.kill(int(entry.name), signal.SIGKILL)
            killed += 1
        except (OSError, ValueError):
            continue  # gone meanwhile, or not ours to read
    return killed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: "subprocess.Popen[Any]", log: Path, timeout: float = 30) -> None:
    """Wait until a server process listens on a loopback port; fail with its log if it exits."""
    name = Path(str(proc.args[0] if isinstance(proc.args, list) else proc.args)).name

    def listening() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            return False
        return True

    poll(listening, timeout, f"{name} to listen on port {port}")


def stub_for(target: str | Path) -> tuple[Any, Any]:
    """A stub on an agent's socket (a path, or a gRPC target). The agent knows the caller from
    the kernel: the tests' own user, root."""
    address = str(target) if str(target).startswith("unix:") else f"unix:{target}"
    channel = grpc.insecure_channel(address)
    grpc.channel_ready_future(channel).result(timeout=30)
    return pb_grpc.AgentServiceStub(channel), channel


_SOCKETS: list[Path] = []


def socket_path() -> Path:
    """A place for an agent's socket: short (a Unix socket's path may not be longer than 107
    bytes, which a test's tmp_path can be) and reachable by every user (pytest's own temporary
    directory is private to the tests' user). Removed when the tests end."""
    base = Path(tempfile.mkdtemp(prefix="hts-", dir="/tmp"))
    base.chmod(0o755)
    _SOCKETS.append(base)
    return base / "run" / "agent.sock"


@atexit.register
def _remove_sockets() -> None:
    for base in _SOCKETS:
        shutil.rmtree(base, ignore_errors=True)


def wait_state(stub: Any, job_id: str, states: set[Any], timeout: float = 120) -> Any:
    return poll(
        lambda: (lambda j: j if j.state in states else None)(
            stub.GetJob(pb.GetJobRequest(job_id=job_id))
        ),
        timeout,
        f"job {job_id} to reach {[pb.JobState.Name(s) for s in states]}",
    )


def all_events(stub: Any, job_id: str, from_seq: int = 0) -> list[pb.Event]:
    events: list[pb.Event] = []
    for response in stub.WatchJob(
        pb.WatchJobRequest(job_id=job_id, from_seq=from_seq, follow=False)
    ):
        events.extend(response.events)
    return events


def spec(config: dict[str, Any], *, gpus: int = 0, name: str = "job.yml", **kwargs: Any) -> Any:
    config = {"output_dir": "/workspace/data/training-runs/out", **config}
    return pb.JobSpec(
        config_name=name,
        config_yaml=yaml.safe_dump(config).encode(),
        image=kwargs.pop("image", "hatrain-test/rootfs:1"),
        resources=pb.Resources(gpus=gpus),
        **kwargs,
    )


class AgentProcess:
    """`hatrain-agent serve` as a real process (for SIGKILL and restart tests)."""

    def __init__(
        self, config: dict[str, Any], workdir: Path, env: dict[str, str] | None = None
    ) -> None:
        """env: variables set for the agent on top of the test's own."""
        self.config_path = workdir / "agent.yml"
        self.env = env or {}
        self.config_path.write_text(yaml.safe_dump(config))
        self.log = workdir / "agent.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        agent = Path(sys.executable).parent / "hatrain-agent"
        self.proc = subprocess.Popen(
            [str(agent), "serve", "--config", str(self.config_path)],
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
        )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def terminate(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
