"""hatrain-client, and hatrain as a library: sync configs and datasets over SSH, submit
Axolotl jobs to your GPU hosts, follow them live and fetch what they made.

    from hatrain.client import Client

    with Client() as client:
        job = client.submit("train/configs/gemma3-270m.yml", gpus=1)
        print(client.wait(job.id).state)

See docs/api.md. Everything named here is the public API; the rest of the package may change.
"""

from .api import AmbiguousJobId, CancelResult, Client, HostDown, JobNotFound
from .errors import (
    AgentRefused,
    AgentUnavailable,
    AuthenticationFailed,
    BadInput,
    ClientError,
    HostKeyRejected,
    HostUnreachable,
    NoSshKey,
)
from .plot import Curves
from .records import (
    Event,
    FetchReport,
    Gpu,
    GpuReading,
    GpuUsage,
    HostStatus,
    Job,
    JobSpec,
    JobState,
    LogLine,
    Metric,
    Metrics,
    Progress,
    ProgressUpdate,
    QueueSummary,
    StateChange,
    Submission,
    UploadReport,
)

__all__ = [
    "AgentRefused",
    "AgentUnavailable",
    "AmbiguousJobId",
    "AuthenticationFailed",
    "BadInput",
    "CancelResult",
    "Client",
    "ClientError",
    "Curves",
    "Event",
    "FetchReport",
    "Gpu",
    "GpuReading",
    "GpuUsage",
    "HostDown",
    "HostKeyRejected",
    "HostStatus",
    "HostUnreachable",
    "Job",
    "JobNotFound",
    "JobSpec",
    "JobState",
    "LogLine",
    "Metric",
    "Metrics",
    "NoSshKey",
    "Progress",
    "ProgressUpdate",
    "QueueSummary",
    "StateChange",
    "Submission",
    "UploadReport",
]
