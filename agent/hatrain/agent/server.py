"""`hatrain-agent serve`: wire the parts together and serve gRPC until SIGTERM."""

import asyncio
import faulthandler
import gc
import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Coroutine
from concurrent import futures
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from hatrain.rpc.v1 import agent_pb2 as pb
from hatrain.rpc.v1 import agent_pb2_grpc as pb_grpc

from .config import AgentConfig
from .disk import DiskReserve
from .gpu_usage import GpuReader, GpuUsageSampler, NvmlReader
from .gpus import discover
from .identity import Identities
from .listener import FrontDoor, prepare_runtime_dir
from .metrics import AgentMetrics
from .objects import ObjectStore
from .runtime import Runtime
from .service import AgentService, JobWaiters
from .store import Store
from .supervisor import Supervisor
from .sweep import Sweeper
from .systemd import Notifier
from .watermarks import Watermarks
from .workspace import Workspace

if TYPE_CHECKING:
    from .team.front import TeamFront
    from .team.member import TeamMember

log = structlog.get_logger(__name__)
# SIGUSR1 writes every thread's stack to the agent's log (stderr): what a hung agent is doing.
DUMP_STACKS_SIGNAL = signal.SIGUSR1
# A stop taking longer than this (systemd's TimeoutStopSec is 30 s) is a hang: the stacks go to
# the log and the agent exits with code 1, rather than wait for SIGKILL.
STOP_DEADLINE_SECONDS = 20
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["AgentService"].full_name


def configure_logging(fmt: str) -> None:
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.processors.format_exc_info,
            renderer,
        ],
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
    )


def make_runtime(config: AgentConfig, workspace: Workspace) -> Runtime:
    if config.runtime == "local":
        from .runtime_local import LocalRuntime

        return LocalRuntime(config.local, workspace, config.multi_gpu)
    from .runtime_docker import DockerRuntime

    return DockerRuntime(config.docker, multi_gpu=config.multi_gpu)


class Agent:
    """Everything `serve` runs, startable and stoppable in-process (tests use it too).

    The gRPC server is grpc.aio's, on an event loop of its own thread: unary calls run on a
    thread pool, watch streams are coroutines on the loop."""

    def __init__(
        self,
        config: AgentConfig,
        gpu_reader: Callable[[], GpuReader] | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        """gpu_reader: what reads the GPUs' usage; NVML when the GPUs came from NVML.
        notifier: systemd's, whose keepalives the supervisor's loop sends."""
        self.config = config
        root = config.data_root
        root.mkdir(parents=True, exist_ok=True)
        self.store = Store(root / "hatrain.db")
        self.objects = ObjectStore(root)
        self.reserve = DiskReserve(root)
        self.socket = config.listen
        self.address = f"unix:{self.socket}"
        self._private = self.socket.parent / "private"
        self.identities = Identities(self._private, config.admins, config.teams)
        self.workspace = Workspace(root, self.objects, config.caches, self.identities.readers_of)
        retention = config.retention
        self.watermarks = Watermarks(
            root, retention.hold_starts_below, retention.refuse_uploads_below
        )
        self.sweeper = Sweeper(self.store, root, retention.policy())
        self.runtime = make_runtime(config, self.workspace)
        self.gpus, self.gpu_source = discover(config.gpus)
        if gpu_reader is None and self.gpu_source == "nvml":
            gpu_reader = NvmlReader
        self.gpu_usage = (
            GpuUsageSampler(self.store, gpu_reader, config.gpus.sample_seconds)
            if gpu_reader is not None and config.gpus.sample_seconds > 0
            else None
        )
        self.metrics = AgentMetrics(self.store, self.gpus, root, gpu_usage=lambda: self.gpu_usage)
        policy = config.scheduler.policy()
        grace = (
            config.local.stop_grace_seconds
            if config.runtime == "local"
            else config.docker.stop_grace_seconds
        )
        self.supervisor = Supervisor(
            self.store,
            self.runtime,
            self.workspace,
            self.gpus,
            policy,
            grace,
            reserve=self.reserve,
            objects=self.objects,
            staging_max_age_seconds=config.limits.staging_max_age_seconds,
            watermarks=self.watermarks,
            sweeper=self.sweeper,
            sweep_interval_seconds=retention.sweep_interval_minutes * 60,
            heartbeat=notifier.keepalive if notifier is not None else None,
            max_idle_seconds=_idle_pass_seconds(notifier),
        )
        self.team: TeamMember | None = None
        self.team_front: TeamFront | None = None
        if config.team is not None:
            # Imported only here: the team's database driver is most of a resident agent's
            # memory, and a host without a team never needs it.
            from .team import front, member

            self.team = member.TeamMember(
                config.team,
                self.store,
                self.objects,
                self.workspace,
                self.supervisor,
                self.runtime,
                self.gpus,
                policy,
                grace,
            )
            self.team_front = front.TeamFront(
                self.team.db,
                config.team.host,
                self.objects,
                config.team.max_object_bytes,
                config.scheduler,
                self.team,
            )
        self.front_door = FrontDoor(self.socket, self._private / "grpc.sock", self._private)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="grpc", daemon=True)
        self._calls = futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="grpc")
        self._reads = futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="watch")
        self._thread.start()
        try:
            self._run(self._build())
        except BaseException:
            self._loop.call_soon_threadsafe(self._loop.stop)
            raise

    def _run(self, coroutine: Coroutine[Any, Any, object], timeout: float | None = None) -> object:
        """Run a coroutine on the server's loop and wait for its result (TimeoutError after
        `timeout` seconds, the coroutine cancelled)."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(timeout)
        except futures.TimeoutError:
            future.cancel()
            raise

    async def _build(self) -> None:
        config = self.config
        self.server = grpc.aio.server(
            migration_thread_pool=self._calls,
            options=[
                ("grpc.max_receive_message_length", config.limits.max_request_bytes),
                ("grpc.max_send_message_length", 64 * 1024 * 1024),
                ("grpc.so_reuseport", 0),
            ],
        )
        waiters = JobWaiters(asyncio.get_running_loop())
        self.store.on_change(waiters.notify)
        pb_grpc.add_AgentServiceServicer_to_server(  # type: ignore[no-untyped-call]
            AgentService(
                config,
                self.store,
                self.objects,
                self.workspace,
                self.supervisor,
                self.gpus,
                self.gpu_source,
                self.reserve,
                waiters,
                self._reads,
                self.identities,
                self.gpu_usage,
                self.watermarks,
                self.metrics,
                team=self.team_front,
            ),
            self.server,
        )
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )
        prepare_runtime_dir(self.socket.parent)
        self._private.mkdir(mode=0o700, exist_ok=True)
        os.chmod(self._private, 0o700)
        internal = self._private / "grpc.sock"
        internal.unlink(missing_ok=True)
        if self.server.add_insecure_port(f"unix:{internal}") == 0:
            raise OSError(f"cannot listen on {internal}")

    async def _serve(self) -> None:
        await self.server.start()
        await self.front_door.start()
        await self.health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)

    def start(self) -> None:
        if self.team is not None:
            # First: the jobs the team gave up on while this host was away end here before the
            # supervisor would resume them.
            self.team.start()
        self.supervisor.start()
        if self.gpu_usage is not None:
            self.gpu_usage.start()
        self._run(self._serve())
        if self.config.metrics.listen:
            self.metrics.listen(self.config.metrics.listen)
        log.info(
            "agent serving",
            listen=str(self.socket),
            runtime=self.config.runtime,
            gpus=len(self.gpus),
            gpu_source=self.gpu_source,
            data_root=str(self.config.data_root),
        )

    async def _shutdown(self, grace: float) -> None:
        self.front_door.close()
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        # Only now: calls in flight had their grace through the connections they came on.
        await self.front_door.stop()

    def stop(self, grace: float = 2.0) -> None:
        """Stop serving (running jobs keep running); stopping a stopped agent does nothing.
        Returns within about grace + 10 seconds whatever callers still hold open."""
        if not self._loop.is_running():
            return
        try:
            self._run(self._shutdown(grace), timeout=grace + 5)
        except futures.TimeoutError:
            log.warning("the gRPC server did not stop in time; stopping regardless")
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        # The store stays open: runner threads of still-running jobs may write until exit.
        if self.team is not None:
            self.team.stop()
        self.supervisor.stop()
        if self.gpu_usage is not None:
            self.gpu_usage.stop()
        self.metrics.stop()
        # Workers are joined at exit: queued work must not start (a call or a watch read
        # left when the loop stopped); what runs is a store read or a unary call, both short.
        self._calls.shutdown(wait=False, cancel_futures=True)
        self._reads.shutdown(wait=False, cancel_futures=True)


def _idle_pass_seconds(notifier: Notifier | None) -> float:
    """How long the supervisor's loop may sleep when idle: under half the watchdog period, so
    that an idle agent still sends its keepalives."""
    if notifier is None or notifier.watchdog_seconds is None:
        return 1.0
    return min(1.0, notifier.watchdog_seconds / 2)


def wait_until_answering(socket_path: Path, timeout: float = 60.0) -> None:
    """Return once a health check through the agent's own socket answers SERVING."""
    with grpc.insecure_channel(f"unix:{socket_path}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + timeout
        while True:
            try:
                answer = stub.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.05)


def dump_stacks(*_: Any) -> None:
    """Every thread's stack, by name, to the log (stderr). Run by the main thread as a signal
    handler, holding the interpreter's lock: faulthandler's dump reads the other threads'
    frames while they run, and could crash the agent it was asked to look into."""
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    stacks = [
        f"Thread {names.get(ident, '?')} ({ident:#x}), most recent call last:\n"
        + "".join(traceback.format_stack(frame))
        for ident, frame in sys._current_frames().items()
    ]
    sys.stderr.write("\n".join(stacks) + "\n")
    sys.stderr.flush()


def serve(config: AgentConfig) -> None:
    configure_logging(config.log_format)
    signal.signal(DUMP_STACKS_SIGNAL, dump_stacks)
    notifier = Notifier()
    # Jobs' processes must not talk to systemd as the agent.
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        os.environ.pop(name, None)
    agent = Agent(config, notifier=notifier)
    agent.start()  # recovery (re-attaching to running jobs) is done when this returns
    # What start-up made lives as long as the agent: keep the collector from walking it again
    # every time a job's output makes many short-lived objects.
    gc.freeze()
    wait_until_answering(agent.socket)
    notifier.ready(f"serving on {agent.socket}")
    stopped = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopped.set())
    stopped.wait()
    notifier.stopping()
    log.info("agent stopping; running jobs keep running and are re-attached on start")
    faulthandler.dump_traceback_later(STOP_DEADLINE_SECONDS, exit=True, file=sys.stderr)
    agent.stop()
    log.info("agent stopped")
