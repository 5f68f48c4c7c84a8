"""Measure hatrain-client against ssh peers over the same sshd, in the same run.

    python bench/client_bench.py [--size-mib 1024]

1. upload of a SIZE file (send + verify on the host)   peers: scp, rsync -e ssh
2. re-submitting an unchanged SIZE chat dataset, end to end (the CLI process, until the job is
   queued), with a new SSH login and through the shared connection   target <= 0.3 s, 0 bytes
3. submit of a tiny job until its container starts     peer: ssh host docker run
"""

import argparse
import compileall
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import docker
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hatrain.agent.config import AgentConfig  # noqa: E402
from hatrain.agent.server import Agent, configure_logging  # noqa: E402
from hatrain.client.hash_cache import sha256_file  # noqa: E402
from hatrain.client.settings import load_settings  # noqa: E402
from hatrain.client.transport import open_host  # noqa: E402
from hatrain.client.upload import upload  # noqa: E402

from tests.support.client import ClientRunner  # noqa: E402
from tests.support.harness import socket_path  # noqa: E402
from tests.support.images import ensure_test_image  # noqa: E402
from tests.support.sshd import SshServer, start_sshd  # noqa: E402


def best(runs: list[float]) -> float:
    return min(runs)


def ssh_args(sshd: SshServer) -> list[str]:
    return [
        "-p", str(sshd.port), "-i", str(sshd.user_key),
        "-o", f"UserKnownHostsFile={sshd.known_hosts}", "-o", "BatchMode=yes",
    ]  # fmt: skip


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def bench_upload(sshd: SshServer, client: ClientRunner, agent: Agent, big: Path) -> list[str]:
    size = big.stat().st_size
    target = f"{sshd.user}@127.0.0.1"
    dest = Path(tempfile.mkdtemp(prefix="hatrain-peer-"))
    ours, scp, rsync = [], [], []
    digest = sha256_file(big)
    settings = load_settings(client.config)
    for _ in range(3):
        for path in dest.iterdir():
            path.unlink()
        scp.append(timed(["scp", "-q", "-P", str(sshd.port), *ssh_args(sshd)[2:], str(big),
                          f"{target}:{dest}/scp.bin"]))  # fmt: skip
        rsync.append(timed(["rsync", "-a", "--whole-file", "-e", " ".join(["ssh", *ssh_args(sshd)]),
                            str(big), f"{target}:{dest}/rsync.bin"]))  # fmt: skip
        agent.objects.path_of(digest).unlink(missing_ok=True)
        with open_host("gpu1", settings) as session:
            start = time.perf_counter()
            report = upload(session, {digest: big})
            ours.append(time.perf_counter() - start)
            assert report.bytes_sent == size
    mib = size / 2**20
    lines = [
        f"upload {mib:.0f} MiB (send + verify)  hatrain {mib / best(ours):7.1f} MiB/s  "
        f"scp {mib / best(scp):7.1f} MiB/s  rsync {mib / best(rsync):7.1f} MiB/s  "
        f"ratio to scp {best(scp) / best(ours):.2f} (target >= 0.7), "
        f"to rsync {best(rsync) / best(ours):.2f}"
    ]
    return lines


def bench_resubmit(client: ClientRunner, project: Path, how: str) -> list[str]:
    size = (project / "chat.jsonl").stat().st_size
    client.json("submit", "train.yml", "--detach", cwd=project)
    deadline = time.monotonic() + 20
    while "shared" in how and time.monotonic() < deadline:  # the first command started it
        if list(client.runtime_dir.glob("hatrain-*/*.json")):
            break
        time.sleep(0.05)
    times, sent = [], []
    for _ in range(5):
        start = time.perf_counter()
        again = client.json("submit", "train.yml", "--detach", cwd=project)
        times.append(time.perf_counter() - start)
        sent.append(again["upload"]["bytes_sent"])
    return [
        f"re-submit unchanged {size / 2**20:.0f} MiB chat dataset ({how}): "
        f"best {best(times):.3f} s, median {sorted(times)[2]:.3f} s end to end (CLI process), "
        f"bytes sent {max(sent)} (target <= 0.3 s, 0 bytes)"
    ]


def start_times(client: docker.DockerClient, since: float, until: float) -> dict[str, float]:
    """Container name -> the instant dockerd reports it started."""
    started = {}
    for event in client.events(since=int(since) - 1, until=int(until) + 1, decode=True,
                               filters={"event": "start"}):  # fmt: skip
        started[event["Actor"]["Attributes"]["name"]] = event["timeNano"] / 1e9
    return started


def remove_containers_of(dc: docker.DockerClient, jobs: list[str], timeout: float = 60) -> None:
    """Once the jobs have ended their containers are the agent's to remove; those of a job
    still running when the time is up (the agent stops right after) are removed here."""

    def left() -> list[Any]:
        return [
            c
            for job in jobs
            for c in dc.containers.list(all=True, filters={"name": f"hatrain-{job}-"})
        ]

    deadline = time.monotonic() + timeout
    while left() and time.monotonic() < deadline:
        time.sleep(0.2)
    for container in left():
        container.remove(force=True)


def bench_start(sshd: SshServer, client: ClientRunner, project: Path, image: str) -> list[str]:
    dc = docker.from_env()
    ours, peer = [], []
    jobs = []
    for i in range(5):
        begin = time.time()
        job = client.json("submit", "tiny.yml", "--detach", cwd=project)
        jobs.append(job["id"])
        name = f"hatrain-{job['id']}-preprocess"
        deadline = time.monotonic() + 60
        while name not in start_times(dc, begin, time.time()) and time.monotonic() < deadline:
            time.sleep(0.05)
        ours.append(start_times(dc, begin, time.time())[name] - begin)
        peer_name = f"bench-peer-{os.getpid()}-{i}"
        begin = time.time()
        subprocess.run(["ssh", *ssh_args(sshd), f"{sshd.user}@127.0.0.1",
                        f"docker run --rm --name {peer_name} {image} echo"],
                       check=True, capture_output=True)  # fmt: skip
        peer.append(start_times(dc, begin, time.time())[peer_name] - begin)
    remove_containers_of(dc, jobs)
    return [
        f"submit until the container starts: hatrain {best(ours):.3f} s (median "
        f"{sorted(ours)[2]:.3f}), ssh + docker run {best(peer):.3f} s "
        f"(median {sorted(peer)[2]:.3f}); "
        f"ratio {sorted(ours)[2] / sorted(peer)[2]:.2f} of medians (target <= 1.5)"
    ]


def main() -> None:
    # An installed client has its bytecode compiled (pip does it); this checkout may not, when
    # PYTHONDONTWRITEBYTECODE is set, and every command would compile the client from source.
    for folder in ("client", "proto"):
        compileall.compile_dir(REPO / folder, quiet=1)
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=1024)
    args = parser.parse_args()
    configure_logging("console")
    work = Path(tempfile.mkdtemp(prefix="hatrain-bench-client-"))
    image = ensure_test_image(docker.from_env())
    sshd = start_sshd(work / "sshd")
    config: dict[str, Any] = {
        "data_root": str(work / "data"),
        "listen": str(socket_path()),
        "log_format": "console",
        "docker": {"allowed_images": [image], "default_image": image, "pull_missing": False},
        "scheduler": {"max_cpu_jobs": 8},
    }
    agent = Agent(AgentConfig.model_validate(config))
    agent.start()
    # Re-submits go to a host that queues without starting anything, so that the containers of
    # earlier jobs do not compete with the command measured for this machine's two cores.
    queue_only = Agent(AgentConfig.model_validate({
        **config, "data_root": str(work / "queue"), "listen": str(socket_path()),
        "scheduler": {"max_cpu_jobs": 0},
    }))  # fmt: skip
    queue_only.start()
    try:
        cold = ClientRunner.configure(
            work / "cold", sshd, agent.socket
        )  # a new SSH login each time
        client = ClientRunner.configure(
            work / "client", sshd, agent.socket, keep_connection_seconds=60
        )
        queue_cold = ClientRunner.configure(work / "queue-cold", sshd, queue_only.socket)
        queue_shared = ClientRunner.configure(
            work / "queue-shared", sshd, queue_only.socket, keep_connection_seconds=60
        )
        project = work / "project"
        project.mkdir()
        big = project / "big.bin"
        with big.open("wb") as fh:
            block = os.urandom(2**20)
            for i in range(args.size_mib):
                fh.write(i.to_bytes(4, "little") + block[4:])
        chat = project / "chat.jsonl"  # a chat dataset of SIZE, checked line by line once
        rows = (REPO / "configs" / "demo" / "sample.jsonl").read_bytes()
        with chat.open("wb") as fh:
            while fh.tell() < args.size_mib * 2**20:
                fh.write(rows)
        (project / "train.yml").write_text(yaml.safe_dump({
            "datasets": [{"path": "./chat.jsonl", "type": "chat_template"}],
            "output_dir": "/workspace/data/training-runs/bench",
        }))  # fmt: skip
        (project / "tiny.yml").write_text(yaml.safe_dump({
            "output_dir": "/workspace/data/training-runs/tiny",
        }))  # fmt: skip
        results: list[str] = []
        for step in (
            lambda: bench_upload(sshd, cold, agent, big),
            lambda: bench_resubmit(queue_cold, project, "a new SSH login each time"),
            lambda: bench_resubmit(queue_shared, project, "the shared connection, as by default"),
            lambda: bench_start(sshd, client, project, image),
        ):
            lines = step()
            print("\n".join(lines), flush=True)
            results += lines
        (work / "results.json").write_text(json.dumps(results))
    finally:
        agent.stop(grace=1)
        queue_only.stop(grace=1)
        sshd.stop()


if __name__ == "__main__":
    main()
