"""The other verbs against real agents through a real sshd: several hosts, fetch, cancel, retry.

Jobs run the stand-in `axolotl` (tests/support/standin_axolotl.py) replaying real Axolotl output.
"""

import json
from pathlib import Path
from typing import Any

import yaml
from hatrain.rpc.v1 import agent_pb2 as pb

from tests.support.client import host_entry
from tests.support.harness import poll, socket_path, wait_state
from tests.support.sshd import keygen
from tests.test_client_submit import make_project


def test_several_hosts_queue_hosts_and_auto_placement(
    agent_config: dict[str, Any],
    start_agent: Any,
    client_for: Any,
    tmp_path: Path,
) -> None:
    """`queue` and `hosts` merge every host and name the one that is down; `--host auto` sends
    a job to the host where it can start soonest."""
    busy_config = {
        **agent_config,
        "data_root": str(tmp_path / "busy"),
        "listen": str(socket_path()),
        "scheduler": {"max_cpu_jobs": 1},
    }
    busy_stub, busy = start_agent(busy_config)
    _, idle = start_agent(agent_config)
    client = client_for(busy.socket)
    settings = yaml.safe_load(client.config.read_text())
    settings["hosts"] = {
        "busy": host_entry("hatrain-test", busy.socket),
        "idle": host_entry("hatrain-test", idle.socket),
        "down": host_entry("hatrain-test", socket_path()),
    }
    settings["default_host"] = "busy"
    client.config.write_text(yaml.safe_dump(settings))
    project = make_project(tmp_path / "project", {"hold_train": "never"})

    held = client.json(
        "submit", "train/configs/mini.yml", "--detach", "--host", "busy", cwd=project
    )
    wait_state(busy_stub, held["id"], {pb.JOB_STATE_TRAINING})
    waiting = client.json(
        "submit", "train/configs/mini.yml", "--detach", "--host", "busy", cwd=project
    )
    auto = client.json(
        "submit", "train/configs/mini.yml", "--detach", "--host", "auto", cwd=project
    )
    assert auto["host"] == "idle"

    listed = client.run("queue", "--json")
    assert listed.returncode == 69, listed.stderr  # one host did not answer
    data = json.loads(listed.stdout)
    rows = {(j["host"], j["id"]): j["state"] for j in data["jobs"]}
    assert rows[("busy", held["id"])] == "training"
    assert rows[("busy", waiting["id"])] == "queued"
    assert ("idle", auto["id"]) in rows
    assert [(e["host"], e["status"]) for e in data["errors"]] == [("down", "agent down")]
    assert "down: no hatrain agent is listening" in listed.stderr

    hosts = client.run("hosts", "--json")
    by_host = {h["host"]: h for h in json.loads(hosts.stdout)}
    assert by_host["busy"]["queue"]["running"] == 1 and by_host["busy"]["queue"]["queued"] == 1
    assert "no hatrain agent" in by_host["down"]["error"]

    cancelled = client.json("cancel", held["id"], "--host", "busy")
    assert cancelled["id"] == held["id"]
    assert cancelled["outcome"].startswith(f"job {held['id']}: cancel requested")
    assert wait_state(busy_stub, held["id"], {pb.JOB_STATE_CANCELLED})
    assert client.run("wait", held["id"], "--host", "busy").returncode == 130


def test_fetch_resumes_a_partial_download_and_retry_resubmits(
    agent_config: dict[str, Any], start_agent: Any, client_for: Any, tmp_path: Path
) -> None:
    stub, agent = start_agent(agent_config)
    client = client_for(agent.socket)
    project = make_project(tmp_path / "project")
    job = client.json("submit", "train/configs/mini.yml", "--detach", cwd=project)
    assert client.run("wait", job["id"]).returncode == 0
    run = Path(agent_config["data_root"]) / "jobs" / job["id"] / "run"
    (run / "mini").mkdir(parents=True, exist_ok=True)
    payload = bytes(range(256)) * 4096  # 1 MiB
    (run / "mini" / "weights.bin").write_bytes(payload)
    (run / "mini" / "notes.txt").write_text("skip me")

    dest = tmp_path / "fetched"
    (dest / "mini").mkdir(parents=True)
    (dest / "mini" / "weights.bin.part").write_bytes(payload[:300_000])  # an interrupted fetch
    fetched = client.json("fetch", job["id"], str(dest), "--exclude", "*.txt")
    assert (dest / "mini" / "weights.bin").read_bytes() == payload
    assert not (dest / "mini" / "weights.bin.part").exists()
    assert not (dest / "mini" / "notes.txt").exists()
    assert fetched["bytes_fetched"] == len(payload) - 300_000

    retried = client.json("retry", job["id"])
    assert retried["id"] != job["id"]
    assert wait_state(stub, retried["id"], {pb.JOB_STATE_SUCCEEDED})
    again = stub.GetJob(pb.GetJobRequest(job_id=retried["id"]))
    assert again.spec.retry_of == job["id"]
    tail = client.run("logs", retried["id"], "--tail", "2")
    assert tail.stdout.splitlines()[0] == "==> train <==" and len(tail.stdout.splitlines()) == 3


def test_proxyjump_and_a_refused_key(
    agent_config: dict[str, Any], start_agent: Any, client_for: Any, sshd: Any, tmp_path: Path
) -> None:
    """~/.ssh/config's ProxyJump is honoured (here the jump host is the same sshd); a key the
    host does not accept is one line with the fix, exit 77."""
    _, agent = start_agent(agent_config)
    client = client_for(agent.socket)
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text(
        sshd.ssh_config.read_text()
        + f"Host behind-jump\n  HostName 127.0.0.1\n  Port {sshd.port}\n  User {sshd.user}\n"
        f"  IdentityFile {sshd.user_key}\n  ProxyJump hatrain-test\n"
        f"Host wrong-key\n  HostName 127.0.0.1\n  Port {sshd.port}\n  User {sshd.user}\n"
        f"  IdentityFile {tmp_path / 'stranger'}\n"
    )
    keygen(tmp_path / "stranger")
    settings = yaml.safe_load(client.config.read_text())
    settings["ssh_config"] = str(ssh_config)
    settings["hosts"] = {
        "jumped": host_entry("behind-jump", agent.socket),
        "refused": host_entry("wrong-key", agent.socket),
    }
    settings["default_host"] = "jumped"
    client.config.write_text(yaml.safe_dump(settings))
    hosts = client.run("hosts", "--host", "jumped", "--json")
    assert hosts.returncode == 0, hosts.stderr
    assert json.loads(hosts.stdout)[0]["runtime"] == "docker"

    refused = client.run("status", "nope", "--host", "refused")
    assert refused.returncode == 77
    assert refused.stderr.startswith(f"error: SSH login as {sshd.user} to wrong-key was refused")
    assert "fix:" in refused.stderr and "Traceback" not in refused.stderr


def test_a_shared_connection_serves_later_commands(
    agent_config: dict[str, Any], start_agent: Any, client_for: Any, sshd: Any
) -> None:
    """After a command has logged in, a background process keeps the host's SSH connection (like
    OpenSSH's ControlPersist): later commands go through it without a new SSH login, and it ends
    once idle for keep_connection_seconds."""
    _, agent = start_agent(agent_config)
    client = client_for(agent.socket, keep_connection_seconds=3)
    before = set(sshd.session_pids())
    assert client.run("hosts").returncode == 0
    shared = poll(lambda: list(client.runtime_dir.glob("hatrain-*/*.json")), 30, "the shared one")
    info = json.loads(shared[0].read_text())
    kept = poll(
        lambda: (lambda s: s if len(s) == 1 else None)(set(sshd.session_pids()) - before),
        30,
        "only the shared connection to stay logged in",
    )
    for _ in range(3):
        listed = client.run("queue", "--json")
        assert listed.returncode == 0, listed.stderr
        assert set(sshd.session_pids()) - before == kept  # no new SSH login
    status = client.run("status", "nope")
    assert status.returncode == 65 and "no job 'nope'" in status.stderr  # errors come through it
    poll(lambda: not shared[0].exists(), 30, "the idle shared connection to end")
    poll(lambda: not Path(f"/proc/{info['pid']}").exists(), 30, "its process to exit")


def test_cancel_says_what_it_did_and_a_job_that_never_ran_has_nothing_to_fetch(
    agent_config: dict[str, Any], start_agent: Any, client_for: Any, tmp_path: Path
) -> None:
    """`cancel` of a running job says the cancel was requested (not the job's state), and with
    --wait waits for the end and exits 130. A job cancelled while queued: `cancel` says it never
    ran, and `fetch` and `plot` say so too instead of blaming the connection."""
    stub, agent = start_agent({**agent_config, "scheduler": {"max_cpu_jobs": 1}})
    client = client_for(agent.socket)
    project = make_project(tmp_path / "project", {"hold_train": "never"})
    running = client.json("submit", "train/configs/mini.yml", "--detach", cwd=project)
    wait_state(stub, running["id"], {pb.JOB_STATE_TRAINING})
    queued = client.json("submit", "train/configs/mini.yml", "--detach", cwd=project)

    cancelled = client.run("cancel", queued["id"])
    assert cancelled.returncode == 0, cancelled.stderr
    assert "cancelled while queued; it never ran" in cancelled.stdout
    fetched = client.run("fetch", queued["id"], str(tmp_path / "out"))
    assert fetched.returncode == 65
    assert "was cancelled before it started: it has no outputs to fetch" in fetched.stderr
    assert "connection" not in fetched.stderr
    plotted = client.run("plot", queued["id"])
    assert plotted.returncode == 65
    assert "was cancelled before it started" in plotted.stderr

    stopped = client.run("cancel", running["id"], "--wait")
    assert stopped.returncode == 130, stopped.stderr
    assert f"job {running['id']}: cancelled" in stopped.stdout
    again = client.run("cancel", running["id"])
    assert "not cancelled: it had already cancelled" in again.stdout
