"""Run each step in a Docker container, reproducing the hand-run `docker run` of the seed.

The engine may go away under a running step (dockerd restarted or upgraded). Every call then
waits for it to answer again, with a bounded backoff and a log line, and the step's output is
taken up again from the log endpoint at the byte cursor already read. With the engine's
live-restore on, the container ran on meanwhile and its real exit code counts; without it, the
engine stopped the container, and the step fails as `container lost`.
"""

import contextlib
import functools
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import docker
import docker.errors
import docker.utils.socket
import requests
import structlog
from docker.types import DeviceRequest, Mount

from .config import DockerConfig, MultiGpuConfig
from .confinement import container_options, user_env
from .docker_logs import StreamReader, body_pieces, gathered
from .events import Progress
from .jobs import Job
from .runtime import (
    BASE_ENV,
    LABEL_JOB,
    LABEL_STEP,
    LABEL_USER,
    SECRET_SHIM_ONE_PIPE,
    ContainerHandle,
    ExitStatus,
    Handle,
    LogCursor,
    Probe,
    RuntimeFailure,
    foreign_handle,
    step_command,
)
from .states import FailureReason
from .workspace import (
    CONFIGS,
    DATASETS,
    HF_CACHE,
    RUNS,
    SECRETS,
    SHARED_HUB,
    USER_HOME,
    JobDirs,
)

log = structlog.get_logger(__name__)
T = TypeVar("T")
_ENGINE_FIRST_DELAY = 0.2
_ENGINE_MAX_DELAY = 5.0
# What reaching an engine that is not there raises (refused, reset, or cut mid-stream).
_ENGINE_GONE = (requests.exceptions.ConnectionError, ConnectionError)


def _read(reader: StreamReader, pieces: Iterator[bytes]) -> Iterator[tuple[str, tuple[int, int]]]:
    for data in pieces:
        if text := reader.feed(data):
            yield text, reader.cursor()


def _container_id(handle: Handle) -> str:
    if not isinstance(handle, ContainerHandle):
        raise foreign_handle(DockerRuntime.name, handle)
    return handle.container


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
        self.client = client or (
            docker.DockerClient(base_url=config.host, timeout=120)
            if config.host
            else docker.from_env(timeout=120)
        )
        # Attach streams opened before their container started, until logs() takes them.
        self._attached: dict[str, Any] = {}
        self._attached_lock = threading.Lock()
        # Engine outages seen so far, whether the engine kept its containers across the last,
        # and how many had been seen when the agent began to follow each step.
        self._outages = 0
        self._kept_containers = True
        self._outages_at_follow: dict[str, int] = {}

    def _await_engine(self) -> bool:
        """Wait until the engine answers; returns whether it keeps containers running across
        its restarts (live-restore)."""
        delay = _ENGINE_FIRST_DELAY
        waited = False
        while True:
            try:
                info = self.client.info()
                break
            except _ENGINE_GONE as exc:
                if not waited:
                    log.warning("Docker engine unreachable; waiting for it", error=str(exc))
                    waited = True
                time.sleep(delay)
                delay = min(delay * 2, _ENGINE_MAX_DELAY)
        live_restore = bool(info.get("LiveRestoreEnabled"))
        if waited:
            self._outages += 1
            self._kept_containers = live_restore
            log.info("Docker engine is back", live_restore=live_restore)
        return live_restore

    def _engine_call(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """call(*args, **kwargs), waiting for the engine whenever it is not there."""
        while True:
            try:
                return call(*args, **kwargs)
            except _ENGINE_GONE:
                self._await_engine()

    def _engine_answers(self) -> bool:
        try:
            self.client.ping()
        except _ENGINE_GONE:
            return False
        return True

    def _stopped_by_engine(self, container_id: str) -> bool:
        """Whether the engine restarted without live-restore while the agent followed the
        step: it then stopped the container itself, before it went away."""
        since = self._outages_at_follow.get(container_id, self._outages)
        return self._outages > since and not self._kept_containers

    def prepare(self, job: Job, progress: Callable[[Progress], None]) -> None:
        try:
            self._engine_call(self.client.images.get, job.spec.image)
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
            Mount(USER_HOME, str(dirs.home), type="bind"),
        ]
        if dirs.shared_hub is not None:
            mounts.append(Mount(SHARED_HUB, str(dirs.shared_hub), type="bind", read_only=True))
        mounts += [
            Mount(m.target, str(m.source), type="bind", read_only=m.read_only)
            for m in self.config.extra_mounts
        ]
        return mounts

    def start(self, job: Job, step: str, dirs: JobDirs, ready: Callable[[], None]) -> Handle:
        name = f"hatrain-{job.id}-{step}"
        kwargs: dict[str, Any] = {}
        if job.gpu_uuids:
            kwargs["device_requests"] = [
                DeviceRequest(
                    driver="nvidia", device_ids=list(job.gpu_uuids), capabilities=[["gpu"]]
                )
            ]
        kwargs.update(container_options(self.config, dirs.owner))
        hub = SHARED_HUB if dirs.shared_hub is not None else None
        args, launch_env = step_command(step, job, self.multi_gpu)
        create = functools.partial(
            self._engine_call,
            self.client.containers.create,
            job.spec.image,
            command=[
                "/bin/sh",
                "-c",
                SECRET_SHIM_ONE_PIPE,
                "hatrain",
                "axolotl",
                *args,
            ],
            name=name,
            labels={LABEL_JOB: job.id, LABEL_STEP: step, LABEL_USER: job.user},
            # An init as PID 1 (docker-init, i.e. tini) passes SIGTERM on to the step's
            # whole process group: the launcher and its training processes stop at once,
            # instead of ignoring it as PID 1 does and waiting for SIGKILL.
            init=True,
            environment={
                **BASE_ENV,
                "TINI_KILL_PROCESS_GROUP": "1",
                **user_env(dirs.owner, USER_HOME, hub),
                **self.config.env,
                **launch_env,
            },
            mounts=self._mounts(dirs),
            working_dir="/workspace",
            detach=True,
            **kwargs,
        )
        try:
            try:
                container = create()
            except docker.errors.APIError as exc:
                if exc.status_code != 409:
                    raise
                # The name is taken: by a create whose answer an engine restart cut off.
                self._remove_unstarted(name)
                container = create()
            self._attach(container.id)
            ready()
            self._engine_call(container.start)
        except docker.errors.APIError as exc:
            reason = FailureReason.RUNTIME_ERROR
            text = str(exc.explanation or exc)
            if "nvidia" in text or "device driver" in text:
                reason = FailureReason.GPU_UNAVAILABLE
            raise RuntimeFailure(reason, f"docker: {text}") from exc
        return ContainerHandle(container.id, name)

    def _remove_unstarted(self, name: str) -> None:
        with contextlib.suppress(docker.errors.NotFound):
            container = self._engine_call(self.client.containers.get, name)
            if container.status == "created":
                self._engine_call(container.remove, force=True)

    def find(self, job: Job, step: str) -> Handle | None:
        found = self.client.containers.list(
            all=True,
            filters={"label": [f"{LABEL_JOB}={job.id}", f"{LABEL_STEP}={step}"]},
            ignore_removed=True,
        )
        if not found:
            return None
        return ContainerHandle(found[0].id, found[0].name)

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

    def logs(self, handle: Handle, cursor: LogCursor | None) -> Iterator[tuple[str, LogCursor]]:
        """Output after cursor (bytes of stdout and of stderr already read), until the step ends.

        Live from the attach stream opened at start. After a restart of the agent, or if the
        attach stream breaks while the step runs (the engine restarted under it), from the log
        endpoint, which replays the log file from the start (skipping what was read) and then
        follows.
        """
        container_id = _container_id(handle)
        # (An int is no cursor of this runtime's: then from the start.)
        position = cursor if isinstance(cursor, tuple) else None
        sock = self._detach(container_id)
        self._outages_at_follow.setdefault(container_id, self._outages)
        if sock is not None and not position:
            reader = StreamReader(None)
            with contextlib.suppress(OSError), contextlib.closing(sock):
                yield from _read(reader, _socket_pieces(sock))
            if not self._engine_answers():
                self._await_engine()
            elif self.probe(handle) != "running":
                if text := reader.finish():
                    yield text, reader.cursor()
                return
            position = reader.cursor()  # a partial line is read again from the log file
        elif sock is not None:
            sock.close()
        while True:
            reader = StreamReader(position)
            try:
                for text, position in _read(reader, self._log_pieces(handle)):
                    yield text, position
            except _ENGINE_GONE:
                pass
            if not self._engine_answers():
                self._await_engine()
                continue
            if self.probe(handle) == "running":
                time.sleep(_ENGINE_FIRST_DELAY)
                continue  # the stream broke, not the step: take it up again
            if text := reader.finish():
                yield text, reader.cursor()
            return

    def _log_pieces(self, handle: Handle) -> Iterator[bytes]:
        api = self.client.api
        params = {"stdout": 1, "stderr": 1, "follow": 1}
        url = f"{api.base_url}/v{api.api_version}/containers/{_container_id(handle)}/logs"
        response = self._engine_call(api.get, url, params=params, stream=True, timeout=None)
        with contextlib.closing(response):
            if response.status_code in (404, 409):  # gone, or being removed
                return
            response.raise_for_status()
            yield from body_pieces(response)

    def wait(self, handle: Handle) -> ExitStatus:
        container_id = _container_id(handle)
        try:
            # Docker's own wait: the engine answers when the container exits.
            result = self._engine_call(self.client.api.wait, container_id)
            state = self._engine_call(self.client.api.inspect_container, container_id)["State"]
        except docker.errors.NotFound as exc:
            raise RuntimeFailure(
                FailureReason.CONTAINER_LOST, "the container disappeared while it ran"
            ) from exc
        if self._stopped_by_engine(container_id):
            raise RuntimeFailure(
                FailureReason.CONTAINER_LOST,
                "the Docker engine restarted without live-restore and stopped the container "
                f'(it exited {result["StatusCode"]}); set "live-restore": true in '
                "/etc/docker/daemon.json to keep jobs running across engine restarts",
            )
        return ExitStatus(int(result["StatusCode"]), bool(state["OOMKilled"]))

    def probe(self, handle: Handle) -> Probe:
        try:
            container = self._engine_call(self.client.containers.get, _container_id(handle))
        except docker.errors.NotFound:
            return "missing"
        return "running" if container.status in ("running", "created", "restarting") else "exited"

    def stop(self, handle: Handle, grace_seconds: float) -> None:
        with contextlib.suppress(docker.errors.NotFound):
            container = self._engine_call(self.client.containers.get, _container_id(handle))
            self._engine_call(container.stop, timeout=int(grace_seconds))

    def remove(self, handle: Handle) -> None:
        container_id = _container_id(handle)
        self._outages_at_follow.pop(container_id, None)
        if (sock := self._detach(container_id)) is not None:
            sock.close()
        with contextlib.suppress(docker.errors.NotFound):
            container = self._engine_call(self.client.containers.get, container_id)
            try:
                self._engine_call(container.remove, force=True)
            except docker.errors.APIError as error:
                if not _removal_in_progress(error):
                    raise

    def leftovers(self) -> Iterator[tuple[str, Handle]]:
        # ignore_removed: a container removed between the listing and its inspection (another
        # agent's, on a shared engine) is simply not there, not an error.
        listed = self.client.containers.list(
            all=True, filters={"label": LABEL_JOB}, ignore_removed=True
        )
        for container in listed:
            yield container.labels[LABEL_JOB], ContainerHandle(container.id, container.name)


def _removal_in_progress(error: docker.errors.APIError) -> bool:
    """The engine is already removing this container (another caller asked first): the end is
    the same as our own removal's."""
    return error.status_code == 409 and "already in progress" in str(error.explanation or "")
