"""The main job: start an agent on this machine and train the CPU demo through it, end to end.

It starts `hatrain-agent serve` (SQLite, loopback) with the Docker runtime, uploads the demo's
dataset, chat template and tiny model into the agent's object store (content-addressed, verified),
submits tiny-llama-cpu.yml with its paths mapped to the container's, and follows the job's events
to the end: phase, step/total, loss, learning rate, ETA. Real Axolotl 0.19 runs in a container
that mounts the host's CPU Axolotl virtualenv read-only.
"""

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import docker
import grpc
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hatrain.rpc.v1 import agent_pb2 as pb  # noqa: E402
from hatrain.rpc.v1 import agent_pb2_grpc as pb_grpc  # noqa: E402

from tests.support.images import ensure_test_image, python_mounts  # noqa: E402

CACHE = Path(os.environ.get("HATRAIN_CACHE", Path.home() / ".cache" / "hatrain"))
VENV = Path(os.environ.get("HATRAIN_AXOLOTL_VENV", CACHE / "axolotl-venv"))
DEMO = REPO / "configs" / "demo"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def upload(stub: pb_grpc.AgentServiceStub, files: dict[str, Path]) -> list[pb.JobFile]:
    """Same host: copy into the staging path the agent names, then let it verify and commit."""
    refs = {name: (path, sha256(path)) for name, path in files.items()}
    answer = stub.PrepareUpload(pb.PrepareUploadRequest(sha256=[s for _, s in refs.values()]))
    for staged in answer.missing:
        path = next(p for p, s in refs.values() if s == staged.sha256)
        shutil.copyfile(path, staged.staging_path)
        stub.CommitUpload(pb.CommitUploadRequest(sha256=staged.sha256, size=path.stat().st_size))
    return [pb.JobFile(path=n, sha256=s, size=p.stat().st_size) for n, (p, s) in refs.items()]


def main() -> int:
    model = CACHE / "demo" / "tiny-llama"
    if not (model / "model.safetensors").exists():
        print("building the tiny model and tokenizer from the demo dataset")
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
    image = ensure_test_image(docker.from_env())
    work = Path(tempfile.mkdtemp(prefix="hatrain-demo-"))
    port = 50151 + os.getpid() % 1000
    config = {
        "data_root": str(work / "data"),
        "listen": f"127.0.0.1:{port}",
        "log_format": "console",
        "docker": {
            "allowed_images": [image],
            "default_image": image,
            "pull_missing": False,
            "extra_mounts": python_mounts(VENV),
            "env": {
                "PATH": f"{VENV}/bin:/usr/bin:/bin",
                "HF_HUB_OFFLINE": "1",
                "CUDA_VISIBLE_DEVICES": "",
                "HOME": "/tmp",
            },
        },
    }
    (work / "agent.yml").write_text(yaml.safe_dump(config))
    agent = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "hatrain-agent"),
            "serve",
            "--config",
            str(work / "agent.yml"),
        ],
        stderr=(work / "agent.log").open("w"),
    )
    try:
        channel = grpc.insecure_channel(config["listen"])
        grpc.channel_ready_future(channel).result(timeout=60)
        stub = pb_grpc.AgentServiceStub(channel)
        files = {
            "sample.jsonl": DEMO / "sample.jsonl",
            "chat_template.jinja": DEMO / "chat_template.jinja",
        }
        files |= {f"tiny-llama/{p.name}": p for p in sorted(model.iterdir()) if p.is_file()}
        refs = upload(stub, files)
        cfg = yaml.safe_load((DEMO / "tiny-llama-cpu.yml").read_text())
        cfg["base_model"] = "/workspace/data/datasets/tiny-llama"
        cfg["chat_template_jinja"] = "/workspace/data/datasets/chat_template.jinja"
        cfg["datasets"][0]["path"] = "/workspace/data/datasets/sample.jsonl"
        content = hashlib.sha256("".join(r.sha256 for r in refs).encode()).hexdigest()[:16]
        cfg["dataset_prepared_path"] = f"/workspace/data/huggingface-cache/prepared/{content}"
        job = stub.SubmitJob(
            pb.SubmitJobRequest(
                spec=pb.JobSpec(
                    name="demo",
                    config_name="tiny-llama-cpu.yml",
                    config_yaml=yaml.safe_dump(cfg).encode(),
                    files=refs,
                )
            )
        ).job
        print(f"job {job.id} queued (position {job.queue_position}); agent log: {work}/agent.log")
        loss = lr = None
        for response in stub.WatchJob(pb.WatchJobRequest(job_id=job.id, follow=True)):
            for e in response.events:
                if e.kind == pb.EVENT_KIND_STATE:
                    print(f"[{pb.JobState.Name(e.state)[10:].lower()}] {e.message}".rstrip())
                elif e.kind == pb.EVENT_KIND_METRICS and not e.eval:
                    values = {m.name: m.value for m in e.metrics}
                    loss, lr = values.get("loss", loss), values.get("learning_rate", lr)
                elif e.kind == pb.EVENT_KIND_PROGRESS and e.progress.phase == "train":
                    p = e.progress
                    print(
                        f"  train {p.current}/{p.total}  loss {loss}  lr {lr}  "
                        f"eta {p.eta_seconds:.0f}s"
                    )
        done = stub.GetJob(pb.GetJobRequest(job_id=job.id))
        out = Path(done.run_dir)
        print(
            f"job {done.id}: {pb.JobState.Name(done.state)[10:].lower()} {done.failure_reason} "
            f"{done.hint}".rstrip()
        )
        print(f"outputs: {sorted(str(p.relative_to(out)) for p in out.glob('*/*.safetensors'))}")
        return 0 if done.state == pb.JOB_STATE_SUCCEEDED else 1
    finally:
        agent.terminate()
        agent.wait()


if __name__ == "__main__":
    sys.exit(main())
