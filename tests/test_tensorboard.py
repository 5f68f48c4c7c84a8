"""`hatrain-client tensorboard`: TensorBoard over a real run's events, as the user, through SSH.

A real Axolotl 0.19 CPU run (the `local` runtime) with `use_tensorboard: true`; the client,
a real process, forwards a local port to TensorBoard on the host over its SSH login.
"""

import json
import os
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from hatrain.rpc.v1 import agent_pb2 as pb

from tests.support.client import ClientRunner
from tests.support.harness import poll
from tests.support.real_agent import local_axolotl_agent_config
from tests.support.sshd import start_sshd
from tests.support.users import ALICE, BOB, channel_as, stub_as
from tests.test_client_submit import make_project
from tests.test_end_to_end import demo_checkout
from tests.test_identity import Team, accounts, submitted, team

__all__ = ["accounts", "team"]  # fixtures

REPO = Path(__file__).resolve().parent.parent
LOSS = "train/loss"


def artifacts_dir() -> Path:
    """Where tests leave what a person looks at: $HATRAIN_ARTIFACTS, else tests/artifacts."""
    path = Path(os.environ.get("HATRAIN_ARTIFACTS") or REPO / "tests" / "artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as answer:
        return json.loads(answer.read())


def loss_points(base: str) -> dict[str, list[tuple[int, float]]]:
    """Every run's train/loss points as TensorBoard's own data API gives them: run -> (step,
    value)."""
    tags = get_json(base + "data/plugin/scalars/tags")
    points = {}
    for run, run_tags in tags.items():
        if LOSS in run_tags:
            query = urllib.parse.urlencode({"run": run, "tag": LOSS})
            rows = get_json(f"{base}data/plugin/scalars/scalars?{query}")
            points[run] = [(int(step), float(value)) for _, step, value in rows]
    return points


def screenshot(url: str, out: Path) -> None:
    chromium = shutil.which("chromium")
    assert chromium, "chromium is missing: scripts/setup-host.sh installs it"
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1400,1000",
            "--virtual-time-budget=20000",
            f"--screenshot={out}",
            url,
        ],
        capture_output=True,
        timeout=180,
        check=True,
    )


def drawn_fraction(png: Path) -> float:
    """The share of the picture that is not background white."""
    from matplotlib import image

    pixels = image.imread(str(png))[:, :, :3]
    return float((pixels.sum(axis=2) < 2.9).mean())


def test_tensorboard_serves_a_running_jobs_events_as_the_user(
    start_agent: Any, client_for: Any, axolotl_venv: Path, tiny_model: Path, tmp_path: Path
) -> None:
    """While the job trains, `hatrain-client tensorboard JOB` answers on its forwarded port and
    lists the job's run; once it ends, TensorBoard's scalars API gives exactly the loss points of
    trainer_state.json, a headless Chromium screenshot of the scalars page shows the curve
    (saved as an artifact), and ending the client stops TensorBoard on the host."""
    config = local_axolotl_agent_config(tmp_path / "data", axolotl_venv)
    config["tensorboard"] = {"venv": str(axolotl_venv)}
    _, agent = start_agent(config)
    client: ClientRunner = client_for(agent.socket)
    checkout = demo_checkout(tmp_path / "checkout", tiny_model)
    demo = checkout / "configs" / "demo" / "tiny-llama-cpu.yml"
    axolotl = yaml.safe_load(demo.read_text())
    axolotl["use_tensorboard"] = True
    demo.write_text(yaml.safe_dump(axolotl))

    job = client.json("submit", "configs/demo/tiny-llama-cpu.yml", "--detach", cwd=checkout)
    poll(
        lambda: client.json("status", job["id"])["state"] == "training",
        600,
        "the job to train",
        every=0.2,
    )
    served = client.start("tensorboard", job["id"], "--json")
    try:
        assert served.stdout is not None
        said = json.loads(served.stdout.readline() or "null")
        assert said, served.stderr.read() if served.stderr else ""
        base = said["url"]
        assert [r["job_id"] for r in said["runs"]] == [job["id"]]
        host_socket = Path(said["host_socket"])
        assert host_socket.stat().st_uid == os.getuid()
        assert (host_socket.parent.stat().st_mode & 0o777) == 0o700

        assert "TensorBoard" in urllib.request.urlopen(base, timeout=30).read().decode()
        # The events file appears when the Trainer starts (its points come as its writer
        # flushes them): TensorBoard lists the job's run while the job is still training.
        listed = poll(lambda: get_json(base + "data/runs"), 120, "the job's run in TensorBoard")
        assert all(run.startswith(job["id"] + "/") for run in listed), listed
        assert client.json("status", job["id"])["state"] == "training"
        waited = client.run("wait", job["id"], timeout=600)
        assert waited.returncode == 0, client.run("logs", job["id"]).stdout[-3000:]

        run_dir = Path(client.json("status", job["id"])["run_dir"])
        state = json.loads(next(run_dir.glob("**/checkpoint-*/trainer_state.json")).read_text())
        want = [(h["step"], h["loss"]) for h in state["log_history"] if "loss" in h]
        assert len(want) == state["max_steps"] == 20

        def all_points() -> list[tuple[int, float]] | None:
            points = loss_points(base)
            runs = [p for p in points.values() if len(p) == len(want)]
            return runs[0] if len(points) == 1 and runs else None

        got = poll(all_points, 120, "TensorBoard to show every loss point", every=1)
        assert [step for step, _ in got] == [step for step, _ in want]
        for (_, value), (_, expected) in zip(got, want, strict=True):
            assert abs(value - expected) <= 1e-5 * max(1.0, abs(expected))

        png = artifacts_dir() / "tensorboard-scalars.png"
        screenshot(base + "?darkMode=false#scalars&tagFilter=train%2Floss&_smoothingWeight=0", png)
        print(f"screenshot of TensorBoard's scalars page: {png}")
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert drawn_fraction(png) > 0.02, f"{png} is (nearly) blank"
    finally:
        code, _, err = ClientRunner.interrupt(served)
    assert code in (0, 130), err
    assert "Traceback" not in err, err
    poll(lambda: not host_socket.parent.exists(), 30, "TensorBoard on the host to stop")


def test_tensorboard_shows_only_jobs_the_caller_may_read(team: Team) -> None:
    """The plan `hatrain-agent tensorboard` asks for follows the read rules, by the kernel's
    word: bob is refused alice's job (naming it), has none of his own for --mine, and where no
    TensorBoard is configured alice is told which agent.yml field to set."""
    job_id = submitted(team, ALICE)["id"]
    with channel_as(BOB, team.agent.socket) as channel:
        bob = stub_as(channel)
        with pytest.raises(grpc.RpcError) as denied:
            bob.PlanTensorBoard(pb.PlanTensorBoardRequest(job_ids=[job_id]), timeout=30)
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert f"job {job_id} belongs to {ALICE}" in (denied.value.details() or "")
        with pytest.raises(grpc.RpcError) as none:
            bob.PlanTensorBoard(pb.PlanTensorBoardRequest(mine=True), timeout=30)
        assert none.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with channel_as(ALICE, team.agent.socket) as channel:
        with pytest.raises(grpc.RpcError) as unset:
            stub_as(channel).PlanTensorBoard(pb.PlanTensorBoardRequest(mine=True), timeout=30)
        assert unset.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "tensorboard.venv" in (unset.value.details() or "")


def test_doctor_checks_the_tensorboard_venv(axolotl_venv: Path, tmp_path: Path) -> None:
    """doctor's tensorboard line: the named venv's TensorBoard version; a named venv without
    TensorBoard fails with the fix; no venv at all only says the command is unavailable."""
    from hatrain.agent.config import AgentConfig
    from hatrain.agent.doctor import tensorboard_check

    found = tensorboard_check(AgentConfig.model_validate({"tensorboard": {"venv": axolotl_venv}}))
    assert found.ok and found.detail.startswith("TensorBoard 2."), found
    bare = tmp_path / "bare-venv"
    subprocess.run(["python3", "-m", "venv", "--without-pip", str(bare)], check=True)
    missing = tensorboard_check(AgentConfig.model_validate({"tensorboard": {"venv": bare}}))
    assert not missing.ok and "cannot import tensorboard" in missing.detail, missing
    assert "pip install tensorboard" in missing.detail
    unset = tensorboard_check(AgentConfig.model_validate({"runtime": "docker"}))
    assert unset.ok and "tensorboard.venv: not set" in unset.detail, unset


def test_tensorboard_through_the_bridge_where_the_host_forwards_nothing(
    local_agent_config: dict[str, Any],
    start_agent: Any,
    axolotl_venv: Path,
    tmp_path: Path,
) -> None:
    """Where sshd forbids forwarding to sockets, each browser connection reaches TensorBoard
    through `hatrain-agent bridge` run as the login; the page and the data API answer, and
    ending the client still stops TensorBoard on the host."""
    _, agent = start_agent({**local_agent_config, "tensorboard": {"venv": str(axolotl_venv)}})
    strict = start_sshd(tmp_path / "strict-sshd", extra_config="AllowStreamLocalForwarding no")
    try:
        client = ClientRunner.configure(tmp_path / "client", strict, agent.socket)
        project = make_project(tmp_path / "project", {"hold_train": "go"})
        job = client.json("submit", "train/configs/mini.yml", "--detach", cwd=project)
        served = client.start("tensorboard", "--mine", "--json")
        try:
            assert served.stdout is not None
            said = json.loads(served.stdout.readline() or "null")
            assert said, served.stderr.read() if served.stderr else ""
            assert [r["job_id"] for r in said["runs"]] == [job["id"]]
            page = urllib.request.urlopen(said["url"], timeout=60).read().decode()
            assert "TensorBoard" in page
            assert isinstance(get_json(said["url"] + "data/runs"), list)
        finally:
            code, _, err = ClientRunner.interrupt(served)
            (agent.workspace.dirs(job["id"]).run / "go").touch()
        assert code in (0, 130) and "Traceback" not in err, err
        host_dir = Path(said["host_socket"]).parent
        poll(lambda: not host_dir.exists(), 30, "TensorBoard on the host to stop")
    finally:
        strict.stop()


def test_tensorboard_stops_when_the_client_is_killed(
    local_agent_config: dict[str, Any],
    start_agent: Any,
    client_for: Any,
    axolotl_venv: Path,
    tmp_path: Path,
) -> None:
    """A client killed outright (SIGKILL: no cleanup of its own) drops its SSH connection; sshd
    ends the session, and TensorBoard on the host stops and its directory goes."""
    _, agent = start_agent({**local_agent_config, "tensorboard": {"venv": str(axolotl_venv)}})
    client: ClientRunner = client_for(agent.socket)
    project = make_project(tmp_path / "project", {})
    job = client.json("submit", "train/configs/mini.yml", "--detach", cwd=project)
    served = client.start("tensorboard", job["id"][:6], "--json")
    assert served.stdout is not None
    said = json.loads(served.stdout.readline() or "null")
    assert said, served.stderr.read() if served.stderr else ""
    assert [r["job_id"] for r in said["runs"]] == [job["id"]]  # a prefix names the job
    assert "TensorBoard" in urllib.request.urlopen(said["url"], timeout=60).read().decode()
    host_dir = Path(said["host_socket"]).parent
    served.kill()
    served.communicate(timeout=30)
    poll(lambda: not host_dir.exists(), 30, "TensorBoard on the host to stop")


def test_a_host_without_tensorboard_says_what_to_set(
    local_agent_config: dict[str, Any], start_agent: Any, client_for: Any, tmp_path: Path
) -> None:
    """Where agent.yml names no TensorBoard (and the local venv has no Python), the client
    fails with the agent's reason naming `tensorboard.venv`, and no traceback."""
    _, agent = start_agent(local_agent_config)
    client: ClientRunner = client_for(agent.socket)
    job = client.json("submit", "train/configs/mini.yml", "--detach", cwd=make_project(tmp_path))
    refused = client.run("tensorboard", job["id"], timeout=120)
    assert refused.returncode == 65, (refused.stdout, refused.stderr)
    assert "tensorboard.venv" in refused.stderr and "Traceback" not in refused.stderr
