"""Test double for NVML (the `pynvml` module of nvidia-ml-py), for an agent run as a process.

CI has no GPU: an agent started with this directory first on its PYTHONPATH finds two H200s
through its real NVML code paths (discovery at start, the usage sampler while jobs run). Only
the calls the agent makes are here.
"""

from types import SimpleNamespace

GPUS = ("GPU-fake-nvml-0", "GPU-fake-nvml-1")
_TOTAL = 143_771 * 1024 * 1024


def nvmlInit() -> None:
    pass


def nvmlShutdown() -> None:
    pass


def nvmlDeviceGetCount() -> int:
    return len(GPUS)


def nvmlDeviceGetHandleByIndex(index: int) -> str:
    return GPUS[index]


def nvmlDeviceGetHandleByUUID(uuid: str) -> str:
    if uuid not in GPUS:
        raise ValueError(f"no GPU {uuid}")
    return uuid


def nvmlDeviceGetUUID(handle: str) -> bytes:
    return handle.encode()


def nvmlDeviceGetName(handle: str) -> bytes:
    return b"NVIDIA H200"


def nvmlDeviceGetMemoryInfo(handle: str) -> SimpleNamespace:
    return SimpleNamespace(total=_TOTAL, used=_TOTAL // 4, free=_TOTAL - _TOTAL // 4)


def nvmlDeviceGetUtilizationRates(handle: str) -> SimpleNamespace:
    return SimpleNamespace(gpu=50, memory=20)
