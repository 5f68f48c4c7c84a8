"""Retention: what a sweep removes (with a controlled clock, on a small filesystem of the test's
own), and the free-space watermarks that hold starts and refuse uploads."""

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from hatrain.agent.events import Event, EventKind
from hatrain.agent.jobs import JobFile, JobSpec
from hatrain.agent.pending import WaitKind
from hatrain.agent.retention import Item, ItemKind, RetentionPolicy, expired
from hatrain.agent.scheduler import GpuSlot, Host, Policy, QueuedJob, plan
from hatrain.agent.states import JobState
from hatrain.agent.store import Store
from hatrain.agent.sweep import Sweeper
from hatrain.rpc.contract import HF_CACHE
from hatrain.rpc.v1 import agent_pb2 as pb

from tests.support.harness import TERMINAL, poll, spec, wait_state
from tests.test_storage_faults import small_disk

__all__ = ["small_disk"]  # the fixture, shared with the full-disk tests

DAY = 86400.0
MIB = 1024 * 1024


def test_expired_is_exactly_the_old_unused_items_oldest_first() -> None:
    """The sweep's decision, with a controlled clock: an item goes once unused for longer than
    its kind is kept, never while a job it belongs to is in use (queued, running or pinned), and
    a kind the policy does not name is kept for good. Oldest first."""
    now = 1_000 * DAY
    policy = RetentionPolicy(
        {ItemKind.RUN_DIR: 30 * DAY, ItemKind.OBJECT: 14 * DAY, ItemKind.EVENTS: 90 * DAY}
    )
    items = [
        Item(ItemKind.RUN_DIR, "old", now - 31 * DAY, frozenset({"old"})),
        Item(ItemKind.RUN_DIR, "young", now - 29 * DAY, frozenset({"young"})),
        Item(ItemKind.RUN_DIR, "pinned", now - 400 * DAY, frozenset({"pinned"})),
        Item(ItemKind.OBJECT, "a" * 64, now - 15 * DAY, frozenset({"old", "queued"})),
        Item(ItemKind.OBJECT, "b" * 64, now - 14 * DAY, frozenset({"old"})),
        Item(ItemKind.OBJECT, "c" * 64, now - 100 * DAY, frozenset()),
        Item(ItemKind.EVENTS, "old", now - 89 * DAY, frozenset({"old"})),
        Item(ItemKind.PREPARED, "k", now - 900 * DAY, frozenset()),  # kept for good
    ]
    in_use = frozenset({"queued", "pinned"})
    chosen = expired(items, in_use, now, policy)
    assert [(i.kind, i.key) for i in chosen] == [
        (ItemKind.OBJECT, "c" * 64),
        (ItemKind.RUN_DIR, "old"),
        (ItemKind.OBJECT, "b" * 64),
    ]
    earlier = expired(items, in_use, now - 2 * DAY, policy)
    assert [(i.kind, i.key) for i in earlier] == [(ItemKind.OBJECT, "c" * 64)]


@dataclass
class DataRoot:
    """A data root on a small filesystem, with jobs in every state and what they left."""

    root: Path
    store: Store
    jobs: dict[str, str]  # role -> job id
    objects: dict[str, str]  # role -> sha256
    prepared: dict[str, Path]  # role -> its cache dir


def _object(root: Path, content: bytes) -> str:
    sha = hashlib.sha256(content).hexdigest()
    path = root / "objects" / "sha256" / sha[:2] / sha
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return sha


def _job(host: DataRoot, role: str, state: JobState, *objects: str) -> str:
    key = hashlib.sha256(role.encode()).hexdigest()[:24]
    config = f"base_model: x\ndataset_prepared_path: {HF_CACHE}/prepared/{key}\n"
    files = tuple(JobFile(f"d/{role}-{i}.jsonl", host.objects[o], 0) for i, o in enumerate(objects))
    job, _ = host.store.submit(JobSpec("c.yml", config, "img", files=files), "ann")
    host.jobs[role] = job.id
    host.store.append(job.id, [Event(EventKind.LOG, line="x" * 2000)] * 50)
    path = {JobState.QUEUED: []}.get(state, [JobState.STARTING, JobState.TRAINING])
    for step in path:
        host.store.transition(job.id, step)
    if state.terminal:
        host.store.transition(job.id, state)
    if state != JobState.QUEUED:
        run = host.root / "jobs" / job.id / "run"
        run.mkdir(parents=True)
        (run / "adapter_model.safetensors").write_bytes(os.urandom(2 * MIB))
        datasets = host.root / "jobs" / job.id / "datasets"
        datasets.mkdir()
        for f in files:
            os.link(host.root / "objects/sha256" / f.sha256[:2] / f.sha256, datasets / f.sha256)
        prepared = host.root / "cache/huggingface/prepared" / key
        prepared.mkdir(parents=True)
        (prepared / "data.arrow").write_bytes(os.urandom(MIB))
        host.prepared[role] = prepared
    return job.id


@pytest.fixture
def host(small_disk: Path) -> Iterator[DataRoot]:
    root = small_disk / "data"
    root.mkdir()
    found = DataRoot(root, Store(root / "hatrain.db"), {}, {}, {})
    for name in ("done", "shared", "pinned", "queued", "running", "loose"):
        found.objects[name] = _object(root, name.encode() * (MIB // len(name)))
    _job(found, "done", JobState.SUCCEEDED, "done", "shared")
    _job(found, "failed", JobState.FAILED)
    _job(found, "pinned", JobState.SUCCEEDED, "pinned")
    _job(found, "queued", JobState.QUEUED, "queued", "shared")
    _job(found, "running", JobState.TRAINING, "running")
    found.store.set_pinned(found.jobs["pinned"], True, "ann")
    yield found
    found.store.close()


def _used(root: Path) -> int:
    """The bytes the files under root take on disk, each inode once, the database aside (its
    freed pages are reused by SQLite, not given back)."""
    seen: dict[tuple[int, int], int] = {}
    for directory, _, names in os.walk(root):
        for name in names:
            if not name.startswith("hatrain.db"):
                st = os.lstat(os.path.join(directory, name))
                seen[(st.st_dev, st.st_ino)] = st.st_blocks * 512
    return sum(seen.values())


def test_a_sweep_removes_exactly_the_expired_unused_items(host: DataRoot) -> None:
    """On a 64 MiB tmpfs, with the clock moved on: 20 days later the logs (10 d), objects and
    prepared caches (14 d) of the finished, unpinned jobs go, and the run dirs (30 d) stay; at
    31 days the run dirs go too. Nothing of the queued, running or pinned job goes (an object
    shared with the queued job stays). A dry run lists the same items and frees nothing; the
    space it announces is the space the sweep frees."""
    root, jobs, store = host.root, host.jobs, host.store
    policy = RetentionPolicy(
        {
            ItemKind.RUN_DIR: 30 * DAY,
            ItemKind.EVENTS: 10 * DAY,
            ItemKind.OBJECT: 14 * DAY,
            ItemKind.PREPARED: 14 * DAY,
        }
    )
    clock = [store.get(jobs["done"]).finished_at + 20 * DAY]
    sweeper = Sweeper(store, root, policy, clock=lambda: clock[0])
    gone = {(ItemKind.EVENTS, jobs["done"]), (ItemKind.EVENTS, jobs["failed"])}
    gone |= {(ItemKind.OBJECT, host.objects[o]) for o in ("done", "loose")}
    gone |= {(ItemKind.PREPARED, host.prepared[r].name) for r in ("done", "failed")}

    before = _used(root)
    dry = sweeper.sweep(dry_run=True)
    assert {(i.kind, i.key) for i in dry.removed} == gone
    assert _used(root) == before and all(host.prepared[r].exists() for r in host.prepared)

    report = sweeper.sweep()
    assert {(i.kind, i.key) for i in report.removed} == gone
    events = sum(i.size for i in report.removed if i.kind == ItemKind.EVENTS)
    # The loose object and two prepared caches; "done"'s object is still linked from its run
    # dir, so it frees nothing yet.
    assert report.freed - events == before - _used(root) == 3 * MIB
    assert dry.freed == report.freed
    for role in ("done", "failed"):
        assert [e.kind for e in store.events(jobs[role])] == [EventKind.STATE] * 4
        assert (root / "jobs" / jobs[role] / "run/adapter_model.safetensors").exists()
    for role in ("pinned", "queued", "running"):
        assert any(e.kind == EventKind.LOG for e in store.events(jobs[role])), role
        if role in host.prepared:
            assert host.prepared[role].exists(), role
    for name in ("shared", "pinned", "queued", "running"):
        sha = host.objects[name]
        assert (root / "objects/sha256" / sha[:2] / sha).exists(), name

    clock[0] += 11 * DAY
    before = _used(root)
    report = sweeper.sweep()
    assert {(i.kind, i.key) for i in report.removed} == {
        (ItemKind.RUN_DIR, jobs["done"]),
        (ItemKind.RUN_DIR, jobs["failed"]),
    }
    # The run dir of "done" takes the last link of its removed object with it.
    assert report.freed == before - _used(root) == 2 * 2 * MIB + MIB
    assert sorted(p.name for p in (root / "jobs").iterdir()) == sorted(
        jobs[r] for r in ("pinned", "running")
    )
    assert store.get(jobs["done"]).state == JobState.SUCCEEDED  # the job's record stays

    store.set_pinned(jobs["pinned"], False, "ann")
    assert {i.key for i in sweeper.sweep().removed} >= {jobs["pinned"], host.objects["pinned"]}


def test_an_object_named_again_is_kept(host: DataRoot) -> None:
    """An upload or submit that names an old object (PrepareUpload finds it present) makes it
    used now: the sweep keeps it."""
    policy = RetentionPolicy({ItemKind.OBJECT: 14 * DAY})
    now = host.store.get(host.jobs["done"]).finished_at + 20 * DAY
    sha = host.objects["loose"]
    path = host.root / "objects/sha256" / sha[:2] / sha
    os.utime(path, (now - DAY, now - DAY))
    report = Sweeper(host.store, host.root, policy, clock=lambda: now).sweep()
    assert sha not in {i.key for i in report.removed} and path.exists()
    assert host.objects["done"] in {i.key for i in report.removed}


def _leave_free(mount: Path, free: int) -> Path:
    """Fill the filesystem until `free` bytes are left; returns the filler."""
    filler = mount / "filler"
    have = shutil.disk_usage(mount).free + (filler.stat().st_size if filler.exists() else 0)
    filler.unlink(missing_ok=True)
    with filler.open("wb") as fh:
        fh.write(b"\0" * max(have - free, 0))
    return filler


def test_the_watermarks_hold_starts_and_refuse_uploads(
    small_disk: Path, agent_config: dict[str, Any], start_agent: Any
) -> None:
    """On a 64 MiB filesystem with the low watermark at 24 MiB and the high one at 40 MiB:
    below the high one, an upload is refused with RESOURCE_EXHAUSTED naming the free space and
    the setting (files already there are still found); below the low one, a submitted job waits,
    its pending reason saying why, and starts once space is freed."""
    config = {
        **agent_config,
        "data_root": str(small_disk / "data"),
        "retention": {"hold_starts_below": "24MiB", "refuse_uploads_below": "40MiB"},
    }
    stub, _ = start_agent(config)
    present = hashlib.sha256(b"").hexdigest()
    _object(small_disk / "data", b"")

    filler = _leave_free(small_disk, 32 * MIB)
    with pytest.raises(grpc.RpcError) as refused:
        stub.PrepareUpload(pb.PrepareUploadRequest(sha256=["f" * 64]))
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    message = refused.value.details()
    assert (
        "uploads are refused" in message and "retention.refuse_uploads_below (40.0 MiB)" in message
    )
    assert " MiB free" in message
    answer = stub.PrepareUpload(pb.PrepareUploadRequest(sha256=[present]))
    assert list(answer.present) == [present]
    job = stub.SubmitJob(pb.SubmitJobRequest(spec=spec({}))).job
    assert wait_state(stub, job.id, TERMINAL).state == pb.JOB_STATE_SUCCEEDED

    filler = _leave_free(small_disk, 8 * MIB)
    held = stub.SubmitJob(pb.SubmitJobRequest(spec=spec({}))).job

    def reason() -> str:
        return str(stub.GetJob(pb.GetJobRequest(job_id=held.id)).pending_reason)

    text = poll(reason, 30, "a pending reason for the held job")
    assert text.startswith("waiting for disk space") and "retention.hold_starts_below" in text
    assert stub.GetJob(pb.GetJobRequest(job_id=held.id)).state == pb.JOB_STATE_QUEUED

    filler.unlink()
    assert wait_state(stub, held.id, TERMINAL).state == pb.JOB_STATE_SUCCEEDED
    answer = stub.PrepareUpload(pb.PrepareUploadRequest(sha256=["f" * 64]))
    assert [m.sha256 for m in answer.missing] == ["f" * 64]


def test_gc_dry_run_lists_and_gc_removes(host: DataRoot, tmp_path: Path) -> None:
    """`hatrain-agent gc --dry-run` lists what a sweep would remove with the space it frees and
    removes nothing; `gc` removes it. (Ages from agent.yml: 0 days keeps nothing unused.)"""
    agent_yml = tmp_path / "agent.yml"
    agent_yml.write_text(
        f"data_root: {host.root}\nretention: {{run_dirs_days: 0, logs_days: null, "
        "objects_days: null, prepared_days: null}\n"
    )
    command = [str(Path(sys.executable).parent / "hatrain-agent"), "gc", "-c", str(agent_yml)]
    dry = subprocess.run([*command, "--dry-run"], capture_output=True, text=True, check=False)
    assert dry.returncode == 0, dry.stderr
    done, failed = host.jobs["done"], host.jobs["failed"]
    assert done in dry.stdout and failed in dry.stdout
    assert "would remove 2 items, freeing 4.0 MiB" in dry.stdout, dry.stdout
    assert (host.root / "jobs" / done).exists()
    real = subprocess.run(command, capture_output=True, text=True, check=False)
    assert real.returncode == 0, real.stderr
    assert "removed 2 items, freeing 4.0 MiB" in real.stdout, real.stdout
    assert not (host.root / "jobs" / done).exists() and not (host.root / "jobs" / failed).exists()
    assert (host.root / "jobs" / host.jobs["running"]).exists()


def test_a_host_holding_starts_places_nothing_and_says_why() -> None:
    """The planner with a host that holds starts (its disk below the low watermark): its jobs
    wait with that reason, numbered in order; with two hosts, jobs go to the other one."""
    gpus = (GpuSlot(0, "g0"), GpuSlot(1, "g1"))
    queued = [QueuedJob("a", "ann", 1, order=0), QueuedJob("b", "bob", 0, order=1)]
    why = "waiting for disk space: the data root /d has 1.0 GiB free"
    held = plan(queued, [], [Host("", gpus, why)], Policy(), {}, 0.0)
    assert held.placements == []
    assert [(w.kind, w.text, w.position) for w in held.waiting.values()] == [
        (WaitKind.HELD, why, 1),
        (WaitKind.HELD, why, 2),
    ]
    two = plan(queued, [], [Host("h1", gpus, why), Host("h2", gpus)], Policy(), {}, 0.0)
    assert {(p.job_id, p.host) for p in two.placements} == {("a", "h2"), ("b", "h2")}
    pinned = [QueuedJob("c", "ann", 1, host="h1")]
    only = plan(pinned, [], [Host("h1", gpus, why), Host("h2", gpus)], Policy(), {}, 0.0)
    assert only.waiting["c"].text == f"h1: {why}"


def test_doctor_says_when_the_data_root_is_below_a_watermark(
    small_disk: Path, tmp_path: Path
) -> None:
    """`hatrain-agent doctor` fails its data root check below the high watermark, naming the
    setting, and passes above it."""
    agent_yml = tmp_path / "agent.yml"
    agent_yml.write_text(
        f"data_root: {small_disk / 'data'}\nlisten: {tmp_path / 'run' / 'agent.sock'}\n"
        "retention: {hold_starts_below: 8MiB, refuse_uploads_below: 40MiB}\n"
    )
    command = [str(Path(sys.executable).parent / "hatrain-agent"), "doctor", "-c", str(agent_yml)]
    env = {**os.environ, "COLUMNS": "250"}

    def data_root_row() -> str:
        out = subprocess.run(command, capture_output=True, text=True, env=env).stdout
        return next(line for line in out.splitlines() if "data root" in line)

    assert "ok" in data_root_row() and "uploads refused below 40.0 MiB" in data_root_row()
    _leave_free(small_disk, 32 * MIB)
    row = data_root_row()
    assert "FAIL" in row and "below retention.refuse_uploads_below (40.0 MiB)" in row, row


def test_the_agent_sweeps_on_its_own(
    agent_config: dict[str, Any], start_agent: Any, tmp_path: Path
) -> None:
    """A running agent sweeps when due: with run dirs kept 0 days and a sweep every 6 s, a
    finished job's directory goes by itself, while a pinned one's stays; both jobs' records
    stay."""
    data_root = tmp_path / "data"
    config = {
        **agent_config,
        "data_root": str(data_root),
        "retention": {"run_dirs_days": 0, "sweep_interval_minutes": 0.1},
    }
    stub, _ = start_agent(config)
    done = stub.SubmitJob(pb.SubmitJobRequest(spec=spec({}))).job
    kept = stub.SubmitJob(pb.SubmitJobRequest(spec=spec({}))).job
    stub.PinJob(pb.PinJobRequest(job_id=kept.id, pinned=True))
    for job in (done, kept):
        assert wait_state(stub, job.id, TERMINAL).state == pb.JOB_STATE_SUCCEEDED
    poll(lambda: not (data_root / "jobs" / done.id).exists(), 60, "the sweep to remove a run dir")
    assert (data_root / "jobs" / kept.id / "run").is_dir()
    assert stub.GetJob(pb.GetJobRequest(job_id=done.id)).state == pb.JOB_STATE_SUCCEEDED
