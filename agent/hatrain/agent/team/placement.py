"""Late binding: one planner at a time writes placements, and each host claims its own.

Any agent may run a planning pass; passes are serialised by a transaction-scoped advisory lock
(pg_advisory_xact_lock), so exactly one planner sees and changes the queue at a time. A pass
feeds the pure planner (hatrain.agent.scheduler.plan) every host's GPUs and running jobs from
the database, and writes its placements (a job, a host, GPUs and that host's epoch) and every
waiting job's reason in the same transaction.

Why a planner under a lock rather than hosts grabbing jobs with FOR UPDATE SKIP LOCKED: the
planner's order (priority, fair share by decayed usage, caps) and its reservations for big jobs
(EASY backfill) are decisions about the whole team. A host that grabbed the first job it could
fit would take GPUs a reservation is holding, or a small job would land on the host a big one is
draining, and fair share would only hold per host.

The host named by a placement claims it with one UPDATE that matches only while the placement is
still `placed` for that host at its current epoch: a placement is claimed once, and a host that
was marked down meanwhile claims nothing.
"""

import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..fair_share import UsageBook, UsageRecord
from ..jobs import Job, JobSpec
from ..scheduler import Policy, QueuedJob, RunningJob, plan
from .db import Cursor
from .hosts import host_from_row, mark_down
from .queue import spec_from_record
from .schema import CHANNEL, PLANNER_LOCK

# The notification of a pass that placed jobs on a host: PLACED_ON + the host's name.
PLACED_ON = "placed "
# While nothing can start, reasons are worked out again at most this often.
_REASONS_REFRESH_SECONDS = 2.0


@dataclass(frozen=True)
class Claimed:
    """A placement this host has claimed: the job, to start now on these GPUs."""

    id: str
    user: str
    spec: JobSpec
    gpu_uuids: tuple[str, ...]
    attempt: int
    created_at: float
    secrets: dict[str, str]
    # This host's store holds the job's objects already (it took their upload), as the claim
    # recorded: nothing to fetch or to mark fetched.
    objects_held: bool = False


_QUEUED = (
    "SELECT id, user_name, gpus, priority, min_gpu_memory_mb, gpu_type, time_limit_seconds, "
    "team, pinned_host, n FROM team_jobs WHERE state = 'queued' ORDER BY n"
)
# A pass reads the queue's head with the rest of its input, in the same statement: the whole
# queue when it is this short (a submit to an idle team), else it reads the rest only if some
# job could start (a busy team's submits do not read a long queue each).
_QUEUE_HEAD = 16
# All a pass reads, in one statement (one snapshot, one answer to decode): the hosts up, the
# team jobs placed or running, the queue's head, usage records not seen yet, the job GPUs are
# reserved for, and whether a job without GPUs waits. Rows as JSON arrays, in the columns'
# order below. Read only by the planner's lock holder: the lock is taken again here (a session
# holds it any number of times) and nothing is read without it; the pass takes it in a
# statement before, so that this statement's snapshot follows every earlier pass's commit.
_PASS_INPUT = """
SELECT json_build_array(
  (SELECT coalesce(json_agg(json_build_array(name, state, epoch,
       extract(epoch FROM now() - heartbeat_at), gpus, local_running) ORDER BY name), '[]')
     FROM team_hosts WHERE state = 'up'),
  (SELECT coalesce(json_agg(json_build_array(id, user_name, gpu_uuids, host, started_at,
       placed_at, time_limit_seconds, team)), '[]')
     FROM team_jobs WHERE state IN ('placed', 'running')),
  (SELECT coalesce(json_agg(json_build_array(id, user_name, gpus, priority, min_gpu_memory_mb,
       gpu_type, time_limit_seconds, team, pinned_host, n) ORDER BY n), '[]')
     FROM (SELECT * FROM team_jobs WHERE state = 'queued' ORDER BY n LIMIT %(head)s) q),
  (SELECT coalesce(json_agg(json_build_array(n, user_name, team, gpus, started_at,
       finished_at) ORDER BY n), '[]')
     FROM team_usage WHERE n > %(usage_after)s),
  (SELECT reserved FROM team_planner WHERE id = 1),
  EXISTS (SELECT 1 FROM team_jobs WHERE state = 'queued' AND gpus = 0)
)
WHERE pg_try_advisory_xact_lock(%(lock)s)
"""


def _active(rows: Iterable[Sequence[Any]]) -> list[RunningJob]:
    """Team jobs placed or running: their GPUs are taken."""
    running = []
    for job_id, user, gpus, host, started, placed, limit, team in rows:
        since = started or placed
        running.append(
            RunningJob(
                job_id,
                user,
                tuple(gpus),
                ends_by=since + limit if limit else None,
                host=host,
                team=team,
                started_at=started or None,
            )
        )
    return running


def _queued(rows: Iterable[Sequence[Any]]) -> list[QueuedJob]:
    return [
        QueuedJob(
            job_id,
            user,
            gpus,
            priority=priority,
            min_gpu_memory_mb=memory,
            gpu_type=gpu_type,
            time_limit_seconds=limit,
            order=n,
            team=team,
            host=pinned,
        )
        for job_id, user, gpus, priority, memory, gpu_type, limit, team, pinned, n in rows
    ]


@dataclass
class PassReads:
    """What a planning pass reads, sent to the server at once (one round trip in a pipeline)
    and fetched when the pass needs it. locked: the cursor of a pg_try_advisory_xact_lock,
    sent before (its own statement: the reads' snapshot must be taken once the lock is held)."""

    locked: Cursor | None
    pass_input: Cursor


class TeamPlanner:
    """The planning pass an agent runs for the whole team."""

    def __init__(
        self,
        policy: Policy,
        down_after_seconds: float,
        may_mark_down: Callable[[], bool] = lambda: True,
        claims_in_pass: str = "",
    ) -> None:
        """may_mark_down: whether this agent has seen the database long enough to judge others
        silent (see member.py). claims_in_pass: the host that claims its placements in the
        pass's own transaction (it needs no notification of them)."""
        self.claims_in_pass = claims_in_pass
        self.policy = policy
        self.may_mark_down = may_mark_down
        self.down_after_seconds = down_after_seconds
        self.usage = UsageBook(policy.usage_half_life_seconds)
        self._reasons_at = -math.inf

    def send_reads(self, cur: Cursor, *, try_lock: bool = False) -> PassReads:
        """Send a pass's reads (after its try of the planner's lock when try_lock) without
        waiting for their results."""
        conn = cur.connection
        locked = None
        if try_lock:
            locked = conn.cursor()
            locked.execute("SELECT pg_try_advisory_xact_lock(%s)", (PLANNER_LOCK,))
        reads = PassReads(locked, conn.cursor())
        reads.pass_input.execute(
            _PASS_INPUT,
            {"head": _QUEUE_HEAD, "usage_after": self.usage.last_seen, "lock": PLANNER_LOCK},
            prepare=True,  # planning this statement took the server longer than running it
        )
        return reads

    def run(self, cur: Cursor) -> set[str]:
        """One pass, under the planner's lock; returns the hosts given placements."""
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (PLANNER_LOCK,))
        if self.may_mark_down():
            mark_down(cur, self.down_after_seconds)
        return self.finish(cur, self.send_reads(cur))

    def finish(self, cur: Cursor, reads: PassReads) -> set[str]:
        """The pass on what reads brought (the planner's lock held); returns the hosts given
        placements."""
        row = reads.pass_input.fetchone()
        assert row is not None
        hosts_up, active, head, usage, reserved, cpu_job_waits = row[0]
        up = [host_from_row(h) for h in hosts_up]
        running = _active(active) + [r for h in up for r in h.local_running]
        self.usage.add(((n, UsageRecord(*rest)) for n, *rest in usage), time.time())
        whole_queue = len(head) < _QUEUE_HEAD
        if self._full(up, running, cpu_job_waits) and (
            time.monotonic() < self._reasons_at + _REASONS_REFRESH_SECONDS
        ):
            return set()  # nothing could start: spare reading the queue, reasons are fresh
        if whole_queue:
            queued = _queued(head)
        else:
            cur.execute(_QUEUED)
            queued = _queued(cur.fetchall())
        if not queued:
            return set()
        now = time.time()
        result = plan(
            queued,
            running,
            [h.as_host() for h in up],
            self.policy,
            self.usage.at(now),
            now,
            reserved,
        )
        self._reasons_at = time.monotonic()
        epochs = {h.name: h.epoch for h in up}
        cur.executemany(
            "UPDATE team_jobs SET state = 'placed', host = %s, epoch = %s, gpu_uuids = %s, "
            "placed_at = %s, pending_reason = '', queue_position = 0 "
            "WHERE id = %s AND state = 'queued'",
            [(p.host, epochs[p.host], list(p.gpu_uuids), now, p.job_id) for p in result.placements],
        )
        if result.waiting:
            ids = list(result.waiting)
            cur.execute(
                "UPDATE team_jobs t SET pending_reason = v.r, queue_position = v.p "
                "FROM unnest(%s::text[], %s::int[], %s::text[]) AS v(id, p, r) "
                "WHERE t.id = v.id AND t.state = 'queued' "
                "AND (t.pending_reason, t.queue_position) IS DISTINCT FROM (v.r, v.p)",
                (
                    ids,
                    [result.waiting[i].position for i in ids],
                    [result.waiting[i].text for i in ids],
                ),
            )
        if result.reserved != reserved:
            cur.execute("UPDATE team_planner SET reserved = %s WHERE id = 1", (result.reserved,))
        placed_on = {p.host for p in result.placements}
        for host in sorted(placed_on - {self.claims_in_pass}):
            cur.execute("SELECT pg_notify(%s, %s)", (CHANNEL, f"{PLACED_ON}{host}"))
        return placed_on

    def _full(self, up: list[Any], running: list[RunningJob], cpu_job_waits: bool) -> bool:
        """Whether no queued job could start: every GPU is held, and every CPU job slot too or
        no job without GPUs waits."""
        busy = {u for r in running for u in r.gpu_uuids}
        if len(busy) < sum(len(h.gpus) for h in up):
            return False
        cpu_jobs = Counter(r.host for r in running if not r.gpu_uuids)
        return not cpu_job_waits or all(cpu_jobs[h.name] >= self.policy.max_cpu_jobs for h in up)


_FENCE = (
    "FROM team_hosts h WHERE h.name = j.host AND h.state = 'up' AND h.epoch = %(epoch)s "
    "AND j.epoch = h.epoch AND j.host = %(host)s"
)


def claim(cur: Cursor, host: str, epoch: int) -> list[Claimed]:
    """Claim every placement made for this host at its epoch, with the jobs' secrets (which
    leave the database here)."""
    return send_claim(cur, host, epoch)()


def send_claim(
    cur: Cursor, host: str, epoch: int, objects_held: str = ""
) -> Callable[[], list[Claimed]]:
    """The claim of claim(), sent on a cursor of its own; returns how to read what it claimed
    (in a pipelined transaction, once it has committed). objects_held: the job whose objects
    this host's store holds (the one it is queuing): recorded as fetched in the claim. Every
    other claimed job starts a new attempt that has fetched nothing yet."""
    claiming = cur.connection.cursor()
    claiming.execute(
        "WITH claimed AS ("
        " UPDATE team_jobs j SET state = 'running', attempt = j.attempt + 1,"
        " local_state = 'starting', started_at = %(now)s, pending_reason = '', queue_position = 0,"
        " objects_fetched = (j.id = %(held)s)"
        f" {_FENCE} AND j.state = 'placed'"
        " RETURNING j.id, j.user_name, j.spec, j.gpu_uuids, j.attempt, j.created_at,"
        " j.objects_fetched),"
        " secrets AS (DELETE FROM team_secrets s USING claimed c WHERE s.job_id = c.id"
        " RETURNING s.job_id, s.secrets) "
        "SELECT c.id, c.user_name, c.spec, c.gpu_uuids, c.attempt, c.created_at, s.secrets,"
        " c.objects_fetched FROM claimed c LEFT JOIN secrets s ON s.job_id = c.id",
        {"host": host, "epoch": epoch, "now": time.time(), "held": objects_held},
        prepare=True,
    )

    def read() -> list[Claimed]:
        return [
            Claimed(
                job_id,
                user,
                spec_from_record(spec),
                tuple(gpus),
                attempt,
                created,
                secrets or {},
                held,
            )
            for job_id, user, spec, gpus, attempt, created, secrets, held in claiming.fetchall()
        ]

    return read


def give_back(cur: Cursor, job_id: str, host: str, epoch: int) -> bool:
    """Return a claimed job to the queue (its GPUs were taken here meanwhile)."""
    cur.execute(
        "UPDATE team_jobs j SET state = 'queued', host = NULL, epoch = NULL, gpu_uuids = '{}', "
        f"local_state = '', started_at = 0 {_FENCE} AND j.id = %(id)s AND j.state = 'running'",
        {"host": host, "epoch": epoch, "id": job_id},
    )
    cur.execute("SELECT pg_notify(%s, 'returned')", (CHANNEL,))
    return cur.rowcount == 1


def mark_fetched(cur: Cursor, job_id: str, host: str, epoch: int) -> bool:
    cur.execute(
        f"UPDATE team_jobs j SET objects_fetched = true {_FENCE} AND j.id = %(id)s "
        "AND j.state = 'running'",
        {"host": host, "epoch": epoch, "id": job_id},
    )
    return cur.rowcount == 1


def report(cur: Cursor, job: Job, host: str, epoch: int, attempt: int) -> bool:
    """Write the state of a team job this host runs; False: the host is fenced (or the job is
    no longer its own), and nothing was written. A job's end reported again (its record changed
    again while the first report was on its way) is already written: True."""
    args = {"host": host, "epoch": epoch, "id": job.id, "attempt": attempt}
    args.update(
        state=job.state.value,
        started=job.started_at,
        finished=job.finished_at,
        reason=job.failure_reason,
        hint=job.hint,
        code=job.exit_code,
    )
    if not job.state.terminal:
        cur.execute(
            "UPDATE team_jobs j SET local_state = %(state)s, started_at = %(started)s "
            f"{_FENCE} AND j.id = %(id)s AND j.attempt = %(attempt)s AND j.state = 'running'",
            args,
        )
        return cur.rowcount == 1
    cur.execute(
        "UPDATE team_jobs j SET state = %(state)s, local_state = %(state)s, "
        "started_at = %(started)s, finished_at = %(finished)s, failure_reason = %(reason)s, "
        f"hint = %(hint)s, exit_code = %(code)s {_FENCE} AND j.id = %(id)s "
        "AND j.attempt = %(attempt)s AND j.state = 'running' "
        "RETURNING j.user_name, j.team, cardinality(j.gpu_uuids)",
        args,
    )
    row = cur.fetchone()
    if row is None:
        return _ended_already(cur, args)
    user, team, gpus = row
    if gpus and job.started_at:
        cur.execute(
            "INSERT INTO team_usage (job_id, attempt, user_name, team, gpus, started_at, "
            "finished_at) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (job.id, attempt, user, team, gpus, job.started_at, job.finished_at),
        )
    cur.execute("SELECT pg_notify(%s, 'finished')", (CHANNEL,))
    return True


def _ended_already(cur: Cursor, args: dict[str, Any]) -> bool:
    """Whether this attempt's end, as reported, is the team's record already, written by this
    host at its current epoch."""
    cur.execute(
        "SELECT EXISTS (SELECT 1 FROM team_jobs j WHERE j.id = %(id)s "
        "AND j.attempt = %(attempt)s AND j.state = %(state)s "
        f"AND EXISTS (SELECT 1 {_FENCE}))",
        args,
    )
    row = cur.fetchone()
    return bool(row and row[0])
