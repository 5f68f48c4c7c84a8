"""The store on a real SQLite file: log lines kept in runs, usage kept with each job's end, and
the upgrade of older files."""

import dataclasses
import json
import re
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hatrain.agent.events import Event, EventKind, Metric
from hatrain.agent.jobs import JobSpec
from hatrain.agent.store import _MIGRATIONS, SCHEMA_VERSION, Store


def _log(line: str, step: str = "train") -> Event:
    return Event(EventKind.LOG, step=step, line=line)


def test_every_seq_reads_back_exactly_the_events_after_it(tmp_path: Path) -> None:
    """Log lines are stored a batch to a row, but a watcher resuming after any seq gets exactly
    the events after it, each with its own seq, whatever the batch boundaries and kinds."""
    store = Store(tmp_path / "agent.db")
    job, _ = store.submit(JobSpec("a.yml", "x: 1", "img"), "ann")
    appended: list[tuple[str, str]] = [("state", "queued")]
    batches = [
        [_log(f"pre {i}", "preprocess") for i in range(5)] + [_log(f"a {i}") for i in range(7)],
        [Event(EventKind.METRICS, step="train", metrics=(Metric("loss", 1.5),))],
        [_log(f"b {i}") for i in range(298)] + [_log("b 298\nb 299")],  # a run in one event
        [_log("c 0"), Event(EventKind.METRICS, step="train", metrics=(Metric("loss", 1.0),))]
        + [_log(f"d {i}") for i in range(3)],
    ]
    for batch in batches:
        store.append(job.id, batch)
        for ev in batch:
            if ev.kind == EventKind.LOG:
                appended += [("log", line) for line in ev.line.split("\n")]
            else:
                appended.append((ev.kind.value, "metrics"))
    last = len(appended)
    assert store.get(job.id).last_seq == last

    def seen(after: int, limit: int = 10_000, kinds: tuple[EventKind, ...] = ()) -> list[int]:
        return [r[0] for r in store.event_records(job.id, after, limit=limit, kinds=kinds)]

    for after in range(last + 1):
        assert seen(after) == list(range(after + 1, last + 1)), after
    assert seen(10, limit=4) == [11, 12, 13, 14]
    lines = [
        rec["line"]
        for _, _, kind, rec in store.event_records(job.id, 0, limit=10_000)
        if kind == "log"
    ]
    assert lines == [text for kind, text in appended if kind == "log"]
    assert store.events(job.id, 12, limit=1)[0].line == "a 6"
    metrics_seqs = [i + 1 for i, (kind, _) in enumerate(appended) if kind == "metrics"]
    assert seen(0, kinds=(EventKind.METRICS,)) == metrics_seqs
    assert store.tail_start(job.id, [EventKind.LOG], 2) == last - 2
    assert store.tail_start(job.id, [EventKind.LOG], 5) == last - 6  # a metric among them
    assert store.tail_start(job.id, [], 10_000) == 0
    assert store.has_line(job.id, "train", "b 299")
    assert not store.has_line(job.id, "preprocess", "b 299")


def test_a_schema_1_file_is_upgraded_with_every_event(tmp_path: Path) -> None:
    """A data root written by an agent of schema 1 (a row per event) opens, is upgraded in place,
    and reads back the same events; new lines continue its seqs."""
    path = tmp_path / "agent.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
    for statement in _MIGRATIONS[1].split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    spec = dataclasses.asdict(JobSpec("a.yml", "x: 1", "img"))
    conn.execute(
        "INSERT INTO jobs (id, user, state, priority, spec, created_at, last_seq) "
        "VALUES ('old', 'ann', 'training', 0, ?, 1.0, 3)",
        (json.dumps(spec),),
    )
    rows = [
        (1, "state", {"state": "queued"}),
        (2, "log", {"step": "train", "line": "first"}),
        (3, "log", {"step": "train", "line": "second"}),
    ]
    conn.executemany(
        "INSERT INTO events (job_id, seq, time, kind, data) VALUES ('old', ?, 1.0, ?, ?)",
        [(seq, kind, json.dumps(data)) for seq, kind, data in rows],
    )
    conn.close()

    store = Store(path)
    assert store.schema_version() == SCHEMA_VERSION == 6
    assert store.get("old").stop_reason is None
    store.append("old", [_log("third"), _log("fourth")])
    events = store.events("old", 0)
    assert [(e.seq, e.kind.value, e.line) for e in events] == [
        (1, "state", ""),
        (2, "log", "first"),
        (3, "log", "second"),
        (4, "log", "third"),
        (5, "log", "fourth"),
    ]
    assert store.tail_start("old", [EventKind.LOG], 3) == 2


def test_listing_shows_each_queued_jobs_place(tmp_path: Path) -> None:
    """A queued job's place counts the queued jobs of higher priority, then the older ones of
    its own; started jobs have none. Pages deep in the listing get the same places."""
    from dataclasses import replace

    from hatrain.agent.states import JobState

    store = Store(tmp_path / "agent.db")
    base = JobSpec("a.yml", "x: 1", "img")
    priorities = [0, 0, 5, 0, 5, 1, 0, 0]
    ids = [store.submit(replace(base, priority=p), "ann")[0].id for p in priorities]
    store.transition(ids[1], JobState.STARTING)
    queue = sorted((i for i in range(len(ids)) if i != 1), key=lambda i: (-priorities[i], i))
    expected = {ids[i]: place for place, i in enumerate(queue, 1)} | {ids[1]: 0}
    listed: dict[str, int] = {}
    token = ""
    while True:
        page, token, total = store.list_jobs(page_size=3, page_token=token)
        listed |= {j.id: j.queue_position for j in page}
        if not token:
            break
    assert total == len(ids)
    assert listed == expected
    assert store.get(ids[7]).queue_position == expected[ids[7]] == 7


def test_a_jobs_end_records_its_gpu_usage_in_the_same_transaction(tmp_path: Path) -> None:
    """Ending a job that held GPUs writes one usage record (user, team, GPUs, when) with the
    terminal state; a job without GPUs, or cancelled while queued, records none. A store that
    refuses the write keeps neither the state nor the record."""
    from dataclasses import replace

    from hatrain.agent.states import JobState

    store = Store(tmp_path / "agent.db")
    base = JobSpec("a.yml", "x: 1", "img")
    gpu_job, _ = store.submit(replace(base, gpus=2, team="nlp"), "ann")
    cpu_job, _ = store.submit(base, "bob")
    never, _ = store.submit(replace(base, gpus=1), "cy")
    store.transition(gpu_job.id, JobState.STARTING, gpu_uuids=["GPU-a", "GPU-b"])
    store.transition(cpu_job.id, JobState.STARTING)
    store.transition(never.id, JobState.CANCELLED)
    store.transition(cpu_job.id, JobState.SUCCEEDED)
    assert store.usage_after(0) == []

    conn = sqlite3.connect(tmp_path / "agent.db", isolation_level=None)
    conn.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON usage BEGIN SELECT RAISE(ABORT, 'no'); END"
    )
    with pytest.raises(sqlite3.IntegrityError):
        store.transition(gpu_job.id, JobState.FAILED, reason="x")
    assert store.get(gpu_job.id).state == JobState.STARTING
    conn.execute("DROP TRIGGER refuse")
    conn.close()

    ended = store.transition(gpu_job.id, JobState.FAILED, reason="x")
    [(n, record)] = store.usage_after(0)
    assert (record.user, record.team, record.gpus) == ("ann", "nlp", 2)
    assert (record.started_at, record.finished_at) == (ended.started_at, ended.finished_at)
    assert store.usage_after(n) == []


def test_a_schema_3_file_gets_the_usage_of_jobs_that_ended_before(tmp_path: Path) -> None:
    """Upgrading to schema 4 fills the usage table from the jobs that had already ended holding
    GPUs, so fair share does not forget them."""
    path = tmp_path / "agent.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
    for version in (1, 2, 3):
        for statement in _MIGRATIONS[version].split(";"):
            if statement.strip():
                conn.execute(statement)
    conn.execute("INSERT INTO meta VALUES ('schema_version', '3')")
    rows = [
        ("done", "succeeded", {"team": "nlp"}, '["g0", "g1"]', 100.0, 3700.0),
        ("cpu", "succeeded", {}, "[]", 100.0, 200.0),
        ("live", "training", {}, '["g2"]', 100.0, 0.0),
    ]
    for job_id, state, extra, gpus, started, finished in rows:
        spec = {**dataclasses.asdict(JobSpec("a.yml", "x: 1", "img")), **extra}
        conn.execute(
            "INSERT INTO jobs (id, user, state, priority, spec, created_at, started_at, "
            "finished_at, gpu_uuids) VALUES (?, 'ann', ?, 0, ?, 1.0, ?, ?, ?)",
            (job_id, state, json.dumps(spec), started, finished, gpus),
        )
    conn.close()

    store = Store(path)
    assert store.schema_version() == SCHEMA_VERSION
    assert [
        (r.user, r.team, r.gpus, r.started_at, r.finished_at) for _, r in store.usage_after(0)
    ] == [("ann", "nlp", 2, 100.0, 3700.0)]


def test_the_planner_reads_each_queued_jobs_request(tmp_path: Path) -> None:
    """The planner's lean read of the queue gives each queued job's request as submitted, in
    submission order, and leaves out jobs that have started."""
    from dataclasses import replace

    from hatrain.agent.scheduler import QueuedJob
    from hatrain.agent.states import JobState

    store = Store(tmp_path / "agent.db")
    base = JobSpec("a.yml", "x: 1", "img")
    first, _ = store.submit(base, "ann")
    started, _ = store.submit(replace(base, gpus=1), "bob")
    asked = replace(
        base,
        gpus=2,
        priority=5,
        min_gpu_memory_mb=81_920,
        gpu_type="H200",
        time_limit_seconds=3600,
        team="nlp",
    )
    last, _ = store.submit(asked, "cy")
    store.transition(started.id, JobState.STARTING, gpu_uuids=["GPU-0"])
    assert store.queued_for_planner() == [
        QueuedJob(first.id, "ann", 0, order=0),
        QueuedJob(last.id, "cy", 2, 5, 81_920, "H200", 3600, order=1, team="nlp"),
    ]


def test_a_submit_and_a_jobs_end_are_on_disk_before_they_return(tmp_path: Path) -> None:
    """A power loss or a kernel panic takes back nothing the store has answered: a submit, and
    then a job's end, each sync the write-ahead log (fdatasync or fsync, seen by a real strace)
    before the call returns. (A synchronous=NORMAL store syncs it only at checkpoints.)"""
    strace = shutil.which("strace")
    assert strace, "strace is missing: run `make test` (scripts/setup-host.sh installs it)"
    script = textwrap.dedent(
        """
        import os, sys
        from pathlib import Path
        from hatrain.agent.jobs import JobSpec
        from hatrain.agent.states import JobState
        from hatrain.agent.store import Store

        def mark(name):
            os.write(1, f"MARK {name}\\n".encode())

        store = Store(Path(sys.argv[1]))
        mark("open")
        job, _ = store.submit(JobSpec("a.yml", "x: 1", "img"), "ann")
        mark("submitted")
        store.transition(job.id, JobState.CANCELLED)
        mark("ended")
        """
    )
    trace = tmp_path / "trace"
    subprocess.run(
        [
            strace,
            "-f",
            "-y",
            "-e",
            "trace=fsync,fdatasync,write",
            "-o",
            str(trace),
            sys.executable,
            "-c",
            script,
            str(tmp_path / "agent.db"),
        ],
        check=True,
        capture_output=True,
    )
    synced: dict[str, int] = {}
    phase = ""
    for line in trace.read_text().splitlines():
        if found := re.search(r'"MARK (\w+)\\n"', line):
            phase = found.group(1)
            synced[phase] = 0
        elif phase and re.search(r"f(data)?sync\(\d+<[^>]*agent\.db-wal>\) = 0", line):
            synced[phase] += 1
    assert list(synced) == ["open", "submitted", "ended"], trace.read_text()[-2000:]
    assert synced["open"] >= 1, "the submit's commit was not synced before submit returned"
    assert synced["submitted"] >= 1, "the job's end was not synced before it returned"
