"""Log lines in packed runs (WatchJobRequest.packed_lines), against a real agent and containers:
the same events as one a line, from any seq, with tail, kinds and message-size limits kept; and
the client following through them across an agent restart."""

import json
from pathlib import Path
from typing import Any

from hatrain.rpc.v1 import agent_pb2 as pb

from tests.support.harness import (
    TERMINAL,
    AgentProcess,
    all_events,
    poll,
    socket_path,
    spec,
    stub_for,
    wait_state,
)


def one_a_line(events: list[pb.Event]) -> list[pb.Event]:
    """Packed events as the events of one line each that they stand for."""
    out: list[pb.Event] = []
    for e in events:
        if not e.lines:
            out.append(e)
            continue
        for i, line in enumerate(e.lines):
            single = pb.Event()
            single.CopyFrom(e)
            del single.lines[:]
            single.seq, single.line = e.seq + i, line
            out.append(single)
    return out


def watch(stub: Any, job_id: str, **request: Any) -> list[pb.Event]:
    responses = stub.WatchJob(pb.WatchJobRequest(job_id=job_id, **request))
    return [e for r in responses for e in r.events]


def test_packed_runs_stand_for_exactly_the_events_of_one_line_each(
    start_agent: Any, agent_config: dict[str, Any]
) -> None:
    """A live packed watcher gets runs of many lines, and they are exactly the events a watcher
    of one event a line gets (seq, time, step, stream, text), in order with no gap; so are a
    packed watch from a seq inside a run, a packed tail and a packed kinds filter."""
    stub, _ = start_agent(agent_config)
    plan = {"lines": 3000, "stderr_lines": True}
    job = stub.SubmitJob(pb.SubmitJobRequest(spec=spec({"hatrain_standin": plan}))).job
    packed = watch(stub, job.id, follow=True, packed_lines=True)
    single = all_events(stub, job.id)
    assert wait_state(stub, job.id, TERMINAL).state == pb.JOB_STATE_SUCCEEDED
    assert all(not e.line for e in packed if e.lines)
    assert max(len(e.lines) for e in packed) > 10, "lines printed together come together"
    expanded = one_a_line(packed)
    assert [e.SerializeToString() for e in expanded] == [e.SerializeToString() for e in single]
    assert [e.seq for e in expanded] == list(range(1, len(single) + 1))

    runs = [e for e in packed if len(e.lines) > 2]
    middle = runs[len(runs) // 2].seq + 1  # after the run's first line: cut inside it
    resumed = watch(stub, job.id, from_seq=middle, packed_lines=True)
    assert resumed[0].seq == middle + 1
    assert one_a_line(resumed) == single[middle:]

    tail = watch(stub, job.id, kinds=[pb.EVENT_KIND_LOG], tail=5, packed_lines=True)
    logs = [e for e in single if e.kind == pb.EVENT_KIND_LOG]
    assert one_a_line(tail) == logs[-5:]
    states = watch(stub, job.id, kinds=[pb.EVENT_KIND_STATE], packed_lines=True)
    assert states == [e for e in single if e.kind == pb.EVENT_KIND_STATE]


def test_packed_long_lines_come_in_responses_a_client_accepts(
    start_agent: Any, agent_config: dict[str, Any]
) -> None:
    """3,000 lines of 16 KB (48 MB of log) read back packed by a watcher with gRPC's default
    4 MB message limit: every line, whole and in order."""
    stub, _ = start_agent(agent_config)
    plan = {"lines": 3000, "line_bytes": 16_000}
    job = stub.SubmitJob(pb.SubmitJobRequest(spec=spec({"hatrain_standin": plan}))).job
    assert wait_state(stub, job.id, TERMINAL).state == pb.JOB_STATE_SUCCEEDED
    lines = [
        line
        for e in watch(stub, job.id, packed_lines=True)
        if e.kind == pb.EVENT_KIND_LOG
        for line in e.lines
        if line.startswith("line ")
    ]
    assert [int(line.split()[1]) for line in lines] == list(range(3000))
    assert {len(line) for line in lines} == {16_000}


def test_a_watch_of_more_lines_than_a_page_gets_every_line(
    start_agent: Any, agent_config: dict[str, Any]
) -> None:
    """25,000 lines, more than one page of the store holds (10,000), stored in runs of many:
    a watch of the ended job gets every line once, in order, packed or one event a line,
    followed or not, of every kind or of log lines only."""
    stub, _ = start_agent(agent_config)
    job = stub.SubmitJob(pb.SubmitJobRequest(spec=spec({"hatrain_standin": {"lines": 25_000}})))
    assert wait_state(stub, job.job.id, TERMINAL).state == pb.JOB_STATE_SUCCEEDED
    for request in (
        {"packed_lines": True},
        {"packed_lines": True, "follow": True},
        {"kinds": [pb.EVENT_KIND_LOG], "packed_lines": True, "follow": True},
        {},
    ):
        lines = [
            e.line
            for e in one_a_line(watch(stub, job.job.id, **request))
            if e.kind == pb.EVENT_KIND_LOG and e.line.startswith("line ")
        ]
        assert [int(line.split()[1]) for line in lines] == list(range(25_000)), request


def test_client_watch_goes_on_across_an_agent_restart_with_no_gap_or_duplicate(
    agent_config: dict[str, Any], tmp_path: Path, client_for: Any
) -> None:
    """`hatrain-client watch --json` follows a printing job (its lines come in packed runs)
    while the agent is killed and started again: it reconnects and prints every event of the
    job once, in order, each line on its own."""
    agent_config["listen"] = str(socket_path())
    (tmp_path / "agent").mkdir()
    agent = AgentProcess(agent_config, tmp_path / "agent")
    agent.start()
    try:
        stub, channel = stub_for(agent_config["listen"])
        plan = {"lines": 6000, "burst": 50, "line_delay": 0.02}  # runs of 50 lines
        job = stub.SubmitJob(pb.SubmitJobRequest(spec=spec({"hatrain_standin": plan}))).job
        client = client_for(Path(agent_config["listen"]))
        watcher = client.start("watch", job.id, "--json")

        def lines_so_far() -> int:
            events = all_events(stub, job.id)
            return sum(1 for e in events if e.line.startswith("line "))

        poll(lambda: lines_so_far() > 500, 60, "the job to be mid-way through its lines")
        channel.close()
        agent.kill()  # the job prints on while the agent is down and starts again
        agent.start()
        stub, channel = stub_for(agent_config["listen"])
        assert wait_state(stub, job.id, TERMINAL, timeout=120).state == pb.JOB_STATE_SUCCEEDED
        out, err = watcher.communicate(timeout=120)
        assert watcher.returncode == 0, err
        printed = [json.loads(line) for line in out.splitlines()]
        events = all_events(stub, job.id)
        assert [p["seq"] for p in printed] == [e.seq for e in events]
        assert [p["seq"] for p in printed] == list(range(1, len(events) + 1))
        numbered = [p["line"] for p in printed if p.get("line", "").startswith("line ")]
        assert [int(line.split()[1]) for line in numbered] == list(range(6000))
        channel.close()
    finally:
        agent.terminate()
