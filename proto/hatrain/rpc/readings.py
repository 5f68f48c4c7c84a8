"""What a running job reports, read alike by the agent (which parses and stores it) and the
client (which shows it): a metric printed by the trainer, a progress bar, a GPU's use."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    name: str
    value: float | None  # None when the value printed is not a number
    text: str = ""  # the value as printed, when it is not a number


@dataclass(frozen=True)
class Progress:
    """A progress bar of the job (`phase`: train, eval, preprocess, a bar's own label)."""

    phase: str
    current: int
    total: int
    rate: float = 0.0
    elapsed_seconds: float = 0.0
    eta_seconds: float = 0.0
    unit: str = "it"


@dataclass(frozen=True)
class GpuUsage:
    """One NVML reading of a GPU that a running job holds."""

    uuid: str
    memory_used_mb: int
    memory_total_mb: int
    # Percent of NVML's last sample period in which a kernel ran on the GPU.
    utilization_percent: int
