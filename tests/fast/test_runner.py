"""A job's life in the runner, step by step, and every way a step ends: on the InMemoryRuntime
test double (for Docker), with the real store, runner and supervisor."""

import errno
import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from hatrain.agent.errors import StorageFault
from hatrain.agent.events import Event, EventKind
from hatrain.agent.runtime import ContainerHandle, RuntimeFailure
from hatrain.agent.states import FailureReason, JobState
from hatrain.agent.steps import StepRecord
from hatrain.agent.store import Store

from tests.fast.host import FastHost
from tests.fast.memory_runtime import PREPROCESS_OK, JobScript, StepScript

SUCCESSFUL_RUN = ["queued", "starting", "preprocessing", "training", "succeeded"]


def _failing_train(**step: object) -> JobScript:
    return JobScript(train=StepScript(**step))  # type: ignore[arg-type]


def test_a_job_runs_both_steps_and_succeeds(host: FastHost) -> None:
    """A job goes queued, starting, preprocessing, training, succeeded; both steps' output is
    stored in order, each step's container is removed once the job has ended, and exit 0 is
    recorded."""
    host.agent()
    job = host.submit()
    done = host.ended(job.id)
    assert (done.state, done.exit_code, done.failure_reason) == (JobState.SUCCEEDED, 0, "")
    assert host.states_of(job.id) == SUCCESSFUL_RUN
    assert host.log_lines(job.id) == ["preprocessing", PREPROCESS_OK.strip(), "training"]
    assert host.runtime.running() == []
    assert sorted(host.runtime.removed) == sorted(
        host.runtime.container(job.id, s).handle.container for s in ("preprocess", "train")
    )


def test_each_step_is_recorded_as_a_typed_record(host: FastHost) -> None:
    """The store keeps each step's handle, log cursor and end as typed records; the JSON it
    writes keeps the keys every earlier agent wrote (handle, cursor, exit_code, ...)."""
    host.agent()
    job = host.submit()
    done = host.ended(job.id)
    pre, train = done.steps["preprocess"], done.steps["train"]
    assert isinstance(pre.handle, ContainerHandle)
    assert pre.handle == host.runtime.container(job.id, "preprocess").handle
    assert pre.cursor == 2 and train.cursor == 1  # chunks read, as the runtime counts them
    assert pre.end is not None and pre.end.preprocess_succeeded and pre.end.exit_code == 0
    assert train.end is not None and train.end.exit_code == 0 and train.end.failure is None
    with sqlite3.connect(host.store.path) as db:
        (text,) = db.execute("SELECT runtime FROM jobs WHERE id=?", (job.id,)).fetchone()
    stored = json.loads(text)
    assert stored["train"]["handle"] == {
        "container": train.handle.container,  # type: ignore[union-attr]
        "name": f"hatrain-{job.id}-train",
    }
    assert {"cursor", "exit_code", "oom_killed", "failure", "last_error_line"} <= set(
        stored["train"]
    )


def test_train_exit_code_fails_the_job_with_the_last_error_line(host: FastHost) -> None:
    """A train step that exits 3 after printing an exception: FAILED, reason `exit code`, its
    exit code, and the exception's line as the hint."""
    host.runtime.script(
        "bad.yml",
        _failing_train(output=("step 1\n", "ValueError: lr must be positive\n"), exit_code=3),
    )
    host.agent()
    job = host.submit("bad.yml")
    done = host.ended(job.id)
    assert (done.state, done.failure_reason, done.exit_code) == (
        JobState.FAILED,
        FailureReason.EXIT_CODE,
        3,
    )
    assert done.hint == "ValueError: lr must be positive"
    assert host.states_of(job.id)[-2:] == ["training", "failed"]


def test_an_exit_code_without_an_error_line_names_the_step_and_code(host: FastHost) -> None:
    """With no exception in the output, the hint names the step and its exit code."""
    host.runtime.script("bad.yml", _failing_train(output=("quiet\n",), exit_code=2))
    host.agent()
    done = host.ended(host.submit("bad.yml").id)
    assert done.hint == "axolotl train exited with code 2"


def test_the_oom_killer_is_host_out_of_memory(host: FastHost) -> None:
    """A container the kernel's OOM killer stopped: FAILED `host out of memory`, saying so."""
    host.runtime.script("oom.yml", _failing_train(exit_code=137, oom_killed=True))
    host.agent()
    done = host.ended(host.submit("oom.yml").id)
    assert (done.failure_reason, done.exit_code) == (FailureReason.HOST_OUT_OF_MEMORY, 137)
    assert "out-of-memory killer" in done.hint and "host ran out of RAM" in done.hint


def test_sigkill_without_the_oom_flag_is_most_likely_the_oom_killer(host: FastHost) -> None:
    """Exit 137 without Docker's OOM flag (e.g. a process inside killed): host out of memory,
    with a hint that says it was SIGKILL."""
    host.runtime.script("killed.yml", _failing_train(exit_code=137))
    host.agent()
    done = host.ended(host.submit("killed.yml").id)
    assert done.failure_reason == FailureReason.HOST_OUT_OF_MEMORY
    assert "SIGKILL (exit 137)" in done.hint


def test_a_failure_recognised_in_the_output_wins_over_the_exit_code(host: FastHost) -> None:
    """CUDA running out of memory, printed before exit 1: `gpu out of memory`, with the fix."""
    host.runtime.script(
        "gpu.yml",
        _failing_train(
            output=("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2 GiB\n",),
            exit_code=1,
        ),
    )
    host.agent()
    done = host.ended(host.submit("gpu.yml").id)
    assert done.failure_reason == FailureReason.GPU_OUT_OF_MEMORY
    assert "micro_batch_size" in done.hint
    assert done.steps["train"].end is not None
    assert done.steps["train"].end.failure == (FailureReason.GPU_OUT_OF_MEMORY, done.hint)


def test_a_failed_preprocess_ends_the_job_before_train(host: FastHost) -> None:
    """Preprocess exits 1: FAILED from preprocessing, and train never starts."""
    host.runtime.script(
        "pre.yml",
        JobScript(preprocess=StepScript(output=("KeyError: 'messages'\n",), exit_code=1)),
    )
    host.agent()
    job = host.submit("pre.yml")
    done = host.ended(job.id)
    assert (done.state, done.exit_code, done.hint) == (JobState.FAILED, 1, "KeyError: 'messages'")
    assert host.states_of(job.id) == ["queued", "starting", "preprocessing", "failed"]
    assert not host.runtime.started(job.id, "train")


def test_preprocess_without_its_success_line_is_incomplete(host: FastHost) -> None:
    """Preprocess exits 0 but never says it saved the data: `preprocess incomplete`, and
    train never starts."""
    host.runtime.script("pre.yml", JobScript(preprocess=StepScript(output=("loading\n",))))
    host.agent()
    job = host.submit("pre.yml")
    done = host.ended(job.id)
    assert (done.failure_reason, done.exit_code) == (FailureReason.PREPROCESS_INCOMPLETE, 0)
    assert "never printed 'Success! Preprocessed data path'" in done.hint
    assert not host.runtime.started(job.id, "train")


def test_the_success_line_counts_when_cut_across_reads(host: FastHost) -> None:
    """The success line arriving in two pieces is still the success line."""
    half = len(PREPROCESS_OK) // 2
    host.runtime.script(
        "cut.yml",
        JobScript(preprocess=StepScript(output=(PREPROCESS_OK[:half], PREPROCESS_OK[half:]))),
    )
    host.agent()
    assert host.ended(host.submit("cut.yml").id).state == JobState.SUCCEEDED


def test_a_container_removed_while_it_runs_is_lost(host: FastHost) -> None:
    """Somebody removes the train container while it runs: FAILED `container lost`."""
    host.runtime.script("held.yml", _failing_train(exit_code=None))
    host.agent()
    job = host.submit("held.yml")
    host.runtime.container(job.id, "train")
    host.runtime.vanish(job.id, "train")
    done = host.ended(job.id)
    assert (done.state, done.failure_reason) == (JobState.FAILED, FailureReason.CONTAINER_LOST)


def test_a_step_the_runtime_cannot_start_fails_with_its_reason(host: FastHost) -> None:
    """The runtime refuses to start the step (no GPU driver): FAILED with the runtime's reason
    and hint; nothing is left running."""
    failure = RuntimeFailure(FailureReason.GPU_UNAVAILABLE, "docker: could not select driver")
    host.runtime.script("gpu.yml", JobScript(preprocess=StepScript(start_failure=failure)))
    host.agent()
    done = host.ended(host.submit("gpu.yml", gpus=1).id)
    assert (done.failure_reason, done.hint) == (
        FailureReason.GPU_UNAVAILABLE,
        "docker: could not select driver",
    )
    assert host.runtime.running() == []


def test_an_image_that_cannot_be_pulled_fails_before_any_step(host: FastHost) -> None:
    """prepare() cannot pull the image: FAILED `image pull failed` from starting, no step run."""
    failure = RuntimeFailure(FailureReason.IMAGE_PULL_FAILED, "manifest unknown")
    host.runtime.script("img.yml", JobScript(prepare_failure=failure))
    host.agent()
    job = host.submit("img.yml")
    done = host.ended(job.id)
    assert (done.failure_reason, done.hint) == (FailureReason.IMAGE_PULL_FAILED, "manifest unknown")
    assert host.states_of(job.id) == ["queued", "starting", "failed"]
    assert not host.runtime.started(job.id, "preprocess")


def test_an_unexpected_runtime_error_still_ends_the_job(host: FastHost) -> None:
    """A bug or surprise in the runtime (any exception) ends the job FAILED `runtime error`,
    naming it, instead of leaving it running for ever."""
    host.runtime.script("bug.yml", _failing_train(start_failure=KeyError("State")))
    host.agent()
    done = host.ended(host.submit("bug.yml").id)
    assert (done.state, done.failure_reason) == (JobState.FAILED, FailureReason.RUNTIME_ERROR)
    assert done.hint == "agent: 'State'"


def test_a_disk_error_from_the_runtime_is_disk_full(host: FastHost) -> None:
    """The runtime hits ENOSPC (writing the step's files): FAILED `disk full`, with the data
    root's free space and the fix in the hint."""
    full = OSError(errno.ENOSPC, "No space left on device")
    host.runtime.script("full.yml", _failing_train(start_failure=full))
    host.agent()
    done = host.ended(host.submit("full.yml").id)
    assert done.failure_reason == FailureReason.DISK_FULL
    assert "cannot take writes" in done.hint and "free space there" in done.hint


def test_an_io_error_from_the_runtime_is_a_storage_error(host: FastHost) -> None:
    """EIO is not a full disk: FAILED `storage error`, pointing at the disk."""
    host.runtime.script("eio.yml", _failing_train(start_failure=OSError(errno.EIO, "I/O error")))
    host.agent()
    done = host.ended(host.submit("eio.yml").id)
    assert done.failure_reason == FailureReason.STORAGE_ERROR
    assert "check the disk" in done.hint


class RefusingStore(Store):
    """Test double (a fault seam): the real store, which refuses a step's output while `full`
    is set, as a store on a full disk does, with StorageFault."""

    full = False

    def append(
        self,
        job_id: str,
        events: Sequence[Event],
        *,
        step: StepRecord | None = None,
        while_running: bool = False,
    ) -> int:
        if self.full:
            raise StorageFault("the agent's data root cannot take writes (test)", full=True)
        return super().append(job_id, events, step=step, while_running=while_running)


def test_output_the_store_refuses_stops_the_step_and_fails_the_job(tmp_path: Path) -> None:
    """The store refuses a step's output: the step is stopped at once rather than run on
    unrecorded, and the job ends `disk full`; the disk reserve was given up so that the job's
    end could be written."""
    host = FastHost(tmp_path / "data", store=RefusingStore)
    store = host.store
    assert isinstance(store, RefusingStore)
    host.runtime.script("loud.yml", _failing_train(exit_code=None))
    host.agent()
    try:
        job = host.submit("loud.yml")
        container = host.runtime.container(job.id, "train")
        assert host.reserve.held
        store.full = True
        host.runtime.write(job.id, "train", "a line that cannot be stored\n")
        done = host.ended(job.id)
        assert (done.state, done.failure_reason) == (JobState.FAILED, FailureReason.DISK_FULL)
        assert container.signals == ["SIGTERM"]
        assert not host.reserve.held
    finally:
        host.stop()


def test_metrics_and_progress_reach_the_job_record(host: FastHost) -> None:
    """A metric dict and a progress bar in the train output become the job's last metrics and
    progress, and METRICS / PROGRESS events; the bar is no log line."""
    host.runtime.script(
        "m.yml",
        _failing_train(
            output=(
                "{'loss': '1.25', 'learning_rate': '2e-05', 'epoch': '0.5'}\n",
                " 50%|#####     | 5/10 [00:01<00:01,  4.00it/s]\n",
            ),
            exit_code=None,
        ),
    )
    host.agent()
    job = host.submit("m.yml")
    running = host.until(
        lambda: (lambda j: j if j.progress and j.last_metrics else None)(host.store.get(job.id)),
        "metrics and progress",
    )
    assert running.last_metrics["loss"] == 1.25
    assert running.progress is not None and (running.progress.current, running.progress.total) == (
        5,
        10,
    )
    kinds = {ev.kind for ev in host.store.events(job.id)}
    assert {EventKind.METRICS, EventKind.PROGRESS} <= kinds
    assert not any("%|" in line for line in host.log_lines(job.id, "train"))
    host.runtime.finish(job.id, "train")
    assert host.ended(job.id).state == JobState.SUCCEEDED


def test_output_written_while_running_streams_into_the_store(host: FastHost) -> None:
    """Lines a running step prints are stored as they come, before it ends, in order."""
    host.runtime.script("live.yml", _failing_train(exit_code=None))
    host.agent()
    job = host.submit("live.yml")
    for i in range(5):
        host.runtime.write(job.id, "train", f"line {i}\n")
        host.lines_reach(job.id, "train", i + 1)
    assert host.store.get(job.id).state == JobState.TRAINING
    host.runtime.finish(job.id, "train")
    host.ended(job.id)
    assert host.log_lines(job.id, "train") == [f"line {i}" for i in range(5)]


def test_a_jobs_gpus_reach_its_containers_and_its_secrets_go_with_it(host: FastHost) -> None:
    """The GPUs the scheduler placed the job on are the ones its containers get; its secrets
    exist while it runs and are removed when it ends."""
    host.runtime.script("held.yml", _failing_train(exit_code=None))
    host.agent()
    job = host.submit("held.yml", gpus=2, secrets={"HF_TOKEN": "hf_x"})
    train = host.runtime.container(job.id, "train")
    placed = host.store.get(job.id).gpu_uuids
    assert len(placed) == 2 and train.gpu_uuids == placed
    assert host.runtime.container(job.id, "preprocess").gpu_uuids == placed
    secrets = host.workspace.dirs(job.id).secrets
    assert (secrets / "HF_TOKEN").read_text() == "hf_x"
    host.runtime.finish(job.id, "train")
    host.ended(job.id)
    assert not secrets.exists()
