"""hatrain with the `local` runtime, measured two ways side by side: raw gRPC calls from the bench
(the floor under any client), and the real `hatrain-client` through a real sshd (what users run).

Agents run as their own processes (`hatrain-agent serve`), as deployed, with 8 GPUs declared
statically (GPU-bench-0..7) and room for 16 jobs without a GPU. The queue figures use an agent
that starts nothing (max_cpu_jobs 0, jobs without a GPU), fresh each round.
"""

import contextlib
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import yaml
from hatrain.rpc.v1 import agent_pb2 as pb
from hatrain.rpc.v1 import agent_pb2_grpc as pb_grpc

from bench.contenders.kit import (
    Burst,
    Cancel,
    Kit,
    Stream,
    burst_of,
    cancel_latency,
    lines_of,
    percentile,
    started_at,
    submit_rate,
    timed_ms,
    wait_until,
)
from tests.support.client import CLIENT as CLIENT_COMMAND
from tests.support.client import ClientRunner
from tests.support.harness import AgentProcess, poll, socket_path
from tests.support.sshd import SshServer

RAW = "hatrain"
CLIENT = "hatrain via client"
TERMINAL = {pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED}
OUTPUT = {"output_dir": "/workspace/data/training-runs/out"}


class Agent:
    """`hatrain-agent serve` with a config of the bench's, a raw stub and a configured client."""

    def __init__(self, root: Path, kit: Kit, sshd: SshServer, max_cpu_jobs: int) -> None:
        self.root = root
        sock = socket_path()
        config = {
            "data_root": str(root / "data"),
            "listen": str(sock),
            "log_format": "json",
            "runtime": "local",
            "local": {"venv": str(kit.axolotl_venv), "stop_grace_seconds": 5},
            "gpus": {
                "source": "static",
                "static": [
                    {"uuid": f"GPU-bench-{i}", "name": "bench GPU", "memory_mb": 81920}
                    for i in range(8)
                ],
            },
            "scheduler": {"max_cpu_jobs": max_cpu_jobs},
        }
        root.mkdir(parents=True)
        self.process = AgentProcess(config, root)
        self.process.start()
        assert self.process.proc is not None
        poll(sock.exists, 60, "the agent's socket")
        self.channel = grpc.insecure_channel(f"unix:{sock}")
        self.stub = pb_grpc.AgentServiceStub(self.channel)
        self.stub.GetAgentInfo(pb.GetAgentInfoRequest(), timeout=30)
        # The shared connection on, as by default: later commands skip the SSH handshake.
        self.client = ClientRunner.configure(
            root / "client", sshd, sock, keep_connection_seconds=600
        )
        self.project = root / "project"
        self.project.mkdir()
        self.client.json("hosts")  # logs in once and leaves the shared connection running
        wait_until(
            lambda: any(self.client.runtime_dir.glob("hatrain-*/*.json")),
            "the client's shared connection",
        )

    def stop(self) -> None:
        self.channel.close()
        self.process.terminate()
        for info in self.client.runtime_dir.glob("hatrain-*/*.json"):  # the shared connection
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(json.loads(info.read_text())["pid"]), signal.SIGTERM)
        shutil.rmtree(self.root, ignore_errors=True)

    def state(self, job_id: str) -> Any:
        return self.stub.GetJob(pb.GetJobRequest(job_id=job_id)).state

    def wait_done(self, job_ids: list[str]) -> None:
        wait_until(lambda: all(self.state(j) in TERMINAL for j in job_ids), "jobs to end")

    # Submitting, by raw call or by the client.

    def submit_raw(self, config: dict[str, str], gpus: int = 0) -> str:
        return str(self.stub.SubmitJob(raw_request(config, gpus)).job.id)

    def submit_raw_array(self, configs: list[dict[str, str]]) -> list[str]:
        """One SubmitJobs call: the jobs queued together, as Slurm's job array."""
        request = pb.SubmitJobsRequest(jobs=[raw_request(c, 0) for c in configs])
        return [job.id for job in self.stub.SubmitJobs(request).jobs]

    def client_config(self, config: dict[str, str]) -> str:
        """A config file in the client's project directory (one per job: they differ)."""
        name = f"bench-{time.monotonic_ns()}-{threading.get_ident()}.yml"
        (self.project / name).write_text(yaml.safe_dump({**OUTPUT, **config}))
        return name

    def submit_client(self, name: str, gpus: int = 0) -> str:
        job = self.client.json("submit", name, "--detach", "--gpus", str(gpus), cwd=self.project)
        return str(job["id"])

    def submit_client_array(self, names: list[str]) -> list[str]:
        """One `hatrain-client submit` of every config: one SubmitJobs call."""
        jobs = self.client.json("submit", *names, "--detach", "--gpus", "0", cwd=self.project)
        return [str(job["id"]) for job in jobs]

    def client_process(self, *args: str) -> "subprocess.Popen[bytes]":
        """The command running, its output to be read from a pipe, what it says on stderr
        kept in a file of its own (client_errors reads it)."""
        self._stderr = self.root / f"client-stderr-{time.monotonic_ns()}.txt"
        with self._stderr.open("wb") as stderr:
            return subprocess.Popen(
                [CLIENT_COMMAND, *args],
                stdout=subprocess.PIPE,
                stderr=stderr,
                env={**self.client.env(), "PYTHONUNBUFFERED": "1"},
            )

    def client_errors(self) -> str:
        """What the last client_process said on stderr."""
        return self._stderr.read_text(errors="replace").strip()


def raw_request(config: dict[str, str], gpus: int) -> pb.SubmitJobRequest:
    spec = pb.JobSpec(
        config_name="bench.yml",
        config_yaml=yaml.safe_dump({**OUTPUT, **config}).encode(),
        resources=pb.Resources(gpus=gpus),
    )
    return pb.SubmitJobRequest(spec=spec)


class Hatrain:
    columns: tuple[str, ...] = (RAW, CLIENT)

    def __init__(self, work: Path, kit: Kit, sshd: SshServer, client_sample: int) -> None:
        self.work = work
        self.kit = kit
        self.sshd = sshd
        self.client_sample = client_sample
        self._agents = 0
        self.agent = self._agent(max_cpu_jobs=16)

    def _agent(self, max_cpu_jobs: int) -> Agent:
        self._agents += 1
        return Agent(self.work / f"agent-{self._agents}", self.kit, self.sshd, max_cpu_jobs)

    def close(self) -> None:
        self.agent.stop()

    def client_floor_ms(self, runs: int = 10) -> float:
        """The median time of `hatrain-client hosts --json`: one call through the shared
        connection, the least any client command that talks to the agent takes."""
        return statistics.median(
            timed_ms(lambda: self.agent.client.json("hosts")) for _ in range(runs)
        )

    def queue(self, first: int, total: int) -> dict[str, dict[str, float]]:
        sample = self.client_sample
        raw: dict[str, float] = {}
        client: dict[str, float] = {}
        empty = self._agent(max_cpu_jobs=0)
        try:
            name = empty.client_config({})
            client["submit_empty"] = submit_rate(lambda: empty.submit_client(name), sample)
        finally:
            empty.stop()
        agent = self._agent(max_cpu_jobs=0)
        try:
            raw["submit_empty"] = submit_rate(lambda: agent.submit_raw({}), first)
            raw["submit_growing"] = submit_rate(lambda: agent.submit_raw({}), total - first)
            tokens = [""]
            while token := agent.stub.ListJobs(
                pb.ListJobsRequest(page_size=50, page_token=tokens[-1])
            ).next_page_token:
                tokens.append(token)
            rng = random.Random(7)
            raw["page_p99"] = percentile(
                [
                    timed_ms(
                        lambda: agent.stub.ListJobs(
                            pb.ListJobsRequest(page_size=50, page_token=rng.choice(tokens))
                        )
                    )
                    for _ in range(600)
                ],
                99,
            )
            client["page_p99"] = percentile(
                [
                    timed_ms(lambda: agent.client.json("queue", "--limit", "50"))
                    for _ in range(sample // 2)
                ],
                99,
            )
            name = agent.client_config({})
            client["submit_growing"] = submit_rate(lambda: agent.submit_client(name), sample)
        finally:
            agent.stop()
        return {RAW: raw, CLIENT: client}

    def start(self) -> dict[str, float]:
        agent = self.agent
        mark = self.kit.file("hatrain-start")
        began = time.time()
        job = agent.submit_raw(
            {"bench_preprocess": "start", "bench_file": Kit.config_name(mark)}, gpus=1
        )
        raw = started_at(mark) - began
        agent.wait_done([job])
        mark = self.kit.file("hatrain-client-start")
        name = agent.client_config(
            {"bench_preprocess": "start", "bench_file": Kit.config_name(mark)}
        )
        began = time.time()
        job = agent.submit_client(name, gpus=1)
        client = started_at(mark) - began
        agent.wait_done([job])
        return {RAW: raw, CLIENT: client}

    def burst(self, size: int) -> dict[str, Burst]:
        agent = self.agent
        marks = [self.kit.file("hatrain-burst") for _ in range(size)]
        configs = [{"bench_preprocess": "start", "bench_file": Kit.config_name(m)} for m in marks]
        submitted = time.time()
        jobs = agent.submit_raw_array(configs)
        raw = burst_of(marks, submitted)
        agent.wait_done(jobs)
        marks = [self.kit.file("hatrain-client-burst") for _ in range(size)]
        names = [
            agent.client_config({"bench_preprocess": "start", "bench_file": Kit.config_name(m)})
            for m in marks
        ]
        submitted = time.time()
        jobs = agent.submit_client_array(names)
        client = burst_of(marks, submitted)
        agent.wait_done(jobs)
        return {RAW: raw, CLIENT: client}

    def cancel(self) -> dict[str, Cancel]:
        agent = self.agent
        pid_file = self.kit.file("hatrain-hold")
        job = agent.submit_raw(
            {"bench_train": "hold", "bench_file": Kit.config_name(pid_file)}, gpus=1
        )
        raw = cancel_latency(
            pid_file,
            lambda: agent.stub.CancelJob(pb.CancelJobRequest(job_id=job)),
            lambda: agent.state(job) == pb.JOB_STATE_CANCELLED,
        )
        pid_file = self.kit.file("hatrain-client-hold")
        name = agent.client_config({"bench_train": "hold", "bench_file": Kit.config_name(pid_file)})
        job = agent.submit_client(name, gpus=1)
        client = cancel_latency(
            pid_file,
            lambda: agent.client.json("cancel", job),
            lambda: agent.state(job) == pb.JOB_STATE_CANCELLED,
        )
        return {RAW: raw, CLIENT: client}

    def stream(self) -> dict[str, Stream]:
        agent = self.agent
        go = self.kit.file("hatrain-go")
        job = agent.submit_raw({"bench_train": "print", "bench_file": Kit.config_name(go)})
        raw = Stream()
        waiting = True
        request = pb.WatchJobRequest(job_id=job, follow=True, packed_lines=True)  # as the client
        for response in agent.stub.WatchJob(request):
            lines = [
                line
                for e in response.events
                if e.kind == pb.EVENT_KIND_LOG and e.step == "train"
                for line in e.lines
            ]
            if waiting and "ready" in lines:
                waiting = False
                go.touch()
            raw.got(lines)
        go = self.kit.file("hatrain-client-go")
        job = agent.submit_client(
            agent.client_config({"bench_train": "print", "bench_file": Kit.config_name(go)})
        )
        client = Stream()
        follower = agent.client_process("logs", job, "--follow")
        assert follower.stdout is not None
        fd = follower.stdout.fileno()
        lines_of(lambda: os.read(fd, 1 << 16), client, go.touch)
        if follower.wait() != 0:
            raise RuntimeError(
                f"`hatrain-client logs --follow` exited {follower.returncode}: "
                f"{agent.client_errors()[-2000:]}"
            )
        return {RAW: raw, CLIENT: client}
