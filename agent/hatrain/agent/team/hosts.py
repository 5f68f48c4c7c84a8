"""The team's hosts: heartbeats, being marked down, and epochs that fence a host that returns.

Each host writes a heartbeat every `team.heartbeat_seconds`, by the database's clock. A host
silent for `team.down_after_seconds` is marked down by whichever agent looks first, and its epoch
is raised in that same transaction: its placements not claimed yet go back to the queue, and its
running jobs are reported `host lost`, or requeued when they asked for it (`--requeue`).

Every write a host makes about its jobs names the epoch it registered with, and is checked
against the current one in the same statement. A host that was marked down and comes back (or
was only cut off) therefore cannot claim a stale placement or finish a job the team has given
up on: its writes match no row, it learns that it is fenced, registers again and drops those
jobs.
"""

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..scheduler import GpuSlot, Host, RunningJob
from .db import Cursor
from .queue import HOST_LOST
from .schema import CHANNEL


@dataclass(frozen=True)
class TeamHost:
    name: str
    state: str
    epoch: int
    heartbeat_age_seconds: float
    gpus: tuple[GpuSlot, ...]
    # Jobs of the host's own queue that hold GPUs (or CPU slots).
    local_running: tuple[RunningJob, ...]

    def as_host(self) -> Host:
        return Host(self.name, self.gpus)


def gpus_record(gpus: list[GpuSlot]) -> str:
    return json.dumps([[g.index, g.uuid, g.name, g.memory_mb] for g in gpus])


def running_record(jobs: list[RunningJob]) -> str:
    return json.dumps(
        [[j.id, j.user, list(j.gpu_uuids), j.ends_by, j.team, j.started_at] for j in jobs]
    )


def host_from_row(row: Sequence[Any]) -> TeamHost:
    name, state, epoch, age, gpus, running = row
    return TeamHost(
        name=name,
        state=state,
        epoch=epoch,
        heartbeat_age_seconds=float(age),
        gpus=tuple(GpuSlot(i, u, n, m) for i, u, n, m in gpus),
        local_running=tuple(
            RunningJob(j, u, tuple(g), ends_by=e, host=name, team=t, started_at=s)
            for j, u, g, e, t, s in running
        ),
    )


def register(cur: Cursor, name: str, gpus: list[GpuSlot]) -> int:
    """Join the team (or come back to it); returns the epoch this host now writes with."""
    cur.execute(
        "INSERT INTO team_hosts (name, epoch, state, heartbeat_at, registered_at, gpus) "
        "VALUES (%s, 1, 'up', now(), now(), %s) "
        "ON CONFLICT (name) DO UPDATE SET state = 'up', heartbeat_at = now(), "
        "registered_at = now(), down_at = NULL, gpus = EXCLUDED.gpus "
        "RETURNING epoch",
        (name, gpus_record(gpus)),
    )
    row = cur.fetchone()
    assert row is not None
    cur.execute("SELECT pg_notify(%s, 'host')", (CHANNEL,))
    return int(row[0])


def heartbeat(cur: Cursor, name: str, epoch: int, local_running: list[RunningJob]) -> bool:
    """Write this host's heartbeat; False: it has been fenced (marked down meanwhile)."""
    cur.execute(
        "UPDATE team_hosts SET heartbeat_at = now(), local_running = %s "
        "WHERE name = %s AND epoch = %s AND state = 'up'",
        (running_record(local_running), name, epoch),
    )
    return cur.rowcount == 1


def hosts(cur: Cursor, *, up_only: bool = False) -> list[TeamHost]:
    cur.execute(
        "SELECT name, state, epoch, extract(epoch FROM now() - heartbeat_at), gpus, "
        f"local_running FROM team_hosts {'WHERE state = %s' if up_only else ''} ORDER BY name",
        ("up",) if up_only else None,
    )
    return [host_from_row(row) for row in cur.fetchall()]


def mark_down(cur: Cursor, down_after_seconds: float) -> list[str]:
    """Mark down the hosts silent past the timeout, and settle their jobs; returns their names.
    Placements made for an epoch that is no longer current go back to the queue too."""
    cur.execute(
        "UPDATE team_hosts SET state = 'down', epoch = epoch + 1, down_at = now() "
        "WHERE state = 'up' AND heartbeat_at < now() - make_interval(secs => %s) "
        "RETURNING name, extract(epoch FROM now() - heartbeat_at)",
        (down_after_seconds,),
    )
    lost = cur.fetchall()
    now = time.time()
    for name, silent in lost:
        _settle_jobs_of(cur, name, float(silent), now)
    cur.execute(
        "UPDATE team_jobs j SET state = 'queued', host = NULL, epoch = NULL, gpu_uuids = '{}' "
        "WHERE state = 'placed' AND NOT EXISTS (SELECT 1 FROM team_hosts h "
        "WHERE h.name = j.host AND h.state = 'up' AND h.epoch = j.epoch)"
    )
    if lost or cur.rowcount:
        cur.execute("SELECT pg_notify(%s, 'host')", (CHANNEL,))
    return [name for name, _ in lost]


def _settle_jobs_of(cur: Cursor, host: str, silent: float, now: float) -> None:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
    cur.execute(
        "UPDATE team_jobs SET state = 'queued', host = NULL, epoch = NULL, gpu_uuids = '{}' "
        "WHERE host = %s AND state = 'placed'",
        (host,),
    )
    cur.execute(
        "INSERT INTO team_usage (job_id, attempt, user_name, team, gpus, started_at, "
        "finished_at) SELECT id, attempt, user_name, team, cardinality(gpu_uuids), started_at, "
        "%s FROM team_jobs WHERE host = %s AND state = 'running' AND started_at > 0 "
        "AND cardinality(gpu_uuids) > 0 ON CONFLICT DO NOTHING",
        (now, host),
    )
    lost = f"host {host} stopped answering (no heartbeat for {silent:.0f} s; marked down {when})"
    cur.execute(
        "UPDATE team_jobs SET state = 'queued', host = NULL, epoch = NULL, gpu_uuids = '{}', "
        "local_state = '', started_at = 0, objects_fetched = false, note = %s "
        "WHERE host = %s AND state = 'running' AND requeue",
        (f"{HOST_LOST}: {lost} while it ran; requeued", host),
    )
    cur.execute(
        "UPDATE team_jobs SET state = 'failed', failure_reason = %s, hint = %s, "
        "finished_at = %s, note = %s WHERE host = %s AND state = 'running' AND NOT requeue",
        (
            HOST_LOST,
            f"{lost} while the job ran; it was not requeued (submit with --requeue for that)",
            now,
            f"{HOST_LOST} on {host}",
            host,
        ),
    )


def gpus_used(cur: Cursor) -> dict[str, int]:
    """GPUs each host holds for team jobs placed on it or running there."""
    cur.execute(
        "SELECT host, sum(cardinality(gpu_uuids)) FROM team_jobs "
        "WHERE state IN ('placed', 'running') GROUP BY host"
    )
    return {host: int(n) for host, n in cur.fetchall()}
