"""Calls while watchers are held, and cancel against `docker stop`, in one run on this machine.

    python bench/faults.py [--watchers 0,1000] [--calls 100] [--cancels 3]

1. submit and health-check latency while N watch streams are held open on a running job
   peer: the same agent with no stream open
2. cancel → the job reported ended, for a running container
   peer: `docker stop` of the same container (image, command, init), until it has exited
"""

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import docker
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hatrain.rpc.v1 import agent_pb2 as pb  # noqa: E402
from hatrain.rpc.v1 import agent_pb2_grpc as pb_grpc  # noqa: E402

from bench.run_all import agent_config, start_agent_process  # noqa: E402
from tests.support.images import ensure_test_image  # noqa: E402

# `axolotl` for these jobs: preprocess succeeds at once, train sleeps until it is stopped.
SLEEPER = (
    "#!/bin/sh\n"
    'if [ "$1" = preprocess ]; then echo "Success! Preprocessed data path: x"; exit 0; fi\n'
    "exec sleep 100000\n"
)


def p(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


def spec(image: str) -> pb.JobSpec:
    return pb.JobSpec(
        config_name="bench.yml",
        image=image,
        config_yaml=b"output_dir: /workspace/data/training-runs/out\n",
    )


def wait_state(stub: Any, job_id: str, states: set[int], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = stub.GetJob(pb.GetJobRequest(job_id=job_id))
        if job.state in states:
            return job
        time.sleep(0.01)
    raise TimeoutError(f"job {job_id} did not reach {states}")


async def _hold(target: str, job_id: str, count: int, opened: threading.Event) -> None:
    channels = [grpc.aio.insecure_channel(target) for _ in range(8)]
    first = 0
    release = asyncio.Event()

    async def watch(channel: grpc.aio.Channel) -> None:
        nonlocal first
        call = pb_grpc.AgentServiceStub(channel).WatchJob(
            pb.WatchJobRequest(job_id=job_id, follow=True)
        )
        await call.read()
        first += 1
        if first == count:
            opened.set()
        await release.wait()

    tasks = [asyncio.create_task(watch(channels[i % 8])) for i in range(count)]
    try:
        await asyncio.gather(*tasks)
    finally:
        for channel in channels:
            await channel.close()


def bench_watchers(image: str, bindir: Path, counts: list[int], calls: int) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        config = agent_config(
            Path(tmp),
            image,
            bindir,
            scheduler={"max_cpu_jobs": 1},
            limits={"max_watch_streams_per_user": max(counts) + 10},
        )
        proc = start_agent_process(Path(tmp), config)
        target = f"unix:{config['listen']}"
        channel = grpc.insecure_channel(target)
        grpc.channel_ready_future(channel).result(timeout=60)
        stub = pb_grpc.AgentServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        held = stub.SubmitJob(pb.SubmitJobRequest(spec=spec(image))).job
        wait_state(stub, held.id, {pb.JOB_STATE_TRAINING})
        rows: list[tuple[int, float, float, float]] = []
        for count in counts:
            loop = asyncio.new_event_loop()
            opened = threading.Event()
            holder: Any = None
            if count:
                holder = loop.create_task(_hold(target, held.id, count, opened))
                threading.Thread(target=loop.run_forever, daemon=True).start()
                if not opened.wait(120):
                    raise TimeoutError(f"{count} watchers did not open")
            submits, checks = [], []
            for _ in range(calls):
                started = time.perf_counter()
                stub.SubmitJob(pb.SubmitJobRequest(spec=spec(image)), timeout=30)
                submits.append(time.perf_counter() - started)
                started = time.perf_counter()
                health.Check(health_pb2.HealthCheckRequest(), timeout=30)
                checks.append(time.perf_counter() - started)
            if holder is not None:
                loop.call_soon_threadsafe(holder.cancel)
                loop.call_soon_threadsafe(loop.stop)
            rows.append((count, p(submits, 50), p(submits, 99), p(checks, 99)))
        stub.CancelJob(pb.CancelJobRequest(job_id=held.id))
        channel.close()
        proc.terminate()
        proc.wait()
    base = rows[0]
    lines = ["calls while watch streams are held open (the same agent with none as the peer):"]
    for count, median, submit99, health99 in rows:
        lines.append(
            f"  {count:>5} watchers: submit median {median * 1000:.1f} ms, p99 "
            f"{submit99 * 1000:.1f} ms; health p99 {health99 * 1000:.1f} ms; submit p99 as a "
            f"ratio to none held {submit99 / base[2]:.2f}"
        )
    return lines


def bench_cancel(image: str, bindir: Path, runs: int) -> list[str]:
    client = docker.from_env()
    with tempfile.TemporaryDirectory() as tmp:
        config = agent_config(Path(tmp), image, bindir, scheduler={"max_cpu_jobs": 4})
        proc = start_agent_process(Path(tmp), config)
        channel = grpc.insecure_channel(f"unix:{config['listen']}")
        grpc.channel_ready_future(channel).result(timeout=60)
        stub = pb_grpc.AgentServiceStub(channel)
        ours, peers = [], []
        for _ in range(runs):
            job = stub.SubmitJob(pb.SubmitJobRequest(spec=spec(image))).job
            wait_state(stub, job.id, {pb.JOB_STATE_TRAINING})
            time.sleep(0.5)  # the step is sleeping, not starting
            started = time.perf_counter()
            stub.CancelJob(pb.CancelJobRequest(job_id=job.id))
            for response in stub.WatchJob(
                pb.WatchJobRequest(
                    job_id=job.id, from_seq=job.last_seq, follow=True, kinds=[pb.EVENT_KIND_STATE]
                ),
            ):
                if response.state == pb.JOB_STATE_CANCELLED:
                    break
            ours.append(time.perf_counter() - started)

            container = client.containers.run(
                image, ["/bin/sh", "-c", "exec sleep 100000"], init=True, detach=True
            )
            time.sleep(0.5)
            started = time.perf_counter()
            container.stop(timeout=30)
            container.wait()
            peers.append(time.perf_counter() - started)
            container.remove(force=True)
        channel.close()
        proc.terminate()
        proc.wait()
    ours_median, peer_median = statistics.median(ours), statistics.median(peers)
    return [
        f"cancel until the job is reported ended: hatrain {ours_median * 1000:.0f} ms "
        f"(range {min(ours) * 1000:.0f}-{max(ours) * 1000:.0f}), `docker stop` of the same "
        f"container {peer_median * 1000:.0f} ms ({min(peers) * 1000:.0f}-"
        f"{max(peers) * 1000:.0f}); ratio {ours_median / peer_median:.2f} of medians"
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--watchers", default="0,1000")
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--cancels", type=int, default=3)
    args = parser.parse_args()
    image = ensure_test_image(docker.from_env())
    with tempfile.TemporaryDirectory() as tmp:
        bindir = Path(tmp) / "bin"
        bindir.mkdir()
        (bindir / "axolotl").write_text(SLEEPER)
        (bindir / "axolotl").chmod(0o755)
        Path(tmp).chmod(0o755)
        counts = [int(c) for c in args.watchers.split(",")]
        results = bench_watchers(image, bindir, counts, args.calls)
        results += bench_cancel(image, bindir, args.cancels)
    print("\n".join(results))


if __name__ == "__main__":
    main()
