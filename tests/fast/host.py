"""One agent host for the fast tier: the real store (SQLite under tmp_path), workspace, runner,
supervisor and recovery, over the InMemoryRuntime test double instead of Docker."""

import os
import pwd
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from hatrain.agent.disk import DiskReserve
from hatrain.agent.jobs import Job, JobSpec
from hatrain.agent.objects import ObjectStore
from hatrain.agent.scheduler import GpuSlot, Policy
from hatrain.agent.states import JobState
from hatrain.agent.steps import StepEnd, StepRecord
from hatrain.agent.store import Store
from hatrain.agent.supervisor import Supervisor
from hatrain.agent.workspace import Workspace

from tests.fast.memory_runtime import InMemoryRuntime

T = TypeVar("T")
GRACE_SECONDS = 0.05
WAIT_SECONDS = 3.0
# Jobs run as their user's account: the fast tier's jobs are the login running the tests.
USER = pwd.getpwuid(os.getuid()).pw_name


class FastHost:
    """A data root, its store and an InMemoryRuntime that outlive the agents started on them."""

    def __init__(self, root: Path, gpus: int = 2, store: type[Store] = Store) -> None:
        self.root = root
        self.store = store(root / "hatrain.db")
        self.objects = ObjectStore(root)
        self.workspace = Workspace(root, self.objects)
        self.runtime = InMemoryRuntime()
        self.reserve = DiskReserve(root, size=64 * 1024)
        self.gpus = [GpuSlot(i, f"GPU-{i}", "test GPU", 80_000) for i in range(gpus)]
        self.clock_offset = 0.0
        self.agents: list[Supervisor] = []

    def clock(self) -> float:
        return time.time() + self.clock_offset

    def agent(self, policy: Policy | None = None) -> Supervisor:
        """Start an agent's supervisor on this host (as the agent does on start: recovery
        first, then scheduling)."""
        supervisor = Supervisor(
            self.store,
            self.runtime,
            self.workspace,
            self.gpus,
            policy or Policy(max_cpu_jobs=2),
            GRACE_SECONDS,
            reserve=self.reserve,
            objects=self.objects,
            clock=self.clock,
        )
        supervisor.start()
        self.agents.append(supervisor)
        return supervisor

    def stop(self) -> None:
        for supervisor in self.agents:
            supervisor.stop()

    def submit(
        self,
        config_name: str = "job.yml",
        *,
        gpus: int = 0,
        priority: int = 0,
        time_limit_seconds: int = 0,
        user: str = USER,
        secrets: dict[str, str] | None = None,
    ) -> Job:
        """Queue a job as SubmitJob does, and wake the agents' schedulers."""
        spec = JobSpec(
            config_name,
            "base_model: tiny\n",
            "img",
            gpus=gpus,
            priority=priority,
            time_limit_seconds=time_limit_seconds,
        )
        job, _ = self.store.submit(spec, user, secret_names=(secrets or {}).keys())
        if secrets:
            self.workspace.write_secrets(job.id, secrets, os.getuid())
        for supervisor in self.agents:
            supervisor.wake()
        return job

    def until(self, check: Callable[[], T | None], what: str, timeout: float = WAIT_SECONDS) -> T:
        """check() once it is truthy, re-checked at each commit to the store; fails after
        timeout naming what was awaited."""
        deadline = time.monotonic() + timeout
        while True:
            generation = self.store.generation
            value = check()
            if value:
                return value
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            # Some changes are no commit (a runner thread ending): look again now and then.
            self.store.wait_for_change(generation, min(left, 0.01))

    def reaches(self, job_id: str, *states: JobState) -> Job:
        """The job once it is in one of these states."""
        wanted = set(states)
        return self.until(
            lambda: (lambda job: job if job.state in wanted else None)(self.store.get(job_id)),
            f"job {job_id} to become {' or '.join(s.value for s in states)}",
        )

    def ended(self, job_id: str) -> Job:
        return self.reaches(job_id, JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)

    def states_of(self, job_id: str) -> list[str]:
        """The states the job went through, from its STATE events."""
        return [ev.state for ev in self.store.events(job_id) if ev.state]

    def log_lines(self, job_id: str, step: str = "") -> list[str]:
        return [
            line
            for ev in self.store.events(job_id, limit=100_000)
            if ev.kind.value == "log" and (not step or ev.step == step)
            for line in ev.line.split("\n")
        ]

    def lines_reach(self, job_id: str, step: str, count: int) -> list[str]:
        """The step's stored log lines once there are `count` of them."""
        return self.until(
            lambda: (lambda lines: lines if len(lines) >= count else None)(
                self.log_lines(job_id, step)
            ),
            f"{count} log lines of {step}",
        )

    def as_if_running(self, job: Job, state: JobState, gpus: tuple[str, ...] = ()) -> Job:
        """Move a queued job on as an earlier agent would have: to `state`, with a preprocess
        step that succeeded if it is training. Nothing of the step in `state` is started."""
        self.store.transition(job.id, JobState.STARTING, gpu_uuids=gpus)
        if state in (JobState.PREPROCESSING, JobState.TRAINING):
            self.store.transition(job.id, JobState.PREPROCESSING, step="preprocess")
        if state == JobState.TRAINING:
            handle = self.runtime.launch(self.store.get(job.id), "preprocess")
            self.runtime.finish(job.id, "preprocess")
            end = StepEnd(0, preprocess_succeeded=True)
            self.record(job.id, StepRecord("preprocess", handle=handle, cursor=2, end=end))
            self.store.transition(job.id, JobState.TRAINING, step="train")
        return self.store.get(job.id)

    def record(self, job_id: str, record: StepRecord) -> None:
        self.store.update_step(job_id, record)
