"""Measure the agent against its targets and against peers run on this machine in the same run.

    python bench/run_all.py [--jobs 10000] [--lines 100000] [--rate 50000] [--runs 7]
                            [--only queue|stream|memory]

1. submit throughput into a queue of N jobs      peer: gRPC round trips that do nothing
2. one page of 50 at N jobs, p99                 target 20 ms
3. a job printing L lines, to a watcher          peers: `docker attach`, `docker logs -f`
   (as fast as it can, and at the target rate)      of a container printing the same lines
4. agent memory at rest (RSS)                    peer: a bare Python gRPC server
"""

import argparse
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import docker
import grpc
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hatrain.agent.config import AgentConfig  # noqa: E402
from hatrain.agent.server import Agent, configure_logging  # noqa: E402
from hatrain.rpc.v1 import agent_pb2 as pb  # noqa: E402
from hatrain.rpc.v1 import agent_pb2_grpc as pb_grpc  # noqa: E402

from tests.support.harness import socket_path  # noqa: E402
from tests.support.images import ensure_test_image, python_mounts  # noqa: E402

PRINTER = """import sys, time
n = int(sys.argv[1])
rate = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
if len(sys.argv) > 3:  # the job's config, as the agent runs it
    for text in open(sys.argv[3]):
        if text.startswith("bench_rate:"):
            rate = float(text.split(":")[1])
w = sys.stdout.write
due = time.time()
for i in range(n):
    if rate and i % 50 == 0:
        now = time.time()
        if due > now:
            sys.stdout.flush()
            time.sleep(due - now)
        elif now - due > 0.005:
            due = now  # well behind: go on from here, not faster than the rate to catch up
        due += 50 / rate
    w(f"line {i} {time.time():.6f}\\n")
sys.stdout.flush()
"""


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def agent_config(root: Path, image: str, bindir: Path, **extra: Any) -> dict[str, Any]:
    return {
        "data_root": str(root),
        "listen": str(socket_path()),
        "log_format": "console",
        "docker": {
            "allowed_images": [image],
            "default_image": image,
            "pull_missing": False,
            "extra_mounts": python_mounts(bindir),
            "env": {"PATH": f"{bindir}:/usr/bin:/bin"},
        },
        **extra,
    }


def make_axolotl_printer(bindir: Path, lines: int) -> None:
    """An `axolotl` for the streaming bench: preprocess succeeds, train prints `lines` lines, as
    fast as it can or at the `bench_rate:` (lines a second) of the job's config."""
    bindir.mkdir(parents=True, exist_ok=True)
    (bindir / "printer.py").write_text(PRINTER)
    script = bindir / "axolotl"
    script.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = preprocess ]; then echo "Success! Preprocessed data path: x"; exit 0; fi\n'
        f'exec {sys.executable} {bindir / "printer.py"} {lines} 0 "$2"\n'
    )
    script.chmod(0o755)


def spec(image: str, rate: float = 0.0) -> pb.JobSpec:
    config = "output_dir: /workspace/data/training-runs/out\n"
    if rate:
        config += f"bench_rate: {rate}\n"
    return pb.JobSpec(config_name="bench.yml", image=image, config_yaml=config.encode())


def bench_queue(image: str, bindir: Path, jobs: int) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        config = agent_config(Path(tmp), image, bindir, scheduler={"max_cpu_jobs": 0})
        agent = Agent(AgentConfig.model_validate(config))
        agent.start()
        channel = grpc.insecure_channel(f"unix:{config['listen']}")
        stub = pb_grpc.AgentServiceStub(channel)
        stub.GetAgentInfo(pb.GetAgentInfoRequest())
        started = time.perf_counter()
        for _ in range(2000):
            stub.GetAgentInfo(pb.GetAgentInfoRequest())
        noop_rate = 2000 / (time.perf_counter() - started)
        request = pb.SubmitJobRequest(spec=spec(image))
        clients = 4

        def submit(count: int) -> None:
            for _ in range(count):
                stub.SubmitJob(request)

        threads = [threading.Thread(target=submit, args=(jobs // clients,)) for _ in range(clients)]
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        submit_rate = clients * (jobs // clients) / (time.perf_counter() - started)
        # Every page of the listing, from the head of the queue to its tail, in random order.
        tokens = [""]
        while token := stub.ListJobs(
            pb.ListJobsRequest(page_size=50, page_token=tokens[-1])
        ).next_page_token:
            tokens.append(token)
        rng = random.Random(7)
        latencies = []
        for _ in range(600):
            token = rng.choice(tokens)
            began = time.perf_counter()
            stub.ListJobs(pb.ListJobsRequest(page_size=50, page_token=token))
            latencies.append((time.perf_counter() - began) * 1000)
        channel.close()
        agent.stop(0)
    return [
        f"submit into a queue of {jobs} from {clients} clients: {submit_rate:,.0f} jobs/s "
        f"(target >= 500: "
        f"{submit_rate / 500:.2f}x); no-op gRPC round trips {noop_rate:,.0f}/s "
        f"(ratio {submit_rate / noop_rate:.2f})",
        f"list a page of 50 at {jobs} jobs (any of its {len(tokens)} pages): "
        f"p99 {p99(latencies):.1f} ms, median "
        f"{sorted(latencies)[len(latencies) // 2]:.1f} ms (target <= 20 ms)",
    ]


class Stream:
    """Lines of one run as a watcher got them: (when it got them, the lines)."""

    def __init__(self) -> None:
        self.batches: list[tuple[float, list[str]]] = []
        self.started = time.time()

    def got(self, lines: list[str]) -> None:
        self.batches.append((time.time(), lines))

    def lines(self) -> int:
        return sum(len(lines) for _, lines in self.batches)

    def rate(self) -> float:
        """Lines a second, from the first line printed to the last one received."""
        first = min(float(lines[0].rsplit(" ", 1)[1]) for _, lines in self.batches if lines)
        return self.lines() / (self.batches[-1][0] - first)

    def p99_ms(self) -> float:
        return 1000 * p99(
            [now - float(line.rsplit(" ", 1)[1]) for now, lines in self.batches for line in lines]
        )


def _printer_container(image: str, bindir: Path, lines: int, rate: float) -> Any:
    client = docker.from_env()
    mounts = [
        docker.types.Mount(m["target"], m["source"], type="bind", read_only=True)
        for m in python_mounts(bindir)
    ]
    return client.containers.create(
        image,
        [sys.executable, str(bindir / "printer.py"), str(lines), str(rate)],
        mounts=mounts,
        environment={"PYTHONUNBUFFERED": "1"},  # as the agent runs a step
    )


def peer_logs(image: str, bindir: Path, lines: int, rate: float) -> Stream:
    """`docker logs -f` of a container printing the same lines."""
    container = _printer_container(image, bindir, lines, rate)
    stream = Stream()
    container.start()
    for chunk in container.logs(stream=True, follow=True):
        stream.got(chunk.decode().splitlines())
    container.remove(force=True)
    return stream


def peer_attach(image: str, bindir: Path, lines: int, rate: float) -> Stream:
    """`docker attach` of a container printing the same lines: Docker's live stream with
    nothing done to the lines, the floor under any watcher of a container."""
    container = _printer_container(image, bindir, lines, rate)
    stream = Stream()
    partial = b""
    output = container.attach(stream=True, logs=True)
    container.start()
    for chunk in output:
        *whole, partial = (partial + chunk).split(b"\n")
        stream.got([line.decode() for line in whole])
    container.remove(force=True)
    return stream


def agent_watch(config: dict[str, Any], image: str, rate: float) -> Stream:
    """Submit a job printing the lines and watch it from another process, as a user would."""
    channel = grpc.insecure_channel(f"unix:{config['listen']}")
    stub = pb_grpc.AgentServiceStub(channel)
    job = stub.SubmitJob(pb.SubmitJobRequest(spec=spec(image, rate))).job
    stream = Stream()
    log = pb.EVENT_KIND_LOG
    request = pb.WatchJobRequest(job_id=job.id, follow=True, packed_lines=True)  # as the client
    for response in stub.WatchJob(request):
        for e in response.events:
            if e.kind == log and e.step == "train":
                stream.got(e.lines)
    channel.close()
    return stream


def paired(ours: list[Stream], peers: list[Stream]) -> str:
    """The median and range of each round's rate ratio: the rounds run back to back, so a slow
    moment of the shared machine falls on both sides of a ratio, not on one side's median."""
    ratios = sorted(o.rate() / p.rate() for o, p in zip(ours, peers, strict=True))
    return f"{ratios[len(ratios) // 2]:.2f} ({ratios[0]:.2f}-{ratios[-1]:.2f})"


def bench_stream(image: str, bindir: Path, lines: int, rate: float, runs: int) -> list[str]:
    def summary(streams: list[Stream]) -> str:
        for stream in streams:
            assert stream.lines() == lines, (stream.lines(), lines)
        rates = sorted(s.rate() for s in streams)
        tails = sorted(s.p99_ms() for s in streams)
        middle = len(streams) // 2
        return (
            f"{rates[middle]:,.0f} lines/s ({rates[0]:,.0f}-{rates[-1]:,.0f}), "
            f"p99 latency {tails[middle]:,.0f} ms ({tails[0]:,.0f}-{tails[-1]:,.0f})"
        )

    results = [f"stream {lines:,} log lines to a watcher, median (range) of {runs} runs:"]
    dockerd = pid_of("dockerd")
    with tempfile.TemporaryDirectory() as tmp:
        # The agent as its own process, as deployed: the watcher does not share its GIL.
        config = agent_config(Path(tmp), image, bindir)
        agent = start_agent_process(Path(tmp), config)
        grpc.channel_ready_future(grpc.insecure_channel(f"unix:{config['listen']}")).result(
            timeout=60
        )
        for label, paced in (("as fast as it can", 0.0), (f"at {rate:,.0f} lines/s", rate)):
            # Interleaved rounds: a change in the shared machine's load falls on all three.
            agent_runs: list[Stream] = []
            attach: list[Stream] = []
            follow: list[Stream] = []
            # CPU a line: the agent's, and dockerd's beside it and under attach (what the two
            # cores share).
            agent_cpu: list[float] = []
            dockerd_beside: list[float] = []
            dockerd_attach: list[float] = []
            for _ in range(runs):
                agent_before, dockerd_before = cpu_seconds(agent.pid), cpu_seconds(dockerd)
                agent_runs.append(agent_watch(config, image, paced))
                agent_cpu.append(cpu_seconds(agent.pid) - agent_before)
                dockerd_beside.append(cpu_seconds(dockerd) - dockerd_before)
                dockerd_before = cpu_seconds(dockerd)
                attach.append(peer_attach(image, bindir, lines, paced))
                dockerd_attach.append(cpu_seconds(dockerd) - dockerd_before)
                follow.append(peer_logs(image, bindir, lines, paced))

            def per_line(seconds: list[float]) -> str:
                return f"{1e6 * sorted(seconds)[len(seconds) // 2] / lines:.2f} µs"

            results += [
                f"  {label}: agent {summary(agent_runs)}",
                f"    peer `docker attach`: {summary(attach)}",
                f"    peer `docker logs -f`: {summary(follow)}",
                f"    agent's rate as a ratio to the peer's of the same round, median (range): "
                f"to `docker attach` {paired(agent_runs, attach)}, "
                f"to `docker logs -f` {paired(agent_runs, follow)}",
                f"    CPU a line, median: the agent {per_line(agent_cpu)} (dockerd beside it "
                f"{per_line(dockerd_beside)}); dockerd under `docker attach` "
                f"{per_line(dockerd_attach)}",
            ]
        agent.terminate()
        agent.wait()
    return results


def cpu_seconds(pid: int) -> float:
    """The process's CPU time so far, user and system, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pid_of(command: str) -> int:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == command:
                    return int(entry.name)
            except OSError:
                continue
    raise RuntimeError(f"no {command} process running")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def start_agent_process(tmp: Path, config: dict[str, Any]) -> subprocess.Popen[bytes]:
    (tmp / "agent.yml").write_text(yaml.safe_dump(config))
    return subprocess.Popen(
        [
            str(Path(sys.executable).parent / "hatrain-agent"),
            "serve",
            "--config",
            str(tmp / "agent.yml"),
        ],
        stderr=subprocess.DEVNULL,
    )


def bench_memory(image: str, bindir: Path) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        config = agent_config(Path(tmp), image, bindir)
        proc = start_agent_process(Path(tmp), config)
        channel = grpc.insecure_channel(f"unix:{config['listen']}")
        grpc.channel_ready_future(channel).result(timeout=60)
        pb_grpc.AgentServiceStub(channel).GetAgentInfo(pb.GetAgentInfoRequest())
        time.sleep(2)
        agent_rss = rss_mb(proc.pid)
        channel.close()
        proc.terminate()
        proc.wait()
    bare = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import grpc, time\nfrom concurrent import futures\n"
                "s = grpc.server(futures.ThreadPoolExecutor(4))\n"
                "s.add_insecure_port('127.0.0.1:0')\n"
                "s.start(); time.sleep(60)"
            ),
        ]
    )
    time.sleep(3)
    bare_rss = rss_mb(bare.pid)
    bare.kill()
    return [
        f"agent memory at rest: {agent_rss:.0f} MB RSS (target <= 80 MB); a bare Python gRPC "
        f"server: {bare_rss:.0f} MB; ratio {agent_rss / bare_rss:.2f}"
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=50_000, help="the paced stream's lines/s")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--only", choices=["queue", "stream", "memory"], action="append")
    args = parser.parse_args()
    only = set(args.only or ["queue", "stream", "memory"])
    configure_logging("console")
    import logging

    logging.disable(logging.INFO)
    image = ensure_test_image(docker.from_env())
    with tempfile.TemporaryDirectory() as tmp:
        bindir = Path(tmp) / "bin"
        make_axolotl_printer(bindir, args.lines)
        os.chmod(tmp, 0o755)
        results: list[str] = []
        if "queue" in only:
            results += bench_queue(image, bindir, args.jobs)
        if "stream" in only:
            results += bench_stream(image, bindir, args.lines, args.rate, args.runs)
        if "memory" in only:
            results += bench_memory(image, bindir)
    print("\n".join(results))


if __name__ == "__main__":
    main()
