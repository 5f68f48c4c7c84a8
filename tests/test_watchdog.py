"""systemd's view of the agent: the unit passes `systemd-analyze verify`, and `serve` speaks the
notify protocol to a real NOTIFY_SOCKET: READY only once recovery is done and the listener
answers, then WATCHDOG=1 keepalives from the supervisor's loop, idle or not, and none while
that loop is wedged."""

import itertools
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hatrain.agent.events import Event, EventKind
from hatrain.agent.jobs import JobSpec
from hatrain.agent.states import JobState
from hatrain.agent.steps import ProcessHandle, StepRecord
from hatrain.agent.store import Store
from hatrain.agent.supervisor import TEST_HOOK_WEDGE_ENV

from tests.support.harness import socket_path

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "deploy" / "hatrain-agent.service"
WATCHDOG_SECONDS = 2.0


def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """`systemd-analyze verify` on the unit, in a root holding the system's units and the path
    its ExecStart names (as deploy/install.sh lays it out). It also has the watchdog and
    notify settings the agent relies on."""
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: scripts/setup-host.sh installs it (systemd)"
    root = tmp_path / "root"
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    unit = root / "etc/systemd/system" / UNIT.name
    unit.parent.mkdir(parents=True)
    shutil.copy(UNIT, unit)
    agent = root / "opt/hatrain/venv/bin/hatrain-agent"
    agent.parent.mkdir(parents=True)
    shutil.copy(Path(sys.executable).parent / "hatrain-agent", agent)
    checked = subprocess.run(
        [analyze, "verify", f"--root={root}", UNIT.name], capture_output=True, text=True
    )
    assert checked.returncode == 0 and checked.stderr.strip() == "", checked.stderr
    text = UNIT.read_text()
    for line in ("Type=notify", "WatchdogSec=", "NotifyAccess=main", "Restart=on-failure"):
        assert f"\n{line}" in text, line


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, Path]]:
    """A unix datagram socket bound where the agent is told systemd listens."""
    directory = Path(tempfile.mkdtemp(prefix="hatrain-notify-"))
    path = directory / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    yield sock, path
    sock.close()
    shutil.rmtree(directory, ignore_errors=True)


def _seed_a_lost_job(data_root: Path) -> str:
    """A job recorded as training whose process is gone: recovery ends it `container lost`."""
    store = Store(data_root / "hatrain.db")
    job, _ = store.submit(JobSpec("c.yml", "x: 1", ""), "ann")
    store.transition(job.id, JobState.STARTING)
    store.transition(job.id, JobState.TRAINING)
    store.append(job.id, [Event(EventKind.LOG, line="step 1")])
    gone = ProcessHandle(pid=2**22 + 17, start_time="1", log="/nonexistent", exit="/nonexistent")
    store.update_step(job.id, StepRecord("train", handle=gone))
    store.close()
    return job.id


def _messages(sock: socket.socket, seconds: float) -> list[tuple[float, str]]:
    """What arrives within `seconds`, with when it arrived."""
    got = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data = sock.recv(4096)
        except TimeoutError:
            break
        got.append((time.monotonic(), data.decode()))
    return got


def _answers(agent_socket: Path) -> bool:
    """Whether a health check through the agent's socket answers SERVING at once."""
    with grpc.insecure_channel(f"unix:{agent_socket}") as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=2
            )
        except grpc.RpcError:
            return False
    return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)


def test_ready_after_recovery_and_the_listener_then_keepalives_none_while_wedged(
    tmp_path: Path, notify_socket: tuple[socket.socket, Path]
) -> None:
    """`hatrain-agent serve` with NOTIFY_SOCKET and WATCHDOG_USEC (2 s) as systemd sets them:
    the first message is READY=1, and when it arrives the seeded lost job has been recovered
    (failed, `container lost`) and a health check through the socket answers at once. Then,
    idle, WATCHDOG=1 comes at least every WatchdogSec/2. With the supervisor's loop wedged (the
    test hook), no keepalive comes for three watchdog periods (systemd would restart the agent);
    unwedged, they come again."""
    sock, path = notify_socket
    data_root = tmp_path / "data"
    lost = _seed_a_lost_job(data_root)
    listen = socket_path()
    config = tmp_path / "agent.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "data_root": str(data_root),
                "listen": str(listen),
                "runtime": "local",
                "local": {"venv": str(tmp_path / "no-venv")},
                "log_format": "console",
            }
        )
    )
    wedge = tmp_path / "wedge"
    env = {
        **os.environ,
        "NOTIFY_SOCKET": str(path),
        "WATCHDOG_USEC": str(int(WATCHDOG_SECONDS * 1_000_000)),
        TEST_HOOK_WEDGE_ENV: str(wedge),
    }
    log = (tmp_path / "agent.log").open("wb")
    agent = Path(sys.executable).parent / "hatrain-agent"
    proc = subprocess.Popen(
        [str(agent), "serve", "--config", str(config)], env=env, stdout=log, stderr=log
    )
    try:
        sock.settimeout(60)
        first = sock.recv(4096).decode()
        assert first.splitlines()[0] == "READY=1", first
        assert _answers(listen), "READY was sent before the listener answered"
        store = Store(data_root / "hatrain.db")
        job = store.get(lost)
        assert (job.state, job.failure_reason) == (JobState.FAILED, "container lost")

        idle = _messages(sock, 4 * WATCHDOG_SECONDS)
        assert {m for _, m in idle} == {"WATCHDOG=1"}, idle
        times = [t for t, _ in idle]
        assert len(times) >= 6, times
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert max(gaps) < WATCHDOG_SECONDS / 2 + 0.5, gaps

        wedge.touch()
        _messages(sock, 1.5)  # the pass under way may still finish
        wedged = _messages(sock, 3 * WATCHDOG_SECONDS)
        assert wedged == [], f"keepalives while the supervisor is wedged: {wedged}"

        wedge.unlink()
        again = _messages(sock, WATCHDOG_SECONDS)
        assert again and again[0][1] == "WATCHDOG=1", again
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    assert "STOPPING=1" in {m for _, m in _messages(sock, 1)}
