"""One host of a claim race, as a process of its own: the agent's own planning pass and claim
(hatrain.agent.team.placement) in a tight loop, each job it claims "run" at once (reported
finished through the same fenced report the agent uses), until the team queue is empty.

    python -m tests.support.claim_race CONNINFO HOST GPUS OUT

Writes the ids it claimed, one a line, to OUT.
"""

import sys
import time
from functools import partial
from pathlib import Path

from hatrain.agent.jobs import Job
from hatrain.agent.scheduler import GpuSlot, Policy
from hatrain.agent.states import JobState
from hatrain.agent.team import hosts, placement
from hatrain.agent.team.db import Cursor, TeamDb


def succeeded(claimed: placement.Claimed) -> Job:
    """The claimed job as its host reports it once it has run and succeeded, just now."""
    now = time.time()
    return Job(
        id=claimed.id,
        spec=claimed.spec,
        user=claimed.user,
        state=JobState.SUCCEEDED,
        created_at=claimed.created_at,
        gpu_uuids=claimed.gpu_uuids,
        started_at=now,
        finished_at=now,
    )


def _left(cur: Cursor) -> int:
    cur.execute("SELECT count(*) FROM team_jobs WHERE state IN ('queued', 'placed', 'running')")
    row = cur.fetchone()
    return int(row[0]) if row else 0


def main(conninfo: str, host: str, gpus: int, out: Path) -> None:
    db = TeamDb(conninfo, retry_seconds=60, max_size=2)
    db.open()
    slots = [GpuSlot(i, f"GPU-{host}-{i}") for i in range(gpus)]
    epoch = db.run(partial(hosts.register, name=host, gpus=slots))
    planner = placement.TeamPlanner(Policy(), down_after_seconds=3600)
    claimed: list[str] = []
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        db.run(planner.run)
        mine = db.run(partial(placement.claim, host=host, epoch=epoch))
        for job in mine:
            claimed.append(job.id)
            done = succeeded(job)
            db.run(partial(placement.report, job=done, host=host, epoch=epoch, attempt=job.attempt))
        db.run(partial(hosts.heartbeat, name=host, epoch=epoch, local_running=[]))
        if not mine and db.run(_left) == 0:
            break
    out.write_text("".join(f"{i}\n" for i in claimed))
    db.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]))
