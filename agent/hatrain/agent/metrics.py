"""Prometheus metrics of the agent, on an optional HTTP listener (`metrics.listen`).

Counted as things happen: events recorded, bytes uploaded, the queue wait of every start and
the run time of every job that ends. Read when scraped: jobs by state, GPUs allocated and free,
the data root's free disk, and each running job's GPU memory and utilisation from the NVML
readings the agent samples anyway (gpus.sample_seconds).
"""

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .gpu_usage import GpuUsageSampler
from .jobs import Job
from .scheduler import GpuSlot
from .states import RUNNING, TERMINAL, JobState
from .store import Store

log = structlog.get_logger(__name__)

# Seconds: from a minute to a week, the spans a fine-tuning queue and its runs have.
_WAIT_BUCKETS = (1, 10, 60, 300, 900, 1800, 3600, 7200, 14400, 43200, 86400, 259200)
_RUN_BUCKETS = (10, 60, 300, 900, 1800, 3600, 7200, 14400, 43200, 86400, 259200, 604800)


class _Readings(Collector):
    """What is read at scrape time, from the store, the disk and the GPU sampler."""

    def __init__(
        self,
        store: Store,
        gpus: list[GpuSlot],
        data_root: Path,
        gpu_usage: Callable[[], GpuUsageSampler | None],
    ) -> None:
        self.store = store
        self.gpus = gpus
        self.data_root = data_root
        self.gpu_usage = gpu_usage

    def collect(self) -> Iterator[GaugeMetricFamily]:
        counts = self.store.counts()
        jobs = GaugeMetricFamily("hatrain_jobs", "Jobs on this host by state.", labels=["state"])
        for state in JobState:
            jobs.add_metric([state.value], counts.get(state, 0))
        yield jobs

        running = self.store.jobs_in(RUNNING)
        ours = {g.uuid for g in self.gpus}
        held = {u for job in running for u in job.gpu_uuids if u in ours}
        gpus = GaugeMetricFamily("hatrain_gpus", "GPUs of this host by use.", labels=["use"])
        gpus.add_metric(["allocated"], len(held))
        gpus.add_metric(["free"], len(ours) - len(held))
        yield gpus

        disk = GaugeMetricFamily(
            "hatrain_data_root_free_bytes", "Free bytes on the data root's filesystem."
        )
        disk.add_metric([], shutil.disk_usage(self.data_root).free)
        yield disk

        labels = ["job_id", "user", "gpu"]
        memory = GaugeMetricFamily(
            "hatrain_job_gpu_memory_used_bytes",
            "GPU memory a running job uses (NVML).",
            labels=labels,
        )
        total = GaugeMetricFamily(
            "hatrain_job_gpu_memory_total_bytes",
            "Memory of a running job's GPU (NVML).",
            labels=labels,
        )
        busy = GaugeMetricFamily(
            "hatrain_job_gpu_utilization_ratio",
            "Share of NVML's sample period a kernel ran on a running job's GPU.",
            labels=labels,
        )
        sampler = self.gpu_usage()
        for job in running:
            for reading in sampler.latest(job.id) if sampler is not None else ():
                at = [job.id, job.user, reading.uuid]
                memory.add_metric(at, reading.memory_used_mb * 2**20)
                total.add_metric(at, reading.memory_total_mb * 2**20)
                busy.add_metric(at, reading.utilization_percent / 100)
        yield memory
        yield total
        yield busy


class AgentMetrics:
    """The agent's metrics, in a registry of their own (no process metrics of the client's
    library defaults mixed in unasked)."""

    def __init__(
        self,
        store: Store,
        gpus: list[GpuSlot],
        data_root: Path,
        gpu_usage: Callable[[], GpuUsageSampler | None] = lambda: None,
    ) -> None:
        self.registry = CollectorRegistry()
        self.events = Counter(
            "hatrain_events",
            "Events recorded (log lines, metrics, progress, states).",
            registry=self.registry,
        )
        self.uploaded = Counter(
            "hatrain_uploaded_bytes",
            "Bytes of new uploads verified into the object store.",
            registry=self.registry,
        )
        self.queue_wait = Histogram(
            "hatrain_queue_wait_seconds",
            "From submit to start, per started job.",
            buckets=_WAIT_BUCKETS,
            registry=self.registry,
        )
        self.run_time = Histogram(
            "hatrain_run_seconds",
            "From start to end, per job that ran, by how it ended.",
            labelnames=["state"],
            buckets=_RUN_BUCKETS,
            registry=self.registry,
        )
        for state in TERMINAL:  # every series there from the start, at 0
            self.run_time.labels(state.value)
        self.registry.register(_Readings(store, gpus, data_root, gpu_usage))
        store.on_events(self.events.inc)
        store.on_transition(self._transitioned)
        self._server: Any = None

    def _transitioned(self, before: Job, after: Job) -> None:
        if after.state == JobState.STARTING and after.started_at:
            self.queue_wait.observe(max(0.0, after.started_at - after.created_at))
        if after.state in TERMINAL and before.started_at:
            spent = max(0.0, after.finished_at - before.started_at)
            self.run_time.labels(after.state.value).observe(spent)

    def upload_committed(self, size: int) -> None:
        self.uploaded.inc(size)

    def listen(self, address: str) -> None:
        """Serve /metrics on host:port (e.g. 127.0.0.1:9464)."""
        host, _, port = address.rpartition(":")
        self._server, _ = start_http_server(int(port), host or "0.0.0.0", registry=self.registry)
        log.info("metrics serving", listen=address)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
