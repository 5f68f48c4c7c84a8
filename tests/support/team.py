"""A team of agents for the team queue's tests: each host a real `hatrain-agent serve` process
(the `local` runtime, the stand-in `axolotl`) with its own data root, socket and GPU list (the
static list of agent.yml: CI has no GPU), all sharing one real PostgreSQL."""

import hashlib
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from hatrain.rpc.v1 import agent_pb2 as pb

from tests.support.harness import AgentProcess, poll, socket_path, spec, stub_for
from tests.support.postgres import Cluster

A100 = {"name": "NVIDIA A100-SXM4-40GB", "memory_mb": 40960}
H200 = {"name": "NVIDIA H200", "memory_mb": 143771}
# Timings short enough for a test to see a host marked down, long enough for a busy machine.
HEARTBEAT_SECONDS = 0.5
DOWN_AFTER_SECONDS = 10.0


def held(go: str = "go", gpus: int = 1, **kwargs: Any) -> Any:
    """A job that trains until a file named `go` appears in its run directory."""
    return spec({"hatrain_standin": {"hold_train": go}}, gpus=gpus, **kwargs)


@dataclass
class TeamHost:
    name: str
    workdir: Path
    config: dict[str, Any]
    process: AgentProcess
    stub: Any = None
    channel: Any = None

    @property
    def data_root(self) -> Path:
        return Path(self.config["data_root"])

    @property
    def socket(self) -> Path:
        return Path(self.config["listen"])

    def start(self) -> None:
        self.process.start()
        self.stub, self.channel = stub_for(self.socket)

    def kill(self) -> None:
        """SIGKILL: the agent is gone at once (its jobs' processes are left as they are)."""
        if self.channel is not None:
            self.channel.close()
        self.process.kill()

    def stop(self) -> None:
        if self.channel is not None:
            self.channel.close()
        self.process.terminate()

    def release(self, job_id: str, go: str = "go") -> None:
        run = self.data_root / "jobs" / job_id / "run"
        poll(run.exists, 60, f"{job_id}'s run directory on {self.name}")
        (run / go).write_text("")

    def submit(self, job_spec: Any, **kwargs: Any) -> Any:
        return self.stub.SubmitJob(
            pb.SubmitJobRequest(
                spec=job_spec, team_queue=True, client_request_id=uuid.uuid4().hex, **kwargs
            )
        ).job

    def upload(self, data: bytes) -> pb.JobFile:
        sha = hashlib.sha256(data).hexdigest()
        prepared = self.stub.PrepareUpload(pb.PrepareUploadRequest(sha256=[sha]))
        for staged in prepared.missing:
            Path(staged.staging_path).write_bytes(data)
            self.stub.CommitUpload(pb.CommitUploadRequest(sha256=sha, size=len(data)))
        return pb.JobFile(path="train.jsonl", sha256=sha, size=len(data))


@dataclass
class Team:
    cluster: Cluster
    hosts: dict[str, TeamHost] = field(default_factory=dict)

    def add(
        self, name: str, base: dict[str, Any], gpus: list[dict[str, Any]], root: Path
    ) -> TeamHost:
        workdir = root / name
        workdir.mkdir(parents=True)
        config = {
            **base,
            # Beside the base config's data root, which the jobs' users can reach (they run as
            # those users); the agent's own files stay in workdir.
            "data_root": str(Path(base["data_root"]).parent / name / "data"),
            "listen": str(socket_path()),
            "gpus": {
                "source": "static",
                "static": [{"uuid": f"GPU-{name}-{i}", **g} for i, g in enumerate(gpus)],
                "sample_seconds": 0,
            },
            "team": {
                "database": self.cluster.conninfo,
                "host": name,
                "heartbeat_seconds": HEARTBEAT_SECONDS,
                "down_after_seconds": DOWN_AFTER_SECONDS,
                "poll_seconds": 1.0,
                "retry_seconds": 60,
            },
        }
        host = TeamHost(name, workdir, config, AgentProcess(config, workdir))
        self.hosts[name] = host
        return host

    def __getitem__(self, name: str) -> TeamHost:
        return self.hosts[name]

    def sql(self, statement: str, args: Any = None) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.cluster.conninfo, autocommit=True) as conn:
            cur = conn.execute(statement, args)
            return cur.fetchall() if cur.description else []

    def row(self, job_id: str) -> dict[str, Any]:
        with psycopg.connect(self.cluster.conninfo, autocommit=True) as conn:
            cur = conn.execute(
                "SELECT state, host, attempt, local_state, failure_reason, hint, note, "
                "pending_reason, epoch FROM team_jobs WHERE id = %s",
                (job_id,),
            )
            names = [d.name for d in cur.description or ()]
            row = cur.fetchone()
            assert row is not None, f"no team job {job_id}"
            return dict(zip(names, row, strict=True))

    def wait_row(self, job_id: str, what: str, timeout: float = 90, **want: Any) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            row = self.row(job_id)
            return row if all(row[k] == v for k, v in want.items()) else None

        return poll(check, timeout, f"team job {job_id}: {what} ({want})", every=0.1)

    def close(self) -> None:
        for host in self.hosts.values():
            host.stop()
