"""Watching, cancelling and bad input, against a real agent and real containers."""

import threading
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from hatrain.rpc.v1 import agent_pb2 as pb

from tests.support.harness import TERMINAL, all_events, poll, spec, wait_state


def test_watch_resumes_from_a_sequence_number_and_watchers_agree(
    start_agent: Any, agent_config: dict[str, Any]
) -> None:
    """Two live watchers see the same events; resuming from N yields exactly the events after N."""
    stub, _ = start_agent(agent_config)
    job = stub.SubmitJob(pb.SubmitJobRequest(spec=spec({"hatrain_standin": {"lines": 3000}}))).job
    seen: list[list[tuple[int, str]]] = [[], []]

    def watch(into: list[tuple[int, str]]) -> None:
        for response in stub.WatchJob(pb.WatchJobRequest(job_id=job.id, follow=True)):
            into += [(e.seq, e.SerializeToString().hex()) for e in response.events]

    threads = [threading.Thread(target=watch, args=(s,)) for s in seen]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert seen[0] == seen[1]
    seqs = [s for s, _ in seen[0]]
    assert seqs == list(range(1, len(seqs) + 1)), "ordered, no gap, no duplicate"
    assert len(seqs) > 3000
    final = stub.GetJob(pb.GetJobRequest(job_id=job.id))
    assert final.state == pb.JOB_STATE_SUCCEEDED and seqs[-1] == final.last_seq

    n = len(seqs) // 2
    resumed = all_events(stub, job.id, from_seq=n)
    assert [(e.seq, e.SerializeToString().hex()) for e in resumed] == seen[0][n:]


def test_watch_sends_long_lines_in_responses_a_client_accepts(
    start_agent: Any, agent_config: dict[str, Any]
) -> None:
    """3,000 lines of 16 KB (48 MB of log), read back after the job ended: a watcher with gRPC's
    default 4 MB message limit gets every line, whole and in order."""
    stub, _ = start_agent(agent_config)
    plan = {"lines": 3000, "line_bytes": 16_000}
    job = stub.SubmitJob(pb.SubmitJobRequest(spec=spec({"hatrain_standin": plan}))).job
    assert wait_state(stub, job.id, TERMINAL).state == pb.JOB_STATE_SUCCEEDED
    lines = [
        e.line
        for r in stub.WatchJob(pb.WatchJobRequest(job_id=job.id))
        for e in r.events
        if e.kind == pb.EVENT_KIND_LOG and e.line.startswith("line ")
    ]
    assert [int(line.split()[1]) for line in lines] == list(range(3000))
    assert {len(line) for line in lines} == {16_000}


def test_watch_kinds_and_tail(start_agent: Any, agent_config: dict[str, Any]) -> None:
    """`logs --tail N` asks for the last N log events only."""
    stub, _ = start_agent(agent_config)
    job = stub.SubmitJob(pb.SubmitJobRequest(spec=spec({"hatrain_standin": {"lines": 50}}))).job
    wait_state(stub, job.id, TERMINAL)
    events = [
        e
        for r in stub.WatchJob(pb.WatchJobRequest(job_id=job.id, kinds=[pb.EVENT_KIND_LOG], tail=5))
        for e in r.events
    ]
    assert [e.line for e in events][-1].startswith("line 49")
    assert len(events) == 5 and all(e.kind == pb.EVENT_KIND_LOG for e in events)


def test_cancel_a_queued_and_a_running_job(start_agent: Any, agent_config: dict[str, Any]) -> None:
    """A queued job is cancelled at once; a running container stops within the grace period."""
    stub, _agent = start_agent(agent_config)
    running = stub.SubmitJob(
        pb.SubmitJobRequest(spec=spec({"hatrain_standin": {"hold_train": "never"}}))
    ).job
    wait_state(stub, running.id, {pb.JOB_STATE_TRAINING})
    queued_cpu = [
        stub.SubmitJob(
            pb.SubmitJobRequest(spec=spec({"hatrain_standin": {"hold_train": "never"}}))
        ).job
        for _ in range(2)
    ]
    # max two CPU jobs at once: the second of these waits in the queue.
    waiting = queued_cpu[1]
    assert stub.GetJob(pb.GetJobRequest(job_id=waiting.id)).state == pb.JOB_STATE_QUEUED
    assert stub.CancelJob(pb.CancelJobRequest(job_id=waiting.id)).state == pb.JOB_STATE_CANCELLED

    started = time.monotonic()
    stub.CancelJob(pb.CancelJobRequest(job_id=running.id))
    done = wait_state(stub, running.id, TERMINAL, timeout=30)
    elapsed = time.monotonic() - started
    assert done.state == pb.JOB_STATE_CANCELLED
    grace = agent_config["docker"]["stop_grace_seconds"]
    assert elapsed < grace + 5, f"stopped in {elapsed:.1f}s with a {grace}s grace period"
    stub.CancelJob(pb.CancelJobRequest(job_id=queued_cpu[0].id))
    wait_state(stub, queued_cpu[0].id, TERMINAL, timeout=30)


BAD_SUBMISSIONS = [
    ("image", {"image": "evil/miner:latest"}, grpc.StatusCode.INVALID_ARGUMENT, "spec.image"),
    ("gpus", {"gpus": 9}, grpc.StatusCode.INVALID_ARGUMENT, "spec.resources.gpus"),
    (
        "not yaml",
        {"yaml": b"base_model: [unclosed\n"},
        grpc.StatusCode.INVALID_ARGUMENT,
        "valid YAML: did not find expected ',' or ']' (line 2",
    ),
    (
        "not a mapping",
        {"yaml": b"- a\n- b\n"},
        grpc.StatusCode.INVALID_ARGUMENT,
        "a YAML mapping, got list",
    ),
    (
        "invalid utf-8",
        {"yaml": b"output_dir: \xff\xfe\n"},
        grpc.StatusCode.INVALID_ARGUMENT,
        "UTF-8 text",
    ),
    (
        "output_dir escape",
        {"yaml": b"output_dir: /workspace/data/training-runs/../../etc\n"},
        grpc.StatusCode.INVALID_ARGUMENT,
        "output_dir",
    ),
    (
        "traversal in a file",
        {"file": "../../etc/passwd"},
        grpc.StatusCode.INVALID_ARGUMENT,
        "spec.files[0].path",
    ),
    (
        "config name",
        {"config_name": "../x.yml"},
        grpc.StatusCode.INVALID_ARGUMENT,
        "spec.config_name",
    ),
    (
        "oversized",
        {"yaml": b"output_dir: /workspace/data/training-runs/x\n# " + b"x" * 9_000_000},
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "",
    ),
]


@pytest.mark.parametrize(
    ("case", "change", "code", "mentions"), BAD_SUBMISSIONS, ids=[c[0] for c in BAD_SUBMISSIONS]
)
def test_bad_submissions_get_clear_errors_and_store_nothing(
    start_agent: Any,
    agent_config: dict[str, Any],
    case: str,
    change: dict[str, Any],
    code: grpc.StatusCode,
    mentions: str,
) -> None:
    agent_config["gpus"] = {"source": "static", "static": [{"uuid": f"GPU-{i}"} for i in range(4)]}
    stub, _agent = start_agent(agent_config)
    request = pb.SubmitJobRequest(spec=spec({}))
    if "image" in change:
        request.spec.image = change["image"]
    if "gpus" in change:
        request.spec.resources.gpus = change["gpus"]
    if "yaml" in change:
        request.spec.config_yaml = change["yaml"]
    if "config_name" in change:
        request.spec.config_name = change["config_name"]
    if "file" in change:
        request.spec.files.add(path=change["file"], sha256="0" * 64, size=1)
    with pytest.raises(grpc.RpcError) as err:
        stub.SubmitJob(request)
    assert err.value.code() == code, err.value.details()
    assert mentions in (err.value.details() or ""), err.value.details()
    assert stub.ListJobs(pb.ListJobsRequest()).total == 0
    assert not any((Path(agent_config["data_root"]) / "jobs").glob("*"))


def test_unknown_job_id(start_agent: Any, agent_config: dict[str, Any]) -> None:
    stub, _ = start_agent(agent_config)
    for call, request in (
        (stub.GetJob, pb.GetJobRequest(job_id="nope")),
        (stub.CancelJob, pb.CancelJobRequest(job_id="nope")),
    ):
        with pytest.raises(grpc.RpcError) as err:
            call(request)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert "nope" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        list(stub.WatchJob(pb.WatchJobRequest(job_id="nope")))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_resubmitting_with_the_same_request_id_returns_the_same_job(
    start_agent: Any, agent_config: dict[str, Any]
) -> None:
    stub, _ = start_agent(agent_config)
    first = stub.SubmitJob(pb.SubmitJobRequest(spec=spec({}), client_request_id="r-1")).job
    again = stub.SubmitJob(pb.SubmitJobRequest(spec=spec({}), client_request_id="r-1")).job
    assert first.id == again.id
    assert stub.ListJobs(pb.ListJobsRequest()).total == 1
    poll(
        lambda: stub.GetJob(pb.GetJobRequest(job_id=first.id)).state in TERMINAL,
        60,
        "the job to end",
    )
