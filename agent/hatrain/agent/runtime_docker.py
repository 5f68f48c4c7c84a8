"""Run each step in a Docker container, reproducing the hand-run `docker run` of the seed."""

import contextlib
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import docker
import docker.errors
from docker.types import DeviceRequest, Mount

from .config import DockerConfig
from .events import Progress
from .jobs import Job
from .runtime import (
    BASE_ENV,
    LABEL_JOB,
    LABEL_STEP,
    LABEL_USER,
    SECRET_SHIM,
    ExitStatus,
    Handle,
    Probe,
    RuntimeFailure,
    axolotl_args,
)
from .states import FailureReason
from .workspace import CONFIGS, DATASETS, HF_CACHE, RUNS, SECRETS, JobDirs

Cursor = tuple[int, int, int]  # (seconds, nanoseconds, lines already read at that instant)


_READ = 256 * 1024


class _FrameReader:
    """Turns Docker's multiplexed log stream into text, skipping what the cursor has seen."""

    def __init__(self, after: "Cursor | None") -> None:
        self.after = after
        self.buffer = b""
        self.previous: tuple[int, int] | None = None
        self.count = 0
        self._second_text = ""
        self._second = 0

    def cursor(self) -> list[int]:
        assert self.previous is not None
        return [self.previous[0], self.previous[1], self.count]

    def _instant(self, stamp: str) -> tuple[int, int]:
        whole, _, frac = stamp.rstrip("Z").partition(".")
        if whole != self._second_text:  # lines come in bursts within one second
            self._second_text = whole
            self._second = int(datetime.fromisoformat(whole + "+00:00").timestamp())
        return self._second, int((frac + "000000000")[:9])

    def feed(self, data: bytes) -> str:
        buffer = self.buffer + data if self.buffer else data
        bodies: list[bytes] = []
        pos, end = 0, len(buffer)
        while end - pos >= 8:
            length = int.from_bytes(buffer[pos + 4 : pos + 8], "big")
            if end - pos - 8 < length:
                break
            frame = buffer[pos + 8 : pos + 8 + length]
            pos += 8 + length
            stamp, _, body = frame.partition(b" ")
            instant = self._instant(stamp.decode("ascii", "replace"))
            self.count = self.count + 1 if instant == self.previous else 1
            self.previous = instant
            after = self.after
            if after is not None and (instant, self.count) <= ((after[0], after[1]), after[2]):
                continue
            bodies.append(body)
        self.buffer = buffer[pos:]
        return b"".join(bodies).decode("utf-8", errors="replace")


def split_repository(image: str) -> tuple[str, str]:
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag:
        return image, "latest"
    return name, tag


class DockerRuntime:
    name = "docker"

    def __init__(self, config: DockerConfig, client: docker.DockerClient | None = None) -> None:
        self.config = config
        self.client = client or docker.from_env(timeout=120)

    def prepare(self, job: Job, progress: Callable[[Progress], None]) -> None:
        try:
            self.client.images.get(job.spec.image)
            return
        except docker.errors.ImageNotFound:
            pass
        except docker.errors.APIError as exc:
            raise RuntimeFailure(FailureReason.RUNTIME_ERROR, f"docker: {exc.explanation}") from exc
        if not self.config.pull_missing:
            raise RuntimeFailure(
                FailureReason.IMAGE_PULL_FAILED,
                f"image {job.spec.image} is not on this host and pulling is disabled",
            )
        repository, tag = split_repository(job.spec.image)
        layers: dict[str, tuple[int, int]] = {}
        started = time.monotonic()
        try:
            for message in self.client.api.pull(repository, tag=tag, stream=True, decode=True):
                if "error" in message:
                    raise RuntimeFailure(FailureReason.IMAGE_PULL_FAILED, str(message["error"]))
                detail = message.get("progressDetail") or {}
                if message.get("id") and detail.get("total"):
                    layers[message["id"]] = (int(detail.get("current", 0)), int(detail["total"]))
                    done = sum(c for c, _ in layers.values())
                    total = sum(t for _, t in layers.values())
                    elapsed = time.monotonic() - started
                    progress(
                        Progress(
                            "pull",
                            done,
                            total,
                            done / elapsed if elapsed else 0.0,
                            elapsed,
                            0.0,
                            "B",
                        )
                    )
        except docker.errors.APIError as exc:
            raise RuntimeFailure(FailureReason.IMAGE_PULL_FAILED, str(exc.explanation)) from exc

    def _mounts(self, dirs: JobDirs) -> list[Mount]:
        mounts = [
            Mount(DATASETS, str(dirs.datasets), type="bind", read_only=True),
            Mount(RUNS, str(dirs.run), type="bind"),
            Mount(CONFIGS, str(dirs.configs), type="bind", read_only=True),
            Mount(HF_CACHE, str(dirs.hf_cache), type="bind"),
            Mount(SECRETS, str(dirs.secrets), type="bind", read_only=True),
        ]
        mounts += [
            Mount(m.target, str(m.source), type="bind", read_only=m.read_only)
            for m in self.config.extra_mounts
        ]
        return mounts

    def start(self, job: Job, step: str, dirs: JobDirs) -> Handle:
        name = f"hatrain-{job.id}-{step}"
        kwargs: dict[str, Any] = {}
        if job.gpu_uuids:
            kwargs["device_requests"] = [
                DeviceRequest(
                    driver="nvidia", device_ids=list(job.gpu_uuids), capabilities=[["gpu"]]
                )
            ]
        if self.config.ipc_host:
            kwargs["ipc_mode"] = "host"
        elif self.config.shm_size:
            kwargs["shm_size"] = self.config.shm_size
        try:
            container = self.client.containers.create(
                job.spec.image,
                command=[
                    "/bin/sh",
                    "-c",
                    SECRET_SHIM,
                    "hatrain",
                    "axolotl",
                    *axolotl_args(step, job.spec.config_name),
                ],
                name=name,
                labels={LABEL_JOB: job.id, LABEL_STEP: step, LABEL_USER: job.user},
                environment={**BASE_ENV, **self.config.env},
                mounts=self._mounts(dirs),
                working_dir="/workspace",
                detach=True,
                **kwargs,
            )
            container.start()
        except docker.errors.APIError as exc:
            reason = FailureReason.RUNTIME_ERROR
            text = str(exc.explanation or exc)
            if "nvidia" in text or "device driver" in text:
                reason = FailureReason.GPU_UNAVAILABLE
            raise RuntimeFailure(reason, f"docker: {text}") from exc
        return {"container": container.id, "name": name}

    def find(self, job: Job, step: str) -> Handle | None:
        found = self.client.containers.list(
            all=True, filters={"label": [f"{LABEL_JOB}={job.id}", f"{LABEL_STEP}={step}"]}
        )
        if not found:
            return None
        return {"container": found[0].id, "name": found[0].name}

    def logs(self, handle: Handle, cursor: Any) -> Iterator[tuple[str, Any]]:
        """Output after cursor, read from Docker's multiplexed log stream in large chunks.

        The SDK's stream yields one frame (one line) per two reads; a step can print faster than
        that. Frames are parsed here instead: an 8-byte header (stream, length) and a body that
        starts with the RFC 3339 nano timestamp the cursor is made of.
        """
        after: Cursor | None = (cursor[0], cursor[1], cursor[2]) if cursor else None
        api = self.client.api
        params: dict[str, Any] = {"stdout": 1, "stderr": 1, "follow": 1, "timestamps": 1}
        if after:
            params["since"] = after[0]
        url = f"{api.base_url}/v{api.api_version}/containers/{handle['container']}/logs"
        response = api.get(url, params=params, stream=True)
        if response.status_code in (404, 409):  # gone, or being removed
            return
        response.raise_for_status()
        frames = _FrameReader(after)
        with contextlib.closing(response):
            while data := response.raw.read1(_READ):
                text = frames.feed(data)
                if text:
                    yield text, frames.cursor()

    def wait(self, handle: Handle) -> ExitStatus:
        try:
            container = self.client.containers.get(handle["container"])
            result = container.wait()
            container.reload()
        except docker.errors.NotFound as exc:
            raise RuntimeFailure(
                FailureReason.CONTAINER_LOST, "the container disappeared while it ran"
            ) from exc
        return ExitStatus(int(result["StatusCode"]), bool(container.attrs["State"]["OOMKilled"]))

    def probe(self, handle: Handle) -> Probe:
        try:
            container = self.client.containers.get(handle["container"])
        except docker.errors.NotFound:
            return "missing"
        return "running" if container.status in ("running", "created", "restarting") else "exited"

    def stop(self, handle: Handle, grace_seconds: float) -> None:
        with contextlib.suppress(docker.errors.NotFound):
            self.client.containers.get(handle["container"]).stop(timeout=int(grace_seconds))

    def remove(self, handle: Handle) -> None:
        with contextlib.suppress(docker.errors.NotFound):
            self.client.containers.get(handle["container"]).remove(force=True)

    def leftovers(self) -> Iterator[tuple[str, Handle]]:
        for container in self.client.containers.list(all=True, filters={"label": LABEL_JOB}):
            yield container.labels[LABEL_JOB], {"container": container.id, "name": container.name}
