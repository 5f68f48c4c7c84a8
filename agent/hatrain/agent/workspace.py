"""The host side of the container contract: each job's directories, its config and its files,
laid out so that the job can change only what is its user's own.

<data_root>/jobs/<id>/                        the agent's; group: the user's (0750)
    configs/<config_name>   -> /workspace/configs (read-only)         the agent's
    datasets/<path>         -> /workspace/data/datasets (read-only)   the agent's; files 0444
    run/                    -> /workspace/data/training-runs          the user's (0700)
<data_root>/cache/<user>/                     the agent's (0711)
    huggingface/            -> /workspace/data/huggingface-cache      the user's (0700): HF_HOME,
                                                                      prepared/ (tokenized data)
    home/                   -> /workspace/home                        the user's (0700): HOME
<admin's caches.shared_hub> -> /workspace/data/huggingface-hub-shared (read-only; HF_HUB_CACHE)
<data_root>/secrets/<id>/<NAME> -> /run/hatrain/secrets (read-only)   the user's (0700), 0400

The jobs, cache and secrets directories are the agent's (0711): a user passes through them to
what is theirs but cannot list or change them. The admins and the user's teammates may also
enter jobs/<id>/ and read run/ (ACL entries, inherited by what the job writes there; readers.py).
"""

import os
import posixpath
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from hatrain.rpc.contract import CONFIGS, DATASETS, HF_CACHE, RUNS, SECRETS

from .accounts import Account, NoAccount, lookup
from .config import CacheConfig
from .hostdirs import agent_dir, give_files, owned_dir
from .jobs import Job
from .objects import ObjectStore
from .readers import let_read
from .states import FailureReason

# The job's HOME, and the admin's shared hub cache, in its container.
USER_HOME = "/workspace/home"
SHARED_HUB = "/workspace/data/huggingface-hub-shared"

__all__ = [
    "CONFIGS",
    "DATASETS",
    "HF_CACHE",
    "RUNS",
    "SECRETS",
    "SHARED_HUB",
    "USER_HOME",
    "JobDirs",
    "JobPaths",
    "Workspace",
]


@dataclass(frozen=True)
class JobPaths:
    """Where one job's own files are on the host."""

    configs: Path
    datasets: Path
    run: Path
    secrets: Path

    @property
    def base(self) -> Path:
        return self.configs.parent


@dataclass(frozen=True)
class JobDirs(JobPaths):
    """A job laid out to start: its own files, and the caches and HOME of the user it runs as."""

    hf_cache: Path
    home: Path
    owner: Account
    shared_hub: Path | None = None

    def container_to_host(self) -> dict[str, Path]:
        """Container path prefix -> host directory (for runtimes without containers)."""
        mapping = {
            CONFIGS: self.configs,
            DATASETS: self.datasets,
            RUNS: self.run,
            HF_CACHE: self.hf_cache,
            SECRETS: self.secrets,
            USER_HOME: self.home,
        }
        if self.shared_hub is not None:
            mapping[SHARED_HUB] = self.shared_hub
        return mapping


def _owner(user: str) -> Account:
    try:
        return lookup(user)
    except NoAccount as exc:
        from .runtime import RuntimeFailure  # runtime.py imports this module

        raise RuntimeFailure(FailureReason.NO_ACCOUNT, str(exc)) from exc


class Workspace:
    def __init__(
        self,
        data_root: Path,
        objects: ObjectStore,
        caches: CacheConfig | None = None,
        readers_of: Callable[[str], Iterable[str]] = lambda user: (),
    ) -> None:
        """readers_of(user): the other logins who may read user's jobs (admins, teammates)."""
        self.root = data_root
        self.objects = objects
        self.caches = caches or CacheConfig()
        self.readers_of = readers_of
        agent_dir(data_root, 0o711)
        for name in ("jobs", "cache", "secrets"):
            agent_dir(data_root / name, 0o711)

    def dirs(self, job_id: str) -> JobPaths:
        base = self.root / "jobs" / job_id
        return JobPaths(
            configs=base / "configs",
            datasets=base / "datasets",
            run=base / "run",
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

    def _reader_uids(self, owner: Account) -> set[int]:
        uids = set()
        for login in self.readers_of(owner.name):
            try:
                uids.add(lookup(login).uid)
            except NoAccount:
                continue  # an admin or teammate without a login here has nothing to read with
        return uids - {owner.uid}

    def user_cache(self, owner: Account) -> tuple[Path, Path]:
        """The user's own Hugging Face cache and HOME (created for them, 0700)."""
        base = agent_dir(self.root / "cache" / owner.name, 0o711)
        return owned_dir(base / "huggingface", owner), owned_dir(base / "home", owner)

    def _hand_over_secrets(self, path: Path, owner: Account) -> None:
        """The job reads its secrets as its user: the files become theirs (0400), then the
        directory, in that order, so that nothing the user placed is acted on."""
        path.mkdir(mode=0o700, exist_ok=True)
        if os.lstat(path).st_uid != owner.uid:
            give_files(path, owner, 0o400)
        owned_dir(path, owner, 0o700)

    def jobs_with_secrets(self) -> list[str]:
        """The jobs whose secrets are still on disk."""
        try:
            return [entry.name for entry in os.scandir(self.root / "secrets") if entry.is_dir()]
        except FileNotFoundError:
            return []

    def materialize(self, job: Job) -> JobDirs:
        """Lay out the job's config and files for its user (idempotent: safe to repeat after a
        restart). RuntimeFailure if the user has no account here."""
        owner = _owner(job.user)
        readers = self._reader_uids(owner)
        paths = self.dirs(job.id)
        agent_dir(paths.base, 0o750, group=owner.gid)
        let_read(paths.base, readers, group=0o5)
        agent_dir(paths.configs, 0o755)
        agent_dir(paths.datasets, 0o755)
        owned_dir(paths.run, owner, 0o700)
        let_read(paths.run, readers, inherit=True)
        self._hand_over_secrets(paths.secrets, owner)
        hf_cache, home = self.user_cache(owner)
        (paths.configs / job.spec.config_name).write_text(job.spec.config_yaml, encoding="utf-8")
        for file in job.spec.files:
            target = paths.datasets / posixpath.normpath(file.path)
            if target.exists():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            source = self.objects.path_of(file.sha256)
            try:
                os.link(source, target)
            except OSError:
                shutil.copyfile(source, target)
                os.chmod(target, 0o444)
        return JobDirs(
            configs=paths.configs,
            datasets=paths.datasets,
            run=paths.run,
            secrets=paths.secrets,
            hf_cache=hf_cache,
            home=home,
            owner=owner,
            shared_hub=self.caches.shared_hub,
        )

    def remove(self, job_id: str) -> None:
        shutil.rmtree(self.root / "jobs" / job_id, ignore_errors=True)
        self.drop_secrets(job_id)
