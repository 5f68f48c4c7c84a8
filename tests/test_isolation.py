"""A job runs as its user with no path to root, and no user can change what another's job reads.

Real parts throughout: real Unix accounts (tests/support/users.py), a real dockerd, the
`local` runtime's real processes, real files. The stand-in `axolotl` plays the hostile code a job
may carry (a model's remote code): with `probe:` it tries each attack from inside the job and
records what it got, and the tests check both that record and the host itself.
"""

import contextlib
import hashlib
import json
import os
import pwd
import shutil
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import grpc
import pytest
import yaml
from hatrain.agent.config import AgentConfig
from hatrain.agent.confinement import host_memory_bytes
from hatrain.agent.doctor import run_checks
from hatrain.agent.jobs import JobSpec
from hatrain.agent.server import Agent
from hatrain.rpc.v1 import agent_pb2 as pb

from tests.support.harness import TERMINAL, poll, spec, stub_for, wait_state
from tests.support.users import ALICE, BOB, channel_as, reachable_dir, run_as, stub_as

PYTHON = "/usr/bin/python3"  # a Python every account can run
NO_CAPABILITIES = dict.fromkeys(("CapEff", "CapPrm", "CapInh", "CapAmb"), "0000000000000000")


@pytest.fixture
def shared_agent_config(agent_config: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The docker agent_config with a data root that every account can reach: uploads are
    written by the user's own processes, as over SFTP."""
    reachable = reachable_dir("hatrain-isolation-")
    yield {**agent_config, "data_root": str(reachable / "data")}
    shutil.rmtree(reachable, ignore_errors=True)


@pytest.fixture
def stub_of() -> Iterator[Callable[[str | int, Agent], Any]]:
    """A stub on an agent whose calls are the account's (or a bare uid's), as the kernel tells
    the agent: through `hatrain-agent bridge` run as them."""
    with contextlib.ExitStack() as channels:

        def make(user: str | int, agent: Agent) -> Any:
            channel = channels.enter_context(channel_as(user, agent.socket))
            return stub_as(channel)

        yield make


def _uid(user: str) -> int:
    return pwd.getpwnam(user).pw_uid


def _gid(user: str) -> int:
    return pwd.getpwnam(user).pw_gid


def _probe(run: Path, step: str = "preprocess") -> dict[str, Any]:
    record: dict[str, Any] = json.loads((run / f"probe-{step}.json").read_text())
    return record


def _upload(stub: Any, user: str, data: bytes) -> str:
    """Upload data as user: their own process writes the staging path the agent gives them (as
    their SFTP session would), then the agent verifies it."""
    sha = hashlib.sha256(data).hexdigest()
    answer = stub.PrepareUpload(pb.PrepareUploadRequest(sha256=[sha]))
    staged = answer.missing[0].staging_path
    written = run_as(user, "sh", "-c", 'cat > "$0"', staged, input=data.decode())
    assert written.returncode == 0, written.stderr
    stub.CommitUpload(pb.CommitUploadRequest(sha256=sha, size=len(data)))
    return sha


def _probing_spec(
    sha: str | None = None, standin: dict[str, Any] | None = None, **probe: Any
) -> Any:
    """A job that probes (the stand-in's `probe:`), reading the object sha as its dataset."""
    config: dict[str, Any] = {"hatrain_standin": {"probe": probe, **(standin or {})}}
    files = []
    if sha is not None:
        config["datasets"] = [{"path": "/workspace/data/datasets/data.jsonl", "type": "completion"}]
        files = [pb.JobFile(path="data.jsonl", sha256=sha)]
    return spec(config, files=files)


def _run(stub: Any, job_spec: Any) -> Any:
    job = stub.SubmitJob(pb.SubmitJobRequest(spec=job_spec)).job
    done = wait_state(stub, job.id, TERMINAL)
    assert done.state == pb.JOB_STATE_SUCCEEDED, done
    return done


def _owners(run: Path) -> set[int]:
    return {p.lstat().st_uid for p in [run, *run.rglob("*")]}


def test_a_docker_job_runs_as_its_user_with_no_way_to_root(
    shared_agent_config: dict[str, Any], start_agent: Any, docker_client: docker.DockerClient
) -> None:
    """The container runs as the submitter's uid:gid with every capability dropped (none
    effective, permitted, inheritable or ambient inside),
    no-new-privileges, the memory, pids and /dev/shm limits of agent.yml, and its own IPC. From
    inside, device nodes and chown to root fail; a setuid bit it sets is on a file owned by the
    user (so it grants nothing), which no other user can even reach. Inputs are read-only, HOME
    is writable, and every output file on the host belongs to the user. The submitter is the
    uid the kernel gave the agent: a name sent along (the old user metadata) changes nothing."""
    stub, agent = start_agent(shared_agent_config, ALICE)
    sha = _upload(stub, ALICE, b'{"text": "hello"}\n')
    job_spec = _probing_spec(sha, {"hold_train": "go"})
    forged = [("x-hatrain-user", BOB)]
    job = stub.SubmitJob(pb.SubmitJobRequest(spec=job_spec), metadata=forged).job
    assert job.user == ALICE
    wait_state(stub, job.id, {pb.JOB_STATE_TRAINING})
    container = poll(
        lambda: next(
            iter(docker_client.containers.list(filters={"label": f"hatrain.job={job.id}"})), None
        ),
        60,
        "the train container",
    )
    host_config = docker_client.api.inspect_container(container.id)["HostConfig"]
    alice = _uid(ALICE)
    assert docker_client.api.inspect_container(container.id)["Config"]["User"] == (
        f"{alice}:{_gid(ALICE)}"
    )
    assert host_config["CapDrop"] == ["ALL"]
    assert "no-new-privileges" in host_config["SecurityOpt"]
    assert host_config["IpcMode"] != "host"
    assert host_config["ShmSize"] == 16 * 2**30
    assert host_config["PidsLimit"] == 32768
    assert host_config["Memory"] == host_memory_bytes() * 90 // 100
    assert host_config["MemorySwap"] == host_config["Memory"], "no swap on top"
    run = agent.workspace.dirs(job.id).run
    assert run_as(ALICE, "touch", str(run / "go")).returncode == 0
    done = wait_state(stub, job.id, TERMINAL)
    assert done.state == pb.JOB_STATE_SUCCEEDED, done

    seen = _probe(run)
    assert (seen["uid"], seen["gid"]) == (alice, _gid(ALICE))
    assert seen["capabilities"] == NO_CAPABILITIES and seen["no_new_privs"] == "1"
    assert seen["mknod"] == "EPERM" and not (run / "null-preprocess").exists()
    assert seen["chown_root"] == "EPERM"
    assert seen["setuid"] == "ok"  # allowed on one's own file, and harmless:
    suid = (run / "suid-preprocess").stat()
    assert suid.st_uid == alice and suid.st_mode & stat.S_ISUID, "setuid to alice, not to root"
    assert run_as(BOB, str(run / "suid-preprocess"), "-c", "id -u").returncode != 0
    assert (seen["home_path"], seen["home"]) == ("/workspace/home", "ok")
    home = Path(shared_agent_config["data_root"]) / "cache" / ALICE / "home"
    assert (home / "probe-preprocess").stat().st_uid == alice, "HOME is the user's own, kept"
    inputs = {seen["config_write"], seen["config_dir_write"], *seen["input_write"].values()}
    assert inputs <= {"EACCES", "EROFS"}  # not the user's, and a read-only mount besides

    assert _owners(run) == {alice}, "every output file on the host is the submitter's"
    assert stat.S_IMODE(run.stat().st_mode) == 0o700
    assert run_as(BOB, "ls", str(run)).returncode != 0, "nobody else can enter the run dir"


def test_a_local_job_runs_as_its_user_with_no_way_to_root(
    local_agent_config: dict[str, Any], start_agent: Any
) -> None:
    """The `local` runtime runs each step as the submitter (setpriv), not as root: no
    capabilities (effective, permitted, inheritable or ambient; the agent is root, as under its
    unit), no_new_privs, mknod and chown to root fail, its config and datasets cannot be
    written, and its outputs belong to it. The step's log and exit file stay the agent's, in a
    directory the user cannot write, so the job cannot forge how it ended."""
    stub, agent = start_agent(local_agent_config, ALICE)
    sha = _upload(stub, ALICE, b'{"text": "hello"}\n')
    done = _run(stub, _probing_spec(sha))
    alice = _uid(ALICE)
    run = agent.workspace.dirs(done.id).run
    for step in ("preprocess", "train"):
        seen = _probe(run, step)
        assert (seen["uid"], seen["gid"]) == (alice, _gid(ALICE)), step
        assert seen["capabilities"] == NO_CAPABILITIES and seen["no_new_privs"] == "1"
        assert seen["mknod"] == "EPERM" and seen["chown_root"] == "EPERM"
        assert seen["home"] == "ok"
        assert seen["config_write"] == "EACCES" and seen["config_dir_write"] == "EACCES"
        assert set(seen["input_write"].values()) == {"EACCES"}
    assert (run / "suid-train").stat().st_uid == alice
    assert _owners(run) == {alice}
    assert stat.S_IMODE(run.stat().st_mode) == 0o700
    step_files = run.parent / "local"
    for name in ("train.log", "train.exit", "train.handle"):
        assert (step_files / name).stat().st_uid == 0, name
    assert stat.S_IMODE(step_files.stat().st_mode) & 0o022 == 0
    base = run.parent
    assert (base.stat().st_gid, stat.S_IMODE(base.stat().st_mode)) == (_gid(ALICE), 0o750)
    assert run_as(BOB, "ls", str(base)).returncode != 0


@pytest.mark.parametrize(
    ("field", "value", "config"),
    [
        ("datasets[0].path", "/etc/shadow", {"datasets": [{"path": "/etc/shadow"}]}),
        ("datasets[0].path", "file:///etc/shadow", {"datasets": [{"path": "file:///etc/shadow"}]}),
        ("datasets[0].path", "../../etc/shadow", {"datasets": [{"path": "../../etc/shadow"}]}),
        (
            "datasets[0].path",
            "/workspace/data/datasets/../../../etc/shadow",
            {"datasets": [{"path": "/workspace/data/datasets/../../../etc/shadow"}]},
        ),
        (
            "datasets[0].data_files[1]",
            "/root/.ssh/id_ed25519",
            {"datasets": [{"path": "json", "data_files": ["a.json", "/root/.ssh/id_ed25519"]}]},
        ),
        ("base_model", "/home/hatrain-bob/model", {"base_model": "/home/hatrain-bob/model"}),
        ("deepspeed", "/workspace/../etc/passwd", {"deepspeed": "/workspace/../etc/passwd"}),
    ],
    ids=["absolute", "file-url", "dot-dot", "out-of-a-mount", "data-files", "model", "deepspeed"],
)
def test_a_path_outside_the_jobs_mounts_is_refused(
    agent_config: dict[str, Any],
    start_agent: Any,
    field: str,
    value: str,
    config: dict[str, Any],
) -> None:
    """A path in the config that points outside the job's own mounts (/etc/shadow and its
    disguises, another user's files) is refused at submit with INVALID_ARGUMENT naming the
    field, and nothing is stored."""
    stub, _ = start_agent(agent_config)
    with pytest.raises(grpc.RpcError) as refused:
        stub.SubmitJob(pb.SubmitJobRequest(spec=spec(config)))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"spec.config_yaml: {field}: a path" in refused.value.details()
    assert repr(value) in refused.value.details()
    assert stub.ListJobs(pb.ListJobsRequest()).total == 0


def test_paths_inside_the_mounts_and_text_that_looks_like_one_are_accepted(
    agent_config: dict[str, Any], start_agent: Any
) -> None:
    """What a job may point at passes: its datasets, configs, run and cache directories, the
    admin's extra mounts, Hub ids; and a system prompt that begins with / is text, not a path.
    The client's dataset_prepared_path is replaced by the agent's own."""
    stub, agent = start_agent(agent_config)
    mount = agent_config["docker"]["extra_mounts"][-1]["target"]
    config = {
        "base_model": "google/gemma-3-270m-it",
        "datasets": [
            {"path": "/workspace/data/datasets/a.jsonl", "system_prompt": "/no_think"},
            {"path": "file:///workspace/data/datasets/b"},
        ],
        "deepspeed": "/workspace/configs/zero2.json",
        "chat_template_jinja": "/workspace/data/datasets/chat.jinja",
        "resume_from_checkpoint": "/workspace/data/training-runs/out/checkpoint-2",
        "lora_model_dir": f"{mount}/adapter",
        "dataset_prepared_path": "/etc",
        "hatrain_standin": {"exit_preprocess": 3},
    }
    job = stub.SubmitJob(pb.SubmitJobRequest(spec=spec(config))).job
    done = wait_state(stub, job.id, TERMINAL)
    stored = yaml.safe_load(
        (agent.workspace.dirs(job.id).configs / "job.yml").read_text(encoding="utf-8")
    )
    assert stored["dataset_prepared_path"].startswith("/workspace/data/huggingface-cache/prepared/")
    assert done.exit_code == 3


def test_an_object_keeps_its_verified_bytes_after_a_rewrite_through_a_kept_fd(
    shared_agent_config: dict[str, Any], start_agent: Any
) -> None:
    """The uploader keeps its staged file open across the commit and rewrites it afterwards:
    the object is the agent's own copy (root's, 0444, in a directory only root can enter), so
    the rewrite, a chmod or a new hard link to it cannot reach it, and the job that uses it
    reads the bytes that were verified."""
    stub, agent = start_agent(shared_agent_config, ALICE)
    good, evil = '{"text": "verified"}\n', '{"text": "EVIL!!!!"}\n'
    sha = hashlib.sha256(good.encode()).hexdigest()
    staged = stub.PrepareUpload(pb.PrepareUploadRequest(sha256=[sha])).missing[0].staging_path
    keeper = (
        "import sys\n"
        "fh = open(sys.argv[1], 'wb'); fh.write(sys.argv[2].encode()); fh.flush()\n"
        "print('written', flush=True); sys.stdin.readline()\n"
        "fh.seek(0); fh.write(sys.argv[3].encode()); fh.flush()\n"
        "print('rewritten', flush=True); sys.stdin.readline()\n"
    )
    argv = ["setpriv", f"--reuid={ALICE}", f"--regid={ALICE}", "--init-groups", PYTHON, "-c"]
    with subprocess.Popen(
        [*argv, keeper, staged, good, evil],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as uploader:
        assert uploader.stdin is not None and uploader.stdout is not None
        assert uploader.stdout.readline() == "written\n"
        stub.CommitUpload(pb.CommitUploadRequest(sha256=sha, size=len(good)))
        uploader.stdin.write("rewrite\n")
        uploader.stdin.flush()
        assert uploader.stdout.readline() == "rewritten\n"
        uploader.stdin.write("done\n")
        uploader.stdin.flush()

    obj = agent.objects.path_of(sha)
    assert obj.read_text() == good
    info = obj.stat()
    assert (info.st_uid, stat.S_IMODE(info.st_mode), info.st_nlink) == (0, 0o444, 1)
    home = Path("/home") / ALICE
    for attack in (
        ["chmod", "666", str(obj)],
        ["ln", str(obj), str(home / "object-link")],
        ["sh", "-c", f'printf x >> "{obj}"'],
    ):
        assert run_as(ALICE, *attack).returncode != 0, attack
    assert obj.read_text() == good

    done = _run(stub, _probing_spec(sha))
    seen = _probe(agent.workspace.dirs(done.id).run, "train")
    assert seen["input_sha256"] == {"/workspace/data/datasets/data.jsonl": sha}


@pytest.mark.parametrize(
    ("then", "refusal"),
    [
        ('&& ln "$0" "$0.kept"', "1 other hard link"),
        ('&& rm "$0" && ln -s "$1" "$0"', "not a symlink"),
        ('&& rm "$0" && mkfifo "$0"', "not a regular file"),
    ],
    ids=["hard-link", "symlink", "fifo"],
)
def test_a_staged_upload_that_is_not_a_plain_file_of_its_own_is_refused(
    shared_agent_config: dict[str, Any], start_agent: Any, then: str, refusal: str
) -> None:
    """A staged upload with a second hard link (the uploader could rewrite it through the
    other name), a symlink (here to a file only root may read: following it would copy that
    file into the store) or a FIFO (reading it would hang the agent) is refused at commit with
    INVALID_ARGUMENT, and no object appears."""
    stub, agent = start_agent(shared_agent_config, ALICE)
    root_only = Path(shared_agent_config["data_root"]).parent / "root-only"
    root_only.write_text("root's own\n")
    root_only.chmod(0o600)
    data = root_only.read_bytes() if "symlink" in refusal else b"staged bytes\n"
    sha = hashlib.sha256(data).hexdigest()
    staged = stub.PrepareUpload(pb.PrepareUploadRequest(sha256=[sha])).missing[0].staging_path
    done = run_as(
        ALICE, "sh", "-c", f'cat > "$0" {then}', staged, str(root_only), input=data.decode()
    )
    assert done.returncode == 0, done.stderr
    with pytest.raises(grpc.RpcError) as refused:
        stub.CommitUpload(pb.CommitUploadRequest(sha256=sha, size=len(data)))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refusal in refused.value.details()
    assert not agent.objects.path_of(sha).exists()
    assert not os.path.lexists(staged), "the refused name is cleared for a fresh upload"


def test_a_pre_created_staging_name_cannot_capture_or_poison_an_upload(
    shared_agent_config: dict[str, Any], start_agent: Any, stub_of: Any
) -> None:
    """Staging is per user: bob can neither create alice's staging directory before she first
    uploads, nor a file in it, nor read her partial upload. His own staging path for the same
    hash is his; poisoned bytes committed from it are refused, and alice's upload stores her
    bytes."""
    stub, agent = start_agent(shared_agent_config, ALICE)
    bob = stub_of(BOB, agent)
    staging = agent.objects.staging
    for attack in (
        ["mkdir", str(staging / ALICE)],
        ["ln", "-s", "/tmp", str(staging / ALICE)],
        ["ls", str(staging)],
    ):
        assert run_as(BOB, *attack).returncode != 0, attack

    good = b'{"text": "alice"}\n'
    sha = hashlib.sha256(good).hexdigest()
    alice_path = Path(
        stub.PrepareUpload(pb.PrepareUploadRequest(sha256=[sha])).missing[0].staging_path
    )
    assert alice_path.parent == staging / ALICE
    owner = alice_path.parent.stat()
    assert (owner.st_uid, stat.S_IMODE(owner.st_mode)) == (_uid(ALICE), 0o700)
    assert run_as(BOB, "sh", "-c", f': > "{alice_path}"').returncode != 0
    half = run_as(ALICE, "sh", "-c", f'printf %s "$0" > "{alice_path}"', good[:5].decode())
    assert half.returncode == 0, half.stderr
    assert run_as(BOB, "cat", str(alice_path)).returncode != 0, "a partial upload stays hers"

    bob_path = bob.PrepareUpload(pb.PrepareUploadRequest(sha256=[sha])).missing[0].staging_path
    assert Path(bob_path).parent == staging / BOB
    poisoned = run_as(BOB, "sh", "-c", f'printf %s "$0" > "{bob_path}"', "poison\n")
    assert poisoned.returncode == 0, poisoned.stderr
    with pytest.raises(grpc.RpcError) as refused:
        bob.CommitUpload(pb.CommitUploadRequest(sha256=sha))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert not agent.objects.path_of(sha).exists()

    _upload(stub, ALICE, good)
    assert agent.objects.path_of(sha).read_bytes() == good


def test_prepared_cache_poisoning_across_users_is_impossible(
    shared_agent_config: dict[str, Any], start_agent: Any, stub_of: Any
) -> None:
    """Alice and bob train on the same dataset, so their jobs' tokenized-data key is the same,
    and alice writes into hers (even asking for another dataset_prepared_path, which the agent
    replaces). Bob's job finds nothing of hers there; it is in his own cache, which her job
    cannot reach. Her own next job does find it: the cache is shared by a user's jobs only."""
    stub, agent = start_agent(shared_agent_config, ALICE)
    bob = stub_of(BOB, agent)
    sha = _upload(stub, ALICE, b'{"text": "shared data"}\n')
    attack = _probing_spec(sha, mark="poisoned by alice", others=[BOB])
    config = yaml.safe_load(attack.config_yaml)
    config["dataset_prepared_path"] = "/workspace/data/huggingface-cache/prepared/bob"
    attack.config_yaml = yaml.safe_dump(config).encode()
    alices = _run(stub, attack)
    bobs = _run(bob, _probing_spec(sha))
    again = _run(stub, _probing_spec(sha))

    def seen(job: Any) -> dict[str, Any]:
        return _probe(agent.workspace.dirs(job.id).run)

    assert seen(alices)["others_caches"] == {BOB: "EACCES"}
    assert seen(bobs)["prepared_found"] == {}
    assert seen(again)["prepared_found"] == {"mark.txt": "poisoned by alice"}
    cache = Path(shared_agent_config["data_root"]) / "cache"
    for user in (ALICE, BOB):
        info = (cache / user / "huggingface").stat()
        assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (_uid(user), 0o700)
    assert not list((cache / BOB).rglob("mark.txt"))
    assert len(list((cache / ALICE).rglob("mark.txt"))) == 1
    poison = cache / BOB / "huggingface" / "prepared" / "poison"
    assert run_as(ALICE, "sh", "-c", f'mkdir -p "{poison.parent}"').returncode != 0


def test_a_shared_hub_cache_is_read_only_to_every_job(
    shared_agent_config: dict[str, Any], start_agent: Any, tmp_path: Path
) -> None:
    """caches.shared_hub: the admin's hub cache is every job's HF_HUB_CACHE, readable and
    read-only, while HF_HOME stays the user's own."""
    hub = tmp_path / "hub"
    hub.mkdir()
    hub.chmod(0o777)  # writable on the host: only the read-only mount stops a job's write
    (hub / "admin.txt").write_text("filled by the admin")
    stub, agent = start_agent({**shared_agent_config, "caches": {"shared_hub": str(hub)}}, ALICE)
    done = _run(stub, _probing_spec())
    seen = _probe(agent.workspace.dirs(done.id).run)
    assert seen["hub"] == {
        "path": "/workspace/data/huggingface-hub-shared",
        "read": "ok",
        "write": "EROFS",
    }
    assert list(hub.iterdir()) == [hub / "admin.txt"]


def test_a_local_job_cannot_reach_another_users_cache(
    local_agent_config: dict[str, Any], start_agent: Any, stub_of: Any
) -> None:
    """On the `local` runtime the caches are host directories side by side: alice's job,
    running as alice, is refused bob's (0700, his), and bob's job finds nothing of hers."""
    stub, agent = start_agent(local_agent_config, ALICE)
    bob = stub_of(BOB, agent)
    sha = _upload(stub, ALICE, b'{"text": "shared data"}\n')
    _run(bob, _probing_spec(sha, mark="bob's own"))
    alices = _run(stub, _probing_spec(sha, mark="poisoned by alice", others=[BOB]))
    bobs = _run(bob, _probing_spec(sha))
    assert _probe(agent.workspace.dirs(alices.id).run)["others_caches"] == {BOB: "EACCES"}
    assert _probe(agent.workspace.dirs(bobs.id).run)["prepared_found"] == {"mark.txt": "bob's own"}


def _uid_without_account() -> int:
    return next(uid for uid in range(61000, 62000) if not _has_account(uid))


def _has_account(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


def test_a_caller_or_job_without_an_account_on_the_host_is_refused_clearly(
    agent_config: dict[str, Any], start_agent: Any, stub_of: Any
) -> None:
    """Jobs run as the login of the uid the kernel gave the agent: a caller whose uid has no
    account on the host may neither stage an upload nor submit (PERMISSION_DENIED, naming the
    uid, nothing stored); a queued job whose account is gone when it starts fails with reason
    `no account` and a hint naming the user."""
    _, agent = start_agent(agent_config)
    uid = _uid_without_account()
    stranger = stub_of(uid, agent)
    for call in (
        lambda: stranger.PrepareUpload(pb.PrepareUploadRequest(sha256=["a" * 64])),
        lambda: stranger.SubmitJob(pb.SubmitJobRequest(spec=spec({}))),
    ):
        with pytest.raises(grpc.RpcError) as refused:
            call()
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert f"uid {uid}" in refused.value.details()
    assert agent.store.list_jobs()[2] == 0
    assert not list(agent.objects.staging.iterdir())

    job, _ = agent.store.submit(JobSpec.from_wire(spec({})), "hatrain-nobody")
    agent.supervisor.wake()
    admin, _ = stub_for(agent.socket)
    done = wait_state(admin, job.id, TERMINAL)
    assert (done.state, done.failure_reason) == (pb.JOB_STATE_FAILED, "no account")
    assert "'hatrain-nobody' has no account on this host" in done.hint


def test_doctor_warns_when_the_data_root_allows_setuid_files_and_devices(tmp_path: Path) -> None:
    """`doctor` warns when the data root's filesystem honours setuid bits and device nodes,
    and not when it is mounted nosuid,nodev."""
    mounted = tmp_path / "nosuid"
    mounted.mkdir()

    def data_root_check(root: Path) -> Any:
        checks = run_checks(AgentConfig(data_root=root))
        return next(c for c in checks if c.name == "data root mount")

    plain = data_root_check(tmp_path / "plain")
    assert plain.ok and plain.warn and "without nosuid,nodev" in plain.detail
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "nosuid,nodev,size=8m", "tmpfs", str(mounted)], check=True
    )
    try:
        safe = data_root_check(mounted)
    finally:
        subprocess.run(["umount", str(mounted)], check=True)
    assert safe.ok and not safe.warn, safe.detail
