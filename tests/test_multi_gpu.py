"""A job asking for N > 1 GPUs: `axolotl train` data-parallel over exactly its N GPUs, on both
runtimes, with the launcher and environment agent.yml sets.

The stand-in `axolotl` records the arguments and environment each step got; the real Axolotl on
two GPUs is the GPU host check's (scripts/gpu/, docs/gpu.md).
"""

from pathlib import Path
from typing import Any

import pytest
from hatrain.rpc.v1 import agent_pb2 as pb

from tests.support.harness import TERMINAL, spec, wait_state

GPUS = {"source": "static", "static": [{"uuid": f"GPU-mg-{i}"} for i in range(3)]}
ACCELERATE = [
    "--launcher",
    "accelerate",
    "--",
    "--multi_gpu",
    "--num_processes",
    "2",
    "--num_machines",
    "1",
    "--main_process_port",
    "0",
]


def _recorded(agent: Any, job: pb.Job, step: str) -> tuple[list[str], dict[str, str]]:
    run = Path(agent.workspace.dirs(job.id).run)
    argv = (run / f"argv-{step}.txt").read_text().splitlines()
    lines = (run / f"env-{step}.txt").read_text().splitlines()
    return argv, dict(line.split("=", 1) for line in lines if "=" in line)


def _gpus_seen(runtime: str, env: dict[str, str]) -> set[str]:
    key = "NVIDIA_VISIBLE_DEVICES" if runtime == "docker" else "CUDA_VISIBLE_DEVICES"
    return set(env[key].split(","))


@pytest.mark.parametrize("runtime", ["docker", "local"])
def test_a_two_gpu_job_trains_data_parallel_over_its_gpus(
    runtime: str,
    agent_config: dict[str, Any],
    local_agent_config: dict[str, Any],
    start_agent: Any,
) -> None:
    """The 2-GPU job's train step is Axolotl's accelerate launch of 2 processes (on a free port)
    with the multi-GPU environment, over exactly the job's 2 GPUs; preprocess runs once, as
    always; a 1-GPU job beside it is launched as before and sees only its own GPU."""
    config = agent_config if runtime == "docker" else local_agent_config
    config["gpus"] = GPUS
    config["multi_gpu"] = {"env": {"NCCL_DEBUG": "INFO"}}
    stub, agent = start_agent(config)
    record = {"hatrain_standin": {"record_env": True}}
    pair = stub.SubmitJob(pb.SubmitJobRequest(spec=spec(record, gpus=2))).job
    single = stub.SubmitJob(pb.SubmitJobRequest(spec=spec(record, gpus=1))).job
    pair, single = (wait_state(stub, j.id, TERMINAL) for j in (pair, single))
    assert pair.state == single.state == pb.JOB_STATE_SUCCEEDED

    argv, env = _recorded(agent, pair, "train")
    assert argv[2:] == ACCELERATE
    assert env["NCCL_DEBUG"] == "INFO"
    assert _gpus_seen(runtime, env) == set(pair.gpu_uuids) and len(pair.gpu_uuids) == 2
    argv, env = _recorded(agent, pair, "preprocess")
    assert argv[2:] == ["--debug"] and "NCCL_DEBUG" not in env

    argv, env = _recorded(agent, single, "train")
    assert argv[2:] == [] and "NCCL_DEBUG" not in env
    assert _gpus_seen(runtime, env) == set(single.gpu_uuids)
    assert set(single.gpu_uuids).isdisjoint(pair.gpu_uuids)


def test_torchrun_is_the_other_launcher(
    local_agent_config: dict[str, Any], start_agent: Any
) -> None:
    """multi_gpu.launcher: torchrun gives Axolotl's torchrun launch: a process per GPU of the job,
    standalone (a rendezvous port of its own)."""
    local_agent_config["gpus"] = GPUS
    local_agent_config["multi_gpu"] = {"launcher": "torchrun"}
    stub, agent = start_agent(local_agent_config)
    job = stub.SubmitJob(
        pb.SubmitJobRequest(spec=spec({"hatrain_standin": {"record_env": True}}, gpus=3))
    ).job
    job = wait_state(stub, job.id, TERMINAL)
    assert job.state == pb.JOB_STATE_SUCCEEDED
    argv, env = _recorded(agent, job, "train")
    assert argv[2:] == ["--launcher", "torchrun", "--", "--nproc_per_node", "3", "--standalone"]
    assert _gpus_seen("local", env) == set(job.gpu_uuids) and len(job.gpu_uuids) == 3
