"""A full disk under the agent's data root: on a real size-limited filesystem (tmpfs)."""

import errno
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from hatrain.agent.errors import StorageFault
from hatrain.agent.jobs import JobSpec
from hatrain.agent.states import JobState
from hatrain.agent.store import Store
from hatrain.rpc.v1 import agent_pb2 as pb

from tests.support.harness import TERMINAL, all_events, poll, spec, wait_state


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 MiB filesystem of the test's own."""
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(directory: Path) -> Path:
    """Write a file until the filesystem refuses more; returns it."""
    filler = directory / "filler"
    block = b"\0" * (1024 * 1024)
    with filler.open("wb", buffering=0) as fh:
        while True:
            try:
                fh.write(block)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                break
    with filler.open("ab", buffering=0) as fh:  # and the last partial block
        while True:
            try:
                fh.write(b"\0" * 4096)
            except OSError:
                break
    return filler


def test_a_full_disk_refuses_a_write_cleanly(small_disk: Path) -> None:
    """A transaction the disk refuses raises StorageFault (free space and fix in its text), not
    SQLite's "cannot rollback", keeps nothing of itself, and the store stays readable."""
    store = Store(small_disk / "hatrain.db")
    kept, _ = store.submit(JobSpec("a.yml", "x: 1", "img"), "ann")
    filler = fill(small_disk)
    big = JobSpec("b.yml", "x" * (4 * 1024 * 1024), "img")  # needs pages the disk cannot give
    with pytest.raises(StorageFault) as raised:
        store.submit(big, "ann")
    assert "free" in str(raised.value) and "cannot take writes" in str(raised.value)
    assert [j.id for j in store.jobs_in([JobState.QUEUED])] == [kept.id]
    filler.unlink()
    store.submit(JobSpec("c.yml", "x: 1", "img"), "ann")  # works again once there is room
    assert len(store.jobs_in([JobState.QUEUED])) == 2


def test_disk_full_during_a_job(
    small_disk: Path, agent_config: dict[str, Any], start_agent: Any
) -> None:
    """The disk fills while a job prints: the job ends `failed: disk full` within a bounded
    time and its watcher ends; every event acknowledged before is still there and the database
    passes its integrity check; submits are refused with RESOURCE_EXHAUSTED while the disk is
    full; once space is freed, new jobs run. (The free-space watermarks are set below what a
    64 MiB disk has, so that the job starts and the disk fills while it runs.)"""
    config = {
        **agent_config,
        "data_root": str(small_disk / "data"),
        "retention": {"hold_starts_below": "1MiB", "refuse_uploads_below": "2MiB"},
    }
    stub, _ = start_agent(config)
    plan = {"hatrain_standin": {"lines": 1_000_000, "line_delay": 0.002, "line_bytes": 200}}
    job = stub.SubmitJob(pb.SubmitJobRequest(spec=spec(plan))).job

    watched: list[pb.Event] = []

    def watch() -> None:
        for response in stub.WatchJob(pb.WatchJobRequest(job_id=job.id, follow=True)):
            watched.extend(response.events)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    poll(
        lambda: sum(e.line.startswith("line ") for e in all_events(stub, job.id)) >= 100,
        120,
        "100 numbered lines stored",
    )
    acknowledged = [(e.seq, e.kind, e.line) for e in all_events(stub, job.id)]
    filler = fill(small_disk)

    done = wait_state(stub, job.id, TERMINAL, timeout=60)
    assert done.state == pb.JOB_STATE_FAILED, done
    assert done.failure_reason == "disk full", done
    watcher.join(timeout=30)
    assert not watcher.is_alive(), "the watcher must end with the job"
    assert watched[-1].kind == pb.EVENT_KIND_STATE and watched[-1].state == pb.JOB_STATE_FAILED

    after = [(e.seq, e.kind, e.line) for e in all_events(stub, job.id)]
    assert after[: len(acknowledged)] == acknowledged
    with sqlite3.connect(small_disk / "data" / "hatrain.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)

    with pytest.raises(grpc.RpcError) as refused:
        stub.SubmitJob(pb.SubmitJobRequest(spec=spec({})))
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "free" in refused.value.details()

    filler.unlink()

    def submitted() -> Any:
        try:
            return stub.SubmitJob(pb.SubmitJobRequest(spec=spec({}))).job
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            return None

    again = poll(submitted, 30, "submits to be taken again once space is freed")
    assert wait_state(stub, again.id, TERMINAL).state == pb.JOB_STATE_SUCCEEDED
