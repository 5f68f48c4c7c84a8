"""Check the agent on a real GPU host: NVML inventory, and a job placed on a GPU by UUID.

Runs an agent in-process with the `local` runtime and the GPUs NVML reports, submits a 1-GPU job
whose `axolotl` is train_step.py (a real Trainer run on the GPU), and checks that the job saw
exactly the GPU it was given, that every logged step came back as a metric event and that the
progress total is the step count. Prints a JSON report (also written to $OUT when set).

    PYTHONPATH=proto:agent python3 scripts/gpu/check.py
"""

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import grpc
import yaml
from hatrain.agent.config import AgentConfig
from hatrain.agent.server import Agent
from hatrain.rpc.v1 import agent_pb2 as pb
from hatrain.rpc.v1 import agent_pb2_grpc as pb_grpc

HERE = Path(__file__).resolve().parent
TERMINAL = {pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED}
STEPS = 40


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="hatrain-gpu-"))
    venv = work / "venv"
    (venv / "bin").mkdir(parents=True)
    axolotl = venv / "bin" / "axolotl"
    axolotl.write_text(f'#!/bin/sh\nexec {sys.executable} {HERE / "train_step.py"} "$@"\n')
    axolotl.chmod(0o755)
    # The host's settings a step needs (the NVLink multicast switches among them).
    keep = ("PYTHONPATH", "LD_LIBRARY_PATH", "NCCL_NVLS_ENABLE", "TORCH_SYMM_MEM_DISABLE_MULTICAST")
    passthrough = {k: os.environ[k] for k in (*keep, "NVSHMEM_DISABLE_NVLS") if k in os.environ}
    agent = Agent(
        AgentConfig.model_validate(
            {
                "data_root": str(work / "data"),
                "listen": "127.0.0.1:0",
                "runtime": "local",
                "log_format": "console",
                "gpus": {"source": "nvml"},
                "local": {"venv": str(venv), "env": passthrough},
            }
        )
    )
    agent.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{agent.port}")
    stub = pb_grpc.AgentServiceStub(channel)  # type: ignore[no-untyped-call]
    meta = [("x-hatrain-user", "gpu-check")]
    info = stub.GetAgentInfo(pb.GetAgentInfoRequest(), metadata=meta)
    config = {"max_steps": STEPS, "output_dir": "/workspace/data/training-runs/tiny"}
    job = stub.SubmitJob(
        pb.SubmitJobRequest(
            spec=pb.JobSpec(
                name="gpu-check",
                config_name="tiny.yml",
                config_yaml=yaml.safe_dump(config).encode(),
                resources=pb.Resources(gpus=1),
            )
        ),
        metadata=meta,
    ).job
    deadline = time.monotonic() + 300
    while (job := stub.GetJob(pb.GetJobRequest(job_id=job.id), metadata=meta)).state not in (
        TERMINAL
    ):
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    events = [
        e for r in stub.WatchJob(pb.WatchJobRequest(job_id=job.id), metadata=meta) for e in r.events
    ]
    lines = [e.line for e in events if e.kind == pb.EVENT_KIND_LOG]
    seen_uuid = next((ln.split("uuid=")[1] for ln in lines if "uuid=" in ln), "")
    losses = [
        e
        for e in events
        if e.kind == pb.EVENT_KIND_METRICS and any(m.name == "loss" for m in e.metrics)
    ]
    totals = {
        e.progress.total
        for e in events
        if e.kind == pb.EVENT_KIND_PROGRESS and e.progress.phase == "train"
    }
    report = {
        "gpu_source": info.gpu_source,
        "gpus": [{"uuid": g.uuid, "name": g.name, "memory_mb": g.memory_mb} for g in info.gpus],
        "job_state": pb.JobState.Name(job.state),
        "failure": f"{job.failure_reason} {job.hint}".strip(),
        "assigned_uuids": list(job.gpu_uuids),
        "uuid_seen_by_the_step": seen_uuid,
        "device_line": next((ln for ln in lines if ln.startswith("device_count=")), ""),
        "loss_events": len(losses),
        "first_loss": [m.value for m in losses[0].metrics if m.name == "loss"] if losses else [],
        "last_loss": [m.value for m in losses[-1].metrics if m.name == "loss"] if losses else [],
        "train_progress_totals": sorted(totals),
        "model_written": (agent.workspace.dirs(job.id).run / "tiny" / "model.safetensors").exists(),
    }
    ok = (
        info.gpu_source == "nvml"
        and job.state == pb.JOB_STATE_SUCCEEDED
        and list(job.gpu_uuids) == [seen_uuid]
        and len(losses) == STEPS
        and totals == {STEPS}
        and report["model_written"]
    )
    report["ok"] = ok
    text = json.dumps(report, indent=2)
    print(text)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu-check.json").write_text(text)
    channel.close()
    agent.stop(grace=1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
