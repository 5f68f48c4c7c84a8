"""This host's part in the team queue: plan, claim, start, report, heartbeat.

Three threads, each surviving a database failover by reconnecting with backoff:

- `team`: LISTENs on the team's channel (a polling fallback every `team.poll_seconds`); on each
  wake-up it runs a planning pass for the team (placement.py) and claims this host's
  placements: it reads their objects into the local store (verified), and records and starts
  each job through this host's own supervisor, store and runner, which run and stream it as
  any other job.
- `team-report`: writes the state of the team jobs this host runs to the database as its store
  commits them (and their GPU-hours when they end), fenced by this host's epoch.
- `team-heartbeat`: the heartbeat, marking down silent hosts, and removing objects no queued
  job needs.

A write that finds this host fenced (it was marked down) makes it register again and drop the
team jobs the team no longer gives it: they end here as `host lost`, and their processes are
stopped. Nothing it ran before is started again.
"""

import pwd
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import psycopg
import structlog

from ..config import TeamQueueConfig
from ..errors import HatrainError
from ..jobs import Job, JobSpec, TeamAttempt
from ..objects import ObjectStore
from ..runtime import STEPS, Runtime
from ..scheduler import GpuSlot, Policy, RunningJob
from ..states import RUNNING, FailureReason, JobState
from ..store import Store
from ..supervisor import Supervisor
from ..workspace import Workspace
from . import hosts, objects, placement, queue
from .db import TeamDb
from .schema import CHANNEL, PLANNER_LOCK, migrate

log = structlog.get_logger(__name__)
_BACKOFF_MAX = 2.0
_STOP_SECONDS = 3.0
# Once woken, the report thread gathers changes this long before it writes: a job starting
# here makes several commits in its first milliseconds, and reading each back as it comes
# would compete with the start for this host's CPU.
_REPORT_GATHER_SECONDS = 0.05
# How often (in heartbeats) claims that were never started are looked for, and how old one
# must be to count as such.
_ORPHANS_EVERY = 20
_ORPHAN_AFTER_SECONDS = 60.0


def team_of(job: Job) -> TeamAttempt | None:
    """The team queue's attempt of a job this host runs (None: a job of its own queue)."""
    return job.team_attempt


def local_running(job: Job, host: str) -> RunningJob:
    limit = job.spec.time_limit_seconds
    return RunningJob(
        job.id,
        job.user,
        job.gpu_uuids,
        ends_by=job.started_at + limit if limit else None,
        host=host,
        team=job.spec.team,
        started_at=job.started_at or None,
    )


class TeamMember:
    def __init__(
        self,
        config: TeamQueueConfig,
        store: Store,
        objects_: ObjectStore,
        workspace: Workspace,
        supervisor: Supervisor,
        runtime: Runtime,
        gpus: list[GpuSlot],
        policy: Policy,
        grace_seconds: float,
    ) -> None:
        self.config = config
        self.name = config.host
        self.store = store
        self.objects = objects_
        self.workspace = workspace
        self.supervisor = supervisor
        self.runtime = runtime
        self.gpus = gpus
        self.grace_seconds = grace_seconds
        self.db = TeamDb(config.database, config.retry_seconds)
        self.planner = placement.TeamPlanner(
            policy,
            config.down_after_seconds,
            may_mark_down=self._steady,
            claims_in_pass=config.host,
        )
        # Since when this host's heartbeats have gone through without a break (monotonic).
        self._beating_since: float | None = None
        self.epoch = 0
        self._epoch_lock = threading.RLock()
        self._dirty: set[str] = set()
        self._dirty_lock = threading.Lock()
        self._report_wake = threading.Event()
        self._reported: dict[str, JobState] = {}
        self._stopping = threading.Event()
        # Jobs claimed and being started here (their files read, their record made).
        self._starting: set[str] = set()
        self._threads: list[threading.Thread] = []

    # -- life ------------------------------------------------------------------------------

    def start(self) -> None:
        """Join the team: before the supervisor starts, so that jobs the team gave up on while
        this host was away are ended here first and never resumed."""
        self.db.open()
        migrate(self.db)
        self._register()
        self.store.on_change(self._changed)
        for name, target in (
            ("team", self._plan_loop),
            ("team-report", self._report_loop),
            ("team-heartbeat", self._heartbeat_loop),
        ):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop taking part, within a few seconds: a thread still waiting on the database (a
        failover) is left behind, daemonic."""
        self._stopping.set()
        self._report_wake.set()
        deadline = time.monotonic() + _STOP_SECONDS
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        self.db.close()

    def _register(self, fenced_at: int | None = None) -> None:
        """Join the team again; fenced_at: the epoch a write was refused at (nothing to do if
        another thread has joined again since)."""
        with self._epoch_lock:
            if fenced_at is not None and fenced_at != self.epoch:
                return
            self.epoch = self.db.run(lambda cur: hosts.register(cur, self.name, self.gpus))
            log.info("joined the team queue", host=self.name, epoch=self.epoch)
            self._reconcile()

    def _guarded(self, name: str, work: Callable[[], None], every: float) -> None:
        """Run work until stopped; a failure (the database away) is retried with backoff."""
        delay = 0.1
        while not self._stopping.is_set():
            try:
                work()
                delay = 0.1
            except (psycopg.Error, HatrainError) as exc:
                log.warning(f"{name}: team database unavailable; retrying", error=str(exc)[:200])
                self._stopping.wait(delay)
                delay = min(delay * 2, _BACKOFF_MAX)
            except Exception:
                log.exception(f"{name} failed")
                self._stopping.wait(every)

    # -- planning and claiming ---------------------------------------------------------------

    def _plan_loop(self) -> None:
        self._guarded("team queue", self._listen, self.config.poll_seconds)

    def _listen(self) -> None:
        mine = f"{placement.PLACED_ON}{self.name}"
        with self.db.listening(CHANNEL) as conn:
            self._pass()
            while not self._stopping.is_set():
                got = [
                    n.payload for n in conn.notifies(timeout=self.config.poll_seconds, stop_after=1)
                ]
                got += [n.payload for n in conn.notifies(timeout=0)]  # a burst: one pass for all
                if self._stopping.is_set():
                    return
                if got and all(p.startswith(placement.PLACED_ON) for p in got):
                    # Another host's pass placed jobs: nothing freed, no pass needed; claim ours.
                    if mine in got:
                        self.claim()
                    continue
                self._pass()

    def _pass(self) -> None:
        """A planning pass, and this host's claims, in one transaction."""
        epoch = self.epoch

        def plan_and_claim(cur: Any) -> list[placement.Claimed]:
            self.planner.run(cur)
            return placement.claim(cur, self.name, epoch)

        self._start_all(self.db.run(plan_and_claim), epoch)

    def send_submit_pass(self, cur: Any) -> placement.PassReads:
        """Send the reads of a planning pass inside a submit's own transaction, with a try of
        the planner's lock, in the same round trip as the job's insert (the transaction is
        pipelined); plan_now finishes the pass."""
        return self.planner.send_reads(cur, try_lock=True)

    def plan_now(
        self, cur: Any, reads: placement.PassReads, submitted: JobSpec, job_id: str
    ) -> Callable[[], tuple[list[placement.Claimed], int]]:
        """A planning pass inside a submit's own transaction, when no other pass is running
        (else it notifies the hosts, whose passes will see the job): a job that can start at
        once is placed, and claimed if here, as it is queued. Returns how to read the claims
        and their epoch once the transaction has committed (the claim's answer comes back with
        the commit's). Marking silent hosts down is left to the other passes. The job
        submitted, if claimed here, needs no fetch of its objects: they are in this host's store
        (uploaded here, and checked by the submit)."""
        epoch = self.epoch
        locked = reads.locked.fetchone() if reads.locked is not None else None
        if not (locked and locked[0]):
            cur.execute("SELECT pg_notify(%s, 'submit')", (CHANNEL,))
            return lambda: ([], epoch)
        if self.name not in self.planner.finish(cur, reads):
            return lambda: ([], epoch)  # placements made here by other passes: _listen claims
        held = all(self.objects.has(f.sha256) for f in submitted.files)
        read_claims = placement.send_claim(cur, self.name, epoch, job_id if held else "")
        return lambda: (read_claims(), epoch)

    def start_now(self, placed: tuple[list[placement.Claimed], int]) -> None:
        """Start claims made by plan_now, once their transaction has committed, on the
        caller's thread (no hand-over to another thread before the job starts). The submit
        stands whatever happens here: a claim that could not be started is given back to the
        queue by the heartbeat's sweep of claims never started."""
        claimed, epoch = placed
        if not claimed:
            return
        try:
            self._start_all(claimed, epoch)
        except Exception:
            log.exception("starting a job claimed at submit failed", jobs=[c.id for c in claimed])

    def claim(self) -> list[str]:
        """Claim and start this host's placements; returns the ids started."""
        epoch = self.epoch
        return self._start_all(
            self.db.run(partial(placement.claim, host=self.name, epoch=epoch)), epoch
        )

    def _start_all(self, claimed: list[placement.Claimed], epoch: int) -> list[str]:
        started = []
        for job in claimed:
            self._starting.add(job.id)
            try:
                if self._start(job, epoch):
                    started.append(job.id)
            finally:
                self._starting.discard(job.id)
        return started

    def _start(self, claimed: placement.Claimed, epoch: int) -> bool:
        if claimed.spec.files and not claimed.objects_held:
            try:
                for sha in sorted({f.sha256 for f in claimed.spec.files}):
                    self.db.run(partial(objects.fetch, sha=sha, objects=self.objects))
            except HatrainError as exc:
                return self._fail_claimed(claimed, epoch, f"its files could not be had: {exc}")
            self.db.run(lambda cur: placement.mark_fetched(cur, claimed.id, self.name, epoch))
        uid = _uid_of(claimed.user)
        if claimed.secrets:
            if uid is None:
                return self._fail_claimed(claimed, epoch, f"{claimed.user} has no login here")
            self.workspace.write_secrets(claimed.id, claimed.secrets, uid)
        # The claim wrote `starting` to the team's row: no write of it again (a transaction
        # that would compete with the job's start for this host's CPU).
        self._reported[claimed.id] = JobState.STARTING
        job = self.supervisor.start_placed(
            claimed.gpu_uuids,
            lambda: self.store.adopt(
                claimed.id,
                claimed.spec,
                claimed.user,
                created_at=claimed.created_at,
                gpu_uuids=claimed.gpu_uuids,
                team_attempt=TeamAttempt(claimed.attempt, epoch),
                secret_names=claimed.secrets.keys(),
            ),
        )
        if job is None:
            log.info("placement taken meanwhile; back to the team queue", job_id=claimed.id)
            self._reported.pop(claimed.id, None)
            self.workspace.drop_secrets(claimed.id)

            def give_back(cur: Any) -> None:
                # The heartbeat first: the next pass must see what took those GPUs here, or it
                # would place the job on them again.
                hosts.heartbeat(cur, self.name, epoch, self._local_running())
                placement.give_back(cur, claimed.id, self.name, epoch)

            self.db.run(give_back)
            return False
        log.info("team job started", job_id=job.id, gpus=list(claimed.gpu_uuids))
        return True

    def _fail_claimed(self, claimed: placement.Claimed, epoch: int, why: str) -> bool:
        log.error("team job cannot start here", job_id=claimed.id, why=why)
        job = self.store.adopt(
            claimed.id,
            claimed.spec,
            claimed.user,
            created_at=claimed.created_at,
            gpu_uuids=(),
            team_attempt=TeamAttempt(claimed.attempt, epoch),
        )
        self.store.transition(job.id, JobState.FAILED, reason=FailureReason.STORAGE_ERROR, hint=why)
        return False

    # -- reporting ---------------------------------------------------------------------------

    def _changed(self, job_id: str) -> None:
        if job_id:
            with self._dirty_lock:
                self._dirty.add(job_id)
            self._report_wake.set()

    def _report_loop(self) -> None:
        with self._dirty_lock:  # jobs that changed while the agent was away
            self._dirty.update(j.id for j in self.store.jobs_in(RUNNING) if team_of(j))
        self._guarded("team report", self._report_due, 1.0)

    def _report_due(self) -> None:
        while not self._stopping.is_set():
            if self._report_wake.wait(1.0):
                self._stopping.wait(_REPORT_GATHER_SECONDS)
            self._report_wake.clear()
            with self._dirty_lock:
                due, self._dirty = self._dirty, set()
            try:
                for job_id in sorted(due):
                    self._report(job_id)
                    due.discard(job_id)
            finally:
                if due:
                    with self._dirty_lock:
                        self._dirty |= due

    def _report(self, job_id: str) -> None:
        job = self.store.get(job_id)
        team = team_of(job)
        if team is None or self._reported.get(job_id) == job.state:
            return
        if team.epoch != self.epoch:
            return  # an attempt of an earlier epoch: dropped by _reconcile
        ok = self.db.run(
            lambda cur: placement.report(cur, job, self.name, team.epoch, team.attempt)
        )
        if ok:
            self._reported[job_id] = job.state
            if job.state.terminal:
                self._reported.pop(job_id, None)
        else:
            log.warning("team write fenced: this host was marked down", job_id=job_id)
            self._register(team.epoch)

    # -- heartbeat -------------------------------------------------------------------------

    def _heartbeat_loop(self) -> None:
        beats = 0

        def beat() -> None:
            nonlocal beats
            while not self._stopping.is_set():
                running = self._local_running()
                epoch = self.epoch
                try:
                    alive = self.db.run(
                        partial(
                            hosts.heartbeat, name=self.name, epoch=epoch, local_running=running
                        ),
                        retry=False,
                    )
                except Exception:
                    self._beating_since = None
                    raise
                if self._beating_since is None:
                    self._beating_since = time.monotonic()
                if not alive:
                    log.warning("heartbeat fenced: this host was marked down; joining again")
                    self._register(epoch)
                beats += 1
                if beats % _ORPHANS_EVERY == 0:
                    self._give_back_orphans()
                self.db.run(self._watch_hosts, retry=False)
                self._stopping.wait(self.config.heartbeat_seconds)

        self._guarded("team heartbeat", beat, self.config.heartbeat_seconds)

    def _local_running(self) -> list[RunningJob]:
        """The jobs of this host's own queue that hold GPUs or CPU slots here."""
        return [
            local_running(j, self.name) for j in self.store.jobs_in(RUNNING) if team_of(j) is None
        ]

    def _give_back_orphans(self) -> None:
        """A claim whose commit went through but whose answer was lost (the connection broke
        at that moment) leaves a job the team has running here and this host never started:
        give it back to the queue. Only claims older than a while, and not being started now."""
        epoch = self.epoch
        before = time.time() - _ORPHAN_AFTER_SECONDS

        def find(cur: Any) -> list[str]:
            cur.execute(
                "SELECT id FROM team_jobs WHERE host = %s AND epoch = %s AND state = 'running' "
                "AND started_at < %s",
                (self.name, epoch, before),
            )
            return [row[0] for row in cur.fetchall()]

        for job_id in self.db.run(find, retry=False):
            if job_id in self._starting or self._has(job_id):
                continue
            log.warning("claimed here, never started; back to the team queue", job_id=job_id)
            self.db.run(partial(placement.give_back, job_id=job_id, host=self.name, epoch=epoch))

    def _has(self, job_id: str) -> bool:
        try:
            self.store.get(job_id)
        except HatrainError:
            return False
        return True

    def _steady(self) -> bool:
        """Whether this host's heartbeats have gone through for a whole timeout: only then may
        it judge another host silent. After the database was away (a failover), every host's
        last heartbeat is old; the others are given a timeout to reconnect, as this one had."""
        since = self._beating_since
        return since is not None and time.monotonic() - since >= self.config.down_after_seconds

    def _watch_hosts(self, cur: Any) -> None:
        """Mark down the hosts gone silent, unless a planning pass is doing it now; remove the
        objects no job needs."""
        cur.execute("SELECT pg_try_advisory_xact_lock(%s)", (PLANNER_LOCK,))
        row = cur.fetchone()
        if row and row[0]:
            if self._steady():
                hosts.mark_down(cur, self.config.down_after_seconds)
            objects.collect(cur)

    # -- fencing ---------------------------------------------------------------------------

    def _reconcile(self) -> None:
        """End here the team jobs the team no longer gives this host (it was marked down while
        they ran, or while they waited to start); give back those it claimed but had not
        recorded yet (the agent stopped in between)."""
        mine = [j for j in self.store.jobs_in([JobState.QUEUED, *RUNNING]) if team_of(j)]
        epoch = self.epoch
        ids = [j.id for j in mine]
        rows = self.db.run(lambda cur: _team_rows(cur, ids))
        for job in mine:
            team = team_of(job)
            assert team is not None
            row = rows.get(job.id)
            current = (
                row is not None
                and row.state == queue.RUNNING
                and row.host == self.name
                and row.epoch == epoch
                and row.attempt == team.attempt
            )
            if not current:
                self._drop(job, row)
        orphans, ended = self.db.run(lambda cur: _unreported(cur, self.name, epoch, self.store))
        for claimed in orphans:
            # Claimed, never recorded (the agent stopped in between): nothing of it ran, so it
            # goes back to the queue rather than racing the supervisor's own recovery here.
            log.info("claimed before a stop, never started; back to the queue", job_id=claimed.id)
            self.db.run(
                partial(placement.give_back, job_id=claimed.id, host=self.name, epoch=epoch)
            )
        for job_id in ended:
            self._changed(job_id)

    def _drop(self, job: Job, row: queue.TeamJob | None) -> None:
        """This host lost the job to the team: stop what runs of it here, and end it here."""
        for step in STEPS:
            handle = job.step(step).handle or self.runtime.find(job, step)
            if handle is not None and self.runtime.probe(handle) == "running":
                self.runtime.stop(handle, self.grace_seconds)
        if row is None:
            fate = "it is not in the team queue any more"
        elif row.state in (queue.QUEUED, queue.PLACED):
            fate = "the team queue has it again"
        elif row.state == queue.RUNNING:
            fate = f"it runs on {row.host} now"
        else:
            fate = f"the team queue has it as {row.state}" + (
                f" ({row.failure_reason})" if row.failure_reason else ""
            )
        hint = f"this host ({self.name}) was marked down by the team queue; {fate}"
        current = self.store.get(job.id)
        if not current.state.terminal:
            self.store.transition(job.id, JobState.FAILED, reason=queue.HOST_LOST, hint=hint)
        log.warning("team job lost to the team", job_id=job.id, hint=hint)


def _uid_of(user: str) -> int | None:
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        return None


def _team_rows(cur: Any, ids: list[str]) -> dict[str, queue.TeamJob]:
    if not ids:
        return {}
    cur.execute(f"SELECT {queue.COLUMNS} FROM team_jobs WHERE id = ANY(%s)", (ids,))
    return {row[0]: queue.TeamJob.from_row(row) for row in cur.fetchall()}


def _unreported(
    cur: Any, host: str, epoch: int, store: Store
) -> tuple[list[placement.Claimed], list[str]]:
    """The jobs the team has running here that the store lacks (claimed, not recorded yet), and
    those the store has ended without the team knowing (the agent stopped in between)."""
    cur.execute(
        "SELECT id, user_name, spec, gpu_uuids, attempt, created_at FROM team_jobs "
        "WHERE host = %s AND epoch = %s AND state = 'running'",
        (host, epoch),
    )
    found, ended = [], []
    for job_id, user, spec, gpus, attempt, created in cur.fetchall():
        try:
            if store.get(job_id).state.terminal:
                ended.append(job_id)
        except HatrainError:
            found.append(
                placement.Claimed(
                    job_id, user, queue.spec_from_record(spec), tuple(gpus), attempt, created, {}
                )
            )
    return found, ended
