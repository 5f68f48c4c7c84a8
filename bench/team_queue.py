"""What the team queue costs: real agents (`hatrain-agent serve`, the `local` runtime) against a
real PostgreSQL 15, beside a single host with its own queue (SQLite), in the same run.

    python bench/team_queue.py [--rounds 60] [--jobs 2000] [--threads 8]

1. submit to start on an idle host: from the submit call to the job's first process running
   (the time it prints, as it starts), a 1-GPU job on an idle single host against the same job
   submitted to the team queue of three idle hosts; and to its `starting` (the time the running
   host's store records it). Rounds interleaved; median and p90 of each, and their ratio
   (target: team <= 1.3 x single host).
2. submit throughput: --jobs 1-GPU jobs from --threads client threads, with every GPU of the
   team (and of the single host) busy so that they queue, in jobs a second (target: team
   >= 300/s), beside the single host's figure.
"""

import argparse
import statistics
import sys
import tempfile
import threading
import time
import uuid
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import grpc  # noqa: E402
from hatrain.rpc.v1 import agent_pb2 as pb  # noqa: E402

from tests.support.harness import AgentProcess, poll, socket_path, stub_for  # noqa: E402
from tests.support.postgres import cluster  # noqa: E402

# `axolotl` for these jobs: preprocess prints when it started and succeeds at once, train sleeps
# until it is cancelled.
STARTED = "started at "
SLEEPER = (
    "#!/bin/sh\n"
    'if [ "$1" = preprocess ]; then\n'
    f'  echo "{STARTED}$(date +%s.%N)"; echo "Success! Preprocessed data path: x"; exit 0\n'
    "fi\n"
    "exec sleep 100000\n"
)
CONFIG = b"output_dir: /workspace/data/training-runs/out\n"


def job_spec(gpus: int = 1) -> pb.JobSpec:
    return pb.JobSpec(
        config_name="bench.yml", config_yaml=CONFIG, resources=pb.Resources(gpus=gpus)
    )


def agent(
    root: Path, name: str, venv: Path, conninfo: str | None, gpus: int
) -> tuple[AgentProcess, Any]:
    """The agent started, and a stub on it."""
    work = root / name
    work.mkdir()
    config: dict[str, Any] = {
        "data_root": str(work / "data"),
        "listen": str(socket_path()),
        "log_format": "console",
        "runtime": "local",
        "local": {"venv": str(venv), "stop_grace_seconds": 1},
        "gpus": {
            "source": "static",
            "static": [{"uuid": f"GPU-{name}-{i}", "name": "NVIDIA H200"} for i in range(gpus)],
            "sample_seconds": 0,
        },
    }
    if conninfo:
        config["team"] = {"database": conninfo, "host": name, "heartbeat_seconds": 1.0}
    process = AgentProcess(config, work)
    process.start()
    stub, _ = stub_for(config["listen"])
    return process, stub


def state_time(stub: Any, job_id: str, state: Any) -> float | None:
    """When the host's record of the job reached state (None: not yet, or not recorded there
    yet: placed on it, not claimed)."""
    try:
        for response in stub.WatchJob(pb.WatchJobRequest(job_id=job_id, follow=False)):
            for event in response.events:
                if event.kind == pb.EVENT_KIND_STATE and event.state == state:
                    return float(event.time)
    except grpc.RpcError as exc:
        if exc.code() not in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND):
            raise
    return None


def first_process_time(stub: Any, job_id: str) -> float | None:
    """When the job's first process started, as it printed it (None: not printed yet)."""
    try:
        for response in stub.WatchJob(pb.WatchJobRequest(job_id=job_id, follow=False)):
            for event in response.events:
                if event.kind == pb.EVENT_KIND_LOG and event.line.startswith(STARTED):
                    return float(event.line[len(STARTED) :])
    except grpc.RpcError as exc:
        if exc.code() not in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND):
            raise
    return None


def started_after(stub: Any, job_id: str, submitted: float) -> tuple[float, float]:
    """Seconds from submitted to the job's start (`starting`, as the store of the host running
    it records it) and to its first step's process running (the time that process printed)."""
    running = poll(
        lambda: first_process_time(stub, job_id), 60, f"job {job_id} to start", every=0.01
    )
    starting = state_time(stub, job_id, pb.JOB_STATE_STARTING)
    assert starting is not None
    return starting - submitted, running - submitted


def one_start(stub: Any, hosts: dict[str, Any] | None) -> tuple[tuple[float, float], Any, str]:
    """Submit one job (to the team queue when hosts are given); (time to start, the stub of the
    host running it, its id)."""
    request = pb.SubmitJobRequest(
        spec=job_spec(), team_queue=hosts is not None, client_request_id=uuid.uuid4().hex
    )
    t0 = time.time()
    job = stub.SubmitJob(request).job
    runner = stub
    if hosts is not None:
        placed = poll(
            lambda: stub.GetJob(pb.GetJobRequest(job_id=job.id)).team_host,
            60,
            f"job {job.id} placed",
            every=0.01,
        )
        runner = hosts[placed]
    return started_after(runner, job.id, t0), runner, job.id


def stop_job(stub: Any, job_id: str, settled_on: Any = None) -> None:
    """Cancel the job and wait until it has ended on its host and, with settled_on (another
    host of the team, which reads the team queue's record), until the team queue has it ended
    too: what the team does after a job's end must not fall in the next round's measure."""
    stub.CancelJob(pb.CancelJobRequest(job_id=job_id))

    def ended(where: Any) -> bool:
        return bool(where.GetJob(pb.GetJobRequest(job_id=job_id)).state == pb.JOB_STATE_CANCELLED)

    for where in (stub, settled_on) if settled_on is not None else (stub,):
        poll(partial(ended, where), 60, f"job {job_id} cancelled", every=0.02)


def elsewhere(runner: Any, hosts: dict[str, Any]) -> Any:
    """A host of the team other than runner."""
    return next(stub for stub in hosts.values() if stub is not runner)


def throughput(stub: Any, jobs: int, threads: int, team: bool) -> float:
    per = jobs // threads
    ready = threading.Barrier(threads + 1)

    def submit_many() -> None:
        ready.wait()
        for _ in range(per):
            stub.SubmitJob(
                pb.SubmitJobRequest(
                    spec=job_spec(), team_queue=team, client_request_id=uuid.uuid4().hex
                )
            )

    workers = [threading.Thread(target=submit_many) for _ in range(threads)]
    for w in workers:
        w.start()
    ready.wait()
    t0 = time.perf_counter()
    for w in workers:
        w.join()
    return per * threads / (time.perf_counter() - t0)


def running_jobs(stub: Any) -> int:
    return int(stub.GetAgentInfo(pb.GetAgentInfoRequest()).queue.running)


def p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10)[8] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hatrain-bench-team-") as tmp, cluster() as pg:
        root = Path(tmp)
        venv = root / "venv"
        (venv / "bin").mkdir(parents=True)
        (venv / "bin" / "axolotl").write_text(SLEEPER)
        (venv / "bin" / "axolotl").chmod(0o755)
        single, single_stub = agent(root, "single", venv, None, 2)
        team = {f"gpu{i}": agent(root, f"gpu{i}", venv, pg.primary.conninfo, 2) for i in (1, 2, 3)}
        hosts = {name: stub for name, (_, stub) in team.items()}
        team_stub = hosts["gpu1"]
        try:
            poll(
                lambda: len(team_stub.GetAgentInfo(pb.GetAgentInfoRequest()).team) == 3,
                60,
                "three hosts in the team",
            )
            # Start-up passes done: one job through each path first, not counted.
            for stub, where in ((single_stub, None), (team_stub, hosts)):
                _, runner, job_id = one_start(stub, where)
                stop_job(runner, job_id, elsewhere(runner, hosts) if where else None)
            starts: dict[str, list[float]] = {"single": [], "team": []}
            processes: dict[str, list[float]] = {"single": [], "team": []}
            for _ in range(args.rounds):
                for stub, where, key in ((single_stub, None, "single"), (team_stub, hosts, "team")):
                    (took, to_process), runner, job_id = one_start(stub, where)
                    starts[key].append(took)
                    processes[key].append(to_process)
                    stop_job(runner, job_id, elsewhere(runner, hosts) if where else None)
            print(f"submit -> start on an idle host ({args.rounds} rounds, interleaved)")
            for what, figures in (
                ("first step's process running (as it printed)", processes),
                ("recorded as starting", starts),
            ):
                print(f"  to {what}:")
                for key, label in (("single", "single host"), ("team", "team queue ")):
                    print(
                        f"    {label} : median {statistics.median(figures[key]) * 1000:7.1f} ms"
                        f"   p90 {p90(figures[key]) * 1000:7.1f} ms"
                    )
                ratio = statistics.median(figures["team"]) / statistics.median(figures["single"])
                target = (
                    "target <= 1.3" if figures is processes else "the store's record, no target"
                )
                print(f"    ratio team/single (median): {ratio:.2f}  ({target})")

            # Every GPU busy: what follows queues.
            single_stub.SubmitJob(pb.SubmitJobRequest(spec=job_spec(2)))
            for name in hosts:
                blocker = job_spec(2)
                blocker.host = name
                team_stub.SubmitJob(pb.SubmitJobRequest(spec=blocker, team_queue=True))
            for name, stub in hosts.items():
                poll(partial(running_jobs, stub), 60, f"{name} busy")
            single_rate = throughput(single_stub, args.jobs, args.threads, team=False)
            team_rate = throughput(team_stub, args.jobs, args.threads, team=True)
            print(f"submit throughput ({args.jobs} jobs, {args.threads} client threads, queued)")
            print(f"  single host : {single_rate:7.0f} jobs/s")
            print(f"  team queue  : {team_rate:7.0f} jobs/s  (target >= 300)")
        finally:
            for process in (single, *(p for p, _ in team.values())):
                process.terminate()


if __name__ == "__main__":
    main()
