"""The host side of the container contract: each job's directories, its config and its files.

<data_root>/jobs/<id>/configs/<config_name>   -> /workspace/configs (read-only)
<data_root>/jobs/<id>/datasets/<path>         -> /workspace/data/datasets (read-only)
<data_root>/jobs/<id>/run/                    -> /workspace/data/training-runs
<data_root>/cache/huggingface/                -> /workspace/data/huggingface-cache
<data_root>/secrets/<id>/<NAME>               -> /run/hatrain/secrets (read-only)
"""

import os
import posixpath
import shutil
from dataclasses import dataclass
from pathlib import Path

from hatrain.rpc.contract import CONFIGS, DATASETS, HF_CACHE, RUNS, SECRETS

from .jobs import Job
from .objects import ObjectStore

__all__ = ["CONFIGS", "DATASETS", "HF_CACHE", "RUNS", "SECRETS", "JobDirs", "Workspace"]


@dataclass(frozen=True)
class JobDirs:
    configs: Path
    datasets: Path
    run: Path
    hf_cache: Path
    secrets: Path

    def container_to_host(self) -> dict[str, Path]:
        """Container path prefix -> host directory (for runtimes without containers)."""
        return {
            CONFIGS: self.configs,
            DATASETS: self.datasets,
            RUNS: self.run,
            HF_CACHE: self.hf_cache,
            SECRETS: self.secrets,
        }


class Workspace:
    def __init__(self, data_root: Path, objects: ObjectStore) -> None:
        self.root = data_root
        self.objects = objects

    def dirs(self, job_id: str) -> JobDirs:
        base = self.root / "jobs" / job_id
        return JobDirs(
            configs=base / "configs",
            datasets=base / "datasets",
            run=base / "run",
            hf_cache=self.root / "cache" / "huggingface",
            secrets=self.root / "secrets" / job_id,
        )

    def write_secrets(self, job_id: str, secrets: dict[str, str], uid: int) -> None:
        """Secrets live in a 0700 directory of the job's user until the job ends, readable by
        nobody else; never in the database."""
        path = self.dirs(job_id).secrets
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(path, 0o700)
        for name, value in secrets.items():
            fd = os.open(path / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o400)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(value)
        for entry in (path, *path.iterdir()):
            os.chown(entry, uid, -1)

    def drop_secrets(self, job_id: str) -> None:
        shutil.rmtree(self.dirs(job_id).secrets, ignore_errors=True)

    def jobs_with_secrets(self) -> list[str]:
        """The jobs whose secrets are still on disk."""
        try:
            return [entry.name for entry in os.scandir(self.root / "secrets") if entry.is_dir()]
        except FileNotFoundError:
            return []

    def materialize(self, job: Job) -> JobDirs:
        """Lay out the job's config and files (idempotent: safe to repeat after a restart)."""
        dirs = self.dirs(job.id)
        for path in (dirs.configs, dirs.datasets, dirs.run, dirs.hf_cache, dirs.secrets):
            path.mkdir(parents=True, exist_ok=True)
        os.chmod(dirs.secrets, 0o700)
        (dirs.configs / job.spec.config_name).write_text(job.spec.config_yaml, encoding="utf-8")
        for file in job.spec.files:
            target = dirs.datasets / posixpath.normpath(file.path)
            if target.exists():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            source = self.objects.path_of(file.sha256)
            try:
                os.link(source, target)
            except OSError:
                shutil.copyfile(source, target)
        return dirs

    def remove(self, job_id: str) -> None:
        shutil.rmtree(self.root / "jobs" / job_id, ignore_errors=True)
        self.drop_secrets(job_id)
