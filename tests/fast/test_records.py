"""Step records and stop reasons are typed in the agent and JSON only in the store, which reads
every data root earlier agents wrote."""

import json
import sqlite3

from hatrain.agent.states import FailureReason, JobState, StopReason
from hatrain.agent.steps import ContainerHandle, ProcessHandle, StepEnd, StepRecord
from hatrain.agent.store import decode_handle, encode_handle

from tests.fast.host import FastHost

# The runtime column as agents before typed records wrote it, for each runtime.
DOCKER_RUNTIME = {
    "preprocess": {
        "handle": {"container": "c0ffee", "name": "hatrain-j-preprocess"},
        "cursor": [120, 7],
        "train_total": None,
        "train_position": 0,
        "exit_code": 0,
        "oom_killed": False,
        "failure": None,
        "last_error_line": "",
        "preprocess_succeeded": True,
    },
    "train": {
        "handle": {"container": "beef", "name": "hatrain-j-train"},
        "cursor": [4096, 0],
        "train_total": 100,
        "train_position": 40,
        "exit_code": 1,
        "oom_killed": False,
        "failure": ["gpu out of memory", "CUDA out of memory: lower micro_batch_size"],
        "last_error_line": "torch.OutOfMemoryError: CUDA out of memory.",
        "preprocess_succeeded": False,
    },
}
LOCAL_RUNTIME = {
    "train": {
        "handle": {"pid": 4242, "start_time": "98765", "log": "/d/train.log", "exit": "/d/x"},
        "cursor": 2048,
        "train_total": None,
        "train_position": 0,
    }
}


def _write_runtime(host: FastHost, job_id: str, runtime: object, stop_reason: str = "") -> None:
    with sqlite3.connect(host.store.path) as db:
        db.execute(
            "UPDATE jobs SET runtime=?, stop_reason=? WHERE id=?",
            (json.dumps(runtime), stop_reason, job_id),
        )


def _stored(host: FastHost, job_id: str) -> object:
    with sqlite3.connect(host.store.path) as db:
        (text,) = db.execute("SELECT runtime FROM jobs WHERE id=?", (job_id,)).fetchone()
    return json.loads(text)


def test_docker_steps_written_by_an_earlier_agent_read_as_typed_records(host: FastHost) -> None:
    """A Docker job's steps as an earlier agent stored them read as StepRecords with
    ContainerHandles, (stdout, stderr) cursors and StepEnds; writing them back changes no byte
    of their meaning, and a cancel stored as text reads as StopReason.CANCEL."""
    job = host.as_if_running(host.submit(), JobState.STARTING)
    _write_runtime(host, job.id, DOCKER_RUNTIME, "cancel")
    read = host.store.get(job.id)
    assert read.stop_reason is StopReason.CANCEL
    pre, train = read.steps["preprocess"], read.steps["train"]
    assert pre == StepRecord(
        "preprocess",
        handle=ContainerHandle("c0ffee", "hatrain-j-preprocess"),
        cursor=(120, 7),
        end=StepEnd(0, preprocess_succeeded=True),
    )
    assert train.end == StepEnd(
        1,
        failure=(FailureReason.GPU_OUT_OF_MEMORY, "CUDA out of memory: lower micro_batch_size"),
        last_error_line="torch.OutOfMemoryError: CUDA out of memory.",
    )
    assert (train.train_total, train.train_position) == (100, 40)
    for record in (pre, train):
        host.store.update_step(job.id, record)
    assert _stored(host, job.id) == DOCKER_RUNTIME


def test_local_steps_written_by_an_earlier_agent_read_as_typed_records(host: FastHost) -> None:
    """A local job's running step (pid handle, byte offset, no end yet) reads as a
    ProcessHandle and an int cursor, and is written back as it was."""
    job = host.as_if_running(host.submit(), JobState.STARTING)
    _write_runtime(host, job.id, LOCAL_RUNTIME)
    train = host.store.get(job.id).steps["train"]
    assert train == StepRecord(
        "train", handle=ProcessHandle(4242, "98765", "/d/train.log", "/d/x"), cursor=2048
    )
    assert host.store.get(job.id).stop_reason is None
    host.store.update_step(job.id, train)
    assert _stored(host, job.id) == LOCAL_RUNTIME


def test_a_handle_kept_beside_its_step_reads_back_and_nonsense_is_refused(host: FastHost) -> None:
    """encode_handle/decode_handle (what the local runtime keeps beside a step) round-trip each
    kind of handle; text that holds no handle is a ValueError, not a half-read handle."""
    for handle in (ContainerHandle("abc", "n"), ProcessHandle(1, None, "/l", "/x")):
        assert decode_handle(encode_handle(handle)) == handle
    for bad in ('{"name": "x"}', "[1, 2]", "not json"):
        try:
            decode_handle(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} read as a handle")
