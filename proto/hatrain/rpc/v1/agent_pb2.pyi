from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_STARTING: _ClassVar[JobState]
    JOB_STATE_PREPROCESSING: _ClassVar[JobState]
    JOB_STATE_TRAINING: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]

class EventKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_KIND_UNSPECIFIED: _ClassVar[EventKind]
    EVENT_KIND_STATE: _ClassVar[EventKind]
    EVENT_KIND_LOG: _ClassVar[EventKind]
    EVENT_KIND_METRICS: _ClassVar[EventKind]
    EVENT_KIND_PROGRESS: _ClassVar[EventKind]
    EVENT_KIND_GPU: _ClassVar[EventKind]
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_STARTING: JobState
JOB_STATE_PREPROCESSING: JobState
JOB_STATE_TRAINING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLED: JobState
EVENT_KIND_UNSPECIFIED: EventKind
EVENT_KIND_STATE: EventKind
EVENT_KIND_LOG: EventKind
EVENT_KIND_METRICS: EventKind
EVENT_KIND_PROGRESS: EventKind
EVENT_KIND_GPU: EventKind

class Gpu(_message.Message):
    __slots__ = ("index", "uuid", "name", "memory_mb", "job_id")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MB_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    index: int
    uuid: str
    name: str
    memory_mb: int
    job_id: str
    def __init__(self, index: _Optional[int] = ..., uuid: _Optional[str] = ..., name: _Optional[str] = ..., memory_mb: _Optional[int] = ..., job_id: _Optional[str] = ...) -> None: ...

class QueueSummary(_message.Message):
    __slots__ = ("queued", "running", "succeeded", "failed", "cancelled")
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    SUCCEEDED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    queued: int
    running: int
    succeeded: int
    failed: int
    cancelled: int
    def __init__(self, queued: _Optional[int] = ..., running: _Optional[int] = ..., succeeded: _Optional[int] = ..., failed: _Optional[int] = ..., cancelled: _Optional[int] = ...) -> None: ...

class GetAgentInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AgentInfo(_message.Message):
    __slots__ = ("agent_version", "wire_version", "hostname", "runtime", "gpu_source", "gpus", "queue", "allowed_images", "default_image", "upload_dir", "user", "team_host", "team")
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    WIRE_VERSION_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    GPU_SOURCE_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_IMAGES_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_IMAGE_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_DIR_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    TEAM_HOST_FIELD_NUMBER: _ClassVar[int]
    TEAM_FIELD_NUMBER: _ClassVar[int]
    agent_version: str
    wire_version: str
    hostname: str
    runtime: str
    gpu_source: str
    gpus: _containers.RepeatedCompositeFieldContainer[Gpu]
    queue: QueueSummary
    allowed_images: _containers.RepeatedScalarFieldContainer[str]
    default_image: str
    upload_dir: str
    user: str
    team_host: str
    team: _containers.RepeatedCompositeFieldContainer[TeamHost]
    def __init__(self, agent_version: _Optional[str] = ..., wire_version: _Optional[str] = ..., hostname: _Optional[str] = ..., runtime: _Optional[str] = ..., gpu_source: _Optional[str] = ..., gpus: _Optional[_Iterable[_Union[Gpu, _Mapping]]] = ..., queue: _Optional[_Union[QueueSummary, _Mapping]] = ..., allowed_images: _Optional[_Iterable[str]] = ..., default_image: _Optional[str] = ..., upload_dir: _Optional[str] = ..., user: _Optional[str] = ..., team_host: _Optional[str] = ..., team: _Optional[_Iterable[_Union[TeamHost, _Mapping]]] = ...) -> None: ...

class TeamHost(_message.Message):
    __slots__ = ("name", "state", "heartbeat_age_seconds", "gpus", "gpus_used", "epoch")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_AGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    GPUS_USED_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    name: str
    state: str
    heartbeat_age_seconds: float
    gpus: int
    gpus_used: int
    epoch: int
    def __init__(self, name: _Optional[str] = ..., state: _Optional[str] = ..., heartbeat_age_seconds: _Optional[float] = ..., gpus: _Optional[int] = ..., gpus_used: _Optional[int] = ..., epoch: _Optional[int] = ...) -> None: ...

class PrepareUploadRequest(_message.Message):
    __slots__ = ("sha256",)
    SHA256_FIELD_NUMBER: _ClassVar[int]
    sha256: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, sha256: _Optional[_Iterable[str]] = ...) -> None: ...

class StagedUpload(_message.Message):
    __slots__ = ("sha256", "staging_path", "bytes_present")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    STAGING_PATH_FIELD_NUMBER: _ClassVar[int]
    BYTES_PRESENT_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    staging_path: str
    bytes_present: int
    def __init__(self, sha256: _Optional[str] = ..., staging_path: _Optional[str] = ..., bytes_present: _Optional[int] = ...) -> None: ...

class PrepareUploadResponse(_message.Message):
    __slots__ = ("present", "missing")
    PRESENT_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    present: _containers.RepeatedScalarFieldContainer[str]
    missing: _containers.RepeatedCompositeFieldContainer[StagedUpload]
    def __init__(self, present: _Optional[_Iterable[str]] = ..., missing: _Optional[_Iterable[_Union[StagedUpload, _Mapping]]] = ...) -> None: ...

class CommitUploadRequest(_message.Message):
    __slots__ = ("sha256", "size")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    size: int
    def __init__(self, sha256: _Optional[str] = ..., size: _Optional[int] = ...) -> None: ...

class CommitUploadResponse(_message.Message):
    __slots__ = ("sha256", "size")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    size: int
    def __init__(self, sha256: _Optional[str] = ..., size: _Optional[int] = ...) -> None: ...

class JobFile(_message.Message):
    __slots__ = ("path", "sha256", "size")
    PATH_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    path: str
    sha256: str
    size: int
    def __init__(self, path: _Optional[str] = ..., sha256: _Optional[str] = ..., size: _Optional[int] = ...) -> None: ...

class Resources(_message.Message):
    __slots__ = ("gpus", "min_gpu_memory_mb", "gpu_type")
    GPUS_FIELD_NUMBER: _ClassVar[int]
    MIN_GPU_MEMORY_MB_FIELD_NUMBER: _ClassVar[int]
    GPU_TYPE_FIELD_NUMBER: _ClassVar[int]
    gpus: int
    min_gpu_memory_mb: int
    gpu_type: str
    def __init__(self, gpus: _Optional[int] = ..., min_gpu_memory_mb: _Optional[int] = ..., gpu_type: _Optional[str] = ...) -> None: ...

class JobSpec(_message.Message):
    __slots__ = ("name", "config_name", "config_yaml", "files", "image", "resources", "priority", "time_limit_seconds", "team", "retry_of", "requeue", "host")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONFIG_NAME_FIELD_NUMBER: _ClassVar[int]
    CONFIG_YAML_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    TIME_LIMIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TEAM_FIELD_NUMBER: _ClassVar[int]
    RETRY_OF_FIELD_NUMBER: _ClassVar[int]
    REQUEUE_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    name: str
    config_name: str
    config_yaml: bytes
    files: _containers.RepeatedCompositeFieldContainer[JobFile]
    image: str
    resources: Resources
    priority: int
    time_limit_seconds: int
    team: str
    retry_of: str
    requeue: bool
    host: str
    def __init__(self, name: _Optional[str] = ..., config_name: _Optional[str] = ..., config_yaml: _Optional[bytes] = ..., files: _Optional[_Iterable[_Union[JobFile, _Mapping]]] = ..., image: _Optional[str] = ..., resources: _Optional[_Union[Resources, _Mapping]] = ..., priority: _Optional[int] = ..., time_limit_seconds: _Optional[int] = ..., team: _Optional[str] = ..., retry_of: _Optional[str] = ..., requeue: _Optional[bool] = ..., host: _Optional[str] = ...) -> None: ...

class SubmitJobRequest(_message.Message):
    __slots__ = ("spec", "secrets", "client_request_id", "team_queue")
    class SecretsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SPEC_FIELD_NUMBER: _ClassVar[int]
    SECRETS_FIELD_NUMBER: _ClassVar[int]
    CLIENT_REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TEAM_QUEUE_FIELD_NUMBER: _ClassVar[int]
    spec: JobSpec
    secrets: _containers.ScalarMap[str, str]
    client_request_id: str
    team_queue: bool
    def __init__(self, spec: _Optional[_Union[JobSpec, _Mapping]] = ..., secrets: _Optional[_Mapping[str, str]] = ..., client_request_id: _Optional[str] = ..., team_queue: _Optional[bool] = ...) -> None: ...

class SubmitJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class SubmitJobsRequest(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[SubmitJobRequest]
    def __init__(self, jobs: _Optional[_Iterable[_Union[SubmitJobRequest, _Mapping]]] = ...) -> None: ...

class SubmitJobsResponse(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("phase", "current", "total", "rate", "elapsed_seconds", "eta_seconds", "unit")
    PHASE_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    RATE_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ETA_SECONDS_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    phase: str
    current: int
    total: int
    rate: float
    elapsed_seconds: float
    eta_seconds: float
    unit: str
    def __init__(self, phase: _Optional[str] = ..., current: _Optional[int] = ..., total: _Optional[int] = ..., rate: _Optional[float] = ..., elapsed_seconds: _Optional[float] = ..., eta_seconds: _Optional[float] = ..., unit: _Optional[str] = ...) -> None: ...

class GpuUsage(_message.Message):
    __slots__ = ("uuid", "memory_used_mb", "memory_total_mb", "utilization_percent")
    UUID_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USED_MB_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_MB_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_PERCENT_FIELD_NUMBER: _ClassVar[int]
    uuid: str
    memory_used_mb: int
    memory_total_mb: int
    utilization_percent: int
    def __init__(self, uuid: _Optional[str] = ..., memory_used_mb: _Optional[int] = ..., memory_total_mb: _Optional[int] = ..., utilization_percent: _Optional[int] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("id", "spec", "user", "state", "failure_reason", "hint", "exit_code", "has_exit_code", "gpu_uuids", "created_at", "started_at", "finished_at", "queue_position", "run_dir", "output_dir", "progress", "last_metrics", "last_seq", "secret_names", "stop_reason", "gpu_usage", "pending_reason", "team_host", "from_team_queue", "team_note")
    class LastMetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    FAILURE_REASON_FIELD_NUMBER: _ClassVar[int]
    HINT_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    HAS_EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    GPU_UUIDS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    QUEUE_POSITION_FIELD_NUMBER: _ClassVar[int]
    RUN_DIR_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_DIR_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    LAST_METRICS_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    SECRET_NAMES_FIELD_NUMBER: _ClassVar[int]
    STOP_REASON_FIELD_NUMBER: _ClassVar[int]
    GPU_USAGE_FIELD_NUMBER: _ClassVar[int]
    PENDING_REASON_FIELD_NUMBER: _ClassVar[int]
    TEAM_HOST_FIELD_NUMBER: _ClassVar[int]
    FROM_TEAM_QUEUE_FIELD_NUMBER: _ClassVar[int]
    TEAM_NOTE_FIELD_NUMBER: _ClassVar[int]
    id: str
    spec: JobSpec
    user: str
    state: JobState
    failure_reason: str
    hint: str
    exit_code: int
    has_exit_code: bool
    gpu_uuids: _containers.RepeatedScalarFieldContainer[str]
    created_at: float
    started_at: float
    finished_at: float
    queue_position: int
    run_dir: str
    output_dir: str
    progress: Progress
    last_metrics: _containers.ScalarMap[str, float]
    last_seq: int
    secret_names: _containers.RepeatedScalarFieldContainer[str]
    stop_reason: str
    gpu_usage: _containers.RepeatedCompositeFieldContainer[GpuUsage]
    pending_reason: str
    team_host: str
    from_team_queue: bool
    team_note: str
    def __init__(self, id: _Optional[str] = ..., spec: _Optional[_Union[JobSpec, _Mapping]] = ..., user: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., failure_reason: _Optional[str] = ..., hint: _Optional[str] = ..., exit_code: _Optional[int] = ..., has_exit_code: _Optional[bool] = ..., gpu_uuids: _Optional[_Iterable[str]] = ..., created_at: _Optional[float] = ..., started_at: _Optional[float] = ..., finished_at: _Optional[float] = ..., queue_position: _Optional[int] = ..., run_dir: _Optional[str] = ..., output_dir: _Optional[str] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ..., last_metrics: _Optional[_Mapping[str, float]] = ..., last_seq: _Optional[int] = ..., secret_names: _Optional[_Iterable[str]] = ..., stop_reason: _Optional[str] = ..., gpu_usage: _Optional[_Iterable[_Union[GpuUsage, _Mapping]]] = ..., pending_reason: _Optional[str] = ..., team_host: _Optional[str] = ..., from_team_queue: _Optional[bool] = ..., team_note: _Optional[str] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("states", "user", "page_size", "page_token", "id_prefix", "team_queue")
    STATES_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ID_PREFIX_FIELD_NUMBER: _ClassVar[int]
    TEAM_QUEUE_FIELD_NUMBER: _ClassVar[int]
    states: _containers.RepeatedScalarFieldContainer[JobState]
    user: str
    page_size: int
    page_token: str
    id_prefix: str
    team_queue: bool
    def __init__(self, states: _Optional[_Iterable[_Union[JobState, str]]] = ..., user: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., id_prefix: _Optional[str] = ..., team_queue: _Optional[bool] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token", "total")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    next_page_token: str
    total: int
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total: _Optional[int] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class Metric(_message.Message):
    __slots__ = ("name", "value", "text")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: float
    text: str
    def __init__(self, name: _Optional[str] = ..., value: _Optional[float] = ..., text: _Optional[str] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("seq", "time", "kind", "step", "state", "reason", "message", "line", "stream", "metrics", "eval", "progress", "exit_code", "train_step", "gpu_usage", "lines")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    LINE_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    EVAL_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    TRAIN_STEP_FIELD_NUMBER: _ClassVar[int]
    GPU_USAGE_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    seq: int
    time: float
    kind: EventKind
    step: str
    state: JobState
    reason: str
    message: str
    line: str
    stream: str
    metrics: _containers.RepeatedCompositeFieldContainer[Metric]
    eval: bool
    progress: Progress
    exit_code: int
    train_step: int
    gpu_usage: _containers.RepeatedCompositeFieldContainer[GpuUsage]
    lines: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, seq: _Optional[int] = ..., time: _Optional[float] = ..., kind: _Optional[_Union[EventKind, str]] = ..., step: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ..., line: _Optional[str] = ..., stream: _Optional[str] = ..., metrics: _Optional[_Iterable[_Union[Metric, _Mapping]]] = ..., eval: _Optional[bool] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ..., exit_code: _Optional[int] = ..., train_step: _Optional[int] = ..., gpu_usage: _Optional[_Iterable[_Union[GpuUsage, _Mapping]]] = ..., lines: _Optional[_Iterable[str]] = ...) -> None: ...

class WatchJobRequest(_message.Message):
    __slots__ = ("job_id", "from_seq", "follow", "kinds", "tail", "packed_lines")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_SEQ_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    TAIL_FIELD_NUMBER: _ClassVar[int]
    PACKED_LINES_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    from_seq: int
    follow: bool
    kinds: _containers.RepeatedScalarFieldContainer[EventKind]
    tail: int
    packed_lines: bool
    def __init__(self, job_id: _Optional[str] = ..., from_seq: _Optional[int] = ..., follow: _Optional[bool] = ..., kinds: _Optional[_Iterable[_Union[EventKind, str]]] = ..., tail: _Optional[int] = ..., packed_lines: _Optional[bool] = ...) -> None: ...

class WatchJobResponse(_message.Message):
    __slots__ = ("events", "state")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[Event]
    state: JobState
    def __init__(self, events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ..., state: _Optional[_Union[JobState, str]] = ...) -> None: ...

class PinJobRequest(_message.Message):
    __slots__ = ("job_id", "pinned")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    PINNED_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    pinned: bool
    def __init__(self, job_id: _Optional[str] = ..., pinned: _Optional[bool] = ...) -> None: ...

class PinJobResponse(_message.Message):
    __slots__ = ("job_id", "pinned", "was_pinned")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    PINNED_FIELD_NUMBER: _ClassVar[int]
    WAS_PINNED_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    pinned: bool
    was_pinned: bool
    def __init__(self, job_id: _Optional[str] = ..., pinned: _Optional[bool] = ..., was_pinned: _Optional[bool] = ...) -> None: ...

class PlanTensorBoardRequest(_message.Message):
    __slots__ = ("job_ids", "mine")
    JOB_IDS_FIELD_NUMBER: _ClassVar[int]
    MINE_FIELD_NUMBER: _ClassVar[int]
    job_ids: _containers.RepeatedScalarFieldContainer[str]
    mine: bool
    def __init__(self, job_ids: _Optional[_Iterable[str]] = ..., mine: _Optional[bool] = ...) -> None: ...

class TensorBoardRun(_message.Message):
    __slots__ = ("job_id", "name", "run_dir", "state")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    RUN_DIR_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    name: str
    run_dir: str
    state: JobState
    def __init__(self, job_id: _Optional[str] = ..., name: _Optional[str] = ..., run_dir: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ...) -> None: ...

class TensorBoardPlan(_message.Message):
    __slots__ = ("runs", "python")
    RUNS_FIELD_NUMBER: _ClassVar[int]
    PYTHON_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[TensorBoardRun]
    python: str
    def __init__(self, runs: _Optional[_Iterable[_Union[TensorBoardRun, _Mapping]]] = ..., python: _Optional[str] = ...) -> None: ...
