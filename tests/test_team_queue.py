"""The team queue on a real PostgreSQL 15: three agents, each a `hatrain-agent serve` process
with its own data root and GPU list, share one queue; a job is bound to a host only when it can
start there."""

import hashlib
import os
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import pytest
from hatrain.agent.config import SchedulerConfig
from hatrain.agent.errors import ResourceExhausted
from hatrain.agent.jobs import JobSpec
from hatrain.agent.objects import ObjectStore
from hatrain.agent.scheduler import GpuSlot, Policy
from hatrain.agent.team import hosts, placement, queue
from hatrain.agent.team.db import TeamDb
from hatrain.agent.team.front import TeamFront
from hatrain.agent.team.schema import migrate
from hatrain.rpc.v1 import agent_pb2 as pb

from tests.support.claim_race import succeeded
from tests.support.harness import all_events, poll, spec
from tests.support.postgres import Cluster, cluster
from tests.support.team import A100, H200, Team, held
from tests.support.users import ALICE, BOB, channel_as, ensure_user, stub_as

REPO = Path(__file__).resolve().parent.parent
# Jobs the three agents race for: at least 1,000 claims.
RACING_JOBS = 1002
GPUS = {"gpu1": [A100, A100], "gpu2": [H200, H200], "gpu3": [H200, H200]}


@pytest.fixture
def make_team(local_agent_config: dict[str, Any], tmp_path: Path) -> Iterator[Callable[..., Team]]:
    """make_team(standby=False): PostgreSQL (with a synchronous standby if asked) and the three
    agents gpu1 (two A100 40 GB), gpu2 and gpu3 (two H200 each), started."""
    made: list[tuple[Team, Any]] = []

    def make(standby: bool = False) -> Team:
        context = cluster()
        pg = context.__enter__()
        if standby:
            pg.add_standby()
        team = Team(pg)
        made.append((team, context))
        for name, gpus in GPUS.items():
            team.add(name, local_agent_config, gpus, tmp_path).start()
        poll(
            lambda: len(team.sql("SELECT name FROM team_hosts WHERE state = 'up'")) == 3,
            60,
            "three hosts up in the team",
        )
        return team

    yield make
    for team, context in made:
        _release_everything(team)
        team.close()
        context.__exit__(None, None, None)


def _release_everything(team: Team) -> None:
    """Let every held job's process end (a killed agent leaves them running)."""
    for host in team.hosts.values():
        for run in (host.data_root / "jobs").glob("*/run"):
            for go in ("go", "go2", "go3", "go4"):
                (run / go).write_text("")


def _states(host: Any, job_id: str) -> list[Any]:
    """The states a host's own record of a job went through."""
    return [e.state for e in all_events(host.stub, job_id) if e.kind == pb.EVENT_KIND_STATE]


def _ended_failed(host: Any, job_id: str) -> bool:
    return _states(host, job_id)[-1] == pb.JOB_STATE_FAILED


def _running_on(team: Team, job_id: str) -> str:
    row = team.wait_row(job_id, "training", state="running", local_state="training")
    return str(row["host"])


def test_a_job_waits_for_the_first_host_to_free_up(make_team: Callable[..., Team]) -> None:
    """Every GPU of the team is busy: a new job waits in the team queue, bound to no host, with
    a reason; it starts on the first host that frees up (not where it was submitted), once."""
    team = make_team()
    gpu1 = team["gpu1"]
    busy = [gpu1.submit(held(go, gpus=2)) for go in ("go", "go2", "go3")]
    hosts = {job.id: _running_on(team, job.id) for job in busy}
    assert sorted(hosts.values()) == ["gpu1", "gpu2", "gpu3"]

    waiting = gpu1.submit(held("go4"))
    row = team.wait_row(waiting.id, "a reason", state="queued")
    poll(lambda: team.row(waiting.id)["pending_reason"], 30, "a pending reason")
    reason = team.row(waiting.id)["pending_reason"]
    assert reason.startswith("waiting for 1 GPU"), reason
    assert row["host"] is None
    listed = gpu1.stub.GetJob(pb.GetJobRequest(job_id=waiting.id))
    assert listed.state == pb.JOB_STATE_QUEUED and listed.pending_reason == reason

    freed = next(job for job in busy if hosts[job.id] == "gpu3")
    team["gpu3"].release(freed.id, go={busy[0].id: "go", busy[1].id: "go2"}.get(freed.id, "go3"))
    assert _running_on(team, waiting.id) == "gpu3"
    seen = gpu1.stub.GetJob(pb.GetJobRequest(job_id=waiting.id))
    assert seen.team_host == "gpu3" and seen.from_team_queue
    team["gpu3"].release(waiting.id, "go4")
    done = team.wait_row(waiting.id, "succeeded", state="succeeded")
    assert done["attempt"] == 1
    # It ran on gpu3 only: no other host has a run directory of it.
    assert [
        h.name for h in team.hosts.values() if (h.data_root / "jobs" / waiting.id).exists()
    ] == ["gpu3"]


def test_host_and_gpu_type_constraints_are_honoured(make_team: Callable[..., Team]) -> None:
    """--host names the only host a job may run on; GPU type and memory pick the hosts that
    have them; a job no host of the team could run is refused at submit, naming the field."""
    team = make_team()
    gpu2 = team["gpu2"]
    pinned = gpu2.submit(held(host="gpu3"))
    a100 = held()
    a100.resources.gpu_type = "A100"
    on_a100 = gpu2.submit(a100)
    big = held(gpus=2)
    big.resources.min_gpu_memory_mb = 80_000
    on_big = gpu2.submit(big)
    assert _running_on(team, pinned.id) == "gpu3"
    assert _running_on(team, on_a100.id) == "gpu1"
    assert _running_on(team, on_big.id) in {"gpu2", "gpu3"}

    impossible = held(gpus=2, host="gpu1")
    impossible.resources.min_gpu_memory_mb = 80_000
    with pytest.raises(grpc.RpcError) as refused:
        gpu2.submit(impossible)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "spec.resources.gpus" in str(refused.value.details())
    with pytest.raises(grpc.RpcError) as unknown:
        gpu2.submit(held(host="gpu9"))
    assert "spec.host" in str(unknown.value.details())


def test_a_batch_to_the_team_queue_is_checked_whole_before_any_job_is_queued(
    make_team: Callable[..., Team],
) -> None:
    """SubmitJobs to the team queue: a job that no host could run refuses the batch naming
    `jobs[1]` and the field, before its first job is queued; a batch that fits is queued and
    run, and sent again with the same request ids returns the same jobs."""
    team = make_team()
    gpu2 = team["gpu2"]
    before = team.sql("SELECT count(*) FROM team_jobs")
    impossible = held(gpus=2, host="gpu1")
    impossible.resources.min_gpu_memory_mb = 80_000
    jobs = [
        pb.SubmitJobRequest(spec=s, team_queue=True, client_request_id=uuid.uuid4().hex)
        for s in (held(), impossible)
    ]
    with pytest.raises(grpc.RpcError) as refused:
        gpu2.stub.SubmitJobs(pb.SubmitJobsRequest(jobs=jobs))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert str(refused.value.details()).startswith("jobs[1].spec.resources.gpus"), (
        refused.value.details()
    )
    assert team.sql("SELECT count(*) FROM team_jobs") == before

    jobs[1] = pb.SubmitJobRequest(
        spec=held(host="gpu3"), team_queue=True, client_request_id=uuid.uuid4().hex
    )
    queued = gpu2.stub.SubmitJobs(pb.SubmitJobsRequest(jobs=jobs)).jobs
    assert _running_on(team, queued[1].id) == "gpu3"
    assert _running_on(team, queued[0].id) in {"gpu1", "gpu2", "gpu3"}
    again = gpu2.stub.SubmitJobs(pb.SubmitJobsRequest(jobs=jobs)).jobs
    assert [j.id for j in again] == [j.id for j in queued]


def test_racing_hosts_never_claim_one_job_twice(tmp_path: Path) -> None:
    """1,200 jobs, three processes each running the agent's own planning pass and claim in a
    tight loop as a host of 4 GPUs: every job is claimed exactly once, and ends once."""
    jobs = 1200
    with cluster() as pg:
        db = TeamDb(pg.primary.conninfo, retry_seconds=30)
        db.open()
        migrate(db)
        objects = ObjectStore(tmp_path / "objects")
        spec = JobSpec(config_name="job.yml", config_yaml="{}", gpus=1)

        def submit_all(cur: Any) -> None:
            for _ in range(jobs):
                queue.submit(
                    cur, spec, "root", submitted_on="test", objects=objects, max_object_bytes=0
                )

        db.run(submit_all)
        db.close()
        outs = [tmp_path / f"race-{i}.txt" for i in range(3)]
        racers = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.support.claim_race",
                    pg.primary.conninfo,
                    f"racer{i}",
                    "4",
                    str(out),
                ],
                cwd=REPO,
            )
            for i, out in enumerate(outs)
        ]
        for racer in racers:
            assert racer.wait(timeout=600) == 0
        claims = Counter(line for out in outs for line in out.read_text().split())
        per_racer = [len(out.read_text().split()) for out in outs]
        with pg_connect(pg) as conn:
            rows = conn.execute("SELECT state, attempt, count(*) FROM team_jobs GROUP BY 1, 2")
            states = {(s, a): n for s, a, n in rows.fetchall()}
    assert sum(claims.values()) == jobs, per_racer
    assert max(claims.values()) == 1
    assert all(n > 0 for n in per_racer), per_racer  # they really raced
    assert states == {("succeeded", 1): jobs}


def test_a_jobs_end_reported_twice_is_not_taken_for_a_fence(tmp_path: Path) -> None:
    """A host reports a job's end, then the same end again (its record changed again while the
    first report was on its way): both are accepted, and the host is not told it was fenced.
    Once the host's epoch has moved on (it was marked down), the same report is refused."""
    with cluster() as pg:
        db = TeamDb(pg.primary.conninfo, retry_seconds=10, max_size=2)
        db.open()
        migrate(db)
        epoch = db.run(partial(hosts.register, name="gpu9", gpus=[GpuSlot(0, "GPU-gpu9-0")]))
        spec = JobSpec(config_name="job.yml", config_yaml="{}", gpus=1)
        objects = ObjectStore(tmp_path / "objects")
        db.run(
            partial(
                queue.submit,
                spec=spec,
                user="root",
                submitted_on="test",
                objects=objects,
                max_object_bytes=0,
            )
        )
        db.run(placement.TeamPlanner(Policy(), down_after_seconds=3600).run)
        (claimed,) = db.run(partial(placement.claim, host="gpu9", epoch=epoch))
        done = succeeded(claimed)
        report = partial(
            placement.report, job=done, host="gpu9", epoch=epoch, attempt=claimed.attempt
        )
        assert db.run(report)
        assert db.run(report), "the same end, reported again, was taken for a fence"
        with pg_connect(pg) as conn:
            conn.execute("UPDATE team_hosts SET epoch = epoch + 1 WHERE name = 'gpu9'")
            conn.commit()
        assert not db.run(report), "a report at an epoch gone by was accepted"
        db.close()


def test_racing_submits_never_pass_a_queued_jobs_cap(tmp_path: Path) -> None:
    """Submits race for the last slots under a cap on queued jobs, through two hosts' own
    team fronts (each with its connections) from 16 threads at once: 64 submits by one user
    capped at 5, then 64 by 16 users of a team capped at 4. Exactly the cap is queued each
    time, and every other submit is refused with RESOURCE_EXHAUSTED naming the cap."""
    with cluster() as pg:
        scheduler = SchedulerConfig(user_queued_caps={"alice": 5}, team_queued_caps={"nlp": 4})
        fronts = []
        for name in ("gpu1", "gpu2"):
            db = TeamDb(pg.primary.conninfo, retry_seconds=30)
            db.open()
            migrate(db)
            objects = ObjectStore(tmp_path / name)
            fronts.append(TeamFront(db, name, objects, 0, scheduler))
        threads, each = 16, 4
        start = threading.Barrier(threads)

        def race(user_of: Callable[[int], str], team: str) -> tuple[int, list[str]]:
            queued, refused = [], []

            def submit_some(i: int) -> None:
                job_spec = JobSpec(config_name="job.yml", config_yaml="{}", gpus=1, team=team)
                start.wait()
                for _ in range(each):
                    try:
                        job, _ = fronts[i % 2].submit(
                            job_spec, user_of(i), uuid.uuid4().hex, secrets={}
                        )
                        queued.append(job.id)
                    except ResourceExhausted as exc:
                        refused.append(str(exc))

            workers = [threading.Thread(target=submit_some, args=(i,)) for i in range(threads)]
            for w in workers:
                w.start()
            for w in workers:
                w.join(timeout=120)
            return len(queued), refused

        try:
            queued, refused = race(lambda i: "alice", "")
            assert queued == 5 and len(refused) == threads * each - 5, (queued, len(refused))
            assert set(refused) == {
                "user cap: alice has 5 jobs queued of 5 (scheduler.user_queued_caps); submit "
                "again once some have started"
            }
            queued, refused = race(lambda i: f"user{i}", "nlp")
            assert queued == 4 and len(refused) == threads * each - 4, (queued, len(refused))
            assert set(refused) == {
                "team cap: team nlp has 4 jobs queued of 4 (scheduler.team_queued_caps); "
                "submit again once some have started"
            }
            with pg_connect(pg) as conn:
                rows = conn.execute(
                    "SELECT user_name = 'alice', team, count(*) FROM team_jobs GROUP BY 1, 2"
                ).fetchall()
            assert sorted(rows) == [(False, "nlp", 4), (True, "", 5)]
        finally:
            for front in fronts:
                front.db.close()


def pg_connect(pg: Cluster) -> Any:
    import psycopg

    return psycopg.connect(pg.primary.conninfo, autocommit=True)


def test_upload_host_killed_after_submit(make_team: Callable[..., Team]) -> None:
    """The client uploads to gpu1 and submits there; gpu1 dies. The job starts on another host
    all the same, with its dataset byte for byte (verified by SHA-256 into that host's store)
    and its secret, and the database lets go of both once no queued job needs them."""
    team = make_team()
    gpu1 = team["gpu1"]
    blockers = [team["gpu2"].submit(held(gpus=2, host=h)) for h in ("gpu2", "gpu3")]
    for job in blockers:
        _running_on(team, job.id)
    data = b"".join(f'{{"text": "row {i}"}}\n'.encode() for i in range(200_000))
    file = gpu1.upload(data)
    job_spec = held(gpus=2)
    job_spec.resources.gpu_type = "H200"
    job_spec.files.append(file)
    job = gpu1.submit(job_spec, secrets={"HF_TOKEN": "hf-team-secret"})
    assert team.sql("SELECT size FROM team_objects") == [(len(data),)]
    gpu1.kill()

    team["gpu2"].release(blockers[0].id)
    assert _running_on(team, job.id) == "gpu2"
    dataset = team["gpu2"].data_root / "jobs" / job.id / "datasets" / "train.jsonl"
    assert hashlib.sha256(dataset.read_bytes()).hexdigest() == file.sha256
    # The secret went with it, to the claiming host only, and left the database there.
    secret = team["gpu2"].data_root / "secrets" / job.id / "HF_TOKEN"
    assert secret.read_text() == "hf-team-secret"
    assert team.sql("SELECT count(*) FROM team_secrets") == [(0,)]
    poll(lambda: not team.sql("SELECT 1 FROM team_objects"), 30, "the object to leave the db")


def test_host_killed_mid_job(make_team: Callable[..., Team]) -> None:
    """gpu1 dies while two jobs run on it. Past the timeout it is marked down: the job without
    --requeue is reported `host lost`; the one with it runs again on another host. gpu1 comes
    back with the same data root and runs neither again, nor reports either."""
    team = make_team()
    gpu1, gpu2 = team["gpu1"], team["gpu2"]
    blockers = [gpu2.submit(held(gpus=2, host=h)) for h in ("gpu2", "gpu3")]
    for job in blockers:
        _running_on(team, job.id)
    lost = gpu2.submit(held())
    again = gpu2.submit(held(requeue=True))
    assert _running_on(team, lost.id) == "gpu1"
    assert _running_on(team, again.id) == "gpu1"
    gpu1.kill()

    failed = team.wait_row(lost.id, "host lost", timeout=60, state="failed")
    assert failed["failure_reason"] == "host lost" and "gpu1" in failed["hint"]
    seen = gpu2.stub.GetJob(pb.GetJobRequest(job_id=lost.id))
    assert seen.state == pb.JOB_STATE_FAILED and seen.failure_reason == "host lost"
    requeued = team.wait_row(again.id, "requeued", timeout=60, state="queued")
    assert "host lost" in requeued["note"]
    gpu2.release(blockers[0].id)
    assert _running_on(team, again.id) == "gpu2"
    assert team.row(again.id)["attempt"] == 2
    gpu2.release(again.id)
    team.wait_row(again.id, "succeeded", state="succeeded")

    # Its old processes on gpu1 may end while the agent is away: gpu1 must report neither, and
    # start neither again.
    gpu1.release(again.id)
    gpu1.release(lost.id)
    gpu1.start()
    poll(
        lambda: team.sql("SELECT state FROM team_hosts WHERE name = 'gpu1'") == [("up",)],
        60,
        "gpu1 back in the team",
    )
    for job in (lost, again):
        poll(
            partial(_ended_failed, gpu1, job.id),
            60,
            f"gpu1 to end its stale attempt of {job.id}",
        )
        states = _states(gpu1, job.id)
        assert states.count(pb.JOB_STATE_STARTING) == 1, states
    final = team.row(again.id)
    assert (final["state"], final["host"], final["attempt"]) == ("succeeded", "gpu2", 2)
    assert team.row(lost.id)["state"] == "failed"
    usage = team.sql("SELECT attempt FROM team_usage WHERE job_id = %s ORDER BY 1", (again.id,))
    assert usage == [(1,), (2,)]


def test_database_failover_while_submits_flow(make_team: Callable[..., Team]) -> None:
    """The team's PostgreSQL fails over to its synchronous standby (the primary stopped at once,
    the standby promoted) while submits flow to gpu2: every submit that was acknowledged is in
    the database afterwards, and the three agents, never restarted, carry on: heartbeats, a job
    placed and started, a job finished."""
    team = make_team(standby=True)
    gpu2 = team["gpu2"]
    pids = {name: host.process.proc.pid for name, host in team.hosts.items() if host.process.proc}
    acknowledged: list[str] = []
    refused: list[str] = []
    stop = threading.Event()

    def submit_until_stopped() -> None:
        while not stop.is_set():
            request_id = uuid.uuid4().hex
            for _ in range(3):  # the client's own retry of one submit, by its request id
                try:
                    job = gpu2.stub.SubmitJob(
                        pb.SubmitJobRequest(
                            spec=held(gpus=2), team_queue=True, client_request_id=request_id
                        ),
                        timeout=90,
                    ).job
                except grpc.RpcError as exc:
                    refused.append(f"{exc.code()}: {exc.details()}")
                    continue
                acknowledged.append(job.id)
                break

    submitter = threading.Thread(target=submit_until_stopped)
    submitter.start()
    try:
        poll(lambda: len(acknowledged) >= 20, 60, "20 submits before the failover")
        team.cluster.fail_over()
        after = len(acknowledged)
        poll(lambda: len(acknowledged) >= after + 20, 120, "20 submits after the failover")
    finally:
        stop.set()
        submitter.join(timeout=120)
    stored = {row[0] for row in team.sql("SELECT id FROM team_jobs")}
    assert set(acknowledged) <= stored, set(acknowledged) - stored
    assert len(set(acknowledged)) == len(acknowledged)  # a retried submit is one job
    assert team.sql("SELECT pg_is_in_recovery()") == [(False,)]

    running = [r[0] for r in team.sql("SELECT id FROM team_jobs WHERE state = 'running'")]
    assert len(running) == 3  # one 2-GPU job on each host, placed before or after
    poll(
        lambda: (
            team.sql(
                "SELECT count(*) FROM team_hosts WHERE state = 'up' "
                "AND heartbeat_at > now() - interval '3 seconds'"
            )
            == [(3,)]
        ),
        60,
        "every host heartbeating on the promoted server",
    )
    first = running[0]
    host = team.hosts[str(team.row(first)["host"])]
    host.release(first)
    team.wait_row(first, "succeeded on the promoted server", state="succeeded")
    nxt = poll(
        lambda: team.sql(
            "SELECT id FROM team_jobs WHERE state = 'running' AND host = %s AND id <> %s",
            (host.name, first),
        ),
        60,
        "the next job placed and started on the freed host",
    )
    assert nxt
    assert {n: h.process.proc.pid for n, h in team.hosts.items() if h.process.proc} == pids
    assert all(h.process.proc and h.process.proc.poll() is None for h in team.hosts.values())


def test_object_bytes_cap_refuses_naming_it(make_team: Callable[..., Team], tmp_path: Path) -> None:
    """A team job whose files would take the database past team.max_object_bytes is refused,
    naming the setting, and nothing is queued."""
    team = make_team()
    gpu1 = team["gpu1"]
    gpu1.stop()
    gpu1.config["team"]["max_object_bytes"] = 1000
    gpu1.process = type(gpu1.process)(gpu1.config, gpu1.workdir)
    gpu1.start()
    job_spec = held()
    job_spec.files.append(gpu1.upload(b"x" * 2000))
    with pytest.raises(grpc.RpcError) as refused:
        gpu1.submit(job_spec)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "team.max_object_bytes" in str(refused.value.details())
    assert team.sql("SELECT count(*) FROM team_jobs") == [(0,)]
    assert team.sql("SELECT count(*) FROM team_objects") == [(0,)]


def test_fair_share_by_decayed_usage_and_true_reasons(make_team: Callable[..., Team]) -> None:
    """Alice used 100 GPU-hours yesterday (the team's usage history), Bob none. Every GPU is
    busy; Alice submits, then Bob. Bob is first in line, reserved, and his job takes the first
    GPU that frees; Alice's reason said she was behind him, and then that she is first."""
    for name in (ALICE, BOB):
        ensure_user(name)
    team = make_team()
    gpu2 = team["gpu2"]
    day = 86_400.0
    now = time.time()
    team.sql(
        "INSERT INTO team_usage (job_id, attempt, user_name, team, gpus, started_at, "
        "finished_at) VALUES ('yesterday', 1, %s, '', 4, %s, %s)",
        (ALICE, now - day - 25 * 3600, now - day),
    )
    blockers = [gpu2.submit(held(gpus=2, host="gpu1")), gpu2.submit(held(gpus=2, host="gpu3"))]
    blockers += [gpu2.submit(held(host="gpu2")) for _ in range(2)]
    for job in blockers:
        _running_on(team, job.id)

    def submit_as(user: str) -> Any:
        with channel_as(user, gpu2.socket) as channel:
            return (
                stub_as(channel)
                .SubmitJob(
                    pb.SubmitJobRequest(
                        spec=held(), team_queue=True, client_request_id=uuid.uuid4().hex
                    ),
                    timeout=60,
                )
                .job
            )

    alice = submit_as(ALICE)
    bob = submit_as(BOB)
    assert alice.user == ALICE and bob.user == BOB

    def reasons() -> tuple[dict[str, Any], dict[str, Any]] | None:
        a, b = team.row(alice.id), team.row(bob.id)
        return (a, b) if a["pending_reason"] and b["pending_reason"] else None

    a_row, b_row = poll(reasons, 30, "both jobs' reasons")
    b_queue = team.sql("SELECT queue_position FROM team_jobs WHERE id = %s", (bob.id,))
    a_queue = team.sql("SELECT queue_position FROM team_jobs WHERE id = %s", (alice.id,))
    assert (b_queue, a_queue) == ([(1,)], [(2,)])
    assert "reserved" in b_row["pending_reason"], b_row["pending_reason"]
    assert "behind 1 job" in a_row["pending_reason"], a_row["pending_reason"]

    gpu2.release(blockers[2].id)
    assert _running_on(team, bob.id) == "gpu2"
    assert team.row(alice.id)["state"] == "queued"
    poll(
        lambda: "reserved" in team.row(alice.id)["pending_reason"],
        30,
        "Alice's job, first in line now, to say so",
    )


def test_a_hosts_own_queue_and_the_team_queue_share_its_gpus(
    make_team: Callable[..., Team],
) -> None:
    """gpu1's own queue runs a job on both its GPUs: a team job that only gpu1 can run (A100)
    waits, with a reason, instead of starting on GPUs that are taken; it starts there once the
    host's own job ends."""
    team = make_team()
    gpu1 = team["gpu1"]
    own = gpu1.stub.SubmitJob(pb.SubmitJobRequest(spec=held(gpus=2))).job
    poll(
        lambda: gpu1.stub.GetJob(pb.GetJobRequest(job_id=own.id)).state == pb.JOB_STATE_TRAINING,
        60,
        "gpu1's own job training",
    )
    on_a100 = held("go2")
    on_a100.resources.gpu_type = "A100"
    waiting = team["gpu2"].submit(on_a100)
    poll(lambda: team.row(waiting.id)["pending_reason"], 30, "a reason")
    row = team.row(waiting.id)
    assert row["state"] == "queued" and row["pending_reason"].startswith("waiting for 1 GPU (A100")
    gpu1.release(own.id)
    assert _running_on(team, waiting.id) == "gpu1"
    assert set(gpu1.stub.GetJob(pb.GetJobRequest(job_id=waiting.id)).gpu_uuids) <= {
        "GPU-gpu1-0",
        "GPU-gpu1-1",
    }


def test_doctor_reports_the_team_database(make_team: Callable[..., Team]) -> None:
    """`hatrain-agent doctor` on a team host says whether the team's database answers and is
    writable, and how this host stands in the team (up, its heartbeat's age)."""
    team = make_team()
    doctor = subprocess.run(
        [str(Path(sys.executable).parent / "hatrain-agent"), "doctor", "--config",
         str(team["gpu2"].process.config_path)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "COLUMNS": "400"},  # one line per check
    )  # fmt: skip
    row = next(line for line in doctor.stdout.splitlines() if "team queue" in line)
    assert "writable, schema 2" in row and "gpu2 up, heartbeat" in row, row
    assert "3 host(s) up" in row, row


def test_three_agents_racing_start_each_job_once(make_team: Callable[..., Team]) -> None:
    """1,002 short jobs submitted at once through all three agents (each submit plans in its
    own transaction, each host's passes race them): 1,002 claims, every job run on exactly one
    host, once, and succeeded."""
    team = make_team()
    jobs: list[str] = []
    lock = threading.Lock()

    def submit_through(host: Any) -> None:
        for _ in range(RACING_JOBS // 3):
            job = host.submit(spec({"hatrain_standin": {}}, gpus=1))
            with lock:
                jobs.append(job.id)

    threads = [threading.Thread(target=submit_through, args=(h,)) for h in team.hosts.values()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(jobs)) == RACING_JOBS
    poll(
        lambda: (
            team.sql("SELECT count(*) FROM team_jobs WHERE state = 'succeeded'") == [(RACING_JOBS,)]
        ),
        900,
        f"all {RACING_JOBS} jobs to succeed",
        every=0.5,
    )
    assert team.sql("SELECT DISTINCT attempt FROM team_jobs") == [(1,)]
    ran = Counter(
        job_id
        for host in team.hosts.values()
        for job_id in jobs
        if (host.data_root / "jobs" / job_id).exists()
    )
    assert set(ran) == set(jobs) and set(ran.values()) == {1}
    used = {row[0] for row in team.sql("SELECT DISTINCT host FROM team_jobs")}
    assert used == {"gpu1", "gpu2", "gpu3"}
