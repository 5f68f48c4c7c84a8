"""The seed's configs trained by real Axolotl through hatrain on a GPU host: one phase per call.

    scripts/gpu/run.sh PHASE        # installs the bundle first (see docs/gpu.md)

Phases (each one command; a later one reuses what an earlier one left in the work directory):
  overhead  gemma3-270m through the agent on one GPU and, at the same time, the same run started
            by hand on the other: loss events against trainer_state.json, the GPU the job saw,
            the model fetched, and steps/s and submit-to-first-step beside the hand run's.
  pair      functiongemma-270m and gemma3-270m with LoRA as two 1-GPU jobs side by side, each
            seeing only its own GPU; the LoRA adapter fetched and loaded with peft.
  qlora-multi  gemma3-270m with QLoRA on one GPU, then gemma3-270m data-parallel on two: NVML
            samples of both GPUs during the run, metrics once per step, samples/s against 1 GPU.
  overhead-sequential  as overhead, but one after the other on the same GPU: by hand first,
            then through the agent (no difference between two GPUs in the ratio).
  overhead-swapped  overhead again with the two GPUs swapped (the agent is given only the GPU
            the hand run had), and the ratios of both rounds together, so that neither way of
            starting keeps the faster GPU.

Writes a JSON report per phase to the work directory and to $OUT, with each job's raw logs.

--rehearse runs the same flow on a machine without GPU, to try the scripts before spending GPU
time: a two-layer model, 2 steps on 200 rows, CPU settings (no bf16, a torch optimizer, no LoRA
kernels), two stand-in GPUs from a static list, and torchrun's launcher for the 2-GPU job.
"""

import argparse
import hashlib
import json
import lzma
import math
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from gpu_host import (
    AXOLOTL_SITE,
    PYTHON,
    Client,
    axolotl_venv,
    epoch,
    job_env,
    log,
    start_agent,
    start_sshd,
)
from seed_config import variant

REPO = Path(__file__).resolve().parent.parent.parent
SEEDS = REPO / "configs" / "home-llm"
HERE = Path(__file__).resolve().parent
MAX_STEPS = int(os.environ.get("MAX_STEPS", "2" if "--rehearse" in sys.argv else "20"))
SAMPLE_SECONDS = 2.0
TERMINAL = {"succeeded", "failed", "cancelled"}
REHEARSAL = {
    "bf16": False,
    "optimizer": "adamw_torch",
    "lora_mlp_kernel": False,
    "lora_qkv_kernel": False,
    "lora_o_kernel": False,
}


@dataclass(frozen=True)
class Run:
    name: str  # the config's file name, without .yml
    seed: str  # configs/home-llm/<seed>.yml
    model: str  # gemma3 | functiongemma (tokenizer and data of that config)
    gpus: int = 1
    adapter: str | None = None


GEMMA3 = Run("gemma3-270m", "gemma3-270m", "gemma3")
PHASES = {
    "overhead": [GEMMA3],
    "overhead-sequential": [GEMMA3],
    "overhead-swapped": [GEMMA3],
    "pair": [
        Run("functiongemma-270m", "functiongemma-270m", "functiongemma"),
        Run("gemma3-270m-lora", "gemma3-270m", "gemma3", adapter="lora"),
    ],
    "qlora-multi": [
        Run("gemma3-270m-qlora", "gemma3-270m", "gemma3", adapter="qlora"),
        Run("gemma3-270m-2gpu", "gemma3-270m", "gemma3", gpus=2),
    ],
}
DATA = {"gemma3": "home-llm-sample.jsonl", "functiongemma": "home-llm-sample-functiongemma.jsonl"}


def sh(args: list[str], **kwargs: Any) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True, **kwargs).stdout


def prepare_inputs(bundle: Path, work: Path, rehearse: bool) -> None:
    """Data, models and configs in the work directory (kept between calls)."""
    for model, data in DATA.items():
        target = work / "data" / data
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            text = lzma.decompress((bundle / "data" / f"{data}.xz").read_bytes())
            target.write_bytes(b"".join(text.splitlines(keepends=True)[:200]) if rehearse else text)
        out = work / "models" / model
        if not (out / "model.safetensors").exists():
            log(f"building the random {model} model")
            sh(
                [
                    PYTHON,
                    str(HERE / "make_gemma.py"),
                    "model",
                    str(bundle / "tokenizers" / model),
                    str(out),
                ]
                + (["--tiny"] if rehearse else []),
                env={**os.environ, "PYTHONPATH": AXOLOTL_SITE},
            )
    for runs in PHASES.values():
        for run in runs:
            seed = yaml.safe_load((SEEDS / f"{run.seed}.yml").read_text())
            config = variant(seed, str(work / "models" / run.model), MAX_STEPS, run.adapter)
            if rehearse:
                config.update(REHEARSAL)
            path = work / "configs" / f"{run.name}.yml"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(yaml.safe_dump(config, sort_keys=False, width=1000))


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def train_losses(events: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """(time, loss) of each training metric event (not eval, not the final summary)."""
    out = []
    for e in events:
        if e.get("kind") != "metrics" or e.get("eval"):
            continue
        values = {m["name"]: m.get("value", 0.0) for m in e.get("metrics", [])}
        if "loss" in values:
            out.append((e["time"], values["loss"]))
    return out


def summary_metric(events: list[dict[str, Any]], name: str) -> float | None:
    for e in reversed(events):
        for m in e.get("metrics", []):
            if m["name"] == name:
                return float(m.get("value", 0.0))
    return None


def trainer_state(run_dir: Path) -> dict[str, Any]:
    states = sorted(
        run_dir.rglob("trainer_state.json"), key=lambda p: json.loads(p.read_text())["global_step"]
    )
    return json.loads(states[-1].read_text()) if states else {}


def visible_gpus(events: list[dict[str, Any]]) -> dict[str, list[str]]:
    """The GPUs each step printed it could see (visible_gpus.py, first thing in the step)."""
    seen = {}
    for e in events:
        line = e.get("line", "")
        if e.get("kind") == "log" and line.startswith("visible GPUs: "):
            seen[e.get("step", "")] = line.split(": ", 2)[2].split(" (")[0].split()
    return seen


class StatusSampler(threading.Thread):
    """Polls `hatrain-client status --json` of running jobs, as a user would, keeping what it
    shows of GPU use."""

    def __init__(self, client: Client, job_ids: list[str]) -> None:
        super().__init__(daemon=True)
        self.client, self.job_ids = client, job_ids
        self.seen: dict[str, list[dict[str, Any]]] = {j: [] for j in job_ids}
        self.states: dict[str, str] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for job_id in self.job_ids:
                if self.states.get(job_id) in TERMINAL:
                    continue
                try:
                    job = self.client.json("status", job_id)
                except RuntimeError as exc:
                    log(f"status {job_id}: {exc}")
                    continue
                self.states[job_id] = job["state"]
                if job.get("gpu_usage"):
                    self.seen[job_id].append({"time": time.time(), "gpu_usage": job["gpu_usage"]})
            if all(self.states.get(j) in TERMINAL for j in self.job_ids):
                return
            self.stop.wait(SAMPLE_SECONDS)


def check_job(
    client: Client, agent_root: Path, work: Path, run: Run, job: dict[str, Any], submitted: float
) -> dict[str, Any]:
    job_id = job["id"]
    events = client.events(job_id)
    final = client.json("status", job_id)
    report: dict[str, Any] = {
        "run": run.name,
        "job_id": job_id,
        "gpus_asked": run.gpus,
        "state": final["state"],
        "failure": f"{final.get('failure_reason', '')} {final.get('hint', '')}".strip(),
        "assigned_gpus": final.get("gpu_uuids", []),
        "started_at": epoch(final.get("started_at")),
        "finished_at": epoch(final.get("finished_at")),
        "upload": job.get("upload"),
    }
    host_run = agent_root / "jobs" / job_id / "run"
    dest = work / "fetched" / job_id
    client.run("fetch", job_id, str(dest))
    losses = train_losses(events)
    state = trainer_state(dest)
    history = [h["loss"] for h in state.get("log_history", []) if "loss" in h]
    report["loss_events"] = len(losses)
    report["log_history_losses"] = len(history)
    report["losses_equal_log_history"] = len(losses) == len(history) > 0 and all(
        math.isclose(a, b, rel_tol=5e-4) for (_, a), b in zip(losses, history, strict=True)
    )
    report["first_loss"], report["last_loss"] = (
        (losses[0][1], losses[-1][1]) if losses else (None, None)
    )
    report["metrics_once_per_step"] = len(losses) == MAX_STEPS == state.get("global_step")
    totals = {
        e["progress"]["total"]
        for e in events
        if e.get("kind") == "progress" and e["progress"].get("phase") == "train"
    }
    report["train_progress_totals"] = sorted(totals)
    seen = visible_gpus(events)
    report["visible_gpus"] = seen
    report["saw_only_its_gpus"] = bool(seen) and all(
        v == report["assigned_gpus"] for v in seen.values()
    )
    weights = "adapter_model.safetensors" if run.adapter else "model.safetensors"
    fetched = sorted(p for p in dest.rglob(weights) if "checkpoint-" not in str(p))
    report["fetched_weights"] = [str(p.relative_to(dest)) for p in fetched]
    report["fetched_equal_host"] = bool(fetched) and all(
        sha256(p) == sha256(host_run / p.relative_to(dest)) for p in fetched
    )
    report["fetched_bytes"] = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    for name in ("train_samples_per_second", "train_steps_per_second", "train_runtime"):
        report[name] = summary_metric(events, name)
    if losses:
        report["submit_to_first_step_s"] = losses[0][0] - submitted
        span = losses[-1][0] - losses[0][0]
        report["steps_per_s_between_loss_events"] = (len(losses) - 1) / span if span else None
    gpu_events = [e for e in events if e.get("kind") == "gpu"]
    report["gpu_events"] = len(gpu_events)
    if losses and gpu_events:
        first, last = losses[0][0], losses[-1][0]
        during = [e for e in gpu_events if first <= e["time"] <= last]
        per_gpu: dict[str, dict[str, Any]] = {}
        for uuid in report["assigned_gpus"]:
            readings = [g for e in during for g in e["usage"] if g["uuid"] == uuid]
            util = [g.get("utilization_percent", 0) for g in readings]
            per_gpu[uuid] = {
                "samples": len(readings),
                "utilization_median": statistics.median(util) if util else None,
                "utilization_min": min(util) if util else None,
                "memory_used_mb_max": max(
                    (g.get("memory_used_mb", 0) for g in readings), default=0
                ),
                "busy_samples": sum(1 for u in util if u >= 50),
            }
        report["gpu_use_during_training"] = per_gpu
    train_log = agent_root / "jobs" / job_id / "local" / "train.log"
    if train_log.exists():
        raw = train_log.read_text(errors="replace")
        report["raw_loss_dicts_in_log"] = raw.count("{'loss'")
        report["world_size_lines"] = [
            ln.strip()[-120:] for ln in raw.splitlines() if "world_size" in ln
        ][:4]
    if run.adapter:
        adapter_dir = fetched[0].parent if fetched else dest
        out = sh(
            [
                PYTHON,
                str(HERE / "load_adapter.py"),
                str(work / "models" / run.model),
                str(adapter_dir),
            ],
            env={
                **os.environ,
                **job_env(work / "axolotl-venv"),
                "CUDA_VISIBLE_DEVICES": report["assigned_gpus"][0],
            },
        )
        report["peft_load"] = json.loads(out.strip().splitlines()[-1])
    return report


def hand_run(work: Path, gpu: str, run: Run, started: threading.Event) -> dict[str, Any]:
    """The same Axolotl run started by hand: the same config and environment, no agent."""
    hand = work / "hand"
    shutil.rmtree(hand / "out", ignore_errors=True)  # a run of its own, never a resumed one
    hand.mkdir(parents=True, exist_ok=True)
    config = yaml.safe_load((work / "configs" / f"{run.name}.yml").read_text())
    config["datasets"][0]["path"] = str(work / "data" / DATA[run.model])
    config["output_dir"] = str(hand / "out")
    config["dataset_prepared_path"] = str(hand / "prepared")
    (hand / "config.yml").write_text(yaml.safe_dump(config, sort_keys=False, width=1000))
    venv = work / "axolotl-venv"
    env = {
        "HOME": os.environ.get("HOME", "/root"),
        "LANG": "C.UTF-8",
        "AXOLOTL_DO_NOT_TRACK": "1",
        "PYTHONUNBUFFERED": "1",
        "HF_HOME": str(hand / "hf"),
        **job_env(venv),
        "CUDA_VISIBLE_DEVICES": gpu,
    }
    t0 = time.time()
    started.set()
    report: dict[str, Any] = {"gpu": gpu, "start": t0}
    first_step = None
    loss_times: list[float] = []
    for step in ("preprocess", "train"):
        args = [str(venv / "bin" / "axolotl"), step, str(hand / "config.yml")]
        args += ["--debug"] if step == "preprocess" else []
        with (hand / f"{step}.log").open("w") as out:
            proc = subprocess.Popen(
                args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=hand, text=True
            )
            assert proc.stdout is not None
            for line in proc.stdout:
                out.write(line)
                if "{'loss'" in line:
                    loss_times.append(time.time())
                    first_step = first_step or loss_times[0]
            report[f"{step}_exit"] = proc.wait()
            report[f"{step}_s"] = time.time() - t0
    text = (hand / "train.log").read_text(errors="replace")
    summary = [ln for ln in text.splitlines() if "'train_runtime'" in ln]
    if summary:
        start = summary[-1].index("{")
        values = yaml.safe_load(summary[-1][start : summary[-1].index("}", start) + 1])
        for key in ("train_runtime", "train_samples_per_second", "train_steps_per_second"):
            report[key] = float(values[key])
    report["start_to_first_step_s"] = first_step - t0 if first_step else None
    report["loss_lines"] = text.count("{'loss'")
    span = loss_times[-1] - loss_times[0] if len(loss_times) > 1 else 0.0
    report["steps_per_s_between_loss_events"] = (len(loss_times) - 1) / span if span else None
    return report


def both_rounds(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    """The two side-by-side rounds, each way of starting once on each GPU: each round's ratio
    and their geometric mean, from the Trainer's steps/s and from the steady rate between the
    first and last loss lines (which leaves out the first step's warm-up)."""
    out: dict[str, Any] = {}
    for key, name in (
        ("steps_per_s_ratio_agent_to_hand", "trainer"),
        ("steady_steps_per_s_ratio_agent_to_hand", "steady"),
    ):
        ratios = [r.get(key) for r in (first, second)]
        if all(ratios):
            out[name] = {
                "rounds": ratios,
                "geometric_mean": math.sqrt(ratios[0] * ratios[1]),  # type: ignore[operator]
            }
    out["gpus"] = {
        "round_1": {"agent": first["jobs"][0]["assigned_gpus"], "hand": first["hand_run"]["gpu"]},
        "round_2": {"agent": second["jobs"][0]["assigned_gpus"], "hand": second["hand_run"]["gpu"]},
    }
    return out


def collect_logs(agent_root: Path, work: Path, job_ids: list[str], out: Path, phase: str) -> None:
    with tarfile.open(out / f"{phase}-logs.tar.gz", "w:gz") as tar:
        for job_id in job_ids:
            for step in ("preprocess", "train"):
                path = agent_root / "jobs" / job_id / "local" / f"{step}.log"
                if path.exists():
                    tar.add(path, f"{job_id}-{step}.log")
        for path in [work / "agent.log", *(work / "hand").glob("*.log")]:
            if path.exists():
                tar.add(path, f"{path.parent.name}-{path.name}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("phase", choices=sorted(PHASES))
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("/tmp/hatrain-gpu"))
    parser.add_argument("--rehearse", action="store_true", help="the same flow without a GPU")
    args = parser.parse_args()
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    out = Path(os.environ.get("OUT") or work / "out")
    out.mkdir(parents=True, exist_ok=True)
    prepare_inputs(args.bundle, work, args.rehearse)
    venv = axolotl_venv(work)
    sshd = start_sshd(args.bundle, work / "sshd")
    only_gpu, only_gpus, report_first = None, None, {}
    if args.phase == "overhead-swapped":
        report_first = json.loads((work / "overhead.json").read_text())
        only_gpu = report_first["hand_run"]["gpu"]  # the agent gets the GPU the hand run had
        only_gpus = [g for g in report_first["hosts"][0]["gpus"] if g["uuid"] == only_gpu]
    agent = start_agent(work, venv, SAMPLE_SECONDS, args.rehearse, only_gpus=only_gpus)
    client = Client(work, sshd, agent)
    report: dict[str, Any] = {"phase": args.phase, "max_steps": MAX_STEPS}
    try:
        info = client.json("hosts")
        report["hosts"] = info
        runs = PHASES[args.phase]
        hand: dict[str, Any] = {}
        if args.phase == "overhead-sequential":
            first_gpu = report["hosts"][0]["gpus"][0]["uuid"]  # where the agent places a job
            hand.update(hand_run(work, first_gpu, GEMMA3, threading.Event()))
        jobs, submitted = [], []
        for run in runs:
            t0 = time.time()
            job = client.json(
                "submit",
                str(work / "configs" / f"{run.name}.yml"),
                "--gpus",
                str(run.gpus),
                "--dataset",
                f"sample.jsonl={work / 'data' / DATA[run.model]}",
                "--name",
                run.name,
                "--detach",
            )
            log(f"submitted {run.name} as {job['id']} in {time.time() - t0:.1f}s")
            jobs.append(job)
            submitted.append(t0)
        hand_thread = None
        if args.phase in ("overhead", "overhead-swapped"):
            placed = None
            while placed is None:
                status = client.json("status", jobs[0]["id"])
                placed = status.get("gpu_uuids") or None
                time.sleep(0.2)
            every = [g["uuid"] for g in report_first["hosts"][0]["gpus"]] if only_gpu else []
            every = every or [g["uuid"] for g in report["hosts"][0]["gpus"]]
            others = [g for g in every if g not in placed]
            started = threading.Event()
            hand_thread = threading.Thread(
                target=lambda: hand.update(hand_run(work, others[0], GEMMA3, started)), daemon=True
            )
            hand_thread.start()
            started.wait()
        sampler = StatusSampler(client, [j["id"] for j in jobs])
        sampler.start()
        sampler.join()
        if hand_thread is not None:
            hand_thread.join()
        results = [
            check_job(client, agent.data_root, work, run, job, t0)
            for run, job, t0 in zip(runs, jobs, submitted, strict=True)
        ]
        for result in results:
            result["status_gpu_usage_samples"] = len(sampler.seen[result["job_id"]])
            result["status_gpu_usage_example"] = (sampler.seen[result["job_id"]] or [{}])[-1]
        report["jobs"] = results
        if hand:
            report["hand_run"] = hand
            agent_run = results[0]
            if agent_run.get("train_steps_per_second") and hand.get("train_steps_per_second"):
                report["steps_per_s_ratio_agent_to_hand"] = (
                    agent_run["train_steps_per_second"] / hand["train_steps_per_second"]
                )
            between = "steps_per_s_between_loss_events"
            if agent_run.get(between) and hand.get(between):
                steady = agent_run[between] / hand[between]
                report["steady_steps_per_s_ratio_agent_to_hand"] = steady
        if only_gpu:
            report["both_rounds"] = both_rounds(report_first, report)
        if args.phase == "pair":
            a, b = results
            report["side_by_side"] = {
                "disjoint_gpus": not set(a["assigned_gpus"]) & set(b["assigned_gpus"]),
                "overlap_s": min(a["finished_at"], b["finished_at"])
                - max(a["started_at"], b["started_at"]),
            }
        if args.phase == "qlora-multi":
            earlier = work / "overhead.json"
            if earlier.exists():
                one = json.loads(earlier.read_text())
                two = results[1].get("train_samples_per_second")
                single = one["jobs"][0].get("train_samples_per_second")
                hand_single = one.get("hand_run", {}).get("train_samples_per_second")
                report["samples_per_s"] = {
                    "two_gpus": two,
                    "one_gpu_agent": single,
                    "one_gpu_hand": hand_single,
                    "ratio_to_one_gpu_agent": two / single if two and single else None,
                }
    finally:
        report["agent_stop"] = agent.stop()
        sshd.stop()
        collect_logs(
            agent.data_root, work, [j["id"] for j in locals().get("jobs", [])], out, args.phase
        )
        text = json.dumps(report, indent=2, default=str)
        (work / f"{args.phase}.json").write_text(text)
        (out / f"{args.phase}.json").write_text(text)
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
