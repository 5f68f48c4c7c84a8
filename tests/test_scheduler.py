"""The scheduler as a pure function, and GPU placement through a real dockerd.

Placement test: CI has no GPU and no NVIDIA Container Toolkit. dockerd is started (by
scripts/setup-host.sh --test-gpu-hook) with a stand-in `nvidia-container-runtime-hook` on its
PATH, which makes dockerd's own NVIDIA device driver accept the agent's device requests and put
the requested UUIDs into each container's NVIDIA_VISIBLE_DEVICES. The test reads both the device
requests of the created containers and the variable inside them. It proves which GPUs each job
was given and that jobs ran side by side on disjoint sets; it does not prove that the real
toolkit isolates GPUs (that is the toolkit's job, and needs a GPU host).
"""

from pathlib import Path
from typing import Any

import docker
from hatrain.agent.scheduler import GpuSlot, Host, Placement, Policy, QueuedJob, RunningJob, plan
from hatrain.rpc.v1 import agent_pb2 as pb

from tests.support.harness import TERMINAL, poll, spec, wait_state

GPUS = [GpuSlot(i, f"GPU-{i}", "NVIDIA H200", 143_000) for i in range(4)]
NOW = 1000.0


def _placed(
    queued: list[QueuedJob],
    running: list[RunningJob],
    gpus: list[GpuSlot],
    policy: Policy | None = None,
) -> list[Placement]:
    """What one host's pass starts (no usage history)."""
    return plan(queued, running, [Host("", tuple(gpus))], policy or Policy(), {}, NOW).placements


def _q(
    job_id: str,
    gpus: int,
    limit: int = 0,
    priority: int = 0,
    user: str = "u",
    order: int = 0,
    **kw: Any,
) -> QueuedJob:
    return QueuedJob(
        job_id, user, gpus, priority=priority, time_limit_seconds=limit, order=order, **kw
    )


def test_side_by_side_on_disjoint_gpus() -> None:
    placed = _placed([_q("a", 2, order=0), _q("b", 2, order=1)], [], GPUS)
    assert [p.job_id for p in placed] == ["a", "b"]
    assert set(placed[0].gpu_uuids).isdisjoint(placed[1].gpu_uuids)


def test_big_job_is_not_starved_by_unbounded_small_jobs() -> None:
    running = [RunningJob("a", "u", ("GPU-0", "GPU-1"))]  # no time limit: end unknown
    queued = [_q("big", 4, order=0), _q("small", 1, order=1)]
    assert _placed(queued, running, GPUS) == []


def test_small_job_backfills_when_it_ends_before_the_reservation() -> None:
    running = [RunningJob("a", "u", ("GPU-0", "GPU-1"), ends_by=NOW + 3600)]
    queued = [
        _q("big", 4, order=0),
        _q("short", 1, limit=600, order=1),
        _q("long", 1, limit=7200, order=2),
    ]
    placed = _placed(queued, running, GPUS)
    assert [p.job_id for p in placed] == ["short"]


def test_backfill_on_gpus_the_reservation_does_not_need() -> None:
    running = [RunningJob("a", "u", ("GPU-0",))]
    queued = [_q("big", 2, min_gpu_memory_mb=0, gpu_type="H200", order=0)]
    gpus = [*GPUS[:2], GpuSlot(2, "GPU-x", "RTX 4090", 24_000)]
    queued.append(_q("any", 1, order=1))
    # big needs 2 H200s: GPU-1 is free, GPU-0 frees later; the 4090 is of no use to it.
    placed = _placed(queued, running, gpus)
    assert placed and placed[0].job_id == "any" and placed[0].gpu_uuids == ("GPU-x",)


def test_priority_and_fair_share() -> None:
    running = [RunningJob("r", "heavy", ("GPU-0", "GPU-1"))]
    queued = [
        _q("h", 1, user="heavy", order=0),
        _q("l", 1, user="light", order=1),
        _q("p", 1, user="heavy", priority=5, order=2),
    ]
    placed = [p.job_id for p in _placed(queued, running, GPUS)]
    assert placed == ["p", "l"]


def test_user_caps() -> None:
    policy = Policy(user_gpu_caps={"*": 2})
    placed = _placed(
        [_q("a", 2, user="x"), _q("b", 1, user="x", order=1), _q("c", 1, user="y", order=2)],
        [],
        GPUS,
        policy,
    )
    assert [p.job_id for p in placed] == ["a", "c"]


def _requested(client: docker.DockerClient, job_id: str) -> set[str]:
    """The GPU UUIDs in the device requests of the job's train container."""
    found = client.containers.list(
        all=True, filters={"label": [f"hatrain.job={job_id}", "hatrain.step=train"]}
    )
    attrs = client.api.inspect_container(found[0].id)
    return {u for r in attrs["HostConfig"]["DeviceRequests"] for u in r["DeviceIDs"]}


def test_gpu_placement_in_real_containers(
    start_agent: Any, agent_config: dict[str, Any], docker_client: docker.DockerClient
) -> None:
    """Two 2-GPU jobs get disjoint UUIDs; a 4-GPU job waits and is not overtaken by an unbounded
    1-GPU job; a 1-GPU job that ends before it does backfill."""
    agent_config["gpus"] = {
        "source": "static",
        "static": [
            {"uuid": f"GPU-test-{i}", "name": "Test GPU", "memory_mb": 80_000} for i in range(4)
        ],
    }
    stub, agent = start_agent(agent_config)
    hold = {"hatrain_standin": {"hold_train": "go", "record_env": True}}

    def submit(gpus: int, limit: int = 0) -> pb.Job:
        return stub.SubmitJob(
            pb.SubmitJobRequest(spec=spec(hold, gpus=gpus, time_limit_seconds=limit))
        ).job

    a, b = submit(2, limit=3600), submit(2, limit=3600)
    for job in (a, b):
        wait_state(stub, job.id, {pb.JOB_STATE_TRAINING})
    big, unbounded, short = submit(4), submit(1), submit(1, limit=600)

    def env_gpus(job: pb.Job) -> set[str]:
        run = Path(agent.workspace.dirs(job.id).run) / "env-train.txt"
        poll(run.exists, 30, f"job {job.id}'s container to start")
        line = next(
            x for x in run.read_text().splitlines() if x.startswith("NVIDIA_VISIBLE_DEVICES=")
        )
        return set(line.split("=", 1)[1].split(","))

    ga, gb = env_gpus(a), env_gpus(b)
    assert len(ga) == len(gb) == 2 and ga.isdisjoint(gb)
    assert _requested(docker_client, a.id) == ga and _requested(docker_client, b.id) == gb
    assert stub.GetJob(pb.GetJobRequest(job_id=big.id)).state == pb.JOB_STATE_QUEUED

    (Path(agent.workspace.dirs(a.id).run) / "go").write_text("")
    wait_state(stub, a.id, TERMINAL)
    # Two GPUs are free now: the short job fits before b's time limit ends, the unbounded does not.
    wait_state(stub, short.id, {pb.JOB_STATE_TRAINING})
    assert env_gpus(short) <= ga
    assert stub.GetJob(pb.GetJobRequest(job_id=unbounded.id)).state == pb.JOB_STATE_QUEUED
    assert stub.GetJob(pb.GetJobRequest(job_id=big.id)).state == pb.JOB_STATE_QUEUED

    for job in (b, short):
        (Path(agent.workspace.dirs(job.id).run) / "go").write_text("")
    wait_state(stub, big.id, {pb.JOB_STATE_TRAINING})
    assert env_gpus(big) == ga | gb
    assert stub.GetJob(pb.GetJobRequest(job_id=unbounded.id)).state == pb.JOB_STATE_QUEUED
    (Path(agent.workspace.dirs(big.id).run) / "go").write_text("")
    wait_state(stub, unbounded.id, {pb.JOB_STATE_TRAINING})
    (Path(agent.workspace.dirs(unbounded.id).run) / "go").write_text("")
    poll(
        lambda: all(
            stub.GetJob(pb.GetJobRequest(job_id=j.id)).state == pb.JOB_STATE_SUCCEEDED
            for j in (a, b, big, unbounded, short)
        ),
        60,
        "every job to succeed",
    )
