"""Memory and utilisation of each running job's GPUs, read from NVML every few seconds.

Each reading becomes a GPU event in the job's stream (what `watch` shows) and the job's latest
reading (what `status` shows). Readings go by GPU UUID, the same identity the scheduler assigns.
"""

import threading
from collections.abc import Callable
from typing import Protocol

import structlog

from .events import Event, EventKind, GpuUsage
from .states import RUNNING
from .store import Store

log = structlog.get_logger(__name__)


class GpuReader(Protocol):
    """Reads one GPU, by UUID. NVML on a GPU host; a test double where there is no GPU."""

    def read(self, uuid: str) -> GpuUsage: ...

    def close(self) -> None: ...


class NvmlReader:
    """GpuReader over NVML (nvidia-ml-py)."""

    def __init__(self) -> None:
        import pynvml

        self._nvml = pynvml
        pynvml.nvmlInit()

    def read(self, uuid: str) -> GpuUsage:
        nvml = self._nvml
        handle = nvml.nvmlDeviceGetHandleByUUID(uuid)
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        busy = nvml.nvmlDeviceGetUtilizationRates(handle)
        mib = 1024 * 1024
        return GpuUsage(uuid, int(memory.used) // mib, int(memory.total) // mib, int(busy.gpu))

    def close(self) -> None:
        self._nvml.nvmlShutdown()


class GpuUsageSampler:
    """Every `interval` seconds, reads the GPUs of every running job and records the readings."""

    def __init__(
        self, store: Store, reader_factory: Callable[[], GpuReader], interval: float
    ) -> None:
        self.store = store
        self._reader_factory = reader_factory
        self.interval = interval
        self._reader: GpuReader | None = None
        self._latest: dict[str, tuple[GpuUsage, ...]] = {}
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def latest(self, job_id: str) -> tuple[GpuUsage, ...]:
        """The job's last reading; empty when it holds no GPU or is not running."""
        return self._latest.get(job_id, ())

    def sample_once(self) -> None:
        jobs = [j for j in self.store.jobs_in(RUNNING) if j.gpu_uuids]
        if self._reader is None and jobs:
            self._reader = self._reader_factory()
        latest: dict[str, tuple[GpuUsage, ...]] = {}
        for job in jobs:
            assert self._reader is not None
            usage = tuple(self._reader.read(uuid) for uuid in job.gpu_uuids)
            self.store.append(job.id, [Event(EventKind.GPU, gpu_usage=usage)], while_running=True)
            latest[job.id] = usage
        self._latest = latest

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="gpu-usage", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stopping.wait(self.interval):
            try:
                self.sample_once()
            except Exception:
                log.warning("could not read GPU usage", exc_info=True)

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
            if self._thread.is_alive():
                # Stuck in a read: closing NVML under it could wait on that read too.
                log.warning("GPU usage sampler still reading; leaving it behind")
                return
        if self._reader is not None:
            self._reader.close()
            self._reader = None
