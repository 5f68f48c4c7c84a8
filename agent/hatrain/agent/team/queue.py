"""The team queue's jobs: submit (with the job's objects, in one transaction), cancel, read.

A team job keeps one id from its submit to its end, whichever host runs it; the host that
claims it records it in its own store under that id.
"""

import dataclasses
import json
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import FailedPrecondition, InvalidArgument, NotFound
from ..jobs import Job, JobFile, JobSpec
from ..objects import ObjectStore
from ..states import JobState
from .db import Cursor
from .objects import store_objects
from .schema import CHANNEL, TEAM_QUEUE_LOCK, USER_QUEUE_LOCK

# The team queue's states besides JobState's: placed on a host, not claimed by it yet.
QUEUED, PLACED, RUNNING = "queued", "placed", "running"
ACTIVE = (QUEUED, PLACED, RUNNING)
HOST_LOST = "host lost"

COLUMNS = (
    "id, user_name, spec, state, host, attempt, gpu_uuids, local_state, created_at, "
    "started_at, finished_at, failure_reason, hint, exit_code, pending_reason, queue_position, "
    "note, epoch, requeue"
)


@dataclass(frozen=True)
class TeamJob:
    """A row of team_jobs."""

    id: str
    user: str
    spec: JobSpec
    state: str
    host: str
    attempt: int
    gpu_uuids: tuple[str, ...]
    local_state: str
    created_at: float
    started_at: float
    finished_at: float
    failure_reason: str
    hint: str
    exit_code: int | None
    pending_reason: str
    queue_position: int
    note: str
    epoch: int | None
    requeue: bool

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> "TeamJob":
        return cls(
            id=row[0],
            user=row[1],
            spec=spec_from_record(row[2]),
            state=row[3],
            host=row[4] or "",
            attempt=row[5],
            gpu_uuids=tuple(row[6]),
            local_state=row[7],
            created_at=row[8],
            started_at=row[9],
            finished_at=row[10],
            failure_reason=row[11],
            hint=row[12],
            exit_code=row[13],
            pending_reason=row[14],
            queue_position=row[15],
            note=row[16],
            epoch=row[17],
            requeue=row[18],
        )

    @property
    def job_state(self) -> JobState:
        """The state as users know it: placed is still queued (nothing runs yet); running is
        the running host's own state, as it last reported it."""
        if self.state in (QUEUED, PLACED):
            return JobState.QUEUED
        if self.state == RUNNING:
            return JobState(self.local_state or JobState.STARTING.value)
        return JobState(self.state)

    def as_job(self) -> Job:
        return Job(
            id=self.id,
            spec=self.spec,
            user=self.user,
            state=self.job_state,
            created_at=self.created_at,
            failure_reason=self.failure_reason,
            hint=self.hint,
            exit_code=self.exit_code,
            gpu_uuids=self.gpu_uuids,
            started_at=self.started_at,
            finished_at=self.finished_at,
            queue_position=self.queue_position,
        )


def spec_from_record(record: dict[str, Any]) -> JobSpec:
    files = tuple(JobFile(**f) for f in record.get("files", ()))
    return JobSpec(**{**record, "files": files})


def submit(
    cur: Cursor,
    spec: JobSpec,
    user: str,
    *,
    submitted_on: str,
    objects: ObjectStore,
    max_object_bytes: int,
    client_request_id: str = "",
    secrets: dict[str, str] | None = None,
    admit: Callable[[Cursor], None] | None = None,
    notify: bool = True,
    alongside: Callable[[], None] | None = None,
) -> tuple[TeamJob, bool]:
    """Queue a job in the team queue, its objects with it; returns (job, created). A repeated
    client_request_id returns the first job (a submit retried across a failover included).
    notify: wake the hosts' planners (not needed when the caller plans in this transaction).
    alongside: sends more statements after the insert, before its answer is waited for (in a
    pipelined transaction they travel together)."""
    if client_request_id and admit is not None:
        found = _by_request_id(cur, client_request_id)
        if found is not None:
            return found, False
    if admit is not None:
        admit(cur)
    job_id = uuid.uuid4().hex[:12]
    cur.execute(
        "INSERT INTO team_jobs (id, user_name, spec, priority, gpus, min_gpu_memory_mb, "
        "gpu_type, time_limit_seconds, team, pinned_host, requeue, state, created_at, "
        "submitted_on, client_request_id) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 'queued', %s, %s, %s) "
        f"ON CONFLICT (client_request_id) DO NOTHING RETURNING {COLUMNS}",
        (
            job_id,
            user,
            json.dumps(dataclasses.asdict(spec)),
            spec.priority,
            spec.gpus,
            spec.min_gpu_memory_mb,
            spec.gpu_type,
            spec.time_limit_seconds,
            spec.team,
            spec.host,
            spec.requeue,
            time.time(),
            submitted_on,
            client_request_id or None,
        ),
        prepare=True,
    )
    if alongside is not None:
        alongside()
    inserted = cur.fetchone()
    if inserted is None:  # a repeated request id (checked here when no cap asked first)
        found = _by_request_id(cur, client_request_id)
        assert found is not None
        return found, False
    store_objects(cur, job_id, spec.files, objects, max_object_bytes)
    if secrets:
        cur.execute(
            "INSERT INTO team_secrets (job_id, secrets) VALUES (%s, %s)",
            (job_id, json.dumps(secrets)),
        )
    if notify:
        cur.execute("SELECT pg_notify(%s, 'submit')", (CHANNEL,))
    return TeamJob.from_row(inserted), True


def _by_request_id(cur: Cursor, request_id: str) -> TeamJob | None:
    cur.execute(f"SELECT {COLUMNS} FROM team_jobs WHERE client_request_id = %s", (request_id,))
    row = cur.fetchone()
    return TeamJob.from_row(row) if row else None


def get(cur: Cursor, job_id: str) -> TeamJob | None:
    cur.execute(f"SELECT {COLUMNS} FROM team_jobs WHERE id = %s", (job_id,))
    row = cur.fetchone()
    return TeamJob.from_row(row) if row else None


def lock_queue_counts(cur: Cursor, user: str, team: str) -> None:
    """Hold, until this transaction ends, the right to count and add to the queued jobs of
    user and of team (either one left empty: not that one). Submits that check a cap on
    queued jobs take these first, user before team, so that two of them racing for the last
    slot count one after the other, each seeing the other's job once it has committed."""
    for key, name in ((USER_QUEUE_LOCK, user), (TEAM_QUEUE_LOCK, team)):
        if name:
            cur.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (key, name))


def with_id_prefix(cur: Cursor, prefix: str, limit: int) -> list[TeamJob]:
    """Team jobs whose id starts with prefix, by id, at most limit of them."""
    cur.execute(
        f"SELECT {COLUMNS} FROM team_jobs WHERE starts_with(id, %s) ORDER BY id LIMIT %s",
        (prefix, limit),
    )
    return [TeamJob.from_row(row) for row in cur.fetchall()]


def queued_by(cur: Cursor, user: str, team: str) -> tuple[int, int]:
    """How many jobs this user, and this team, have waiting in the team queue."""
    cur.execute(
        "SELECT count(*) FILTER (WHERE user_name = %s), "
        "count(*) FILTER (WHERE %s <> '' AND team = %s) "
        "FROM team_jobs WHERE state IN ('queued', 'placed')",
        (user, team, team),
    )
    row = cur.fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def cancel(cur: Cursor, job_id: str) -> TeamJob:
    """Cancel a job that no host has claimed yet. (A running one is cancelled by its host.)"""
    cur.execute(
        "UPDATE team_jobs SET state = 'cancelled', finished_at = %s, hint = 'cancelled', "
        "host = NULL, gpu_uuids = '{}', pending_reason = '', queue_position = 0 "
        "WHERE id = %s AND state IN ('queued', 'placed')",
        (time.time(), job_id),
    )
    job = get(cur, job_id)
    if job is None:
        raise NotFound(f"no job {job_id!r} in the team queue")
    if cur.rowcount:
        cur.execute("DELETE FROM team_secrets WHERE job_id = %s", (job_id,))
        cur.execute("SELECT pg_notify(%s, 'cancel')", (CHANNEL,))
    elif job.state == RUNNING:
        raise FailedPrecondition(
            f"job {job_id} runs on {job.host}: cancel it there "
            f"(hatrain-client cancel {job_id} --host {job.host})"
        )
    return job


def listing(
    cur: Cursor, states: Sequence[JobState], user: str, page_size: int, after: int
) -> tuple[list[TeamJob], int, int]:
    """A page of team jobs in submission order, after row number `after`: (jobs, the last
    row's number if there are more, total matching)."""
    if page_size <= 0 or page_size > 1000:
        raise InvalidArgument("page_size", "a number from 1 to 1000")
    where: list[str] = ["true"]
    args: list[Any] = []
    if states:
        wanted = _team_states(states)
        where.append("(state = ANY(%s) OR (state = 'running' AND local_state = ANY(%s)))")
        args += [wanted, [s.value for s in states]]
    if user:
        where.append("user_name = %s")
        args.append(user)
    cond = " AND ".join(where)
    cur.execute(f"SELECT count(*) FROM team_jobs WHERE {cond}", args)
    total_row = cur.fetchone()
    assert total_row is not None
    cur.execute(
        f"SELECT n, {COLUMNS} FROM team_jobs WHERE {cond} AND n > %s ORDER BY n LIMIT %s",
        [*args, after, page_size + 1],
    )
    found = cur.fetchall()
    more = len(found) > page_size
    found = found[:page_size]
    last = int(found[-1][0]) if more else 0
    return [TeamJob.from_row(r[1:]) for r in found], last, int(total_row[0])


def _team_states(states: Sequence[JobState]) -> list[str]:
    """The team_jobs states that show as these job states (running ones are matched by their
    host's state)."""
    names = [s.value for s in states if s.terminal]
    if JobState.QUEUED in states:
        names += [QUEUED, PLACED]
    return names
