"""What one user can do to a shared agent: hold streams open, send bombs and oversized fields.

The agent runs as its own process (`hatrain-agent serve`), so that its memory and its answers
are measured as a client sees them.
"""

import asyncio
import os
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hatrain.agent.accounts import lookup
from hatrain.agent.objects import ObjectStore
from hatrain.rpc.v1 import agent_pb2 as pb
from hatrain.rpc.v1 import agent_pb2_grpc as pb_grpc

from tests.support.harness import (
    TEST_USER,
    AgentProcess,
    poll,
    socket_path,
    spec,
    stub_for,
    wait_state,
)

WATCHERS = 1000
BOMB = """a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
output_dir: /workspace/data/training-runs/out
"""


@pytest.fixture
def agent_process(
    local_agent_config: dict[str, Any], tmp_path: Path
) -> Iterator[tuple[AgentProcess, str]]:
    """`hatrain-agent serve` (local runtime, one job at a time) and its address."""
    sock = socket_path()
    config = {
        **local_agent_config,
        "listen": str(sock),
        "scheduler": {"max_cpu_jobs": 1},
        "limits": {"max_watch_streams_per_user": 2 * WATCHERS},
    }
    agent = AgentProcess(config, tmp_path)
    agent.start()
    try:
        yield agent, f"unix:{sock}"
    finally:
        agent.terminate()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100)[98]


async def _hold_watchers(
    target: str, job_id: str, opened: asyncio.Event, release: asyncio.Event
) -> int:
    """Open WATCHERS follow streams on a job and keep them until release; returns how many
    received the job's first event (proof that each stream is really open)."""
    channels = [grpc.aio.insecure_channel(target) for _ in range(8)]
    metadata = (("x-hatrain-user", "mallory"),)
    first_events = 0

    async def watch(channel: grpc.aio.Channel) -> None:
        nonlocal first_events
        stub = pb_grpc.AgentServiceStub(channel)
        call = stub.WatchJob(pb.WatchJobRequest(job_id=job_id, follow=True), metadata=metadata)
        await call.read()
        first_events += 1
        if first_events == WATCHERS:
            opened.set()
        await release.wait()
        call.cancel()

    tasks = [asyncio.create_task(watch(channels[i % len(channels)])) for i in range(WATCHERS)]
    await asyncio.gather(*tasks)
    for channel in channels:
        await channel.close()
    return first_events


def test_a_thousand_open_watch_streams_leave_calls_alone(
    agent_process: tuple[AgentProcess, str],
) -> None:
    """With 1,000 watch streams open on a running job, submits and health checks still answer
    promptly: p99 under 100 ms (the streams no longer hold a thread each)."""
    _, target = agent_process
    stub, channel = stub_for(target)
    held = stub.SubmitJob(
        pb.SubmitJobRequest(spec=spec({"hatrain_standin": {"hold_train": "never"}}))
    ).job
    wait_state(stub, held.id, {pb.JOB_STATE_TRAINING})
    health = health_pb2_grpc.HealthStub(channel)

    loop = asyncio.new_event_loop()
    opened, release = asyncio.Event(), asyncio.Event()
    holder = loop.create_task(_hold_watchers(target, held.id, opened, release))
    threading.Thread(target=loop.run_forever, daemon=True).start()
    asyncio.run_coroutine_threadsafe(asyncio.wait_for(opened.wait(), 120), loop).result()

    submit, checks = [], []
    for _ in range(100):
        started = time.perf_counter()
        stub.SubmitJob(pb.SubmitJobRequest(spec=spec({})), timeout=10)
        submit.append(time.perf_counter() - started)
        started = time.perf_counter()
        answer = health.Check(health_pb2.HealthCheckRequest(), timeout=10)
        checks.append(time.perf_counter() - started)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING

    loop.call_soon_threadsafe(release.set)
    watchers = asyncio.run_coroutine_threadsafe(asyncio.wait_for(holder, 60), loop).result()
    loop.call_soon_threadsafe(loop.stop)
    channel.close()
    assert watchers == WATCHERS
    assert p99(submit) < 0.1, f"submit p99 {p99(submit) * 1000:.0f} ms"
    assert p99(checks) < 0.1, f"health p99 {p99(checks) * 1000:.0f} ms"


def test_bombs_and_oversized_fields_are_refused(
    agent_process: tuple[AgentProcess, str],
) -> None:
    """A 400-byte YAML bomb, and every oversized field, get INVALID_ARGUMENT naming the field;
    the agent's memory grows by less than 10 MB."""
    agent, target = agent_process
    stub, channel = stub_for(target)
    assert agent.proc is not None
    stub.GetAgentInfo(pb.GetAgentInfoRequest())
    before = rss_kib(agent.proc.pid)

    def refused(call: Any, request: Any) -> str:
        with pytest.raises(grpc.RpcError) as raised:
            call(request, timeout=30)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value.details()
        return str(raised.value.details())

    bomb = pb.JobSpec(config_name="bomb.yml", config_yaml=BOMB.encode(), image="x")
    assert len(BOMB) < 400
    assert "too large" in refused(stub.SubmitJob, pb.SubmitJobRequest(spec=bomb))
    for field, value in (
        ("name", "n" * 10_000),
        ("team", "t" * 10_000),
        ("retry_of", "r" * 10_000),
        ("image", "i" * 10_000),
    ):
        big = spec({})
        setattr(big, field, value)
        assert f"spec.{field}" in refused(stub.SubmitJob, pb.SubmitJobRequest(spec=big))
    one_too_many = pb.PrepareUploadRequest(sha256=[f"{i:064x}" for i in range(10_001)])
    assert "sha256: at most 10000" in refused(stub.PrepareUpload, one_too_many)
    assert "job_id" in refused(stub.GetJob, pb.GetJobRequest(job_id="j" * 10_000))
    assert "user" in refused(stub.ListJobs, pb.ListJobsRequest(user="u" * 10_000))
    secrets = {f"S{i}": "x" for i in range(100)}
    assert "secrets" in refused(stub.SubmitJob, pb.SubmitJobRequest(spec=spec({}), secrets=secrets))

    stub.GetAgentInfo(pb.GetAgentInfoRequest())
    grown = rss_kib(agent.proc.pid) - before
    assert grown < 10 * 1024, f"RSS grew by {grown} KiB"
    # 100,000 hashes (6.6 MB, within the request size) are refused too, with a short answer.
    many = pb.PrepareUploadRequest(sha256=[f"{i:064x}" for i in range(100_000)])
    assert "sha256: at most 10000" in refused(stub.PrepareUpload, many)
    channel.close()
    listed = stub_for(target)[0].ListJobs(pb.ListJobsRequest())
    assert listed.total == 0, "nothing of the refused requests was kept"


def test_watch_streams_per_user_are_capped(
    local_agent_config: dict[str, Any], start_agent: Any
) -> None:
    """One user may hold at most limits.max_watch_streams_per_user streams; one more is
    refused with RESOURCE_EXHAUSTED saying why, and a closed stream frees its place."""
    config = {**local_agent_config, "limits": {"max_watch_streams_per_user": 2}}
    stub, _ = start_agent(config)
    job = stub.SubmitJob(
        pb.SubmitJobRequest(spec=spec({"hatrain_standin": {"hold_train": "never"}}))
    ).job
    wait_state(stub, job.id, {pb.JOB_STATE_TRAINING})
    request = pb.WatchJobRequest(job_id=job.id, follow=True)
    first, second = stub.WatchJob(request), stub.WatchJob(request)
    next(first), next(second)
    third = stub.WatchJob(request)
    with pytest.raises(grpc.RpcError) as raised:
        next(third)
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_watch_streams_per_user" in str(raised.value.details())
    first.cancel()

    def reopened() -> Any:
        stream = stub.WatchJob(request)
        try:
            return next(stream) and stream
        except grpc.RpcError:
            return None

    poll(reopened, 10, "a closed stream to free its place").cancel()
    second.cancel()


def test_abandoned_uploads_are_removed_after_their_age(tmp_path: Path) -> None:
    """Staged uploads untouched for limits.staging_max_age_seconds are removed; a recent one,
    which may still resume, is kept."""
    objects = ObjectStore(tmp_path)
    old = objects.staging_path("a" * 64, lookup(TEST_USER))
    recent = objects.staging_path("b" * 64, lookup(TEST_USER))
    old.write_bytes(b"abandoned")
    recent.write_bytes(b"resuming")
    day_ago = time.time() - 86400 - 60
    os.utime(old, (day_ago, day_ago))
    assert objects.remove_stale_staging(86400) == 1
    assert not old.exists() and recent.exists()
