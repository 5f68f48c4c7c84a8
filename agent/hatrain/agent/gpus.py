"""The host's GPUs: from NVML when the driver answers, else the static list in agent.yml."""

from .config import GpuConfig
from .errors import ConfigError
from .scheduler import GpuSlot


def _from_nvml() -> list[GpuSlot]:
    import pynvml

    pynvml.nvmlInit()
    try:
        slots = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            uuid = pynvml.nvmlDeviceGetUUID(handle)
            name = pynvml.nvmlDeviceGetName(handle)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle).total
            slots.append(
                GpuSlot(
                    index=index,
                    uuid=uuid.decode() if isinstance(uuid, bytes) else uuid,
                    name=name.decode() if isinstance(name, bytes) else name,
                    memory_mb=int(memory) // (1024 * 1024),
                )
            )
        return slots
    finally:
        pynvml.nvmlShutdown()


def _from_static(config: GpuConfig) -> list[GpuSlot]:
    uuids = [g.uuid for g in config.static]
    if len(set(uuids)) != len(uuids):
        raise ConfigError("gpus.static: every GPU needs its own uuid")
    return [GpuSlot(i, g.uuid, g.name, g.memory_mb) for i, g in enumerate(config.static)]


def discover(config: GpuConfig) -> tuple[list[GpuSlot], str]:
    """Returns (GPUs, where they came from: "nvml", "static" or "none")."""
    if config.source == "static":
        return _from_static(config), "static"
    try:
        return _from_nvml(), "nvml"
    except Exception as exc:
        if config.source == "nvml":
            raise ConfigError(f"gpus.source: nvml was asked for but NVML failed: {exc}") from exc
    if config.static:
        return _from_static(config), "static"
    return [], "none"
