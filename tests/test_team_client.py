"""The client and the team queue: the real `hatrain-client` over a real sshd, three agents in one
team. A job submitted with --team-queue is uploaded to the default host only, starts where GPUs
are free, and every verb finds it by its id alone."""

from collections.abc import Callable
from pathlib import Path

import yaml

from tests.support.client import ClientRunner, host_entry
from tests.support.harness import poll
from tests.support.sshd import SshServer
from tests.support.team import Team, held
from tests.test_client_submit import make_project
from tests.test_team_queue import make_team  # noqa: F401 (a fixture)


def test_client_submits_to_the_team_and_finds_the_job_by_id(
    make_team: Callable[..., Team],  # noqa: F811
    sshd: SshServer,
    tmp_path: Path,
) -> None:
    """gpu1 (the default host) is busy: `submit --team-queue` uploads there and the job starts
    on another host with its data; status, queue, logs and cancel find it without --host;
    `hosts` shows every team host's heartbeat age. Jobs still waiting in the team queue (in no
    host's store yet) are found by a unique prefix of their id; an ambiguous prefix is refused
    listing the jobs it begins, an unknown one saying no job has it."""
    team = make_team()
    gpu1 = team["gpu1"]
    blocker = gpu1.submit(held(gpus=2, host="gpu1"))
    team.wait_row(blocker.id, "training", state="running", local_state="training")
    client = ClientRunner.configure(tmp_path / "client", sshd, gpu1.socket)
    settings = yaml.safe_load(client.config.read_text())
    settings["hosts"] = {
        name: host_entry("hatrain-test", host.socket) for name, host in team.hosts.items()
    }
    client.config.write_text(yaml.safe_dump(settings))
    project = make_project(tmp_path / "project", {"hold_train": "go"})

    job = client.json(
        "submit", "train/configs/mini.yml", "--team-queue", "--gpus", "1", "--detach", cwd=project
    )
    row = team.wait_row(job["id"], "training", state="running", local_state="training")
    where = row["host"]
    assert where in {"gpu2", "gpu3"}
    dataset = team[where].data_root / "jobs" / job["id"] / "datasets" / "sample.jsonl"
    assert dataset.read_bytes() == (project / "data" / "output" / "sample.jsonl").read_bytes()

    status = client.json("status", job["id"])
    assert (status["host"], status["state"], status["team_host"]) == (where, "training", where)
    listed = [j for j in client.json("queue", "--team-queue")["jobs"] if j["id"] == job["id"]]
    assert [(j["host"], j["state"]) for j in listed] == [(where, "training")]
    shown = client.run("status", job["id"])
    assert shown.returncode == 0 and f"job {job['id']} on {where}: training" in shown.stdout
    lines = client.run("logs", job["id"])
    assert lines.returncode == 0, lines.stderr

    hosts = client.run("hosts")
    assert hosts.returncode == 0, hosts.stderr
    team_rows = [line.split() for line in hosts.stdout.splitlines() if " ago" in line]
    assert sorted(r[0] for r in team_rows) == ["gpu1", "gpu2", "gpu3"], hosts.stdout
    assert all(r[1] == "up" and float(r[2]) < 10 for r in team_rows), hosts.stdout

    cancelled = client.run("cancel", job["id"], "--wait")
    assert cancelled.returncode == 130, cancelled.stderr  # the exit status of a cancelled job
    assert cancelled.stdout.strip() == f"job {job['id']}: cancelled"
    poll(lambda: team.row(job["id"])["state"] == "cancelled", 60, "the team to see it cancelled")

    # Seventeen jobs wait for gpu1: two of them at least share a first character.
    waiting = [gpu1.submit(held(host="gpu1")).id for _ in range(17)]
    for job_id in waiting:
        team.wait_row(job_id, "queued", state="queued")
    ids = [row[0] for row in team.sql("SELECT id FROM team_jobs")]

    def unique_prefix(job_id: str) -> str:
        return next(
            job_id[:n]
            for n in range(4, len(job_id) + 1)
            if [i for i in ids if i.startswith(job_id[:n])] == [job_id]
        )

    first = waiting[0]
    status = client.json("status", unique_prefix(first))
    assert (status["id"], status["state"]) == (first, "queued")
    cancelled = client.run("cancel", unique_prefix(first))
    assert cancelled.returncode == 0, cancelled.stderr
    assert first in cancelled.stdout
    assert team.row(first)["state"] == "cancelled"

    shared = next(c for c in "0123456789abcdef" if sum(i.startswith(c) for i in waiting) >= 2)
    ambiguous = client.run("status", shared)
    assert ambiguous.returncode != 0
    assert f"job id '{shared}' is ambiguous" in ambiguous.stderr, ambiguous.stderr
    assert sum(i in ambiguous.stderr for i in ids if i.startswith(shared)) >= 2, ambiguous.stderr

    unknown = next(
        p for p in (f"{n:04x}" for n in range(65536)) if not any(i.startswith(p) for i in ids)
    )
    missing = client.run("status", unknown)
    assert missing.returncode != 0
    assert f"no job '{unknown}'" in missing.stderr, missing.stderr
