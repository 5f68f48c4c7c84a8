"""What the gRPC service asks of the team queue: submit, read, list and cancel team jobs, and
the team's hosts. Each call is one transaction on the team database (retried across a
failover: a submit by its request id, which the client sends with every submit)."""

import base64
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING

from hatrain.rpc.contract import gpu_accepts

from ..config import SchedulerConfig
from ..errors import InvalidArgument, NotFound
from ..jobs import JobSpec
from ..objects import ObjectStore
from ..queue_caps import queue_cap_check
from ..scheduler import GpuSlot, cap_for
from ..states import JobState
from . import hosts, queue
from .db import Cursor, TeamDb
from .hosts import TeamHost
from .placement import Claimed, PassReads
from .queue import TeamJob

if TYPE_CHECKING:
    from .member import TeamMember

_GPUS_FRESH_SECONDS = 1.0


class TeamFront:
    def __init__(
        self,
        db: TeamDb,
        host: str,
        objects: ObjectStore,
        max_object_bytes: int,
        scheduler: SchedulerConfig,
        member: "TeamMember | None" = None,
    ) -> None:
        """member: this host's part in the team, which plans a submit at once if it can."""
        self.db = db
        self.host = host
        self.objects = objects
        self.max_object_bytes = max_object_bytes
        self.scheduler = scheduler
        self.member = member
        self._gpus: dict[str, tuple[GpuSlot, ...]] = {}
        self._gpus_read_at: float | None = None

    def check_fits(self, spec: JobSpec) -> None:
        """Refuse a job that no host of the team (or not the host it names) could ever run."""
        team = self._gpus_by_host()
        if spec.host and spec.host not in team:
            raise InvalidArgument(
                "spec.host", f"a host of the team ({', '.join(sorted(team))}), got {spec.host!r}"
            )
        candidates: Mapping[str, Sequence[GpuSlot]] = (
            {spec.host: team[spec.host]} if spec.host else team
        )
        best = max(
            (
                sum(
                    1
                    for g in gpus
                    if gpu_accepts(g.name, g.memory_mb, spec.min_gpu_memory_mb, spec.gpu_type)
                )
                for gpus in candidates.values()
            ),
            default=0,
        )
        if spec.gpus > best:
            where = f"on {spec.host}" if spec.host else "on one host of the team"
            raise InvalidArgument(
                "spec.resources.gpus",
                f"at most {best} (GPUs {where} matching the request), got {spec.gpus}",
            )

    def _gpus_by_host(self) -> dict[str, tuple[GpuSlot, ...]]:
        """The team's GPUs by host, read again at most every second (a submit needs them)."""
        now = time.monotonic()
        if self._gpus_read_at is None or now - self._gpus_read_at > _GPUS_FRESH_SECONDS:
            self._gpus = {h.name: h.gpus for h in self.hosts()}
            self._gpus_read_at = now
        return self._gpus

    def submit(
        self, spec: JobSpec, user: str, client_request_id: str, secrets: dict[str, str]
    ) -> tuple[TeamJob, bool]:
        user_capped = cap_for(self.scheduler.user_queued_caps, user) is not None
        team_capped = bool(
            spec.team and cap_for(self.scheduler.team_queued_caps, spec.team) is not None
        )
        capped = user_capped or team_capped

        def admit(cur: Cursor) -> None:
            # Counted in the submit's own transaction, under locks held to its commit, so that
            # racing submits count one after another.
            queue.lock_queue_counts(
                cur, user if user_capped else "", spec.team if team_capped else ""
            )
            self._queue_cap_check_in(cur, user, spec.team)

        member = self.member

        Placed = tuple[list[Claimed], int]

        def work(cur: Cursor) -> Callable[[], tuple[TeamJob, bool, Placed | None]]:
            reads: list[PassReads] = []
            job, created = queue.submit(
                cur,
                spec,
                user,
                submitted_on=self.host,
                objects=self.objects,
                max_object_bytes=self.max_object_bytes,
                client_request_id=client_request_id,
                secrets=secrets,
                admit=admit if capped else None,
                notify=member is None,
                alongside=(lambda: reads.append(member.send_submit_pass(cur))) if member else None,
            )
            if not (created and member and reads):
                return lambda: (job, created, None)
            read_claims = member.plan_now(cur, reads[0], spec, job.id)
            return lambda: (job, created, read_claims())

        # Pipelined: the insert goes with the planning pass's reads in one round trip, the
        # pass's writes and this host's claim with the commit in the next. A job claimed here
        # starts as soon as that returns (with the connection back in the pool: a start may
        # need one, to fetch the files of another job claimed with it).
        job, created, placed = self.db.run_pipelined(work)
        if placed is not None and member is not None:
            member.start_now(placed)
        return job, created

    def _queue_cap_check_in(self, cur: Cursor, user: str, team: str) -> None:
        queue_cap_check(self.scheduler, partial(queue.queued_by, cur))(user, team, 0, 0)

    def get(self, job_id: str) -> TeamJob:
        job = self.db.run(partial(queue.get, job_id=job_id))
        if job is None:
            raise NotFound(f"no job {job_id!r} on this host or in the team queue")
        return job

    def find(self, job_id: str) -> TeamJob | None:
        return self.db.run(partial(queue.get, job_id=job_id))

    def with_id_prefix(self, prefix: str, limit: int) -> list[TeamJob]:
        return self.db.run(partial(queue.with_id_prefix, prefix=prefix, limit=limit))

    def cancel(self, job_id: str) -> TeamJob:
        return self.db.run(partial(queue.cancel, job_id=job_id))

    def listing(
        self, states: Sequence[JobState], user: str, page_size: int, page_token: str
    ) -> tuple[list[TeamJob], str, int]:
        after = 0
        if page_token:
            try:
                after = int(base64.urlsafe_b64decode(page_token.encode()).decode())
            except ValueError as exc:
                raise InvalidArgument("page_token", "a token from a previous page") from exc
        jobs, last, total = self.db.run(
            partial(queue.listing, states=states, user=user, page_size=page_size, after=after)
        )
        token = base64.urlsafe_b64encode(str(last).encode()).decode() if last else ""
        return jobs, token, total

    def hosts(self) -> list[TeamHost]:
        return self.db.run(hosts.hosts)

    def gpus_used(self) -> dict[str, int]:
        return self.db.run(hosts.gpus_used)
