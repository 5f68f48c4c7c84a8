"""Several jobs in one call: the agent's SubmitJobs checks every job before it queues any, queues
them all or none on its own queue and places them in one pass; `Client.submit_all` and
`hatrain-client submit A B C` check every config before anything is sent and make that one call.

Real agents on real gRPC, called as real accounts (through `hatrain-agent bridge`) or by the CLI
through a real sshd. Most tests share one agent on which nothing starts (scheduler.max_cpu_jobs
is 0), so that what a batch queued is still queued when counted; the stand-in `axolotl` replays
real output where jobs run.
"""

import contextlib
import json
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from hatrain.agent.config import AgentConfig
from hatrain.agent.server import Agent
from hatrain.client import BadInput, Client, JobState
from hatrain.rpc.v1 import agent_pb2 as pb

from tests.support.harness import TERMINAL, poll, socket_path, spec, stub_for, wait_state
from tests.support.users import ALICE, BOB, channel_as, reachable_dir, stub_as
from tests.test_client_submit import make_project, sha256

CAP = 3  # ALICE's queued jobs on the shared agent


@contextlib.contextmanager
def idle_agent(user_toolchain: Path, **settings: Any) -> Iterator[Agent]:
    """An agent of the `local` runtime on which nothing starts (scheduler.max_cpu_jobs: 0),
    with these agent.yml settings besides."""
    root = reachable_dir("hatrain-batch-")
    scheduler = {"max_cpu_jobs": 0, **settings.pop("scheduler", {})}
    config = {
        "data_root": str(root / "data"),
        "listen": str(socket_path()),
        "log_format": "console",
        "runtime": "local",
        "local": {"venv": str(user_toolchain / "venv")},
        "scheduler": scheduler,
        **settings,
    }
    agent = Agent(AgentConfig.model_validate(config))
    agent.start()
    try:
        yield agent
    finally:
        agent.stop(grace=0.5)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def held(user_toolchain: Path) -> Iterator[Agent]:
    """The module's agent: nothing starts, and ALICE may hold CAP queued jobs
    (scheduler.user_queued_caps)."""
    with idle_agent(user_toolchain, scheduler={"user_queued_caps": {ALICE: CAP}}) as agent:
        yield agent


def job_request(name: str, request_id: str = "", **config: Any) -> pb.SubmitJobRequest:
    return pb.SubmitJobRequest(
        spec=spec(config, name=f"{name}.yml", image=""), client_request_id=request_id
    )


def queued(stub: Any) -> int:
    """How many jobs the agent holds, every user's."""
    return int(stub.ListJobs(pb.ListJobsRequest()).total)


def refusal(stub: Any, jobs: list[pb.SubmitJobRequest]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as refused:
        stub.SubmitJobs(pb.SubmitJobsRequest(jobs=jobs))
    return refused.value


def test_a_batch_with_one_bad_job_is_refused_naming_it_and_queues_nothing(held: Agent) -> None:
    """One bad job of four (more GPUs than the host has, then a bad config name) refuses the
    whole batch with INVALID_ARGUMENT naming `jobs[2]` and the field; an empty batch and one that
    mixes the team queue with the host's own are refused too. None of it queues anything."""
    with channel_as(BOB, held.socket) as channel:
        stub = stub_as(channel)
        before = queued(stub)
        jobs = [job_request(f"bad-batch-{i}") for i in range(4)]
        jobs[2].spec.resources.gpus = 2
        refused = refusal(stub, jobs)
        assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert refused.details().startswith("jobs[2].spec.resources.gpus: at most 0 "), (
            refused.details()
        )

        jobs[2].spec.resources.gpus = 0
        jobs[2].spec.config_name = "../escape.yml"
        refused = refusal(stub, jobs)
        assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert refused.details().startswith("jobs[2].spec.config_name: "), refused.details()

        assert refusal(stub, []).details() == "jobs: at least one job"
        mixed = [job_request("own"), job_request("team")]
        mixed[1].team_queue = True
        assert refusal(stub, mixed).details() == (
            "jobs: all for the team queue, or all for this host's own"
        )
        assert queued(stub) == before


def test_a_batch_past_a_queued_jobs_cap_is_refused_naming_it_and_one_that_fits_is_queued(
    held: Agent,
) -> None:
    """With a cap of 3 queued jobs and 1 queued, a batch of 5 is refused with
    RESOURCE_EXHAUSTED naming the cap and the first job past it (jobs[2]: the batch's earlier
    jobs count), and nothing is queued; a batch of 2 fits, at consecutive queue positions."""
    with channel_as(ALICE, held.socket) as channel:
        stub = stub_as(channel)
        first = stub.SubmitJob(job_request("capped-first")).job
        assert first.queue_position == 1
        before = queued(stub)
        refused = refusal(stub, [job_request(f"capped-{i}") for i in range(5)])
        assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert refused.details() == (
            f"jobs[2]: user cap: {ALICE} has {CAP} jobs queued of {CAP} "
            "(scheduler.user_queued_caps); submit again once some have started"
        )
        assert queued(stub) == before

        batch = uuid.uuid4().hex[:8]
        fits = [job_request(f"fits-{i}", f"{batch}-{i}") for i in range(2)]
        fitted = stub.SubmitJobs(pb.SubmitJobsRequest(jobs=fits)).jobs
        assert [j.spec.config_name for j in fitted] == ["fits-0.yml", "fits-1.yml"]
        assert [j.state for j in fitted] == [pb.JOB_STATE_QUEUED] * 2
        assert [j.queue_position for j in fitted] == [2, 3]
        assert queued(stub) == before + 2

        # At the cap again once one is cancelled and a batch resends the other with a new one:
        # the job resent was counted among those queued, and not once more as the batch's.
        stub.CancelJob(pb.CancelJobRequest(job_id=fitted[1].id))
        again = stub.SubmitJobs(
            pb.SubmitJobsRequest(jobs=[fits[0], job_request("fits-2", f"{batch}-2")])
        ).jobs
        assert again[0].id == fitted[0].id and again[1].queue_position == 3


def test_a_resent_batch_returns_the_same_jobs_and_queues_nothing_new(held: Agent) -> None:
    """Resending a batch with the same client_request_ids (a retry after a lost answer) returns
    the jobs first queued, in order and in their places, and queues nothing; a batch that
    repeats one of them and adds a new one queues only the new one."""
    with channel_as(BOB, held.socket) as channel:
        stub = stub_as(channel)
        before = queued(stub)
        batch = uuid.uuid4().hex[:8]
        jobs = [job_request(f"resent-{i}", f"{batch}-{i}") for i in range(3)]
        first = stub.SubmitJobs(pb.SubmitJobsRequest(jobs=jobs)).jobs
        assert len({j.id for j in first}) == 3
        again = stub.SubmitJobs(pb.SubmitJobsRequest(jobs=jobs)).jobs
        assert [j.id for j in again] == [j.id for j in first]
        assert [j.queue_position for j in again] == [j.queue_position for j in first]
        assert queued(stub) == before + 3

        partly = stub.SubmitJobs(
            pb.SubmitJobsRequest(jobs=[jobs[1], job_request("resent-new", f"{batch}-new")])
        ).jobs
        assert partly[0].id == first[1].id and partly[1].id not in {j.id for j in first}
        assert queued(stub) == before + 4

        twice = [job_request("twice-0", f"{batch}-twice"), job_request("twice-1", f"{batch}-twice")]
        refused = refusal(stub, twice)
        assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert refused.details() == "jobs[1].client_request_id: one of its own (jobs[0] has it)"
        assert queued(stub) == before + 4


def test_the_jobs_of_a_batch_have_their_secrets_once_it_is_answered(held: Agent) -> None:
    """Each job of a batch with secrets has them on the host when SubmitJobs answers (written
    before the jobs are committed, so that no pass can place one without them); the secrets are
    in no answer."""
    with channel_as(BOB, held.socket) as channel:
        stub = stub_as(channel)
        jobs = [job_request(f"secret-{i}") for i in range(3)]
        for i, one in enumerate(jobs):
            one.secrets["HF_TOKEN"] = f"hf_batch_secret_{i}"
        answer = stub.SubmitJobs(pb.SubmitJobsRequest(jobs=jobs))
        assert b"hf_batch_secret" not in answer.SerializeToString()
        for job in answer.jobs:
            assert (held.config.data_root / "secrets" / job.id).is_dir()


def test_a_batch_takes_consecutive_places_and_its_jobs_all_start(
    local_agent_config: dict[str, Any], start_agent: Any
) -> None:
    """A batch of four CPU jobs on an agent that runs four at once: queue positions 1 to 4, and
    all four run together (each held in training until released), then all succeed."""
    local_agent_config["scheduler"] = {"max_cpu_jobs": 4}
    stub, _agent = start_agent(local_agent_config)
    jobs = [
        job_request(f"together-{i}", hatrain_standin={"hold_train": "release"}) for i in range(4)
    ]
    submitted = stub.SubmitJobs(pb.SubmitJobsRequest(jobs=jobs)).jobs
    assert [j.queue_position for j in submitted] == [1, 2, 3, 4]
    ids = [j.id for j in submitted]

    def all_training() -> bool:
        states = [stub.GetJob(pb.GetJobRequest(job_id=i)).state for i in ids]
        return all(s == pb.JOB_STATE_TRAINING for s in states)

    poll(all_training, 120, "the four jobs to be training at once")
    data_root = Path(local_agent_config["data_root"])
    for job_id in ids:
        (data_root / "jobs" / job_id / "run" / "release").touch()
    for job_id in ids:
        assert wait_state(stub, job_id, TERMINAL).state == pb.JOB_STATE_SUCCEEDED


# -- the client ---------------------------------------------------------------------------------


def sweep_project(root: Path, marker: str, rates: tuple[float, ...]) -> list[Path]:
    """A project with one config per learning rate (a.yml, b.yml, ...), all sharing a dataset and
    a template whose bytes are this test's own (so that the shared agent has none of them)."""
    make_project(root)
    template = root / "train" / "chat_templates" / "chat.jinja"
    template.write_text(template.read_text() + f"{{# {marker} #}}\n")
    dataset = root / "data" / "output" / "sample.jsonl"
    first = json.loads(dataset.read_text().splitlines()[0])
    first["messages"][0]["content"] += f" {marker}"
    dataset.write_text(dataset.read_text() + json.dumps(first) + "\n")
    mini = root / "train" / "configs" / "mini.yml"
    base = yaml.safe_load(mini.read_text())
    configs = []
    for letter, rate in zip("abcdefgh", rates, strict=False):
        path = mini.with_name(f"{letter}.yml")
        path.write_text(yaml.safe_dump({**base, "learning_rate": rate}, sort_keys=False))
        configs.append(path.relative_to(root))
    mini.unlink()
    return configs


def test_the_cli_submits_several_configs_in_one_call(
    held: Agent, client_for: Any, tmp_path: Path
) -> None:
    """`hatrain-client submit a.yml b.yml c.yml` over sshd: a line per job (its queue position,
    consecutive, and its config) and one line for the files, which went once for all three;
    `--json` prints a list of the jobs as one config's submit prints its job. --follow and --name
    with several configs, and a missing config among them, are refused (65) naming the option or
    the config, and queue nothing."""
    client = client_for(held.socket)
    stub, channel = stub_for(held.socket)
    project = tmp_path / "project"
    configs = [str(c) for c in sweep_project(project, "cli", (1e-3, 3e-3, 1e-2))]

    before = queued(stub)
    text = client.run("submit", *configs, cwd=project)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    line = re.compile(r"job (\w{12}) queued on gpu1: position (\d+), 0 GPUs \((.+)\)")
    matched = [line.fullmatch(x) for x in lines[:3]]
    assert all(matched), lines
    ids = [m.group(1) for m in matched if m]
    positions = [int(m.group(2)) for m in matched if m]
    assert positions == list(range(positions[0], positions[0] + 3))
    assert [m.group(3) for m in matched if m] == configs
    assert lines[3:] == [lines[-1]] and re.fullmatch(
        r"files of the 3 jobs: 2 sent \([\d,]+ bytes\), 0 already there", lines[-1]
    ), lines
    assert queued(stub) == before + 3
    on_host = [stub.GetJob(pb.GetJobRequest(job_id=i)) for i in ids]
    assert [j.spec.name for j in on_host] == ["a", "b", "c"]
    assert len({j.created_at for j in on_host}) == 1, "queued together, by one call"
    rates = [yaml.safe_load(j.spec.config_yaml)["learning_rate"] for j in on_host]
    assert rates == [1e-3, 3e-3, 1e-2]

    listed = client.json("submit", *configs[:2], "--detach", cwd=project)
    assert [j["name"] for j in listed] == ["a", "b"]
    assert [j["state"] for j in listed] == ["queued", "queued"]
    assert listed[1]["queue_position"] == listed[0]["queue_position"] + 1
    one = client.json("submit", configs[2], "--detach", cwd=project)
    assert isinstance(one, dict) and one["name"] == "c"
    for job in [*listed, one]:
        assert set(one) == set(job)  # the same fields, one config or several
        assert job["upload"] == {
            "bytes_resumed": 0,
            "bytes_sent": 0,
            "files_present": 2,
            "files_sent": 0,
        }
    after = queued(stub)
    assert after == before + 6

    follow = client.run("submit", *configs, "--follow", cwd=project)
    assert follow.returncode == 65, follow.stderr
    assert "error: --follow follows one job, and 3 configs were given" in follow.stderr
    named = client.run("submit", *configs[:2], "--name", "sweep", cwd=project)
    assert named.returncode == 65, named.stderr
    assert "error: --name names one job, and 2 configs were given" in named.stderr
    missing = client.run("submit", configs[0], "train/configs/nowhere.yml", cwd=project)
    assert missing.returncode == 65, missing.stderr
    assert "error: config train/configs/nowhere.yml: no such file" in missing.stderr
    assert queued(stub) == after
    channel.close()


def test_submit_all_checks_every_config_before_it_sends_anything(
    held: Agent, client_for: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`Client.submit_all`: one config refused locally (alone, or beside a good one) raises
    BadInput naming it, and nothing is sent (no job queued, not even the good one's files);
    two refused are named in one error. A good batch returns its jobs in order, with the names
    asked for, each with its submission (the one shared upload)."""
    runner = client_for(held.socket)
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runner.runtime_dir))
    project = tmp_path / "project"
    good, other = sweep_project(project, "library", (1e-3, 3e-3))
    monkeypatch.chdir(project)
    bad = Path("train/configs/bad.yml")
    bad.write_text(Path(good).read_text().replace("sample.jsonl", "absent.jsonl"))
    dataset = sha256(project / "data" / "output" / "sample.jsonl")
    objects = Path(held.config.data_root) / "objects" / "sha256"

    with Client(runner.config) as client:
        before = len(client.jobs(states=[JobState.QUEUED]))
        with pytest.raises(BadInput) as alone:
            client.submit_all([bad])
        assert alone.value.message.startswith(f"{bad}: Axolotl would refuse this config")
        with pytest.raises(BadInput) as beside:
            client.submit_all([good, bad])
        assert beside.value.message == alone.value.message
        with pytest.raises(BadInput) as both:
            client.submit_all([bad, good, "train/configs/nowhere.yml"])
        assert both.value.message.startswith("2 of the 3 configs would be refused")
        assert f"{bad}: Axolotl would refuse" in both.value.message
        assert "config train/configs/nowhere.yml: no such file" in both.value.message
        with pytest.raises(BadInput, match="one name for 2 jobs"):
            client.submit_all([good, other], name="sweep")
        assert len(client.jobs(states=[JobState.QUEUED])) == before
        assert not (objects / dataset[:2] / dataset).exists()

        jobs = client.submit_all([good, other], names=["lr 0.001", "lr 0.003"])
        assert [j.name for j in jobs] == ["lr 0.001", "lr 0.003"]
        assert jobs[0].created_at == jobs[1].created_at, "queued together, by one call"
        assert jobs[1].queue_position == jobs[0].queue_position + 1
        uploads = [j.submission.upload if j.submission else None for j in jobs]
        assert uploads[0] == uploads[1] and uploads[0] is not None
        assert uploads[0].files_sent == 2
        assert (objects / dataset[:2] / dataset).exists()
        assert len(client.jobs(states=[JobState.QUEUED])) == before + 2


def test_a_batch_over_the_agents_request_size_is_refused_naming_configs(
    user_toolchain: Path, client_for: Any, tmp_path: Path
) -> None:
    """An agent that takes at most 3,000 bytes a call (limits.max_request_bytes): eight configs
    in one `submit` are refused (65) naming `configs`, the call's size and the setting, and
    queue nothing; one of them alone is queued."""
    with idle_agent(user_toolchain, limits={"max_request_bytes": 3000}) as agent:
        client = client_for(agent.socket)
        stub, channel = stub_for(agent.socket)
        project = tmp_path / "project"
        rates = tuple(10.0**-i for i in range(1, 9))
        configs = [str(c) for c in sweep_project(project, "small", rates)]

        refused = client.run("submit", *configs, cwd=project)
        assert refused.returncode == 65, refused.stderr
        assert re.search(
            r"error: configs: the 8 jobs make one call of [\d,]+ bytes, more than the agent on "
            r"gpu1 takes in one call \(limits\.max_request_bytes in its agent\.yml\); nothing "
            r"was queued",
            refused.stderr,
        ), refused.stderr
        assert "submit the configs in smaller groups" in refused.stderr
        assert queued(stub) == 0

        one = client.run("submit", configs[0], "--detach", cwd=project)
        assert one.returncode == 0, one.stderr
        assert queued(stub) == 1
        channel.close()
