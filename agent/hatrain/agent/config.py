"""agent.yml: the admin's settings, validated with errors that name the field."""

from pathlib import Path
from typing import Literal

from hatrain.rpc.config_yaml import ConfigYamlError, load_yaml_mapping
from pydantic import (
    BaseModel,
    ByteSize,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveFloat,
    ValidationError,
    field_validator,
    model_validator,
)

from .errors import ConfigError
from .retention import ItemKind, RetentionPolicy
from .scheduler import Policy

DEFAULT_IMAGE = "axolotlai/axolotl-cloud:main-py3.11-cu128-2.8.0"
DEFAULT_ALLOWED_IMAGES = [DEFAULT_IMAGE, "axolotlai/axolotl-cloud:main-py3.11-cu126-2.8.0"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StaticGpu(_Strict):
    uuid: str = Field(min_length=1)
    name: str = "GPU"
    memory_mb: int = Field(default=0, ge=0)


class GpuConfig(_Strict):
    # auto: NVML when it answers, else the static list.
    source: Literal["auto", "nvml", "static"] = "auto"
    static: list[StaticGpu] = []
    # How often NVML is read for the memory and utilisation of each running job's GPUs (0: never).
    sample_seconds: float = Field(default=10.0, ge=0)


class MultiGpuConfig(_Strict):
    """Jobs asking for N > 1 GPUs: Axolotl trains data-parallel, one process per GPU of the job."""

    # What `axolotl train --launcher` starts the N processes with: accelerate (Axolotl's default)
    # or torchrun. Each job gets a free rendezvous port, so several can share a host.
    launcher: Literal["accelerate", "torchrun"] = "accelerate"
    # Extra environment for such jobs only, e.g. {NCCL_DEBUG: INFO} or {NCCL_P2P_DISABLE: "1"}.
    env: dict[str, str] = {}


class HostMount(_Strict):
    """A mount the admin adds to every container (clients can never choose mounts)."""

    source: Path
    target: str = Field(pattern=r"^/")
    read_only: bool = True


# Docker's size notation (512m, 16g) or, for memory, a share of the host's RAM (90%).
_SIZE = r"^[0-9]+(\.[0-9]+)?[bkmgBKMG]?$"
_SIZE_OR_SHARE = r"^([0-9]+(\.[0-9]+)?[bkmgBKMG]?|[1-9][0-9]?%|100%)$"


class ContainerLimits(_Strict):
    """What one job's container may use; past these, the kernel stops the job, not the host."""

    # RAM, swap included (none is added on top). A share of the host's RAM keeps room for the
    # agent, sshd and the page cache when a job runs away.
    memory: str = Field(default="90%", pattern=_SIZE_OR_SHARE)
    # Processes and threads: a fork bomb ends here. Data-parallel training with DataLoader
    # workers uses a few thousand threads on a large host.
    pids: int = Field(default=32768, gt=0)
    # /dev/shm, where NCCL and DataLoader workers pass tensors (Docker's own default, 64m, is too
    # small for NCCL). It takes memory only as it is used, counted in `memory`.
    shm_size: str = Field(default="16g", pattern=_SIZE)


class DockerConfig(_Strict):
    # The engine's address, e.g. unix:///run/docker.sock; empty: $DOCKER_HOST, else the default.
    host: str = ""
    allowed_images: list[str] = Field(default_factory=lambda: list(DEFAULT_ALLOWED_IMAGES))
    default_image: str = DEFAULT_IMAGE
    # Share the host's IPC namespace (its /dev/shm and SysV IPC) with every job: an admin's
    # opt-in, in place of limits.shm_size; jobs then see each other's shared memory.
    ipc_host: bool = False
    limits: ContainerLimits = ContainerLimits()
    extra_mounts: list[HostMount] = []
    env: dict[str, str] = {}
    stop_grace_seconds: float = Field(default=30.0, gt=0)
    pull_missing: bool = True


class LocalConfig(_Strict):
    """The `local` runtime: Axolotl installed in a virtualenv on the host (no container)."""

    # The virtualenv holding Axolotl; its bin/ goes first on PATH.
    venv: Path = Path("/opt/axolotl-venv")
    env: dict[str, str] = {}
    stop_grace_seconds: float = Field(default=30.0, gt=0)


class CacheConfig(_Strict):
    """Each user's Hugging Face cache (HF_HOME, with the tokenized datasets under prepared/) and
    HOME are theirs alone: <data_root>/cache/<user>/, which no other user's job can reach."""

    # A Hugging Face hub cache the admin fills (e.g. `hf download` as root), shared by every
    # job read-only as its HF_HUB_CACHE; a model missing from it cannot be downloaded.
    # None: each user's jobs download into their own cache.
    shared_hub: Path | None = None


class SchedulerConfig(_Strict):
    backfill: bool = True
    # Jobs asking for no GPU that may run at once.
    max_cpu_jobs: int = Field(default=2, ge=0)
    # Caps are name: number maps, "*" for everybody not named. Most GPUs one user (one team, by
    # the jobs' `team`) may hold at once:
    user_gpu_caps: dict[str, NonNegativeInt] = {}
    team_gpu_caps: dict[str, NonNegativeInt] = {}
    # Most jobs one user (one team) may have queued; a submit past it is refused.
    user_queued_caps: dict[str, NonNegativeInt] = {}
    team_queued_caps: dict[str, NonNegativeInt] = {}
    # Fair share: GPU-hours used count half after this many days, and a user's usage is divided
    # by their share weight before users are compared ("*" for everybody not named; 1).
    usage_half_life_days: float = Field(default=7.0, gt=0)
    share_weights: dict[str, PositiveFloat] = {}

    def policy(self) -> Policy:
        return Policy(
            backfill=self.backfill,
            user_gpu_caps=self.user_gpu_caps,
            team_gpu_caps=self.team_gpu_caps,
            max_cpu_jobs=self.max_cpu_jobs,
            share_weights=self.share_weights,
            usage_half_life_seconds=self.usage_half_life_days * 86400,
        )


class LimitsConfig(_Strict):
    max_request_bytes: int = Field(default=8 * 1024 * 1024, gt=0)
    max_config_bytes: int = Field(default=1024 * 1024, gt=0)
    # Nodes of a config once its YAML aliases are expanded (a "billion laughs" is refused).
    max_config_nodes: int = Field(default=100_000, gt=0)
    # Files in one job, and content hashes in one upload preparation.
    max_files: int = Field(default=10_000, gt=0)
    # Watch streams (watch, logs -f, a followed submit) one user may hold open at once.
    max_watch_streams_per_user: int = Field(default=2048, gt=0)
    # Staged uploads untouched this long are abandoned and removed.
    staging_max_age_seconds: int = Field(default=86400, gt=0)


class RetentionConfig(_Strict):
    """How long what finished jobs leave behind is kept, and the free space the data root keeps.

    Ages count from the last use: a job's run dir and events from when it ended, an uploaded
    object or a prepared dataset cache from the last job (or upload) that named it. null keeps
    that kind for good. Nothing of a queued, running or pinned job is ever removed."""

    # <data_root>/jobs/<id>/: the run dir (checkpoints, adapters, TensorBoard events), config,
    # dataset links and step logs.
    run_dirs_days: float | None = Field(default=30.0, ge=0)
    # The job's log lines, metrics and progress in the database (its states are kept).
    logs_days: float | None = Field(default=90.0, ge=0)
    # Uploaded files (objects/sha256/) that no kept job names.
    objects_days: float | None = Field(default=14.0, ge=0)
    # Tokenized datasets under cache/huggingface/prepared/.
    prepared_days: float | None = Field(default=14.0, ge=0)
    sweep_interval_minutes: float = Field(default=60.0, gt=0)
    # The low watermark: with less free space than this on the data root's filesystem, queued
    # jobs wait (their pending reason says so) and sweeps run every minute.
    hold_starts_below: ByteSize = ByteSize(5 * 1024**3)
    # The high watermark: with less free space than this, uploads are refused.
    refuse_uploads_below: ByteSize = ByteSize(10 * 1024**3)

    @model_validator(mode="after")
    def _watermarks_in_order(self) -> "RetentionConfig":
        if self.refuse_uploads_below < self.hold_starts_below:
            raise ValueError(
                f"refuse_uploads_below ({self.refuse_uploads_below.human_readable()}) must be "
                f"at least hold_starts_below ({self.hold_starts_below.human_readable()}): "
                "uploads stop before starts do"
            )
        return self

    def policy(self) -> RetentionPolicy:
        days = {
            ItemKind.RUN_DIR: self.run_dirs_days,
            ItemKind.EVENTS: self.logs_days,
            ItemKind.OBJECT: self.objects_days,
            ItemKind.PREPARED: self.prepared_days,
        }
        return RetentionPolicy({k: d * 86400 for k, d in days.items() if d is not None})


class TeamConfig(_Strict):
    """A team of logins: they may read each other's jobs, and ask for priorities up to
    max_priority."""

    members: list[str] = []
    max_priority: int = Field(default=0, ge=0, le=1000)


class TeamQueueConfig(_Strict):
    """One queue for the hosts of a team, in PostgreSQL: jobs are bound to a host only when
    they can start there (see agent/hatrain/agent/team/)."""

    # A libpq connection string. Several hosts for failover, the writable one found by libpq:
    # "host=db1,db2 port=5432,5432 dbname=hatrain user=hatrain target_session_attrs=read-write"
    database: str = Field(min_length=1)
    # This host's name in the team: what `submit --host` names and `hosts` shows.
    host: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    # Agents write a heartbeat this often; a host silent for down_after_seconds is marked down.
    heartbeat_seconds: float = Field(default=2.0, gt=0)
    down_after_seconds: float = Field(default=30.0, gt=0)
    # The queue is looked at this often even without a notification (LISTEN/NOTIFY).
    poll_seconds: float = Field(default=2.0, gt=0)
    # Bytes of uploaded objects the database may hold for jobs not started yet; a submit that
    # would pass it is refused.
    max_object_bytes: int = Field(default=4 * 1024**3, ge=0)
    # How long a call waits for the database (a failover) before it is refused as unavailable.
    retry_seconds: float = Field(default=30.0, gt=0)


# -- observability: TensorBoard and metrics --------------------------------------------------


class TensorBoardConfig(_Strict):
    """`hatrain-client tensorboard`: TensorBoard, run as the user over their jobs' run dirs."""

    # A virtualenv with tensorboard installed (its bin/python runs it). Unset: the `local`
    # runtime's Axolotl venv when it has TensorBoard (Axolotl installs it), else none.
    venv: Path | None = None


class MetricsConfig(_Strict):
    """Prometheus metrics on an optional HTTP listener (off unless `listen` is set)."""

    # host:port, e.g. 127.0.0.1:9464; empty: no listener.
    listen: str = ""

    @field_validator("listen")
    @classmethod
    def _address(cls, value: str) -> str:
        host, colon, port = value.rpartition(":")
        if value and not (colon and port.isdigit() and 0 < int(port) < 65536 and " " not in host):
            raise ValueError(
                "host:port, e.g. 127.0.0.1:9464 (anyone who reaches it reads job ids, users and "
                "GPU use: keep it on loopback or a monitoring network), or empty for none"
            )
        return value


class AgentConfig(_Strict):
    data_root: Path = Path("/var/lib/hatrain")
    # The agent's Unix socket; its directory must belong to the agent's user.
    listen: Path = Path("/run/hatrain/agent.sock")
    runtime: Literal["docker", "local"] = "docker"
    docker: DockerConfig = DockerConfig()
    local: LocalConfig = LocalConfig()
    gpus: GpuConfig = GpuConfig()
    multi_gpu: MultiGpuConfig = MultiGpuConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    limits: LimitsConfig = LimitsConfig()
    caches: CacheConfig = CacheConfig()
    retention: RetentionConfig = RetentionConfig()
    admins: list[str] = []
    teams: dict[str, TeamConfig] = {}
    # The team queue across hosts; without it this host keeps its own queue (SQLite).
    team: TeamQueueConfig | None = None
    tensorboard: TensorBoardConfig = TensorBoardConfig()
    metrics: MetricsConfig = MetricsConfig()

    @field_validator("listen")
    @classmethod
    def _socket_path(cls, value: Path) -> Path:
        if not value.is_absolute():
            raise ValueError(
                "an absolute path of a Unix socket, e.g. /run/hatrain/agent.sock (the agent "
                "listens on no TCP port: users reach it through their SSH login)"
            )
        return value

    default_time_limit_seconds: int | None = Field(default=None, gt=0)
    log_format: Literal["json", "console"] = "json"


def load_config(path: Path | None) -> AgentConfig:
    """Read agent.yml; None gives the embedded defaults."""
    if path is None:
        return AgentConfig()
    try:
        raw = load_yaml_mapping(path)
    except ConfigYamlError as exc:
        raise ConfigError(str(exc)) from exc
    try:
        return AgentConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{path}: {field}: {first['msg']}") from exc
