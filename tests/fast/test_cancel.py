"""Cancel in every state a job can be in, stopping with SIGTERM then SIGKILL, who may cancel,
and a cancel whose agent stopped before it could act on it."""

import pytest
from hatrain.agent.jobs import Job
from hatrain.agent.states import JobState, StopReason
from hatrain.agent.steps import StepRecord

from tests.fast.host import FastHost
from tests.fast.memory_runtime import SIGKILL_EXIT, SIGTERM_EXIT, JobScript, StepScript

HELD = StepScript(exit_code=None)


def _held_in(host: FastHost, step: str) -> Job:
    """A running job whose `step` runs until stopped."""
    script = JobScript(preprocess=HELD) if step == "preprocess" else JobScript(train=HELD)
    host.runtime.script(f"held-{step}.yml", script)
    job = host.submit(f"held-{step}.yml")
    host.runtime.container(job.id, step)
    return job


def test_cancel_while_queued_ends_it_at_once(host: FastHost) -> None:
    """A queued job is cancelled on the spot: CANCELLED, said to have never run, its secrets
    removed, and nothing started for it."""
    supervisor = host.agent()
    host.runtime.script("held-train.yml", JobScript(train=HELD))
    blockers = [host.submit("held-train.yml") for _ in range(2)]  # max_cpu_jobs is 2
    for blocker in blockers:
        host.runtime.container(blocker.id, "train")
    job = host.submit(secrets={"HF_TOKEN": "x"})
    assert host.store.get(job.id).state == JobState.QUEUED
    outcome = supervisor.cancel(job.id)
    assert outcome.job.state == JobState.CANCELLED
    assert outcome.message == "cancelled while queued; it never ran"
    assert host.states_of(job.id) == ["queued", "cancelled"]
    assert not host.workspace.dirs(job.id).secrets.exists()
    for blocker in blockers:
        supervisor.cancel(blocker.id)
        host.ended(blocker.id)
    assert not host.runtime.started(job.id, "preprocess")


def test_cancel_while_starting_starts_no_step(host: FastHost) -> None:
    """Cancelled while its image is being prepared: it ends CANCELLED from starting, and no step
    is ever started."""
    host.runtime.script("slow.yml", JobScript(holds_prepare=True))
    supervisor = host.agent()
    job = host.submit("slow.yml")
    host.until(lambda: job.id in host.runtime.prepared, "prepare to begin")
    outcome = supervisor.cancel(job.id)
    assert outcome.message.startswith("cancel requested")
    host.runtime.release_prepare()
    done = host.ended(job.id)
    assert (done.state, done.stop_reason) == (JobState.CANCELLED, StopReason.CANCEL)
    assert host.states_of(job.id) == ["queued", "starting", "cancelled"]
    assert not host.runtime.started(job.id, "preprocess")


@pytest.mark.parametrize("step", ["preprocess", "train"])
def test_cancel_while_a_step_runs_stops_it_with_sigterm(host: FastHost, step: str) -> None:
    """Cancelled while preprocessing or training: the step gets SIGTERM, the job ends CANCELLED
    with the step's exit code (143), and no later step starts."""
    supervisor = host.agent()
    job = _held_in(host, step)
    outcome = supervisor.cancel(job.id)
    assert outcome.job.stop_reason == StopReason.CANCEL
    done = host.ended(job.id)
    assert (done.state, done.exit_code, done.hint) == (
        JobState.CANCELLED,
        SIGTERM_EXIT,
        "cancelled",
    )
    assert host.runtime.container(job.id, step).signals == ["SIGTERM"]
    if step == "preprocess":
        assert not host.runtime.started(job.id, "train")


def test_a_step_that_ignores_sigterm_is_killed_and_still_cancelled(host: FastHost) -> None:
    """A step that ignores SIGTERM gets SIGKILL after the grace period; its exit 137 is no
    `host out of memory`: the job ends CANCELLED as asked."""
    host.runtime.script(
        "stubborn.yml", JobScript(train=StepScript(exit_code=None, ignores_sigterm=True))
    )
    supervisor = host.agent()
    job = host.submit("stubborn.yml")
    container = host.runtime.container(job.id, "train")
    supervisor.cancel(job.id)
    done = host.ended(job.id)
    assert (done.state, done.exit_code, done.failure_reason) == (
        JobState.CANCELLED,
        SIGKILL_EXIT,
        "",
    )
    assert container.signals == ["SIGTERM", "SIGKILL"]


def test_cancelling_an_ended_job_changes_nothing(host: FastHost) -> None:
    """A job that already succeeded stays succeeded, and the answer says so."""
    supervisor = host.agent()
    job = host.submit()
    host.ended(job.id)
    outcome = supervisor.cancel(job.id)
    assert outcome.job.state == JobState.SUCCEEDED
    assert outcome.message == "not cancelled: it had already succeeded"
    assert host.states_of(job.id)[-1] == "succeeded"


def test_a_second_cancel_signals_nothing_more(host: FastHost) -> None:
    """Two cancels of a running job: one SIGTERM, one CANCELLED end."""
    host.runtime.script(
        "stubborn.yml", JobScript(train=StepScript(exit_code=None, ignores_sigterm=True))
    )
    supervisor = host.agent()
    job = host.submit("stubborn.yml")
    container = host.runtime.container(job.id, "train")
    supervisor.cancel(job.id)
    supervisor.cancel(job.id)
    assert host.ended(job.id).state == JobState.CANCELLED
    assert container.signals == ["SIGTERM", "SIGKILL"]
    assert host.states_of(job.id).count("cancelled") == 1


def test_a_cancel_stored_before_the_agent_stopped_is_carried_out_after(host: FastHost) -> None:
    """The agent stored a cancel and stopped before signalling the step: the next agent stops
    the step it re-attaches to and ends the job CANCELLED."""
    host.runtime.script("held.yml", JobScript(train=HELD))
    job = host.as_if_running(host.submit("held.yml"), JobState.TRAINING)
    handle = host.runtime.launch(job, "train")
    host.record(job.id, StepRecord("train", handle=handle))
    host.store.request_stop(job.id, StopReason.CANCEL)
    host.agent()
    done = host.ended(job.id)
    assert (done.state, done.exit_code) == (JobState.CANCELLED, SIGTERM_EXIT)
    assert host.runtime.container(job.id, "train").signals == ["SIGTERM"]


def test_a_cancelled_job_whose_step_is_gone_is_cancelled_not_lost(host: FastHost) -> None:
    """A cancel was stored, and the step's container was gone by the time the agent started
    again: CANCELLED, not `container lost`."""
    host.runtime.script("held.yml", JobScript(train=HELD))
    job = host.as_if_running(host.submit("held.yml"), JobState.TRAINING)
    handle = host.runtime.launch(job, "train")
    host.record(job.id, StepRecord("train", handle=handle))
    host.store.request_stop(job.id, StopReason.CANCEL)
    host.runtime.vanish(job.id, "train")
    host.agent()
    done = host.ended(job.id)
    assert (done.state, done.failure_reason) == (JobState.CANCELLED, "")


def test_a_cancel_between_the_steps_starts_no_train(host: FastHost) -> None:
    """Preprocess had ended 0 and a cancel was stored before train started: the next agent ends
    the job CANCELLED without starting train."""
    job = host.as_if_running(host.submit(), JobState.PREPROCESSING)
    handle = host.runtime.launch(job, "preprocess")
    host.runtime.finish(job.id, "preprocess")
    host.record(job.id, StepRecord("preprocess", handle=handle))
    host.store.request_stop(job.id, StopReason.CANCEL)
    host.agent()
    assert host.ended(job.id).state == JobState.CANCELLED
    assert not host.runtime.started(job.id, "train")


def test_the_first_stop_reason_stands(host: FastHost) -> None:
    """A job asked to stop for its time limit and then cancelled keeps `timeout` as its reason:
    the store keeps the first."""
    job = host.as_if_running(host.submit(), JobState.TRAINING)
    host.store.request_stop(job.id, StopReason.TIMEOUT)
    assert host.store.request_stop(job.id, StopReason.CANCEL).stop_reason == StopReason.TIMEOUT
