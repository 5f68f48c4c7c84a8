"""The main job: an agent on this machine, and the demo trained through the real client path.

1. Builds the demo's tiny Llama and tokenizer from the demo dataset (cached in .cache/demo/).
2. Starts an OpenSSH server on a loopback port with a key of its own (this machine is the "GPU
   host"), and `hatrain-agent serve` with the embedded defaults (SQLite under a work directory,
   a Unix socket the client reaches through its SSH login and `hatrain-agent bridge`). With
   Docker and an NVIDIA GPU it runs the real Axolotl image on one GPU;
   otherwise real Axolotl 0.19 on the CPU in a container that mounts the host's Axolotl venv.
3. Runs `hatrain-client submit configs/demo/tiny-llama-cpu.yml`, follows it live
   (`hatrain-client watch`), then `fetch`es the run and `plot`s the loss curve.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import docker
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hatrain.agent.config import DEFAULT_IMAGE  # noqa: E402

from tests.support.client import ClientRunner  # noqa: E402
from tests.support.harness import poll  # noqa: E402
from tests.support.images import ensure_test_image, python_mounts  # noqa: E402
from tests.support.sshd import start_sshd  # noqa: E402

CACHE = Path(os.environ.get("HATRAIN_CACHE", Path.home() / ".cache" / "hatrain"))
VENV = Path(os.environ.get("HATRAIN_AXOLOTL_VENV", CACHE / "axolotl-venv"))
DEMO = REPO / "configs" / "demo"
BIN = Path(sys.executable).parent


def has_gpu_docker(client: docker.DockerClient) -> bool:
    smi = shutil.which("nvidia-smi")
    if not smi or subprocess.run([smi, "-L"], capture_output=True, check=False).returncode:
        return False
    return "nvidia" in (client.info().get("Runtimes") or {})


def agent_config(work: Path, socket: Path, gpu: bool) -> dict[str, object]:
    config: dict[str, object] = {"data_root": str(work / "data"), "listen": str(socket)}
    config["log_format"] = "console"
    if gpu:
        return config  # the embedded defaults: the Axolotl cloud image, GPUs through NVML
    image = ensure_test_image(docker.from_env())
    config["docker"] = {
        "allowed_images": [image],
        "default_image": image,
        "pull_missing": False,
        "extra_mounts": python_mounts(VENV),
        "env": {
            "PATH": f"{VENV}/bin:/usr/bin:/bin",
            "HF_HUB_OFFLINE": "1",
            "CUDA_VISIBLE_DEVICES": "",
        },
    }
    return config


def client(*args: str, env: dict[str, str], capture: bool = False) -> str:
    print(f"$ hatrain-client {' '.join(args)}", flush=True)
    result = subprocess.run(
        [str(BIN / "hatrain-client"), *args],
        env=env,
        cwd=REPO,
        check=False,
        stdout=subprocess.PIPE if capture else None,
        text=True,
    )
    if result.returncode:
        raise SystemExit(f"hatrain-client {args[0]} exited with {result.returncode}")
    return result.stdout or ""


def main() -> int:
    model = REPO / ".cache" / "demo" / "tiny-llama"
    if not (model / "model.safetensors").exists():
        print("building the tiny model and tokenizer from the demo dataset", flush=True)
        subprocess.run(
            [
                str(VENV / "bin/python"),
                str(REPO / "scripts/make_tiny_model.py"),
                str(DEMO / "sample.jsonl"),
                str(model),
            ],
            check=True,
            capture_output=True,
        )
    gpu = has_gpu_docker(docker.from_env())
    work = Path(tempfile.mkdtemp(prefix="hatrain-demo-"))
    sshd = start_sshd(work / "sshd")
    socket = work / "run" / "agent.sock"
    (work / "agent.yml").write_text(yaml.safe_dump(agent_config(work, socket, gpu)))
    agent = subprocess.Popen(
        [str(BIN / "hatrain-agent"), "serve", "--config", str(work / "agent.yml")],
        stderr=(work / "agent.log").open("w"),
    )
    poll(socket.exists, 60, "the agent's socket")
    env = ClientRunner.configure(work / "client", sshd, socket, keep_connection_seconds=60).env()
    print(f"work directory {work} ({'GPU, ' + DEFAULT_IMAGE if gpu else 'CPU'})", flush=True)
    try:
        client("hosts", env=env)
        submit = ["submit", "configs/demo/tiny-llama-cpu.yml", "--detach", "--json"]
        job = json.loads(client(*submit, *(["--gpus", "1"] if gpu else []), env=env, capture=True))
        print(f"job {job['id']} queued; uploaded {job['upload']['bytes_sent']} bytes", flush=True)
        client("watch", job["id"], env=env)
        client("fetch", job["id"], str(work / "run"), env=env)
        client("plot", job["id"], "--output", str(work / "loss.png"), env=env)
        models = sorted(str(p.relative_to(work)) for p in work.glob("run/**/model.safetensors"))
        print(f"trained model: {', '.join(models)}; loss curve: {work / 'loss.png'}")
        return 0 if models else 1
    finally:
        agent.terminate()
        agent.wait()
        sshd.stop()


if __name__ == "__main__":
    sys.exit(main())
