"""Run each step in a Docker container, reproducing the hand-run `docker run` of the seed."""

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import docker
import docker.errors
import docker.utils.socket
from docker.types import DeviceRequest, Mount

from .config import DockerConfig, MultiGpuConfig
from .docker_logs import StreamReader, body_pieces, gathered
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
    step_command,
)
from .states import FailureReason
from .workspace import CONFIGS, DATASETS, HF_CACHE, RUNS, SECRETS, JobDirs


def _read(reader: StreamReader, pieces: Iterator[bytes]) -> Iterator[tuple[str, list[int]]]:
    for data in pieces:
        if text := reader.feed(data):
            yield text, reader.cursor()


def _socket_pieces(sock: Any) -> Iterator[bytes]:
    return gathered(lambda size: docker.utils.socket.read(sock, size))


def split_repository(image: str) -> tuple[str, str]:
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag:
        return image, "latest"
    return name, tag


class DockerRuntime:
    name = "docker"

    def __init__(
        self,
        config: DockerConfig,
        client: docker.DockerClient | None = None,
        multi_gpu: MultiGpuConfig | None = None,
    ) -> None:
        self.config = config
        self.multi_gpu = multi_gpu or MultiGpuConfig()
        self.client = client or docker.from_env(timeout=120)
        # Attach streams opened before their container started, until logs() takes them.
        self._attached: dict[str, Any] = {}
        self._attached_lock = threading.Lock()

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
        args, launch_env = step_command(step, job, self.multi_gpu)
        try:
            container = self.client.containers.create(
                job.spec.image,
                command=[
                    "/bin/sh",
                    "-c",
                    SECRET_SHIM,
                    "hatrain",
                    "axolotl",
                    *args,
                ],
                name=name,
                labels={LABEL_JOB: job.id, LABEL_STEP: step, LABEL_USER: job.user},
                environment={**BASE_ENV, **self.config.env, **launch_env},
                mounts=self._mounts(dirs),
                working_dir="/workspace",
                detach=True,
                **kwargs,
            )
            self._attach(container.id)
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

    def _attach(self, container_id: str) -> None:
        """Open the live output stream; before start, so that it holds every byte."""
        try:
            sock = self.client.api.attach_socket(
                container_id, params={"stdout": 1, "stderr": 1, "stream": 1}
            )
        except docker.errors.APIError:
            return  # logs() reads the log endpoint instead
        raw = getattr(sock, "_sock", sock)
        if hasattr(raw, "settimeout"):
            raw.settimeout(None)  # a step may print nothing for a long while
        with self._attached_lock:
            self._attached[container_id] = sock

    def _detach(self, container_id: str) -> Any:
        with self._attached_lock:
            return self._attached.pop(container_id, None)

    def logs(self, handle: Handle, cursor: Any) -> Iterator[tuple[str, Any]]:
        """Output after cursor (bytes of stdout and of stderr already read), until the step ends.

        Live from the attach stream opened at start. After a restart, or if the attach stream
        breaks while the step runs (dockerd restarted under it), from the log endpoint, which
        replays the log file from the start and then follows.
        """
        sock = self._detach(handle["container"])
        if sock is not None and not cursor:
            reader = StreamReader(None)
            with contextlib.closing(sock):
                yield from _read(reader, _socket_pieces(sock))
            if self.probe(handle) != "running":
                if text := reader.finish():
                    yield text, reader.cursor()
                return
            cursor = reader.cursor()  # a partial line is read again from the log file
        elif sock is not None:
            sock.close()
        api = self.client.api
        params = {"stdout": 1, "stderr": 1, "follow": 1}
        url = f"{api.base_url}/v{api.api_version}/containers/{handle['container']}/logs"
        response = api.get(url, params=params, stream=True, timeout=None)
        with contextlib.closing(response):
            if response.status_code in (404, 409):  # gone, or being removed
                return
            response.raise_for_status()
            reader = StreamReader(cursor)
            yield from _read(reader, body_pieces(response))
            if text := reader.finish():
                yield text, reader.cursor()

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
        if (sock := self._detach(handle["container"])) is not None:
            sock.close()
        with contextlib.suppress(docker.errors.NotFound):
            self.client.containers.get(handle["container"]).remove(force=True)

    def leftovers(self) -> Iterator[tuple[str, Handle]]:
        for container in self.client.containers.list(all=True, filters={"label": LABEL_JOB}):
            yield container.labels[LABEL_JOB], {"container": container.id, "name": container.name}
