"""Slurm (Debian's slurm-wlm, one node, 8 GPUs as GRES) through its own commands, as set up by
scripts/bench-peers.sh.

Submit is sbatch, from as many submitters at once as hatrain gets: Slurm has no faster way to
submit independent jobs (a job array is one submission of one script). The burst is that job
array, its fastest way to submit jobs that start together. The queue figures submit held jobs
(`--hold`), so that nothing starts, as hatrain's queue agent starts nothing; slurmctld is
restarted with a clean state around them, so that every round starts from an empty queue and the
other figures do not run beside 10,000 held jobs. Slurm streams no output: no stream figure.
"""

import os
import subprocess
import time
from pathlib import Path

from bench.contenders.kit import (
    Burst,
    Cancel,
    Kit,
    Stream,
    burst_of,
    cancel_latency,
    percentile,
    started_at,
    submit_rate,
    wait_until,
)

NAME = "Slurm"
ACTIVE = {"PENDING", "RUNNING", "SUSPENDED", "COMPLETING", "CONFIGURING", "REQUEUED", "RESIZING"}
PAGE = "%.10i %.9P %.20j %.8u %.10T %.10M %b"


class Slurm:
    columns: tuple[str, ...] = (NAME,)

    def __init__(self, kit: Kit, conf: Path, peers_script: Path, page_samples: int) -> None:
        self.kit = kit
        self.env = {**os.environ, "SLURM_CONF": str(conf)}
        self.peers_script = peers_script
        self.page_samples = page_samples

    def close(self) -> None:
        pass

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(args, env=self.env, capture_output=True, text=True, check=False)

    def sbatch(self, *args: str) -> str:
        done = self._run("sbatch", "--parsable", "--output=/dev/null", "--job-name=bench", *args)
        if done.returncode:
            raise RuntimeError(f"sbatch failed: {done.stderr.strip()}")
        return done.stdout.strip().split(";")[0]

    def ended(self, job_id: str) -> bool:
        """squeue reports the job ended (or no longer knows it, once it is purged)."""
        done = self._run("squeue", "--noheader", f"--jobs={job_id}", "--format=%T")
        return done.returncode != 0 or not (set(done.stdout.split()) & ACTIVE)

    def wait_done(self, job_id: str) -> None:
        wait_until(lambda: self.ended(job_id), f"Slurm job {job_id} to end")

    def reset(self) -> None:
        """slurmctld restarted with a clean state: an empty queue."""
        subprocess.run(["bash", str(self.peers_script), "slurm-reset"], check=True, env=self.env)

    def page_ms(self) -> float:
        """squeue with a format, until its first 50 lines: squeue has no pages and fetches every
        job before it prints one."""
        began = time.perf_counter()
        proc = subprocess.Popen(
            ["squeue", "--noheader", f"--format={PAGE}"], env=self.env, stdout=subprocess.PIPE
        )
        assert proc.stdout is not None
        for _ in range(50):
            proc.stdout.readline()
        elapsed = (time.perf_counter() - began) * 1000
        proc.stdout.close()
        proc.wait()
        return elapsed

    def queue(self, first: int, total: int) -> dict[str, dict[str, float]]:
        self.reset()
        figures: dict[str, float] = {}
        try:
            held = ("--hold", str(self.kit.job), "start", "/dev/null")
            figures["submit_empty"] = submit_rate(lambda: self.sbatch(*held), first)
            figures["submit_growing"] = submit_rate(lambda: self.sbatch(*held), total - first)
            figures["page_p99"] = percentile([self.page_ms() for _ in range(self.page_samples)], 99)
        finally:
            self.reset()
        return {NAME: figures}

    def stream(self) -> dict[str, Stream]:
        return {}  # Slurm streams no output

    def start(self) -> dict[str, float]:
        mark = self.kit.file("slurm-start")
        began = time.time()
        job = self.sbatch("--gres=gpu:1", str(self.kit.job), "start", str(mark))
        started = started_at(mark) - began
        self.wait_done(job)
        return {NAME: started}

    def burst(self, size: int) -> dict[str, Burst]:
        prefix = self.kit.file("slurm-burst")
        submitted = time.time()
        job = self.sbatch(
            f"--array=0-{size - 1}", f"--wrap=sh {self.kit.job} start {prefix}.$SLURM_ARRAY_TASK_ID"
        )
        burst = burst_of([Path(f"{prefix}.{i}") for i in range(size)], submitted)
        wait_until(lambda: self.ended(job), "the burst's job array to end")
        return {NAME: burst}

    def cancel(self) -> dict[str, Cancel]:
        pid_file = self.kit.file("slurm-hold")
        job = self.sbatch("--gres=gpu:1", str(self.kit.job), "hold", str(pid_file))
        return {
            NAME: cancel_latency(
                pid_file,
                lambda: self._run("scancel", job).check_returncode(),
                lambda: self.ended(job),
            )
        }
