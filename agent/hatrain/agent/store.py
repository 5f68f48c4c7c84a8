"""The durable queue: SQLite in WAL mode, and the only code that writes a job's state.

Every state change is written together with its STATE event in one transaction, so the events a
watcher reads and the state a listing shows never disagree.
"""

import base64
import contextlib
import dataclasses
import itertools
import json
import re
import sqlite3
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from .disk import storage_fault
from .errors import FailedPrecondition, InvalidArgument, NotFound
from .events import Event, EventKind, Progress, progress_record
from .fair_share import UsageRecord
from .jobs import Job, JobFile, JobSpec, TeamAttempt
from .scheduler import QueuedJob
from .states import RUNNING, TERMINAL, FailureReason, JobState, StopReason, can_transition
from .steps import ContainerHandle, Handle, LogCursor, ProcessHandle, StepEnd, StepRecord

SCHEMA_VERSION = 6

_MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE jobs (
        n INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        user TEXT NOT NULL,
        state TEXT NOT NULL,
        priority INTEGER NOT NULL,
        spec TEXT NOT NULL,
        created_at REAL NOT NULL,
        started_at REAL NOT NULL DEFAULT 0,
        finished_at REAL NOT NULL DEFAULT 0,
        failure_reason TEXT NOT NULL DEFAULT '',
        hint TEXT NOT NULL DEFAULT '',
        exit_code INTEGER,
        gpu_uuids TEXT NOT NULL DEFAULT '[]',
        progress TEXT,
        last_metrics TEXT NOT NULL DEFAULT '{}',
        last_seq INTEGER NOT NULL DEFAULT 0,
        secret_names TEXT NOT NULL DEFAULT '[]',
        runtime TEXT NOT NULL DEFAULT '{}',
        client_request_id TEXT UNIQUE
    );
    CREATE INDEX jobs_by_state ON jobs (state, priority DESC, n);
    CREATE INDEX jobs_by_user ON jobs (user, n);
    CREATE TABLE events (
        job_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        time REAL NOT NULL,
        kind TEXT NOT NULL,
        data TEXT NOT NULL,
        PRIMARY KEY (job_id, seq)
    ) WITHOUT ROWID;
    """,
    # A row may hold a run of log lines of one step: `text` holds them joined by newlines (kept
    # out of the JSON, which would escape them on the way in and out), its seq is the last
    # line's, and `lines` says how many seqs it spans. A job printing as fast as it can then
    # costs a row per batch instead of one per line. Rows of schema 1 keep their line in `data`.
    2: """
    ALTER TABLE events ADD COLUMN lines INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE events ADD COLUMN text TEXT
    """,
    # Why a running job was asked to stop ("cancel" or "timeout"), kept so that the answer
    # survives an agent restart or a step killed during its grace period.
    3: """
    ALTER TABLE jobs ADD COLUMN stop_reason TEXT NOT NULL DEFAULT ''
    """,
    # The GPUs each ended job held and for how long, for fair share by decayed usage. Jobs that
    # ended before this schema are counted too.
    4: """
    CREATE TABLE usage (
        n INTEGER PRIMARY KEY AUTOINCREMENT,
        job_id TEXT NOT NULL UNIQUE,
        user TEXT NOT NULL,
        team TEXT NOT NULL,
        gpus INTEGER NOT NULL,
        started_at REAL NOT NULL,
        finished_at REAL NOT NULL
    );
    INSERT INTO usage (job_id, user, team, gpus, started_at, finished_at)
        SELECT id, user, coalesce(json_extract(spec, '$.team'), ''), json_array_length(gpu_uuids),
               started_at, finished_at
        FROM jobs
        WHERE state IN ('succeeded', 'failed', 'cancelled') AND started_at > 0
              AND json_array_length(gpu_uuids) > 0
        ORDER BY finished_at
    """,
    # Jobs their owner (or an admin) pinned: retention keeps everything of theirs.
    5: """
    CREATE TABLE pins (
        job_id TEXT PRIMARY KEY,
        by_user TEXT NOT NULL,
        at REAL NOT NULL
    ) WITHOUT ROWID
    """,
    # A job of the team queue that this host runs: its attempt and this host's epoch then.
    6: """
    ALTER TABLE jobs ADD COLUMN team_attempt TEXT NOT NULL DEFAULT ''
    """,
}

# The spec's fields the planner reads, with their SQL defaults for records that lack them.
_PLANNER_FIELDS = {
    "gpus": "0",
    "min_gpu_memory_mb": "0",
    "gpu_type": "''",
    "time_limit_seconds": "0",
    "team": "''",
}

_JOB_COLUMNS = (
    "id, user, state, spec, created_at, started_at, finished_at, failure_reason, hint, "
    "exit_code, gpu_uuids, progress, last_metrics, last_seq, secret_names, runtime, stop_reason, "
    "team_attempt"
)


_PREPARED = re.compile(r"^dataset_prepared_path:\s*['\"]?([^'\"\s#]+)", re.MULTILINE)


def prepared_path(config_yaml: str) -> str:
    """The config's dataset_prepared_path (the client pins it; see workspace.py), or ""."""
    found = _PREPARED.search(config_yaml)
    return found.group(1) if found else ""


@dataclasses.dataclass(frozen=True)
class RetentionRecord:
    job_id: str
    state: JobState
    created_at: float
    finished_at: float
    pinned: bool
    objects: frozenset[str]
    prepared_path: str


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit is on disk before it returns (one fsync of the WAL). NORMAL would survive
    # a killed agent too, but a power loss or a kernel panic could take back the last commits:
    # a submit already answered, or a job's end, which would then be started again.
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def _spec_from_record(rec: dict[str, Any]) -> JobSpec:
    files = tuple(JobFile(**f) for f in rec.get("files", ()))
    return JobSpec(**{**rec, "files": files})


# -- step records as JSON: the runtime column holds {step: record}, keys as agents always wrote
# them (a record's end is spread over its own keys), so that every data root reads alike.


def _handle_to_json(handle: Handle) -> dict[str, Any]:
    return dataclasses.asdict(handle)


def _handle_from_json(value: dict[str, Any]) -> Handle:
    if "container" in value:
        return ContainerHandle(container=str(value["container"]), name=str(value.get("name", "")))
    if "pid" in value:
        start = value.get("start_time")
        return ProcessHandle(
            pid=int(value["pid"]),
            start_time=None if start is None else str(start),
            log=str(value["log"]),
            exit=str(value["exit"]),
        )
    raise ValueError(f"not a step handle: {sorted(value)}")


def encode_handle(handle: Handle) -> str:
    """A handle as text, as the store keeps it (a runtime may keep a copy beside the step)."""
    return json.dumps(_handle_to_json(handle))


def decode_handle(text: str) -> Handle:
    """The handle encode_handle() wrote; ValueError if the text holds none."""
    try:
        value = json.loads(text)
        return _handle_from_json(value)
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"not a step handle: {text[:100]!r}") from exc


def _cursor_from_json(value: Any) -> LogCursor | None:
    if value is None or isinstance(value, int):
        return value
    out, err = value
    return (int(out), int(err))


def _step_to_json(record: StepRecord) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if record.handle is not None:
        out["handle"] = _handle_to_json(record.handle)
    if record.cursor is not None:
        out["cursor"] = list(record.cursor) if isinstance(record.cursor, tuple) else record.cursor
    out["train_total"] = record.train_total
    out["train_position"] = record.train_position
    if (end := record.end) is not None:
        out["exit_code"] = end.exit_code
        out["oom_killed"] = end.oom_killed
        out["failure"] = [end.failure[0].value, end.failure[1]] if end.failure else None
        out["last_error_line"] = end.last_error_line
        out["preprocess_succeeded"] = end.preprocess_succeeded
    return out


def _step_from_json(step: str, value: dict[str, Any]) -> StepRecord:
    end = None
    if value.get("exit_code") is not None:
        failure = value.get("failure")
        end = StepEnd(
            exit_code=int(value["exit_code"]),
            oom_killed=bool(value.get("oom_killed", False)),
            failure=(FailureReason(failure[0]), str(failure[1])) if failure else None,
            last_error_line=str(value.get("last_error_line") or ""),
            preprocess_succeeded=bool(value.get("preprocess_succeeded", False)),
        )
    handle = value.get("handle")
    return StepRecord(
        step=step,
        handle=_handle_from_json(handle) if handle else None,
        cursor=_cursor_from_json(value.get("cursor")),
        train_total=value.get("train_total"),
        train_position=int(value.get("train_position") or 0),
        end=end,
    )


def _steps_from_json(text: str) -> dict[str, StepRecord]:
    return {step: _step_from_json(step, value) for step, value in json.loads(text).items()}


def _with_step(text: str, record: StepRecord) -> str:
    """The runtime column with one step's record replaced."""
    return json.dumps({**json.loads(text), record.step: _step_to_json(record)})


def _job_from_row(row: Sequence[Any]) -> Job:
    progress = json.loads(row[11]) if row[11] else None
    return Job(
        id=row[0],
        user=row[1],
        state=JobState(row[2]),
        spec=_spec_from_record(json.loads(row[3])),
        created_at=row[4],
        started_at=row[5],
        finished_at=row[6],
        failure_reason=row[7],
        hint=row[8],
        exit_code=row[9],
        gpu_uuids=tuple(json.loads(row[10])),
        progress=Progress(*progress) if progress else None,
        last_metrics=json.loads(row[12]),
        last_seq=row[13],
        secret_names=tuple(json.loads(row[14])),
        steps=_steps_from_json(row[15]),
        stop_reason=StopReason(row[16]) if row[16] else None,
        team_attempt=TeamAttempt(**json.loads(row[17])) if row[17] else None,
    )


_LOG = EventKind.LOG.value

# (seq of its first event, time, kind, record); a log record's "line" may hold several lines.
EventRun = tuple[int, float, str, dict[str, Any]]


def _log_run_of(ev: Event) -> tuple[str, str] | None:
    """Which run of log lines an event belongs to: (step, stream); None for other kinds."""
    return (ev.step, ev.stream) if ev.kind is EventKind.LOG else None


def _kinds_clause(kinds: Sequence[EventKind]) -> tuple[str, list[str]]:
    """The SQL (and its arguments) that keeps only events of these kinds; none: every kind."""
    if not kinds:
        return "", []
    return f" AND kind IN ({', '.join('?' * len(kinds))})", [k.value for k in kinds]


def _log_row(
    job_id: str, last_seq: int, now: float, of: tuple[str, str], run: list[str], lines: int
) -> tuple[str, int, float, str, str, int, str | None]:
    record = Event(EventKind.LOG, step=of[0], stream=of[1]).to_record()
    return (job_id, last_seq, now, _LOG, json.dumps(record), lines, "\n".join(run))


class _QueueTally:
    """How many jobs are queued, by priority and by the GPUs they ask for. Kept by the store's
    one writer beside the table, and changed only once a transaction that queues or dequeues a
    job has committed, so that a new job's place in the queue, and whether anything queued could
    start at all, cost no scan of the queue however long it grows."""

    def __init__(self, rows: Iterable[tuple[int, int]]) -> None:
        self.by_priority: Counter[int] = Counter()
        self.by_gpus: Counter[int] = Counter()
        for priority, gpus in rows:
            self.add(priority, gpus, 1)

    def add(self, priority: int, gpus: int, count: int) -> None:
        self.by_priority[priority] += count
        self.by_gpus[gpus] += count
        if not self.by_priority[priority]:
            del self.by_priority[priority]
        if not self.by_gpus[gpus]:
            del self.by_gpus[gpus]

    def place_of_new(self, priority: int) -> int:
        """The place a job queued now takes: after every queued job of its priority or higher."""
        return 1 + sum(n for p, n in self.by_priority.items() if p >= priority)


@dataclasses.dataclass(frozen=True)
class NewJob:
    """A job to queue: what it asks for, who submits it, and the names of its secrets. A
    client_request_id already stored gives back that job instead (a repeated send)."""

    spec: JobSpec
    user: str
    client_request_id: str = ""
    secret_names: tuple[str, ...] = ()


class Store:
    """Jobs and their events. Thread-safe: one writer connection, one reader per thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = _connect(path)
        self._write_lock = threading.Lock()
        self._local = threading.local()
        self._changed = threading.Condition()
        self._generation = 0
        self._listeners: list[Callable[[str], None]] = []
        # What the transaction in progress changes in the tally once it has committed.
        self._tally_changes: list[tuple[int, int, int]] = []
        self._transition_listeners: list[Callable[[Job, Job], None]] = []
        self._event_listeners: list[Callable[[int], None]] = []
        self._migrate()
        self._tally = _QueueTally(
            (priority, int(gpus or 0))
            for priority, gpus in self._writer.execute(
                "SELECT priority, json_extract(spec, '$.gpus') FROM jobs WHERE state='queued'"
            )
        )

    # -- schema ----------------------------------------------------------------------------

    def _migrate(self) -> None:
        with self._write_lock:
            conn = self._writer
            conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            current = int(row[0]) if row else 0
            if current > SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self.path}: schema version {current} is newer than this agent's "
                    f"({SCHEMA_VERSION}); upgrade hatrain"
                )
            for version in range(current + 1, SCHEMA_VERSION + 1):
                conn.execute("BEGIN IMMEDIATE")
                try:
                    for statement in _MIGRATIONS[version].split(";"):
                        if statement.strip():
                            conn.execute(statement)
                    conn.execute(
                        "INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(version),)
                    )
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise

    def schema_version(self) -> int:
        row = self._reader().execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        return int(row[0])

    # -- plumbing --------------------------------------------------------------------------

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = _connect(self.path)
            self._local.conn = conn
        return conn

    @contextmanager
    def _transaction(self, job_id: str = "") -> Iterator[sqlite3.Connection]:
        """One write transaction. A write the disk refuses raises StorageFault, with nothing of
        the transaction kept: SQLite may have rolled it back itself already, and a second
        rollback must not hide the real error."""
        with self._write_lock:
            conn = self._writer
            self._tally_changes = []
            try:
                conn.execute("BEGIN IMMEDIATE")
                yield conn
                conn.execute("COMMIT")
                for priority, gpus, count in self._tally_changes:
                    self._tally.add(priority, gpus, count)
            except BaseException as exc:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                fault = storage_fault(exc, self.path.parent)
                if fault is not None and fault is not exc:
                    raise fault from exc
                raise
        with self._changed:
            self._generation += 1
            self._changed.notify_all()
        for listener in self._listeners:
            listener(job_id)

    def on_transition(self, listener: Callable[[Job, Job], None]) -> None:
        """Call listener(before, after) after every committed state change (for metrics);
        it runs on the writer's thread, so it must be quick."""
        self._transition_listeners.append(listener)

    def on_events(self, listener: Callable[[int], None]) -> None:
        """Call listener(count) after every commit that recorded events (each log line counts
        as the one event it is on the wire); quick, like on_transition."""
        self._event_listeners.append(listener)

    def on_change(self, listener: Callable[[str], None]) -> None:
        """Call listener(job_id) after every commit that changed that job (an empty id: any
        job may have changed). Listeners must be quick: they run on the writer's thread."""
        self._listeners.append(listener)

    def _load(self, conn: sqlite3.Connection, job_id: str) -> Job:
        row = conn.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id=?", (job_id,)).fetchone()
        if row is None:
            raise NotFound(f"no job {job_id!r} on this host")
        return _job_from_row(row)

    @staticmethod
    def _insert_events(
        conn: sqlite3.Connection, job_id: str, first_seq: int, events: Sequence[Event]
    ) -> int:
        """Insert events from first_seq on; consecutive log lines of a step share one row."""
        now = time.time()
        rows: list[tuple[str, int, float, str, str, int, str | None]] = []
        seq = first_seq - 1
        for run_of, group in itertools.groupby(events, _log_run_of):
            if run_of is None:
                for ev in group:
                    seq += 1
                    rows.append(
                        (job_id, seq, now, ev.kind.value, json.dumps(ev.to_record()), 1, None)
                    )
                continue
            run = list(group)
            lines = sum(ev.line_count() for ev in run)
            seq += lines
            rows.append(_log_row(job_id, seq, now, run_of, [ev.line for ev in run], lines))
        conn.executemany(
            "INSERT INTO events (job_id, seq, time, kind, data, lines, text) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        return seq

    # -- writes ----------------------------------------------------------------------------

    def submit(
        self,
        spec: JobSpec,
        user: str,
        *,
        client_request_id: str = "",
        secret_names: Iterable[str] = (),
        admit: Callable[[], None] | None = None,
        on_created: Callable[[Job], None] | None = None,
    ) -> tuple[Job, bool]:
        """Queue a job; returns (job, created). A repeated client_request_id returns the first.
        admit() is called in the transaction, before the job is added, to refuse it by raising
        (caps on queued jobs): no other submit can come between its count and the insert.
        on_created(job): as submit_all's."""
        new = NewJob(spec, user, client_request_id, tuple(sorted(secret_names)))

        def admit_one(_: int, __: Sequence[int]) -> None:
            if admit is not None:
                admit()

        def created(_: int, job: Job) -> None:
            if on_created is not None:
                on_created(job)

        return self.submit_all([new], admit=admit_one, on_created=created)[0]

    def submit_all(
        self,
        jobs: Sequence[NewJob],
        *,
        admit: Callable[[int, Sequence[int]], None] | None = None,
        on_created: Callable[[int, Job], None] | None = None,
    ) -> list[tuple[Job, bool]]:
        """Queue several jobs in one transaction, all or none; returns (job, created) for each,
        in order. admit(i, added) is called before the i-th is added, with the indexes of the
        jobs this batch added before it (added, not committed: it must count them itself);
        raising refuses the whole batch. on_created(i, job) is called for each job added, before
        the commit (what the job needs before a pass may place it, its secrets); raising
        refuses the batch too."""
        now = time.time()
        ids = [uuid.uuid4().hex[:12] for _ in jobs]
        results: list[tuple[Job, bool]] = []
        added: list[int] = []  # the indexes of the jobs this batch has added so far
        # Listeners hear of a lone job by its id; of a batch as "any job may have changed".
        with self._transaction(ids[0] if len(ids) == 1 else "") as conn:
            for index, (job_id, new) in enumerate(zip(ids, jobs, strict=True)):
                if new.client_request_id:
                    row = conn.execute(
                        "SELECT id FROM jobs WHERE client_request_id=?", (new.client_request_id,)
                    ).fetchone()
                    if row is not None:
                        results.append((self._as_submitted(conn, row[0]), False))
                        continue
                if admit is not None:
                    admit(index, added)
                priority = new.spec.priority
                place = self._tally.place_of_new(priority) + sum(
                    jobs[i].spec.priority >= priority for i in added
                )
                job = self._insert_queued(conn, job_id, new, now, place)
                if on_created is not None:
                    on_created(index, job)
                results.append((job, True))
                added.append(index)
        return results

    def _as_submitted(self, conn: sqlite3.Connection, job_id: str) -> Job:
        """A job already stored, as a repeated submit returns it: in its place, if queued."""
        job = self._load(conn, job_id)
        return self._with_position(job, conn) if job.state == JobState.QUEUED else job

    def _insert_queued(
        self, conn: sqlite3.Connection, job_id: str, new: NewJob, now: float, place: int
    ) -> Job:
        spec = new.spec
        conn.execute(
            "INSERT INTO jobs (id, user, state, priority, spec, created_at, secret_names, "
            "client_request_id, last_seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1)",
            (
                job_id,
                new.user,
                JobState.QUEUED.value,
                spec.priority,
                json.dumps(dataclasses.asdict(spec)),
                now,
                json.dumps(new.secret_names),
                new.client_request_id or None,
            ),
        )
        self._insert_events(conn, job_id, 1, [Event(EventKind.STATE, state=JobState.QUEUED.value)])
        self._tally_changes.append((spec.priority, spec.gpus, 1))
        return Job(
            id=job_id,
            spec=spec,
            user=new.user,
            state=JobState.QUEUED,
            created_at=now,
            last_seq=1,
            secret_names=new.secret_names,
            queue_position=place,
        )

    def adopt(
        self,
        job_id: str,
        spec: JobSpec,
        user: str,
        *,
        created_at: float,
        gpu_uuids: Sequence[str],
        team_attempt: TeamAttempt,
        secret_names: Iterable[str] = (),
    ) -> Job:
        """Record a job that was queued elsewhere (the team queue) and placed here, and start
        it on gpu_uuids: queued and starting in one transaction, so that this host's own
        scheduler never sees it queued. The record of an earlier attempt of it that ended here
        (before the team requeued it) gives way to this one."""
        with self._transaction(job_id) as conn:
            row = conn.execute("SELECT state FROM jobs WHERE id=?", (job_id,)).fetchone()
            if row is not None:
                if not JobState(row[0]).terminal:
                    raise FailedPrecondition(f"job {job_id} is {row[0]} on this host already")
                conn.execute("DELETE FROM events WHERE job_id=?", (job_id,))
                conn.execute("DELETE FROM jobs WHERE id=?", (job_id,))
            conn.execute(
                "INSERT INTO jobs (id, user, state, priority, spec, created_at, secret_names, "
                "team_attempt, last_seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1)",
                (
                    job_id,
                    user,
                    JobState.QUEUED.value,
                    spec.priority,
                    json.dumps(dataclasses.asdict(spec)),
                    created_at,
                    json.dumps(sorted(secret_names)),
                    json.dumps(dataclasses.asdict(team_attempt)),
                ),
            )
            self._insert_events(
                conn, job_id, 1, [Event(EventKind.STATE, state=JobState.QUEUED.value)]
            )
            self._tally_changes.append((spec.priority, spec.gpus, 1))
            before, after = self._transition(conn, job_id, JobState.STARTING, gpu_uuids=gpu_uuids)
        self._transitioned(before, after)
        return after

    def transition(
        self,
        job_id: str,
        new: JobState,
        *,
        reason: str = "",
        hint: str = "",
        message: str = "",
        exit_code: int | None = None,
        gpu_uuids: Sequence[str] | None = None,
        step: str = "",
    ) -> Job:
        """Move a job to a new state (forward only) and append its STATE event, atomically."""
        with self._transaction(job_id) as conn:
            before, after = self._transition(
                conn,
                job_id,
                new,
                reason=reason,
                hint=hint,
                message=message,
                exit_code=exit_code,
                gpu_uuids=gpu_uuids,
                step=step,
            )
        self._transitioned(before, after)
        return after

    def place(self, placements: Sequence[tuple[str, Sequence[str]]]) -> list[Job]:
        """Move the queued jobs of one scheduling pass to starting, each on its GPUs (job id,
        GPU uuids), in one transaction: all or none, so the caller must hold what keeps them
        queued meanwhile (the supervisor's lock, which a cancel takes too)."""
        with self._transaction(placements[0][0] if len(placements) == 1 else "") as conn:
            changes = [
                self._transition(conn, job_id, JobState.STARTING, gpu_uuids=gpu_uuids)
                for job_id, gpu_uuids in placements
            ]
        for before, after in changes:
            self._transitioned(before, after)
        return [after for _, after in changes]

    def _transitioned(self, before: Job, after: Job) -> None:
        """Tell the listeners of a committed transition."""
        for listener in self._transition_listeners:
            listener(before, after)
        for count_listener in self._event_listeners:
            count_listener(1)

    def _transition(
        self,
        conn: sqlite3.Connection,
        job_id: str,
        new: JobState,
        *,
        reason: str = "",
        hint: str = "",
        message: str = "",
        exit_code: int | None = None,
        gpu_uuids: Sequence[str] | None = None,
        step: str = "",
    ) -> tuple[Job, Job]:
        """The transition inside a transaction; returns the job before and after it."""
        job = self._load(conn, job_id)
        if not can_transition(job.state, new):
            raise FailedPrecondition(
                f"job {job_id} is {job.state.value}; it cannot become {new.value}"
            )
        now = time.time()
        sets = ["state=?"]
        args: list[Any] = [new.value]
        if new == JobState.STARTING:
            sets.append("started_at=?")
            args.append(now)
        if new in TERMINAL:
            sets += ["finished_at=?", "failure_reason=?", "hint=?"]
            args += [now, reason, hint]
        if exit_code is not None:
            sets.append("exit_code=?")
            args.append(exit_code)
        if gpu_uuids is not None:
            sets.append("gpu_uuids=?")
            args.append(json.dumps(list(gpu_uuids)))
        seq = job.last_seq + 1
        sets.append("last_seq=?")
        args.append(seq)
        conn.execute(f"UPDATE jobs SET {', '.join(sets)} WHERE id=?", [*args, job_id])
        if job.state == JobState.QUEUED:
            self._tally_changes.append((job.spec.priority, job.spec.gpus, -1))
        event = Event(
            EventKind.STATE,
            step=step,
            state=new.value,
            reason=reason,
            message=message or hint,
            exit_code=exit_code,
        )
        self._insert_events(conn, job_id, seq, [event])
        if new in TERMINAL and job.started_at and job.gpu_uuids:
            conn.execute(
                # OR IGNORE: a team job may run here again after an attempt that was lost.
                "INSERT OR IGNORE INTO usage (job_id, user, team, gpus, started_at, finished_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (job.id, job.user, job.spec.team, len(job.gpu_uuids), job.started_at, now),
            )
        return job, self._load(conn, job_id)

    def append(
        self,
        job_id: str,
        events: Sequence[Event],
        *,
        step: StepRecord | None = None,
        while_running: bool = False,
    ) -> int:
        """Append log, metric and progress events; returns the last seq written.

        `step` (e.g. with the log cursor these events were read up to) replaces that step's
        record in the same transaction, so a restart neither repeats nor skips output.
        `while_running` drops the events if the job has ended meanwhile (nothing may follow
        its terminal state).
        """
        if not events and step is None:
            return 0
        if any(ev.kind == EventKind.STATE for ev in events):
            raise ValueError("state events are written by transition() only")
        progress = next((ev.progress for ev in reversed(events) if ev.progress), None)
        metrics: dict[str, float] = {}
        for ev in events:
            if ev.kind == EventKind.METRICS and not ev.eval:
                metrics.update({m.name: m.value for m in ev.metrics if m.value is not None})
        with self._transaction(job_id) as conn:
            row = conn.execute(
                "SELECT last_seq, last_metrics, runtime, state FROM jobs WHERE id=?", (job_id,)
            ).fetchone()
            if row is None:
                raise NotFound(f"no job {job_id!r} on this host")
            if while_running and JobState(row[3]).terminal:
                return int(row[0])
            last = self._insert_events(conn, job_id, row[0] + 1, events) if events else row[0]
            sets, args = ["last_seq=?"], [last]
            if step is not None:
                sets.append("runtime=?")
                args.append(_with_step(row[2], step))
            if progress is not None:
                sets.append("progress=?")
                args.append(json.dumps(progress_record(progress)))
            if metrics:
                merged = {**json.loads(row[1]), **metrics}
                sets.append("last_metrics=?")
                args.append(json.dumps(merged))
            conn.execute(f"UPDATE jobs SET {', '.join(sets)} WHERE id=?", [*args, job_id])
        if last > row[0]:
            for listener in self._event_listeners:
                listener(last - row[0])
        return int(last)

    def record_start(self, job_id: str, record: StepRecord, state: JobState | None) -> Job:
        """Record a step just started (its record holds the handle to re-attach to it) and,
        when the job enters the step's state with it, that transition: one transaction."""
        with self._transaction(job_id) as conn:
            self._write_step(conn, job_id, record)
            if state is None:
                return self._load(conn, job_id)
            before, after = self._transition(conn, job_id, state, step=record.step)
        self._transitioned(before, after)
        return after

    def update_step(self, job_id: str, record: StepRecord) -> None:
        """Record one of the job's steps: what the runtime needs to re-attach to it, how far its
        output was read, how it ended."""
        with self._transaction(job_id) as conn:
            self._write_step(conn, job_id, record)

    @staticmethod
    def _write_step(conn: sqlite3.Connection, job_id: str, record: StepRecord) -> None:
        row = conn.execute("SELECT runtime FROM jobs WHERE id=?", (job_id,)).fetchone()
        if row is None:
            raise NotFound(f"no job {job_id!r} on this host")
        conn.execute("UPDATE jobs SET runtime=? WHERE id=?", (_with_step(row[0], record), job_id))

    def request_stop(self, job_id: str, reason: StopReason) -> Job:
        """Record that a running job must stop and why; the first reason stands. Returns the
        job as it is now."""
        with self._transaction(job_id) as conn:
            conn.execute(
                "UPDATE jobs SET stop_reason=? WHERE id=? AND stop_reason=''",
                (reason.value, job_id),
            )
            return self._load(conn, job_id)

    # -- reads -----------------------------------------------------------------------------

    def state(self, job_id: str) -> JobState:
        """The job's state alone: what a watcher reads before each page of events."""
        row = self._reader().execute("SELECT state FROM jobs WHERE id=?", (job_id,)).fetchone()
        if row is None:
            raise NotFound(f"no job {job_id!r} on this host")
        return JobState(row[0])

    def get(self, job_id: str) -> Job:
        job = self._load(self._reader(), job_id)
        if job.state == JobState.QUEUED:
            return self._with_position(job)
        return job

    def _with_position(self, job: Job, conn: sqlite3.Connection | None = None) -> Job:
        """Its place in the queue: jobs of higher priority, or equal and older, come first."""
        row = (
            (conn or self._reader())
            .execute(
                "SELECT COUNT(*) FROM jobs WHERE state='queued' AND (priority > ? OR "
                "(priority = ? AND n < (SELECT n FROM jobs WHERE id=?)))",
                (job.spec.priority, job.spec.priority, job.id),
            )
            .fetchone()
        )
        return replace(job, queue_position=int(row[0]) + 1)

    @staticmethod
    def _queue_places(conn: sqlite3.Connection, wanted: set[int]) -> dict[int, int]:
        """Queue places of these jobs (by n), walking the queue's index only as far as needed:
        a page near the head of a long queue costs a few index entries, not the whole queue."""
        places: dict[int, int] = {}
        cursor = conn.execute("SELECT n FROM jobs WHERE state='queued' ORDER BY priority DESC, n")
        for place, (n,) in enumerate(cursor, 1):
            if n in wanted:
                places[n] = place
                if len(places) == len(wanted):
                    break
        cursor.close()
        return places

    def list_jobs(
        self,
        *,
        states: Sequence[JobState] = (),
        user: str = "",
        page_size: int = 50,
        page_token: str = "",
    ) -> tuple[list[Job], str, int]:
        """A page of jobs in submission order; returns (jobs, next_page_token, total matching)."""
        if page_size <= 0 or page_size > 1000:
            raise InvalidArgument("page_size", "a number from 1 to 1000")
        after = 0
        if page_token:
            try:
                after = int(base64.urlsafe_b64decode(page_token.encode()).decode())
            except ValueError as exc:
                raise InvalidArgument("page_token", "a token from a previous page") from exc
        where, args = [], []
        if states:
            where.append(f"state IN ({', '.join('?' * len(states))})")
            args += [s.value for s in states]
        if user:
            where.append("user=?")
            args.append(user)
        cond = " AND ".join(where) or "1"
        conn = self._reader()
        total = conn.execute(f"SELECT COUNT(*) FROM jobs WHERE {cond}", args).fetchone()[0]
        rows = conn.execute(
            f"SELECT n, {_JOB_COLUMNS} FROM jobs WHERE {cond} AND n > ? ORDER BY n LIMIT ?",
            [*args, after, page_size + 1],
        ).fetchall()
        more = len(rows) > page_size
        rows = rows[:page_size]
        jobs = [_job_from_row(r[1:]) for r in rows]
        queued = {r[0] for r, j in zip(rows, jobs, strict=True) if j.state == JobState.QUEUED}
        if queued:
            places = self._queue_places(conn, queued)
            jobs = [
                replace(j, queue_position=places.get(r[0], 0))
                for r, j in zip(rows, jobs, strict=True)
            ]
        token = base64.urlsafe_b64encode(str(rows[-1][0]).encode()).decode() if more else ""
        return jobs, token, total

    def queued_by_gpus(self) -> dict[int, int]:
        """How many queued jobs ask for each number of GPUs (0: no GPU), from the tally."""
        with self._write_lock:
            return dict(self._tally.by_gpus)

    def past_time_limit(self, now: float) -> list[str]:
        """Running jobs past their time limit at `now` and not asked to stop yet."""
        running = [s.value for s in RUNNING]
        rows = self._reader().execute(
            "SELECT id FROM jobs WHERE state IN "
            f"({', '.join('?' * len(running))}) AND stop_reason='' "
            "AND json_extract(spec, '$.time_limit_seconds') > 0 "
            "AND ? - started_at > json_extract(spec, '$.time_limit_seconds') ORDER BY n",
            [*running, now],
        )
        return [job_id for (job_id,) in rows]

    def with_id_prefix(self, prefix: str, limit: int) -> list[Job]:
        """Jobs whose id starts with prefix, by id, at most limit of them (a range scan of the
        primary key: no pattern characters to escape)."""
        if not prefix:
            return []
        upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        rows = (
            self._reader()
            .execute(
                f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id >= ? AND id < ? ORDER BY id LIMIT ?",
                (prefix, upper, limit),
            )
            .fetchall()
        )
        jobs = [_job_from_row(row) for row in rows]
        return [self._with_position(j) if j.state == JobState.QUEUED else j for j in jobs]

    def jobs_in(self, states: Iterable[JobState]) -> list[Job]:
        """Every job in the given states, in submission order (for the scheduler and recovery)."""
        wanted = [s.value for s in states]
        rows = self._reader().execute(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE state IN ({', '.join('?' * len(wanted))}) "
            "ORDER BY n",
            wanted,
        )
        return [_job_from_row(r) for r in rows]

    def queued_for_planner(self) -> list[QueuedJob]:
        """The queued jobs as the planner sees them, in submission order: only the fields it
        needs, read by SQLite from each spec (a long queue is read on every pass)."""
        fields = ", ".join(
            f"coalesce(spec ->> '$.{name}', {default})" for name, default in _PLANNER_FIELDS.items()
        )
        rows = self._reader().execute(
            f"SELECT id, user, priority, {fields} FROM jobs WHERE state = 'queued' ORDER BY n"
        )
        return [
            QueuedJob(
                job_id,
                user,
                gpus,
                priority=priority,
                min_gpu_memory_mb=memory,
                gpu_type=gpu_type,
                time_limit_seconds=limit,
                order=order,
                team=team,
            )
            for order, (job_id, user, priority, gpus, memory, gpu_type, limit, team) in enumerate(
                rows
            )
        ]

    def usage_after(self, n: int) -> list[tuple[int, UsageRecord]]:
        """The usage records written after record number n, in order: (number, record)."""
        rows = self._reader().execute(
            "SELECT n, user, team, gpus, started_at, finished_at FROM usage WHERE n > ? ORDER BY n",
            (n,),
        )
        return [(row[0], UsageRecord(*row[1:])) for row in rows]

    def queued_by(self, user: str, team: str) -> tuple[int, int]:
        """How many jobs this user, and this team, have queued."""
        row = (
            self._reader()
            .execute(
                "SELECT coalesce(sum(user = ?), 0), "
                "coalesce(sum(? != '' AND json_extract(spec, '$.team') = ?), 0) "
                "FROM jobs WHERE state = 'queued'",
                (user, team, team),
            )
            .fetchone()
        )
        return int(row[0]), int(row[1])

    # -- retention -------------------------------------------------------------------------

    def set_pinned(self, job_id: str, pinned: bool, by_user: str) -> bool:
        """Pin (or unpin) a job; returns whether it was pinned before."""
        with self._transaction(job_id) as conn:
            self._load(conn, job_id)
            was = conn.execute("SELECT 1 FROM pins WHERE job_id=?", (job_id,)).fetchone()
            if pinned:
                conn.execute(
                    "INSERT OR IGNORE INTO pins VALUES (?, ?, ?)", (job_id, by_user, time.time())
                )
            else:
                conn.execute("DELETE FROM pins WHERE job_id=?", (job_id,))
            return was is not None

    def is_pinned(self, job_id: str) -> bool:
        row = self._reader().execute("SELECT 1 FROM pins WHERE job_id=?", (job_id,)).fetchone()
        return row is not None

    def retention_records(self) -> list[RetentionRecord]:
        """Every job as retention sees it: state, times, pin, the objects and the prepared
        dataset path it names."""
        rows = self._reader().execute(
            "SELECT j.id, j.state, j.created_at, j.finished_at, p.job_id IS NOT NULL, "
            "j.spec ->> '$.config_yaml', "
            "(SELECT json_group_array(f.value ->> '$.sha256') FROM json_each(j.spec, '$.files') f)"
            " FROM jobs j LEFT JOIN pins p ON p.job_id = j.id ORDER BY j.n"
        )
        return [
            RetentionRecord(
                job_id,
                JobState(state),
                created_at,
                finished_at,
                bool(pinned),
                frozenset(json.loads(shas or "[]")),
                prepared_path(config_yaml or ""),
            )
            for job_id, state, created_at, finished_at, pinned, config_yaml, shas in rows
        ]

    def event_bytes(self) -> dict[str, int]:
        """Per job, the bytes its log, metric and progress events take (its states aside)."""
        rows = self._reader().execute(
            "SELECT job_id, sum(length(data) + coalesce(length(text), 0)) FROM events "
            "WHERE kind != 'state' GROUP BY job_id"
        )
        return {job_id: int(size) for job_id, size in rows}

    def drop_events(self, job_id: str) -> int:
        """Remove an ended job's log, metric and progress events (its states stay); returns how
        many rows went. A job not ended keeps them."""
        with self._transaction(job_id) as conn:
            if not self._load(conn, job_id).state.terminal:
                return 0
            cursor = conn.execute(
                "DELETE FROM events WHERE job_id=? AND kind != 'state'", (job_id,)
            )
            return cursor.rowcount

    def counts(self) -> dict[JobState, int]:
        rows = self._reader().execute("SELECT state, COUNT(*) FROM jobs GROUP BY state")
        return {JobState(state): n for state, n in rows}

    def event_runs(
        self,
        job_id: str,
        after_seq: int = 0,
        *,
        limit: int = 1000,
        kinds: Sequence[EventKind] = (),
    ) -> list[EventRun]:
        """At most `limit` events after after_seq, in order, log lines still in their runs."""
        of_kinds, kind_args = _kinds_clause(kinds)
        sql = (
            "SELECT seq, time, kind, data, lines, text FROM events "
            f"WHERE job_id=? AND seq>?{of_kinds} ORDER BY seq LIMIT ?"
        )
        runs: list[EventRun] = []
        left = limit
        rows = self._reader().execute(sql, [job_id, after_seq, *kind_args, limit])
        for seq, t, kind, data, lines, text in rows:
            record = json.loads(data)
            if text is not None:
                record["line"] = text
            first = seq - lines + 1
            if first <= after_seq or lines > left:  # a run cut by after_seq or by the limit
                text = record["line"]
                if (skip := after_seq - first + 1) > 0:  # (fewer than its lines: seq > after)
                    text = text.split("\n", skip)[skip]
                    first, lines = first + skip, lines - skip
                if lines > left:
                    text = "\n".join(text.split("\n", left)[:left])
                    lines = left
                record["line"] = text
            runs.append((first, t, kind, record))
            left -= lines
            if left <= 0:
                break
        return runs

    def event_records(
        self,
        job_id: str,
        after_seq: int = 0,
        *,
        limit: int = 1000,
        kinds: Sequence[EventKind] = (),
    ) -> list[tuple[int, float, str, dict[str, Any]]]:
        """(seq, time, kind, record) of at most `limit` events after after_seq, one per line."""
        out: list[tuple[int, float, str, dict[str, Any]]] = []
        for first, t, kind, record in self.event_runs(job_id, after_seq, limit=limit, kinds=kinds):
            if kind != _LOG:
                out.append((first, t, kind, record))
                continue
            out += [
                (first + i, t, kind, {**record, "line": line})
                for i, line in enumerate(record["line"].split("\n"))
            ]
        return out

    def events(
        self,
        job_id: str,
        after_seq: int = 0,
        *,
        limit: int = 1000,
        kinds: Sequence[EventKind] = (),
    ) -> list[Event]:
        return [
            Event.from_record(kind, seq, t, rec)
            for seq, t, kind, rec in self.event_records(job_id, after_seq, limit=limit, kinds=kinds)
        ]

    def tail_start(self, job_id: str, kinds: Sequence[EventKind], count: int) -> int:
        """The seq after which the last `count` events of these kinds begin."""
        of_kinds, kind_args = _kinds_clause(kinds)
        sql = f"SELECT seq, lines FROM events WHERE job_id=?{of_kinds} ORDER BY seq DESC"
        seen = 0
        for seq, lines in self._reader().execute(sql, [job_id, *kind_args]):
            if seen + lines > count:
                return int(seq) - (count - seen)
            seen += lines
        return 0

    def has_line(self, job_id: str, step: str, text: str) -> bool:
        """Whether a log line of this step contains text (e.g. preprocess's success marker)."""
        for (data,) in self._reader().execute(
            "SELECT data FROM events WHERE job_id=? AND kind='log' "
            "AND instr(coalesce(text, data), ?) > 0",
            (job_id, text),
        ):
            if json.loads(data).get("step") == step:
                return True
        return False

    def wait_for_change(self, generation: int, timeout: float) -> int:
        """Wait until a commit after `generation` (or the timeout); returns the new generation."""
        with self._changed:
            if self._generation == generation:
                self._changed.wait(timeout)
            return self._generation

    @property
    def generation(self) -> int:
        with self._changed:
            return self._generation

    def close(self) -> None:
        self._writer.close()
