"""GPU memory and utilisation of each running job: in `status` and as events in `watch`.

CI has no GPU, so NVML is replaced by FakeNvml, a test double at the one seam NVML sits behind
(hatrain.agent.gpu_usage.GpuReader); everything else is the real agent over real gRPC. The real
NVML reading on H200s is in the GPU host check (docs/gpu.md).
"""

import threading
from pathlib import Path
from typing import Any

from hatrain.agent.config import AgentConfig
from hatrain.agent.events import GpuUsage
from hatrain.agent.server import Agent
from hatrain.client.records import Job, event_from_wire
from hatrain.client.render import describe, event_line
from hatrain.rpc.v1 import agent_pb2 as pb

from tests.support.harness import TERMINAL, all_events, poll, spec, stub_for, wait_state

GPUS = [f"GPU-usage-{i}" for i in range(3)]


class FakeNvml:
    """Test double for NVML: each GPU reports a fixed total, and memory and utilisation that
    grow by one with every reading, so that successive samples can be told apart."""

    def __init__(self) -> None:
        self.reads: dict[str, int] = {}
        self.lock = threading.Lock()
        self.closed = False

    def read(self, uuid: str) -> GpuUsage:
        with self.lock:
            n = self.reads[uuid] = self.reads.get(uuid, 0) + 1
        index = GPUS.index(uuid)
        return GpuUsage(uuid, 1000 * (index + 1) + n, 143_771, min(100, 50 + n))

    def close(self) -> None:
        self.closed = True


def test_running_jobs_show_their_own_gpus_usage(
    local_agent_config: dict[str, Any], start_agent: Any
) -> None:
    """While a 2-GPU job trains, `status` shows the latest reading of exactly its 2 GPUs and
    `watch` gets GPU events with them, a reading every sample period; a GPU no job holds is not
    read. Once the job ends, its status shows none and no GPU event follows its final state."""
    local_agent_config["gpus"] = {
        "source": "static",
        "static": [{"uuid": u} for u in GPUS],
        "sample_seconds": 0.1,
    }
    nvml = FakeNvml()
    agent = Agent(AgentConfig.model_validate(local_agent_config), gpu_reader=lambda: nvml)
    agent.start()
    try:
        stub, channel = stub_for(agent.socket)
        job = stub.SubmitJob(
            pb.SubmitJobRequest(spec=spec({"hatrain_standin": {"hold_train": "go"}}, gpus=2))
        ).job
        wait_state(stub, job.id, {pb.JOB_STATE_TRAINING})
        running = poll(
            lambda: (lambda j: j if len(j.gpu_usage) == 2 else None)(
                stub.GetJob(pb.GetJobRequest(job_id=job.id))
            ),
            30,
            "a GPU reading in the job's status",
        )
        assert [g.uuid for g in running.gpu_usage] == list(running.gpu_uuids)
        assert all(
            g.memory_total_mb == 143_771 and g.memory_used_mb > 1000 for g in running.gpu_usage
        )
        shown = describe(Job.from_wire(running, "gpu1"))
        assert f"gpu use   {running.gpu_uuids[0][:12]}… " in shown and "/140.4 GiB" in shown

        def gpu_events() -> list[pb.Event]:
            return [e for e in all_events(stub, job.id) if e.kind == pb.EVENT_KIND_GPU]

        samples = poll(
            lambda: (lambda e: e if len(e) >= 3 else None)(gpu_events()), 30, "3 GPU events"
        )
        assert all([g.uuid for g in e.gpu_usage] == list(running.gpu_uuids) for e in samples)
        used = [e.gpu_usage[0].memory_used_mb for e in samples]
        assert used == sorted(set(used)), "each event is a reading of its own"
        reading = event_from_wire(samples[0])
        assert reading is not None
        assert str(event_line(reading)).startswith(f"gpu: {running.gpu_uuids[0][:12]}… ")
        idle = set(GPUS) - set(running.gpu_uuids)
        assert not idle & set(nvml.reads), "only the GPUs of running jobs are read"

        (Path(agent.workspace.dirs(job.id).run) / "go").write_text("")
        done = wait_state(stub, job.id, TERMINAL)
        assert done.state == pb.JOB_STATE_SUCCEEDED
        poll(
            lambda: not stub.GetJob(pb.GetJobRequest(job_id=job.id)).gpu_usage,
            30,
            "the ended job's status to drop its GPU reading",
        )
        events = all_events(stub, job.id)
        assert events[-1].kind == pb.EVENT_KIND_STATE and events[-1].state == done.state
        channel.close()
    finally:
        agent.stop(grace=0.5)
    assert nvml.closed
