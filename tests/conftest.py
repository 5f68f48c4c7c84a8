"""Fixtures: a real dockerd, a test image, real Axolotl output, agents on real gRPC servers.

`make test` (scripts/setup-host.sh) installs and starts what is needed; a missing prerequisite
fails loudly here instead of skipping.
"""

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import grpc
import pytest
import yaml
from hatrain.agent.config import AgentConfig
from hatrain.agent.server import Agent, configure_logging

from tests.support.client import ClientRunner
from tests.support.harness import TEST_USER, kill_processes_naming, socket_path
from tests.support.images import ensure_test_image, python_mounts
from tests.support.sshd import SshServer, start_sshd
from tests.support.users import ALICE, BOB, channel_as, ensure_user, reachable_dir, stub_as

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("HATRAIN_CACHE", Path.home() / ".cache" / "hatrain"))
AXOLOTL_VENV = Path(os.environ.get("HATRAIN_AXOLOTL_VENV", CACHE / "axolotl-venv"))
DEMO = REPO / "configs" / "demo"


def _fail_setup(what: str) -> None:
    pytest.fail(f"{what}: run `make test` (scripts/setup-host.sh sets it up)", pytrace=False)


@pytest.fixture(scope="session", autouse=True)
def _logging() -> None:
    configure_logging("console")


@pytest.fixture(scope="session", autouse=True)
def test_accounts() -> None:
    """The ordinary accounts the tests submit jobs as (jobs run as their user's account)."""
    for name in (ALICE, BOB):
        ensure_user(name)


@pytest.fixture(scope="session")
def docker_client() -> docker.DockerClient:
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except Exception as exc:
        _fail_setup(f"no Docker engine ({exc})")
    return client


@pytest.fixture(scope="session")
def test_image(docker_client: docker.DockerClient) -> str:
    """A minimal image (busybox) from a root filesystem tarball; the host's Python is mounted in."""
    return ensure_test_image(docker_client)


@pytest.fixture(scope="session")
def axolotl_venv() -> Path:
    if not (AXOLOTL_VENV / "bin" / "axolotl").exists():
        _fail_setup(f"Axolotl is not installed in {AXOLOTL_VENV}")
    return AXOLOTL_VENV


def _key(*paths: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


@pytest.fixture(scope="session")
def tiny_model(axolotl_venv: Path) -> Path:
    """A tiny random Llama and a tokenizer learned from the demo dataset (cached)."""
    script = REPO / "scripts" / "make_tiny_model.py"
    out = CACHE / f"tiny-llama-{_key(script, DEMO / 'sample.jsonl')}"
    if not (out / "model.safetensors").exists():
        subprocess.run(
            [
                str(axolotl_venv / "bin" / "python"),
                str(script),
                str(DEMO / "sample.jsonl"),
                str(out),
            ],
            check=True,
            capture_output=True,
        )
    return out


def host_config(config_path: Path, replacements: dict[str, str]) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(config_path.read_text())
    text = yaml.safe_dump(config)
    for old, new in replacements.items():
        text = text.replace(old, new)
    result: dict[str, Any] = yaml.safe_load(text)
    return result


def run_axolotl(venv: Path, workdir: Path, config: dict[str, Any]) -> dict[str, int]:
    """Run real `axolotl preprocess` + `train` on the CPU, keeping each step's raw output."""
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = workdir / "config.yml"
    cfg.write_text(yaml.safe_dump(config))
    env = {
        **os.environ,
        "PATH": f"{venv / 'bin'}:{os.environ['PATH']}",
        "HF_HUB_OFFLINE": "1",
        "CUDA_VISIBLE_DEVICES": "",
        "AXOLOTL_DO_NOT_TRACK": "1",
        "PYTHONUNBUFFERED": "1",
        "HF_HOME": str(workdir / "hf"),
    }
    codes = {}
    for step, args in (("preprocess", ["--debug"]), ("train", [])):
        with (workdir / f"{step}.log").open("wb") as out:
            codes[step] = subprocess.run(
                ["axolotl", step, str(cfg), *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=workdir,
                check=False,
            ).returncode
        if codes[step]:
            break
    return codes


@pytest.fixture(scope="session")
def axolotl_capture(axolotl_venv: Path, tiny_model: Path) -> Path:
    """Output of one real Axolotl 0.19 CPU run of the demo config (cached by its inputs)."""
    demo_cfg = DEMO / "tiny-llama-cpu.yml"
    out = CACHE / f"capture-{_key(demo_cfg, DEMO / 'sample.jsonl', DEMO / 'chat_template.jinja')}"
    if not (out / "done").exists():
        config = host_config(
            demo_cfg,
            {
                "../../.cache/demo/tiny-llama": str(tiny_model),
                "./sample.jsonl": str(DEMO / "sample.jsonl"),
                "./chat_template.jinja": str(DEMO / "chat_template.jinja"),
            },
        )
        config["output_dir"] = str(out / "output")
        config["dataset_prepared_path"] = str(out / "prepared")
        codes = run_axolotl(axolotl_venv, out, config)
        assert codes == {"preprocess": 0, "train": 0}, (out, codes)
        (out / "done").write_text("ok")
    return out


@pytest.fixture
def agent_config(
    tmp_path: Path, test_image: str, axolotl_capture: Path, axolotl_venv: Path
) -> dict[str, Any]:
    """agent.yml for tests: the test image, with the host's Python mounted read-only."""
    standin_bin = tmp_path / "standin-bin"
    standin_bin.mkdir()
    axolotl = standin_bin / "axolotl"
    axolotl.write_text(
        f'#!/bin/sh\nexec {sys.executable} {REPO / "tests/support/standin_axolotl.py"} "$@"\n'
    )
    axolotl.chmod(0o755)
    return {
        "data_root": str(tmp_path / "data"),
        "listen": str(socket_path()),
        "runtime": "docker",
        "log_format": "console",
        "docker": {
            "allowed_images": [test_image],
            "default_image": test_image,
            "pull_missing": False,
            "stop_grace_seconds": 3,
            "extra_mounts": python_mounts(REPO, axolotl_capture, standin_bin, axolotl_venv),
            "env": {
                "PATH": f"{standin_bin}:/usr/bin:/bin",
                "HATRAIN_CAPTURE_DIR": str(axolotl_capture),
                "HF_HUB_OFFLINE": "1",
                "CUDA_VISIBLE_DEVICES": "",
            },
        },
    }


@pytest.fixture
def start_agent() -> Iterator[Callable[..., tuple[Any, Agent]]]:
    """Start an in-process agent on its real socket; returns (a stub on it whose calls are
    those of the account user, as the kernel tells the agent; the agent)."""
    started: list[Agent] = []
    with contextlib.ExitStack() as channels:

        def start(config: dict[str, Any], user: str = TEST_USER) -> tuple[Any, Agent]:
            agent = Agent(AgentConfig.model_validate(config))
            agent.start()
            started.append(agent)
            channel = channels.enter_context(channel_as(user, agent.socket))
            grpc.channel_ready_future(channel).result(timeout=30)
            return stub_as(channel), agent

        yield start
    for agent in started:
        agent.stop(grace=0.5)


def _mounts_under(container: Any, root: Path) -> bool:
    prefix = str(root) + os.sep
    return any(
        str(m.get("Source", "")).startswith(prefix) for m in container.attrs.get("Mounts", [])
    )


@pytest.fixture(autouse=True)
def _remove_test_containers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[None]:
    """Remove the job containers this test left behind: only those whose mounts lie under its
    own tmp_path, so that test runs side by side on one engine leave each other alone."""
    yield
    if "docker_client" in request.fixturenames or "agent_config" in request.fixturenames:
        client = docker.from_env()
        listed = client.containers.list(
            all=True, filters={"label": "hatrain.job"}, ignore_removed=True
        )
        for c in listed:
            if not _mounts_under(c, tmp_path):
                continue
            try:
                c.remove(force=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as exc:
                if exc.status_code != 409:  # 409: the agent is removing it already
                    raise


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    """A real OpenSSH server on a loopback port (keys and known_hosts of its own)."""
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


@pytest.fixture
def client_for(sshd: SshServer, tmp_path: Path) -> Callable[..., ClientRunner]:
    """A `hatrain-client` (the real CLI, as a process) whose host gpu1 is reached through sshd."""

    def make(agent_socket: Path, **settings: Any) -> ClientRunner:
        return ClientRunner.configure(tmp_path / "client", sshd, agent_socket, **settings)

    return make


@pytest.fixture(scope="session")
def user_toolchain(axolotl_capture: Path) -> Iterator[Path]:
    """The stand-in `axolotl` where every account can run it, for the `local` runtime's steps
    (which run as their user on this host): the system's Python with its PyYAML, and a copy of
    the captured output. The tests' own Python and the capture live under /root, which only root
    can enter."""
    python = "/usr/bin/python3"
    if subprocess.run([python, "-c", "import yaml"], capture_output=True).returncode:
        _fail_setup(f"{python} with PyYAML (python3-yaml) is missing")
    root = reachable_dir("hatrain-toolchain-")
    shutil.copy(REPO / "tests" / "support" / "standin_axolotl.py", root)
    (root / "capture").mkdir()
    for log in axolotl_capture.glob("*.log"):
        shutil.copy(log, root / "capture")
    (root / "venv" / "bin").mkdir(parents=True)
    axolotl = root / "venv" / "bin" / "axolotl"
    axolotl.write_text(f'#!/bin/sh\nexec {python} {root / "standin_axolotl.py"} "$@"\n')
    axolotl.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def local_agent_config(
    agent_config: dict[str, Any], user_toolchain: Path
) -> Iterator[dict[str, Any]]:
    """agent.yml for the `local` runtime, with the stand-in `axolotl` as the venv's command and
    a data root that the jobs' users can reach."""
    reachable = reachable_dir("hatrain-local-")
    yield {
        **{k: v for k, v in agent_config.items() if k != "docker"},
        "data_root": str(reachable / "data"),
        "runtime": "local",
        "local": {
            "venv": str(user_toolchain / "venv"),
            "stop_grace_seconds": 3,
            "env": {"HATRAIN_CAPTURE_DIR": str(user_toolchain / "capture"), "HF_HUB_OFFLINE": "1"},
        },
    }
    kill_processes_naming(reachable)
    shutil.rmtree(reachable, ignore_errors=True)


@pytest.fixture(params=["docker", "local"])
def real_agent_config(
    request: pytest.FixtureRequest, tmp_path: Path, test_image: str, axolotl_venv: Path
) -> dict[str, Any]:
    """agent.yml that runs the real Axolotl 0.19 on the CPU: in a container with the host's
    Axolotl virtualenv mounted read-only, or (`local`) straight from that virtualenv."""
    offline = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    config: dict[str, Any] = {
        "data_root": str(tmp_path / "data"),
        "listen": str(socket_path()),
        "log_format": "console",
        "runtime": request.param,
    }
    if request.param == "docker":
        config["docker"] = {
            "allowed_images": [test_image],
            "default_image": test_image,
            "pull_missing": False,
            "extra_mounts": python_mounts(axolotl_venv),
            "env": {
                "PATH": f"{axolotl_venv}/bin:/usr/bin:/bin",
                "CUDA_VISIBLE_DEVICES": "",
                **offline,
            },
        }
    else:
        config["local"] = {"venv": str(axolotl_venv), "env": offline}
    return config
