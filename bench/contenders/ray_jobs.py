"""Ray Jobs (a head node started by scripts/bench-peers.sh), through its Jobs REST API, the one
its SDK and `ray job submit` use, from a kept-open HTTP connection: its fastest path. Logs are
followed with `ray job logs --follow`, the command users run. Ray has no queue: jobs start as
they are submitted, so no queue figures.
"""

import http.client
import json
import os
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from bench.contenders.kit import (
    Burst,
    Cancel,
    Kit,
    Stream,
    burst_of,
    cancel_latency,
    lines_of,
    started_at,
    wait_until,
)

NAME = "Ray"
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


class Ray:
    columns: tuple[str, ...] = (NAME,)

    def __init__(self, kit: Kit, address: str, ray_python: Path) -> None:
        self.kit = kit
        self.address = address
        self.ray = ray_python.parent / "ray"
        self._url = urlparse(address)
        self._local = threading.local()

    def close(self) -> None:
        pass

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = http.client.HTTPConnection(
                self._url.hostname or "127.0.0.1", self._url.port, timeout=60
            )
            self._local.connection = connection
        payload = json.dumps(body).encode() if body is not None else None
        connection.request(method, path, payload, {"Content-Type": "application/json"})
        response = connection.getresponse()
        data = response.read()
        if response.status >= 300:
            raise RuntimeError(f"Ray {method} {path}: {response.status} {data[:300]!r}")
        return json.loads(data)

    def submit(self, *args: str, gpus: int = 0) -> str:
        entrypoint = " ".join(["sh", str(self.kit.job), *args])
        reply = self._request(
            "POST", "/api/jobs/", {"entrypoint": entrypoint, "entrypoint_num_gpus": gpus}
        )
        return str(reply["submission_id"])

    def status(self, job_id: str) -> str:
        return str(self._request("GET", f"/api/jobs/{job_id}")["status"])

    def wait_done(self, job_ids: list[str]) -> None:
        wait_until(lambda: all(self.status(j) in TERMINAL for j in job_ids), "Ray jobs to end")

    def queue(self, first: int, total: int) -> dict[str, dict[str, float]]:
        return {}

    def start(self) -> dict[str, float]:
        mark = self.kit.file("ray-start")
        began = time.time()
        job = self.submit("start", str(mark), gpus=1)
        started = started_at(mark) - began
        self.wait_done([job])
        return {NAME: started}

    def burst(self, size: int) -> dict[str, Burst]:
        marks = [self.kit.file("ray-burst") for _ in range(size)]
        submitted = time.time()
        with ThreadPoolExecutor(size) as pool:
            jobs = list(pool.map(lambda m: self.submit("start", str(m)), marks))
        burst = burst_of(marks, submitted)
        self.wait_done(jobs)
        return {NAME: burst}

    def cancel(self) -> dict[str, Cancel]:
        pid_file = self.kit.file("ray-hold")
        job = self.submit("hold", str(pid_file), gpus=1)
        return {
            NAME: cancel_latency(
                pid_file,
                lambda: self._request("POST", f"/api/jobs/{job}/stop"),
                lambda: self.status(job) == "STOPPED",
            )
        }

    def stream(self) -> dict[str, Stream]:
        go = self.kit.file("ray-go")
        job = self.submit("print", str(go))
        stream = Stream()
        follower = subprocess.Popen(
            [str(self.ray), "job", "logs", "--follow", "--address", self.address, job],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert follower.stdout is not None
        fd = follower.stdout.fileno()
        lines_of(lambda: os.read(fd, 1 << 16), stream, go.touch)
        follower.wait()
        self.wait_done([job])
        return {NAME: stream}
