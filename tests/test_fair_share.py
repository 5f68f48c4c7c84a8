"""Fair share by decayed usage, caps on queued jobs, and why a job waits, on a real agent.

The agent test places GPU jobs in real containers (the stand-in NVIDIA hook of
tests/test_scheduler.py) on a host with one static GPU, with a usage history in its store in
which alice used 100 GPU-hours yesterday and bob none. The users are real accounts of this
machine, each calling through the agent's socket as themselves.
"""

import json
import re
import sqlite3
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from hatrain.agent.fair_share import UsageBook, UsageRecord, decayed_gpu_hours, decayed_usage
from hatrain.agent.store import Store
from hatrain.rpc.v1 import agent_pb2 as pb

from tests.support.harness import poll, spec, wait_state
from tests.support.users import ALICE, BOB, CAROL, channel_as, ensure_user, stub_as


@contextmanager
def stubs_as(socket_path: Path, *users: str) -> Iterator[list[Any]]:
    """A stub for each account, each calling as that account."""
    with ExitStack() as stack:
        for user in users:
            ensure_user(user)
        yield [stub_as(stack.enter_context(channel_as(u, socket_path))) for u in users]


DAY = 86_400.0
WEEK = 7 * DAY


def test_usage_halves_every_half_life() -> None:
    """100 GPU-hours used over the 25 hours up to a day ago weigh about 2^(-age / 7 days) of
    themselves today, age taken at the run's middle; a week later half of that. A running job
    counts up to now."""
    now = 1_000_000.0
    yesterday = decayed_gpu_hours(4, now - DAY - 25 * 3600, now - DAY, now, WEEK)
    assert yesterday == pytest.approx(100 * 2 ** (-(1 + 12.5 / 24) / 7), rel=0.001)
    a_week_on = decayed_gpu_hours(4, now - DAY - 25 * 3600, now - DAY, now + WEEK, WEEK)
    assert a_week_on == pytest.approx(yesterday / 2)
    running = decayed_gpu_hours(2, now - 3600, now + 3600, now, WEEK)
    assert running == pytest.approx(2.0, rel=0.01)  # counted only up to now


def test_the_running_book_matches_the_history_read_whole() -> None:
    """The agent's book, fed records as jobs end, gives what the whole history would."""
    records = [
        UsageRecord(user, "", gpus, start, start + hours * 3600)
        for user, gpus, start, hours in [
            ("ann", 4, 0.0, 25),
            ("ben", 1, 3 * DAY, 2),
            ("ann", 2, 5 * DAY, 10),
            ("cy", 8, 9 * DAY, 1),
        ]
    ]
    book = UsageBook(WEEK)
    for n, record in enumerate(records, 1):
        book.add([(n, record)], record.finished_at + 60)
    now = 12 * DAY
    whole = decayed_usage(records, now, WEEK)
    assert book.at(now) == pytest.approx(whole)
    assert book.last_seen == 4


def _reason(stub: Any, job_id: str) -> str:
    job = stub.GetJob(pb.GetJobRequest(job_id=job_id))
    return str(job.pending_reason) if job.state == pb.JOB_STATE_QUEUED else ""


def _settled(stub: Any, expected: dict[str, str]) -> dict[str, tuple[int, str]]:
    """Wait until each queued job's reason matches its pattern; returns (position, reason)."""

    def read() -> dict[str, tuple[int, str]] | None:
        jobs = {j: stub.GetJob(pb.GetJobRequest(job_id=j)) for j in expected}
        if all(
            jobs[j].state == pb.JOB_STATE_QUEUED and re.fullmatch(p, jobs[j].pending_reason)
            for j, p in expected.items()
        ):
            return {j: (jobs[j].queue_position, jobs[j].pending_reason) for j in expected}
        return None

    return poll(read, 30, f"reasons matching {expected}")


def _release(agent: Any, job: pb.Job) -> None:
    (Path(agent.workspace.dirs(job.id).run) / "go").write_text("")


def test_less_usage_starts_first_and_every_waiting_job_says_why(
    start_agent: Any, agent_config: dict[str, Any], client_for: Any
) -> None:
    """ann used 100 GPU-hours yesterday, ben none, cy a few seconds today: with one GPU, the
    queued jobs start ben, cy, ann, whatever order they were submitted in. While they wait, each
    says why: the first in line has the GPU reserved and its first fit (the running job's time
    limit), the others are behind it, and cy's second job is over its cap. `queue` and `status`
    show the same reasons; every reason is checked against the order the jobs then start in."""
    agent_config["gpus"] = {
        "source": "static",
        "static": [{"uuid": "GPU-fair-0", "name": "Test GPU", "memory_mb": 80_000}],
    }
    agent_config["scheduler"] = {"user_gpu_caps": {CAROL: 1}}
    data_root = Path(agent_config["data_root"])
    Store(data_root / "hatrain.db").close()
    now = time.time()
    with sqlite3.connect(data_root / "hatrain.db") as db:  # an older agent's history
        db.execute(
            "INSERT INTO usage (job_id, user, team, gpus, started_at, finished_at) "
            "VALUES ('yesterday', ?, '', 4, ?, ?)",
            (ALICE, now - DAY - 25 * 3600, now - DAY),
        )
    _, agent = start_agent(agent_config)
    with stubs_as(agent.socket, ALICE, BOB, CAROL) as (ann, ben, cy):
        _fair_share_run(agent, ann, ben, cy, client_for, data_root)


def _fair_share_run(
    agent: Any, ann: Any, ben: Any, cy: Any, client_for: Any, data_root: Path
) -> None:
    hold = {"hatrain_standin": {"hold_train": "go"}}

    def submit(stub: Any, limit: int) -> pb.Job:
        request = pb.SubmitJobRequest(spec=spec(hold, gpus=1, time_limit_seconds=limit))
        return stub.SubmitJob(request).job

    c1 = submit(cy, 3600)
    wait_state(cy, c1.id, {pb.JOB_STATE_TRAINING})
    a1 = submit(ann, 7200)
    c2 = submit(cy, 7200)
    b1 = submit(ben, 7200)
    listed = _settled(
        ann,
        {
            b1.id: r"waiting for 1 GPU; first fit in about (1 h|59 min), reserved",
            a1.id: r"waiting for 1 GPU, none free; behind 1 job of the same priority",
            c2.id: r"user cap: 1 GPU held of 1",
        },
    )
    # Served in fair-share order: ben (no usage), cy (seconds), ann (90 GPU-hours).
    assert [listed[j][0] for j in (b1.id, c2.id, a1.id)] == [1, 2, 3]

    client = client_for(agent.socket)
    rows = {j["id"]: j for j in client.json("queue")["jobs"]}
    assert re.fullmatch(
        r"waiting for 1 GPU; first fit in .*, reserved", rows[b1.id]["pending_reason"]
    )
    assert rows[c2.id]["pending_reason"] == "user cap: 1 GPU held of 1"
    assert rows[c2.id]["queue_position"] == 2
    table = client.run("queue")
    assert "user cap: 1 GPU held of 1" in table.stdout, table.stdout
    shown = client.run("status", a1.id)
    assert f"  waiting   {listed[a1.id][1]}" in shown.stdout, shown.stdout

    _release(agent, c1)
    wait_state(ben, b1.id, {pb.JOB_STATE_TRAINING})
    # cy's few seconds weigh less than ann's 90 GPU-hours: cy's job is next in line now.
    _settled(
        ann,
        {
            c2.id: r"waiting for 1 GPU; first fit in about (2 h|1 h 59 min), reserved",
            a1.id: r"waiting for 1 GPU, none free; behind 1 job of the same priority",
        },
    )
    _release(agent, b1)
    wait_state(cy, c2.id, {pb.JOB_STATE_TRAINING})
    assert _reason(ann, a1.id).startswith("waiting for 1 GPU; first fit in about")
    _release(agent, c2)
    wait_state(ann, a1.id, {pb.JOB_STATE_TRAINING})
    _release(agent, a1)
    for stub, job in ((cy, c1), (ben, b1), (cy, c2), (ann, a1)):
        wait_state(stub, job.id, {pb.JOB_STATE_SUCCEEDED})
    started = {j.id: ann.GetJob(pb.GetJobRequest(job_id=j.id)).started_at for j in (c1, b1, c2, a1)}
    assert sorted(started, key=started.__getitem__) == [c1.id, b1.id, c2.id, a1.id]

    # Each job that ran on the GPU left its usage in the store, with the terminal state.
    usage = Store(data_root / "hatrain.db").usage_after(0)
    assert [(r.user, r.gpus) for _, r in usage] == [
        (ALICE, 4),
        (CAROL, 1),
        (BOB, 1),
        (CAROL, 1),
        (ALICE, 1),
    ]
    assert json.loads(client.run("queue", "--json").stdout)["jobs"] == []


def test_a_submit_past_a_queued_jobs_cap_is_refused_and_stores_nothing(
    start_agent: Any, agent_config: dict[str, Any]
) -> None:
    """Per-user and per-team caps on queued jobs refuse the submit past them, naming the cap,
    and store nothing; a retried submit of a job already queued is still answered; once a job
    leaves the queue there is room again."""
    agent_config["scheduler"] = {
        "max_cpu_jobs": 0,  # nothing starts: every job stays queued
        "user_queued_caps": {"*": 2},
        "team_queued_caps": {"nlp": 3},
    }
    agent_config["teams"] = {
        "nlp": {"members": [ALICE, BOB, CAROL]},
        "vision": {"members": [CAROL]},
    }
    _, agent = start_agent(agent_config)
    with stubs_as(agent.socket, ALICE, BOB, CAROL) as (alice, bob, carol):
        _queued_caps(alice, bob, carol)


def _queued_caps(alice: Any, bob: Any, carol: Any) -> None:

    def submit(stub: Any, team: str = "", request_id: str = "") -> Any:
        return stub.SubmitJob(
            pb.SubmitJobRequest(spec=spec({}, team=team), client_request_id=request_id)
        )

    first = submit(alice, "nlp", "first").job
    submit(alice, "nlp")
    with pytest.raises(grpc.RpcError) as refused:
        submit(alice)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert refused.value.details() == (
        f"user cap: {ALICE} has 2 jobs queued of 2 (scheduler.user_queued_caps); "
        "submit again once some have started"
    )
    assert submit(alice, "nlp", "first").job.id == first.id  # a retry, not a new job
    submit(bob, "nlp")
    with pytest.raises(grpc.RpcError) as refused:
        submit(carol, "nlp")
    assert "team cap: team nlp has 3 jobs queued of 3" in refused.value.details()
    submit(carol, "vision")
    listed = alice.ListJobs(pb.ListJobsRequest())
    assert sorted(j.user for j in listed.jobs) == [ALICE, ALICE, BOB, CAROL]
    poll(lambda: _reason(alice, first.id), 30, "a reason for a queued CPU job")
    assert _reason(alice, first.id) == (
        "jobs without GPUs do not run here (scheduler.max_cpu_jobs is 0)"
    )

    alice.CancelJob(pb.CancelJobRequest(job_id=first.id))
    assert submit(carol, "nlp").job.state == pb.JOB_STATE_QUEUED
