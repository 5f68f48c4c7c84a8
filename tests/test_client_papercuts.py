"""The first hour of a new user: each thing that made the client look unsure of itself, now
said plainly, with the exit code and the JSON a script would read.

The real client through a real sshd to real agents; jobs run the stand-in `axolotl` replaying
real Axolotl 0.19 output.
"""

import datetime
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hatrain.rpc.v1 import agent_pb2 as pb

from tests.support.client import CLIENT, ClientRunner, host_entry
from tests.support.harness import TERMINAL, free_port, poll, socket_path, spec, wait_state
from tests.support.sshd import SshServer, keygen
from tests.support.tmux import Terminal
from tests.test_client_submit import make_project, write_config

ID = re.compile(r"\b[0-9a-f]{12}\b")


def set_hosts(client: ClientRunner, hosts: dict[str, Any], default: str, **more: Any) -> None:
    settings = yaml.safe_load(client.config.read_text())
    settings.update(hosts=hosts, default_host=default, **more)
    client.config.write_text(yaml.safe_dump(settings))


@pytest.fixture
def one_host(
    agent_config: dict[str, Any], start_agent: Any, client_for: Any, tmp_path: Path
) -> Any:
    stub, agent = start_agent(agent_config, user="root")  # as the client, which logs in as root
    return stub, agent, client_for(agent.socket), make_project(tmp_path / "project")


def finished_job(client: ClientRunner, project: Path, *extra: str) -> dict[str, Any]:
    job: dict[str, Any] = client.json(
        "submit", "train/configs/mini.yml", "--detach", *extra, cwd=project
    )
    assert client.run("wait", job["id"]).returncode == 0
    return job


# -- job ids ----------------------------------------------------------------------------------


def test_queue_shows_ids_in_full_at_80_columns_and_piped(one_host: Any) -> None:
    """`queue` at 80 columns (a real terminal) and piped shows each job's whole id; a long
    name gives way instead, and piped nothing is cut at all."""
    _, _, client, project = one_host
    name = "a-rather-long-job-name-that-will-not-fit-in-eighty-columns-with-the-rest"
    job = finished_job(client, project, "--name", name)

    piped = client.run("queue", "--all", env={"COLUMNS": "80"})
    assert piped.returncode == 0, piped.stderr
    row = next(line for line in piped.stdout.splitlines() if job["id"] in line)
    assert name in row and "…" not in row

    terminal = Terminal(80, 24)
    try:
        env = {k: v for k, v in client.env().items() if k not in ("COLUMNS", "LINES")}
        terminal.start([CLIENT, "queue", "--all"], {**env, "TERM": "tmux-256color"}, project)
        poll(terminal.exited, 60, "queue to print", every=0.2)
        screen = terminal.screen()
    finally:
        terminal.close()
    assert all(len(line) <= 80 for line in screen)
    row = next((line for line in screen if line.startswith("gpu1")), "\n".join(screen))
    assert job["id"] in row.split(), screen


def test_a_unique_prefix_of_an_id_finds_the_job_on_whichever_host_has_it(
    agent_config: dict[str, Any], start_agent: Any, client_for: Any, tmp_path: Path
) -> None:
    """Without --host, `status`, `logs`, `wait` and `fetch` find a job on a host that is not the
    default one, from a few characters of its id, and say the host."""
    _, first = start_agent(agent_config)
    _, second = start_agent(
        {**agent_config, "data_root": str(tmp_path / "second"), "listen": str(socket_path())}
    )
    client = client_for(first.socket)
    set_hosts(
        client,
        {
            "gpu1": host_entry("hatrain-test", first.socket),
            "gpu2": host_entry("hatrain-test", second.socket),
        },
        "gpu1",
    )
    project = make_project(tmp_path / "project")
    job = client.json("submit", "train/configs/mini.yml", "--detach", "-H", "gpu2", cwd=project)
    short = job["id"][:5]

    waited = client.run("wait", short)
    assert waited.returncode == 0, waited.stderr
    assert waited.stdout.startswith(f"job {job['id']} on gpu2: succeeded")
    status = client.run("status", short)
    assert status.returncode == 0, status.stderr
    assert status.stdout.startswith(f"job {job['id']} on gpu2: succeeded")
    assert client.json("status", short)["host"] == "gpu2"
    assert client.run("logs", short, "--tail", "1").returncode == 0
    fetched = client.run("fetch", short, cwd=tmp_path)
    assert fetched.returncode == 0, fetched.stderr
    assert fetched.stdout.startswith(f"hatrain-runs/{job['id']}: ")


def test_an_ambiguous_prefix_is_refused_naming_the_jobs_it_could_be(one_host: Any) -> None:
    """A prefix that begins two jobs' ids is refused (exit 65) naming each, with the fix; an id
    that begins none says where it looked."""
    stub, _, client, _ = one_host
    ids: list[str] = []
    while not (shared := [i for i in ids if any(i[0] == j[0] for j in ids if j != i)]):
        ids.append(stub.SubmitJob(pb.SubmitJobRequest(spec=spec({}))).job.id)
    prefix = shared[0][0]
    matching = sorted(i for i in ids if i.startswith(prefix))

    refused = client.run("status", prefix)
    assert refused.returncode == 65
    first_line = refused.stderr.splitlines()[0]
    assert first_line.startswith(f"error: job id '{prefix}' is ambiguous: it begins ")
    assert all(f"{i} on gpu1" in first_line for i in matching), first_line
    assert "fix: give more characters of the id" in refused.stderr

    unknown = "0123456789ab"
    missing = client.run("status", unknown)
    assert missing.returncode == 65
    assert missing.stderr.splitlines() == [
        f"error: no job '{unknown}' on gpu1",
        "  fix: check the id (all of it, or the start of it) in the job list:",
        "    hatrain-client queue --all",
    ]
    for i in ids:
        wait_state(stub, i, TERMINAL)


# -- paste-safe output ------------------------------------------------------------------------


def test_fix_commands_and_warnings_are_never_wrapped(one_host: Any, sshd: SshServer) -> None:
    """At 40 columns, the command that accepts a host key is a line of its own, whole, ready to
    paste; a long warning stays one line."""
    _, _, client, project = one_host
    empty = client.home / "empty_known_hosts"
    settings = yaml.safe_load(client.config.read_text())
    client.config.write_text(yaml.safe_dump({**settings, "known_hosts": str(empty)}))
    narrow = {"COLUMNS": "40"}
    result = client.run("hosts", env=narrow)
    assert result.returncode == 77
    lines = result.stderr.splitlines()
    assert f"    ssh-keyscan -p {sshd.port} 127.0.0.1 >> {empty}" in lines, lines
    assert "  fix: check the fingerprint with the host's admin, then accept it:" in lines

    client.config.write_text(yaml.safe_dump(settings))
    data = project / "data" / "output" / "sample.jsonl"
    submitted = client.run(
        "submit", "train/configs/mini.yml", "--detach", "-d", f"other.jsonl={data}",
        cwd=project, env=narrow,
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    warning = next(line for line in submitted.stderr.splitlines() if "warning" in line)
    assert len(warning) > 40 and warning.endswith("it was not used"), submitted.stderr


def test_hosts_says_why_each_host_is_down_with_the_fix(
    agent_config: dict[str, Any], start_agent: Any, client_for: Any, sshd: SshServer, tmp_path: Path
) -> None:
    """A refused key says `auth failed`, no key to offer (no SSH agent) `no agent`, a host that
    cannot be reached `unreachable`, a host without a running agent `agent down`; each with its
    fix, in the table, on stderr and in --json; the exit code is the first failure's."""
    _, agent = start_agent(agent_config)
    client = client_for(agent.socket)
    keygen(tmp_path / "stranger")
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text(
        sshd.ssh_config.read_text()
        + f"Host wrong-key\n  HostName 127.0.0.1\n  Port {sshd.port}\n  User {sshd.user}\n"
        f"  IdentityFile {tmp_path / 'stranger'}\n"
        f"Host no-key\n  HostName 127.0.0.1\n  Port {sshd.port}\n  User {sshd.user}\n"
    )
    set_hosts(
        client,
        {
            "good": host_entry("hatrain-test", agent.socket),
            "badkey": host_entry("wrong-key", agent.socket),
            "nokey": host_entry("no-key", agent.socket),
            "gone": host_entry(f"{sshd.user}@127.0.0.1:{free_port()}", agent.socket),
            "noagent": host_entry("hatrain-test", socket_path()),
        },
        "good",
        ssh_config=str(ssh_config),
    )
    home = tmp_path / "home"  # no ~/.ssh keys, and no SSH agent
    home.mkdir()
    env = {"HOME": str(home), "SSH_AUTH_SOCK": None}
    table = client.run("hosts", env=env)
    assert table.returncode == 77, table.stderr  # badkey's, the first failure
    rows = {line.split()[0]: line for line in table.stdout.splitlines()[1:]}
    assert rows["good"].endswith(" up")
    assert rows["badkey"].endswith(" auth failed")
    assert rows["nokey"].endswith(" no agent")
    assert rows["gone"].endswith(" unreachable")
    assert rows["noagent"].endswith(" agent down")
    err = table.stderr.splitlines()
    assert "    ssh-add -l" in err
    assert '    eval "$(ssh-agent -s)" && ssh-add' in err
    assert "    sudo systemctl start hatrain-agent" in err
    assert any(line.startswith("warning: nokey: SSH login as") for line in err)
    assert any("no SSH agent is running (SSH_AUTH_SOCK is not set)" in line for line in err)

    listed = client.run("hosts", "--json", env=env)
    assert listed.returncode == 77
    by_host = {h["host"]: h for h in json.loads(listed.stdout)}
    assert {h: by_host[h]["status"] for h in by_host} == {
        "good": "up",
        "badkey": "auth failed",
        "nokey": "no agent",
        "gone": "unreachable",
        "noagent": "agent down",
    }
    assert by_host["noagent"]["commands"] == ["sudo systemctl start hatrain-agent"]
    assert by_host["gone"]["exit_code"] == 69 and by_host["badkey"]["exit_code"] == 77
    assert by_host["good"]["runtime"] == "docker"


# -- silent mistakes --------------------------------------------------------------------------


def test_a_dataset_option_that_matches_no_dataset_is_warned_of(one_host: Any) -> None:
    """--dataset NAME=PATH whose NAME no dataset of the config uses: a warning on stderr and in
    --json; the job is submitted (exit 0) with the config's own dataset."""
    _, _, client, project = one_host
    data = project / "data" / "output" / "sample.jsonl"
    result = client.run(
        "submit", "train/configs/mini.yml", "--detach", "--json",
        "--dataset", f"samples.jsonl={data}", cwd=project,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    expected = (
        "--dataset samples.jsonl=...: no dataset of train/configs/mini.yml is samples.jsonl "
        "(its paths name none such); it was not used"
    )
    assert f"warning: {expected}" in result.stderr.splitlines()
    assert json.loads(result.stdout)["warnings"] == [expected]
    used = client.run(
        "submit", "train/configs/mini.yml", "--detach", "--json",
        "--dataset", f"sample.jsonl={data}", cwd=project,
    )  # fmt: skip
    assert used.returncode == 0 and json.loads(used.stdout)["warnings"] == []
    assert "warning" not in used.stderr


def test_a_config_that_needs_a_gpu_gets_one_or_a_warning(
    agent_config: dict[str, Any], start_agent: Any, client_for: Any, tmp_path: Path
) -> None:
    """A config with bf16, flash attention and a bitsandbytes 8-bit optimizer: on a host with
    GPUs it asks for 1 GPU unless told, and says so; with --gpus 0, or on a host without GPUs,
    it is warned of."""
    gpus = {"source": "static", "static": [{"uuid": "GPU-pc-0"}, {"uuid": "GPU-pc-1"}]}
    _, gpu_host = start_agent({**agent_config, "gpus": gpus})
    _, cpu_host = start_agent(
        {**agent_config, "data_root": str(tmp_path / "cpu"), "listen": str(socket_path())}
    )
    client = client_for(gpu_host.socket)
    set_hosts(
        client,
        {
            "gpu1": host_entry("hatrain-test", gpu_host.socket),
            "cpu1": host_entry("hatrain-test", cpu_host.socket),
        },
        "gpu1",
    )
    project = make_project(tmp_path / "project")
    write_config(project, {}, bf16=True, flash_attention=True, optimizer="adamw_bnb_8bit")
    needs = "bf16: true, flash_attention: true, optimizer: adamw_bnb_8bit (bitsandbytes)"

    def submit(*extra: str) -> tuple[dict[str, Any], str]:
        result = client.run(
            "submit", "train/configs/mini.yml", "--detach", "--json", *extra, cwd=project
        )
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout), result.stderr

    given, err = submit()
    assert given["gpus"] == 1 and len(given["gpu_uuids"]) in (0, 1)
    noted = f"gpus: 1, as the config can only run on a GPU ({needs}); --gpus N to choose"
    assert (
        noted in given["notes"]
        and f"  note: {noted}"
        in client.run(
            "submit", "train/configs/mini.yml", "--detach", cwd=project
        ).stdout.splitlines()
    )
    assert given["warnings"] == [] and "warning" not in err

    zero, err = submit("--gpus", "0")
    assert zero["gpus"] == 0
    assert zero["warnings"] == [
        f"--gpus 0, but the config can only run on a GPU ({needs}): Axolotl will most likely "
        "fail; give --gpus 1 or more"
    ]
    assert "warning: --gpus 0, but the config can only run on a GPU" in err

    none, err = submit("--host", "cpu1")
    assert none["gpus"] == 0
    assert none["warnings"] == [
        f"the config can only run on a GPU ({needs}), and cpu1 has no GPU that fits: it is "
        "submitted with none, and Axolotl will most likely fail"
    ]


def test_retry_refuses_a_job_that_has_not_ended(one_host: Any, tmp_path: Path) -> None:
    """`retry` of a running job is refused (exit 65, the commands that help on lines of their
    own) and makes no second job."""
    stub, _, client, _ = one_host
    project = make_project(tmp_path / "held", {"hold_train": "never"})
    job = client.json("submit", "train/configs/mini.yml", "--detach", cwd=project)
    wait_state(stub, job["id"], {pb.JOB_STATE_TRAINING})
    refused = client.run("retry", job["id"][:6], "--json")
    assert refused.returncode == 65
    assert refused.stdout == ""
    assert refused.stderr.splitlines() == [
        f"error: job {job['id']} is training: only an ended job can be retried (a retry now "
        "would run it twice)",
        "  fix: wait for it to end, or cancel it first:",
        f"    hatrain-client wait {job['id']}",
        f"    hatrain-client cancel {job['id']}",
    ]
    assert stub.ListJobs(pb.ListJobsRequest()).total == 1
    client.run("cancel", job["id"], "--wait")


def test_queue_with_hosts_down_exits_non_zero_and_names_each_failure(one_host: Any) -> None:
    """With 3 of 4 hosts down, `queue` shows the jobs of the one that answered, says each
    failure, and exits 69; --json carries the jobs and each host's error."""
    _, agent, client, project = one_host
    job = finished_job(client, project)
    sockets = [socket_path() for _ in range(3)]
    set_hosts(
        client,
        {
            "gpu1": host_entry("hatrain-test", agent.socket),
            **{f"down{i}": host_entry("hatrain-test", socket) for i, socket in enumerate(sockets)},
        },
        "gpu1",
    )
    text = client.run("queue", "--all")
    assert text.returncode == 69
    assert job["id"] in text.stdout
    warnings = sorted(line for line in text.stderr.splitlines() if line.startswith("warning:"))
    assert [w.split(" (")[0] for w in warnings] == [
        f"warning: down{i}: no hatrain agent is listening at {socket}"
        for i, socket in enumerate(sockets)
    ]
    assert text.stderr.count("    sudo systemctl start hatrain-agent") == 3

    listed = client.run("queue", "--all", "--json")
    assert listed.returncode == 69
    data = json.loads(listed.stdout)
    assert [j["id"] for j in data["jobs"]] == [job["id"]]
    assert sorted(e["host"] for e in data["errors"]) == ["down0", "down1", "down2"]
    assert {e["status"] for e in data["errors"]} == {"agent down"}
    assert all(e["exit_code"] == 69 and e["fix"] for e in data["errors"])


# -- wrong or jargon messages -----------------------------------------------------------------


def test_a_config_file_that_is_not_there_is_named(one_host: Any, tmp_path: Path) -> None:
    """--config naming no file says so (not "no hosts configured"), as does
    HATRAIN_CLIENT_CONFIG; a config without hosts names itself and how to start one."""
    _, _, client, _ = one_host
    missing = tmp_path / "nope.yml"
    given = client.run("--config", str(missing), "hosts")
    assert given.returncode == 65
    assert given.stderr.splitlines()[0] == f"error: --config {missing}: no such file"
    from_env = client.run("hosts", env={"HATRAIN_CLIENT_CONFIG": str(missing)})
    assert from_env.returncode == 65
    assert from_env.stderr.startswith(f"error: HATRAIN_CLIENT_CONFIG {missing}: no such file")

    hostless = tmp_path / "hostless.yml"
    hostless.write_text("keepalive_seconds: 15\n")
    empty = client.run("--config", str(hostless), "queue")
    assert empty.returncode == 65
    assert empty.stderr.splitlines() == [
        f"error: no hosts configured in {hostless}",
        "  fix: add your GPU hosts under 'hosts:' in it; the repository's configs/client.yml "
        "is an example:",
        f"    mkdir -p {tmp_path} && cp configs/client.yml {hostless}",
    ]


def test_more_gpus_than_the_host_has_is_refused_with_the_fix(one_host: Any) -> None:
    """--gpus 99 on a host without GPUs: the flag, the host, what it has and what to do; exit
    65 and nothing uploaded."""
    stub, agent, client, project = one_host
    result = client.run("submit", "train/configs/mini.yml", "--gpus", "99", cwd=project)
    assert result.returncode == 65
    assert result.stderr.splitlines() == [
        "error: --gpus 99: gpu1 has 0 GPUs",
        "  fix: ask for at most 0, or send it to a host that has enough GPUs (--host NAME, or "
        "--host auto); each host's GPUs:",
        "    hatrain-client hosts",
    ]
    assert stub.ListJobs(pb.ListJobsRequest()).total == 0
    assert not [p for p in (Path(agent.config.data_root) / "objects").rglob("*") if p.is_file()]


def test_doctor_takes_a_running_agent_for_the_healthy_case(
    agent_config: dict[str, Any], start_agent: Any, tmp_path: Path
) -> None:
    """`hatrain-agent doctor` with the agent running: the agent answers (its version, runtime,
    queue); no complaint that the address is taken. With none running: where it will listen."""
    config = tmp_path / "agent.yml"
    config.write_text(yaml.safe_dump(agent_config))
    doctor = [str(Path(sys.executable).parent / "hatrain-agent"), "doctor", "--config", str(config)]

    def row(name: str) -> str:
        out = subprocess.run(doctor, capture_output=True, text=True, timeout=120, env=_wide())
        rows = [line.split("│") for line in out.stdout.splitlines() if "│" in line]
        return next("│".join(cells) for cells in rows if cells[1].strip() == name)

    idle = row("socket")
    assert "ok" in idle and "no agent running; it will listen there once started" in idle
    _, agent = start_agent(agent_config)
    running = row("agent")
    assert "ok" in running, running
    assert f"running and answering on {agent.socket}: hatrain-agent" in running
    assert "runtime docker" in running and "in use" not in running


def _wide() -> dict[str, str]:
    import os

    return {**os.environ, "COLUMNS": "300"}


# -- time -------------------------------------------------------------------------------------


def test_status_and_queue_show_times_and_json_has_iso_times(one_host: Any) -> None:
    """`status` says when the job was submitted, started and ended, and for how long it ran;
    `queue` has an ELAPSED column; --json gives ISO-8601 times and elapsed seconds."""
    _, _, client, project = one_host
    job = finished_job(client, project)
    status = client.run("status", job["id"])
    assert status.returncode == 0, status.stderr
    date = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"
    assert re.search(rf"^  submitted {date} \(\d+:\d\d ago\)$", status.stdout, re.M)
    assert re.search(rf"^  started   {date} \(after \d+:\d\d queued\)$", status.stdout, re.M)
    assert re.search(rf"^  ended     {date} \(\d+:\d\d ago\)$", status.stdout, re.M)
    assert re.search(r"^  elapsed   \d+:\d\d$", status.stdout, re.M)

    queue = client.run("queue", "--all").stdout.splitlines()
    header = queue[0].split()
    assert "ELAPSED" in header
    row = next(line for line in queue if job["id"] in line).split()
    assert re.fullmatch(r"\d+:\d\d", row[header.index("ELAPSED")])

    data = client.json("status", job["id"])
    times = {k: data[k] for k in ("created_at", "started_at", "finished_at")}
    for value in times.values():
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", value), times
    parsed = {k: datetime.datetime.fromisoformat(v) for k, v in times.items()}
    assert parsed["created_at"] <= parsed["started_at"] <= parsed["finished_at"]
    took = (parsed["finished_at"] - parsed["started_at"]).total_seconds()
    assert abs(data["elapsed_seconds"] - took) < 0.01
    queued = client.json("queue", "--all")["jobs"][0]
    assert queued["finished_at"] == data["finished_at"]


# -- logs -------------------------------------------------------------------------------------


def test_logs_have_step_headers_timestamps_since_and_fetch_brings_them(
    one_host: Any, tmp_path: Path
) -> None:
    """`logs` heads each step's lines (`==> preprocess <==`, `==> train <==`), prefixes times
    with --timestamps, keeps to lines since a duration or a time with --since (a bad one is
    refused), and `fetch --logs` writes the same log, times included, beside the run."""
    _, _, client, project = one_host
    job = finished_job(client, project)
    plain = client.run("logs", job["id"]).stdout.splitlines()
    assert plain[0] == "==> preprocess <=="
    assert plain.count("==> preprocess <==") == 1 and plain.count("==> train <==") == 1
    switch = plain.index("==> train <==")
    assert any("Success! Preprocessed data path" in line for line in plain[:switch])
    assert any("Starting trainer" in line for line in plain[switch:])

    stamped = client.run("logs", job["id"], "--timestamps", "--tail", "3").stdout.splitlines()
    assert stamped[0] == "==> train <==" and len(stamped) == 4
    for line in stamped[1:]:
        moment, _, text = line.partition(" ")
        assert datetime.datetime.fromisoformat(moment).tzinfo is not None, line
        assert text in plain

    assert client.run("logs", job["id"], "--since", "10m").stdout.splitlines() == plain
    future = (datetime.datetime.now() + datetime.timedelta(hours=1)).isoformat()
    assert client.run("logs", job["id"], "--since", future).stdout == ""
    bad = client.run("logs", job["id"], "--since", "yesterday")
    assert bad.returncode == 65
    assert bad.stderr.startswith("error: --since yesterday: expected a duration back from now")

    dest = tmp_path / "fetched"
    fetched = client.json("fetch", job["id"], str(dest), "--logs")
    log = dest / f"job-{job['id']}.log"
    assert fetched["log_file"] == str(log)
    written = log.read_text().splitlines()
    assert fetched["log_lines"] == len(written) == len(plain)
    assert [line.partition(" ")[2] if not line.startswith("==>") else line for line in written] == (
        plain
    )


# -- the live view, piped ---------------------------------------------------------------------


def test_the_plain_live_output_says_each_thing_once(one_host: Any) -> None:
    """Followed with the output piped (no terminal): one line per train step with its loss,
    learning rate and ETA (which ends at 0:00), one per evaluation, one for each thing the job
    moves on to; no line twice, no progress line beside the step's, no bar's own label."""
    _, _, client, project = one_host
    result = client.run("submit", "train/configs/mini.yml", "--follow", cwd=project)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    said = [line for line in lines if not line.startswith("  ")]
    assert len(said) == len(set(said)), [line for line in said if said.count(line) > 1]
    steps = [line for line in lines if line.startswith("step ")]
    assert [line.split(":")[0] for line in steps] == [f"step {i}/20" for i in range(1, 21)]
    assert all(re.search(r": loss \d\.\d+, lr [\d.e-]+, .*, eta \d:\d\d$", s) for s in steps)
    assert steps[-1].endswith("eta 0:00")
    evals = [line.split(":")[0] for line in lines if line.startswith("eval ")]
    assert evals == ["eval at step 0/20", "eval at step 10/20", "eval at step 20/20"]
    for moved_on in (
        "preprocessing: Tokenizing Prompts",
        "loading the model",
        "saving checkpoint-20",
        "saving the trained model",
    ):
        assert moved_on in lines, (moved_on, lines)
    assert not any(
        line.startswith(("metrics:", "train ", "Writing model shards")) for line in lines
    )
    trained = lines.index("[training]")
    assert "preprocessing: Saving the dataset" in lines[:trained]
    assert not any("Saving the dataset" in line for line in lines[trained:])


# -- completion -------------------------------------------------------------------------------


def _complete(client: ClientRunner, words: str) -> list[str]:
    result = client.run(
        env={
            "_HATRAIN_CLIENT_COMPLETE": "bash_complete",
            "COMP_WORDS": words,
            "COMP_CWORD": str(len(words.split(" ")) - 1),
        }
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    return [line.split(",", 1)[1] for line in lines if line.startswith("plain,")]


def test_completion_offers_job_ids_and_host_aliases(
    agent_config: dict[str, Any],
    start_agent: Any,
    client_for: Any,
    sshd: SshServer,
    tmp_path: Path,
) -> None:
    """Completing a JOB offers the ids this client saw (its local record), and with a shared
    connection open, also those running on the host that it never saw; --host offers the
    client config's aliases (and `auto` for submit). Completion never opens an SSH login."""
    stub, agent = start_agent(agent_config, user="root")  # as the client, which logs in as root
    client = client_for(agent.socket)
    set_hosts(
        client,
        {
            "gpu1": host_entry("hatrain-test", agent.socket),
            "spare": host_entry("hatrain-test", socket_path()),
        },
        "gpu1",
    )
    project = make_project(tmp_path / "project", {"hold_train": "never"})
    mine = client.json("submit", "train/configs/mini.yml", "--detach", cwd=project)
    held = spec({"hatrain_standin": {"hold_train": "never"}})
    other = stub.SubmitJob(pb.SubmitJobRequest(spec=held)).job
    wait_state(stub, other.id, {pb.JOB_STATE_TRAINING})

    logins = set(sshd.session_pids())
    assert _complete(client, "hatrain-client status ") == [mine["id"]]
    assert _complete(client, "hatrain-client status --host ") == ["gpu1", "spare"]
    assert _complete(client, "hatrain-client submit x.yml --host ") == ["gpu1", "spare", "auto"]
    assert set(sshd.session_pids()) <= logins  # no SSH login of its own

    set_hosts(
        client,
        yaml.safe_load(client.config.read_text())["hosts"],
        "gpu1",
        keep_connection_seconds=30,
    )
    assert client.run("hosts", "--host", "gpu1").returncode == 0
    poll(lambda: list(client.runtime_dir.glob("hatrain-*/*.json")), 30, "the shared connection")
    assert set(_complete(client, "hatrain-client logs ")) == {mine["id"], other.id}
    assert _complete(client, f"hatrain-client cancel {other.id[:4]}") == [other.id]
    for job_id in (mine["id"], other.id):
        stub.CancelJob(pb.CancelJobRequest(job_id=job_id))
