"""hatrain-client against a real sshd on loopback, a real agent and a real dockerd.

The agent runs the stand-in `axolotl` (tests/support/standin_axolotl.py) that replays real Axolotl
output; what is under test here is the client: analysis, upload, rewrite, exit codes.
"""

import hashlib
import shutil
from pathlib import Path
from typing import Any

import yaml
from hatrain.rpc.v1 import agent_pb2 as pb

from tests.support.harness import all_events, poll, wait_state

DEMO = Path(__file__).resolve().parent.parent / "configs" / "demo"


def make_project(root: Path, standin: dict[str, Any] | None = None) -> Path:
    """A fine-tuning checkout as users have it: the config uses the seed's container path."""
    (root / "train" / "configs").mkdir(parents=True)
    (root / "train" / "chat_templates").mkdir(parents=True)
    (root / "data" / "output").mkdir(parents=True)
    shutil.copy(DEMO / "sample.jsonl", root / "data" / "output" / "sample.jsonl")
    shutil.copy(DEMO / "chat_template.jinja", root / "train" / "chat_templates" / "chat.jinja")
    write_config(root, standin or {})
    return root


def write_config(root: Path, standin: dict[str, Any], **changes: Any) -> Path:
    config = {
        "base_model": "google/gemma-3-270m-it",
        "chat_template": "jinja",
        "chat_template_jinja": "../chat_templates/chat.jinja",
        "datasets": [
            {
                "path": "/workspace/data/datasets/sample.jsonl",
                "ds_type": "json",
                "type": "chat_template",
                "message_field_training": "train_on_turn",
            }
        ],
        "dataset_prepared_path": "/workspace/data/last_run_prepared",
        "output_dir": "/workspace/data/training-runs/mini",
        "hatrain_standin": standin,
        **changes,
    }
    path = root / "train" / "configs" / "mini.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def host_config(data_root: Path, job_id: str) -> dict[str, Any]:
    path = data_root / "jobs" / job_id / "configs" / "mini.yml"
    loaded: dict[str, Any] = yaml.safe_load(path.read_text())
    return loaded


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_submit_uploads_rewrites_and_wait_mirrors_the_exit_code(
    agent_config: dict[str, Any], start_agent: Any, client_for: Any, tmp_path: Path
) -> None:
    """submit finds the seed-style container dataset in data/output/ and the template beside the
    config, uploads both, rewrites the paths, and `wait` returns the job's own exit code."""
    _stub, agent = start_agent(agent_config)
    client = client_for(agent.socket)
    project = make_project(tmp_path / "project")
    data_root = Path(agent_config["data_root"])

    submitted = client.json("submit", "train/configs/mini.yml", "--detach", cwd=project)
    assert submitted["state"] == "queued" and submitted["user"] == client_user()
    assert submitted["upload"]["files_sent"] == 2
    done = client.run("wait", submitted["id"])
    assert done.returncode == 0, done.stderr
    assert "succeeded" in done.stdout

    config = host_config(data_root, submitted["id"])
    assert config["datasets"][0]["path"] == "/workspace/data/datasets/sample.jsonl"
    assert config["chat_template_jinja"] == "/workspace/data/datasets/chat.jinja"
    assert config["output_dir"] == "/workspace/data/training-runs/mini"
    assert config["dataset_prepared_path"].startswith("/workspace/data/huggingface-cache/prepared/")
    assert config["base_model"] == "google/gemma-3-270m-it"  # a hub id is left alone
    on_host = data_root / "jobs" / submitted["id"] / "datasets" / "sample.jsonl"
    assert sha256(on_host) == sha256(project / "data" / "output" / "sample.jsonl")

    write_config(project, {"exit_train": 3})
    failing = client.json("submit", "train/configs/mini.yml", "--detach", cwd=project)
    waited = client.run("wait", failing["id"], "--json")
    assert waited.returncode == 3, waited.stderr
    assert '"state": "failed"' in waited.stdout
    status = client.json("status", failing["id"])
    assert status["exit_code"] == 3 and status["state"] == "failed"


def client_user() -> str:
    import os

    return os.environ.get("USER") or "root"


def test_resubmitting_sends_nothing_and_a_changed_byte_changes_the_prepared_path(
    agent_config: dict[str, Any], start_agent: Any, client_for: Any, tmp_path: Path
) -> None:
    """Content addressing: an unchanged dataset is not sent again; one changed byte is, and the
    job gets a different dataset_prepared_path so Axolotl cannot reuse a stale tokenized cache."""
    stub, agent = start_agent(agent_config)
    client = client_for(agent.socket)
    project = make_project(tmp_path / "project")
    dataset = project / "data" / "output" / "sample.jsonl"
    data_root = Path(agent_config["data_root"])

    first = client.json("submit", "train/configs/mini.yml", "--detach", cwd=project)
    again = client.json("submit", "train/configs/mini.yml", "--detach", cwd=project)
    assert again["upload"]["bytes_sent"] == 0
    assert again["upload"]["files_present"] == 2

    text = dataset.read_text()
    dataset.write_text(text.replace("Turn off", "Turn 0ff", 1))
    changed = client.json("submit", "train/configs/mini.yml", "--detach", cwd=project)
    assert changed["upload"]["bytes_sent"] == dataset.stat().st_size
    assert changed["upload"]["files_sent"] == 1

    for job in (first, again, changed):  # a job's config is laid out when it starts
        wait_state(stub, job["id"], {pb.JOB_STATE_SUCCEEDED})
    prepared = [
        host_config(data_root, j["id"])["dataset_prepared_path"] for j in (first, again, changed)
    ]
    assert prepared[0] == prepared[1] != prepared[2]


def test_a_dropped_connection_mid_upload_resumes_and_never_shows_a_partial_object(
    agent_config: dict[str, Any], start_agent: Any, client_for: Any, sshd: Any, tmp_path: Path
) -> None:
    """Kill the client's SSH connection (its sshd session process) during a 200 MB upload: the
    next submit sends only the rest, and the object store only ever holds the verified whole."""
    stub, agent = start_agent(agent_config)
    client = client_for(agent.socket)
    project = make_project(tmp_path / "project")
    big = project / "data" / "output" / "big.bin"
    with big.open("wb") as fh:
        block = hashlib.sha256(b"seed").digest() * 32768  # 1 MiB, varied per chunk below
        for i in range(200):
            fh.write(bytes([i]) + block[1:])
    size = big.stat().st_size
    digest = sha256(big)
    write_config(
        project,
        {},
        datasets=[{"path": "../../data/output/big.bin", "type": "completion"}],
    )
    data_root = Path(agent_config["data_root"])
    staged = data_root / "objects" / "staging" / client_user() / f"{digest}.part"
    final = data_root / "objects" / "sha256" / digest[:2] / digest

    before = set(sshd.session_pids())
    proc = client.start("submit", "train/configs/mini.yml", "--detach", "--json", cwd=project)
    poll(lambda: staged.exists() and staged.stat().st_size > 20 * 2**20, 60, "upload under way")
    for pid in set(sshd.session_pids()) - before:
        import os
        import signal

        os.kill(pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 69, (out, err)
    assert "lost" in err and "again" in err and "Traceback" not in err
    assert not final.exists()
    partial = staged.stat().st_size
    assert 0 < partial < size
    assert stub.ListJobs(pb.ListJobsRequest()).total == 0

    resumed = client.json("submit", "train/configs/mini.yml", "--detach", cwd=project)
    assert resumed["upload"]["bytes_resumed"] == partial
    assert resumed["upload"]["bytes_sent"] == size - partial
    assert sha256(final) == digest and not staged.exists()


def test_ctrl_c_detaches_and_watch_shows_every_event(
    agent_config: dict[str, Any], start_agent: Any, client_for: Any, tmp_path: Path
) -> None:
    """Ctrl-C while following leaves the job running and says how to re-attach; `watch`
    re-attaches and prints every one of the job's events, in order."""
    stub, agent = start_agent(agent_config)
    client = client_for(agent.socket)
    project = make_project(tmp_path / "project", {"hold_train": "release"})
    proc = client.start("submit", "train/configs/mini.yml", "--follow", cwd=project)
    job = poll(lambda: next(iter(stub.ListJobs(pb.ListJobsRequest()).jobs), None), 60, "the job")
    wait_state(stub, job.id, {pb.JOB_STATE_TRAINING})
    code, out, err = client.interrupt(proc)
    assert code == 130, (out, err)
    assert f"hatrain-client watch {job.id}" in err
    assert "[queued]" in out and "[preprocessing]" in out  # it was following
    assert stub.GetJob(pb.GetJobRequest(job_id=job.id)).state == pb.JOB_STATE_TRAINING

    (Path(agent_config["data_root"]) / "jobs" / job.id / "run" / "release").touch()
    watched = client.run("watch", job.id, "--json")
    assert watched.returncode == 0, watched.stderr
    import json

    seqs = [json.loads(line)["seq"] for line in watched.stdout.splitlines()]
    assert seqs == [int(e.seq) for e in all_events(stub, job.id)]
    assert seqs == list(range(1, len(seqs) + 1))
