"""`hatrain-agent serve` stops at once on SIGTERM, whatever its callers still hold open.

systemd gives a stopping agent TimeoutStopSec (30 s), then SIGKILLs it: a stop that waits on a
caller (an open watch stream, a client whose SSH forward is still connected, or gone silent)
would cost every restart that long. The agent runs as a process with NVML's GPUs (the
tests/support/fake_nvml double: CI has no GPU), so its GPU usage sampler runs too.
"""

import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import yaml
from hatrain.rpc.v1 import agent_pb2 as pb

from tests.support.harness import (
    TERMINAL,
    AgentProcess,
    poll,
    socket_path,
    spec,
    stub_for,
    wait_state,
)

FAKE_NVML = Path(__file__).resolve().parent / "support" / "fake_nvml"
# Well inside systemd's 30 s, with room for a loaded CI machine.
STOP_SECONDS = 8.0


def _watch_in_background(stub: Any, job_id: str) -> tuple[threading.Thread, list[object]]:
    """Follow a job's events on a thread; returns it and what ended the stream."""
    ended: list[object] = []

    def follow() -> None:
        try:
            for _ in stub.WatchJob(pb.WatchJobRequest(job_id=job_id, follow=True)):
                pass
            ended.append("end")
        except grpc.RpcError as exc:
            ended.append(exc.code())

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    return thread, ended


def test_sigterm_stops_the_agent_promptly_with_callers_connected(
    local_agent_config: dict[str, Any], tmp_path: Path
) -> None:
    """With NVML's GPUs sampled every few tenths of a second, a job run to its end while a
    client watched it, a second job training and followed by an open watch stream, and a raw
    connection that never says anything (a client gone silent behind its SSH forward), SIGTERM
    makes `serve` exit within a few seconds with code 0 and no traceback in its log. The
    training job keeps running without the agent, as designed. Before that, SIGUSR1 writes every
    thread's stack to the log and the agent carries on serving."""
    local_agent_config["listen"] = str(socket_path())
    local_agent_config["gpus"] = {"source": "nvml", "sample_seconds": 0.2}
    pythonpath = os.pathsep.join(p for p in (str(FAKE_NVML), os.environ.get("PYTHONPATH")) if p)
    agent = AgentProcess(local_agent_config, tmp_path, env={"PYTHONPATH": pythonpath})
    agent.start()
    jobs = Path(local_agent_config["data_root"]) / "jobs"
    held = None
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        stub, channel = stub_for(local_agent_config["listen"])
        finished = stub.SubmitJob(pb.SubmitJobRequest(spec=spec({}, gpus=1))).job
        watcher, ended = _watch_in_background(stub, finished.id)
        done = wait_state(stub, finished.id, TERMINAL)
        assert done.state == pb.JOB_STATE_SUCCEEDED
        assert list(done.gpu_uuids) and done.gpu_uuids[0].startswith("GPU-fake-nvml-")
        watcher.join(timeout=30)
        assert ended == ["end"], "the watch of the finished job ended with it"

        held = stub.SubmitJob(
            pb.SubmitJobRequest(spec=spec({"hatrain_standin": {"hold_train": "go"}}, gpus=1))
        ).job
        wait_state(stub, held.id, {pb.JOB_STATE_TRAINING})
        poll(
            lambda: stub.GetJob(pb.GetJobRequest(job_id=held.id)).gpu_usage,
            30,
            "a GPU reading of the training job",
        )
        _, following = _watch_in_background(stub, held.id)
        silent.connect(local_agent_config["listen"])
        train = jobs / held.id / "local" / "train.handle"
        pid = int(yaml.safe_load(train.read_text())["pid"])

        assert agent.proc is not None
        agent.proc.send_signal(signal.SIGUSR1)
        # The dump is written thread by thread: wait for the GPU sampler's and the scheduler's.
        poll(
            lambda: all(
                name in agent.log.read_text() for name in ("gpu_usage.py", "supervisor.py")
            ),
            10,
            "every thread's stack in the log after SIGUSR1",
        )
        assert stub.GetAgentInfo(pb.GetAgentInfoRequest()).gpu_source == "nvml", "still serving"
        began = time.monotonic()
        agent.proc.send_signal(signal.SIGTERM)
        try:
            code = agent.proc.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            agent.proc.send_signal(signal.SIGUSR1)  # the stacks of the hung agent, for the log
            poll(lambda: "Thread 0x" in agent.log.read_text(), 10, "the stack dump")
            raise AssertionError(
                f"the agent did not exit within {STOP_SECONDS} s of SIGTERM:\n"
                + agent.log.read_text()[-6000:]
            ) from None
        took = time.monotonic() - began
        log = agent.log.read_text()
        assert code == 0, log[-3000:]
        assert "Traceback" not in log, log[-3000:]
        assert took < STOP_SECONDS
        assert Path(f"/proc/{pid}").exists(), "the training job runs on without the agent"
        poll(lambda: following, 10, "the open watch stream to be ended by the stop")
        channel.close()
    finally:
        silent.close()
        if held is not None:
            (jobs / held.id / "run" / "go").write_text("")  # let the orphaned job finish
        agent.terminate()
