"""A job as submitted: the one spelling of its spec, on both sides of the wire."""

from dataclasses import dataclass, replace

from hatrain.rpc.v1 import agent_pb2 as pb


@dataclass(frozen=True)
class JobFile:
    """A file the job sees at /workspace/data/datasets/<path>, by content hash."""

    path: str
    sha256: str
    size: int


@dataclass(frozen=True)
class JobSpec:
    """What a job asks for. The agent checks it (naming each bad field) before it is kept."""

    config_name: str
    config_yaml: str
    image: str = ""
    name: str = ""
    files: tuple[JobFile, ...] = ()
    gpus: int = 0
    min_gpu_memory_mb: int = 0
    gpu_type: str = ""
    priority: int = 0
    time_limit_seconds: int = 0
    team: str = ""
    retry_of: str = ""
    # Team queue: requeued if its host is lost while it runs; the only host it may run on.
    requeue: bool = False
    host: str = ""

    def to_wire(self) -> pb.JobSpec:
        return pb.JobSpec(
            name=self.name,
            config_name=self.config_name,
            config_yaml=self.config_yaml.encode("utf-8"),
            files=[pb.JobFile(path=f.path, sha256=f.sha256, size=f.size) for f in self.files],
            image=self.image,
            resources=pb.Resources(
                gpus=self.gpus, min_gpu_memory_mb=self.min_gpu_memory_mb, gpu_type=self.gpu_type
            ),
            priority=self.priority,
            time_limit_seconds=self.time_limit_seconds,
            team=self.team,
            retry_of=self.retry_of,
            requeue=self.requeue,
            host=self.host,
        )

    @classmethod
    def from_wire(cls, spec: pb.JobSpec) -> "JobSpec":
        """The spec as sent; config_yaml must be UTF-8 (the agent checks that first)."""
        return cls(
            config_name=spec.config_name,
            config_yaml=spec.config_yaml.decode("utf-8"),
            image=spec.image,
            name=spec.name,
            files=tuple(JobFile(f.path, f.sha256, f.size) for f in spec.files),
            gpus=spec.resources.gpus,
            min_gpu_memory_mb=spec.resources.min_gpu_memory_mb,
            gpu_type=spec.resources.gpu_type,
            priority=spec.priority,
            time_limit_seconds=spec.time_limit_seconds,
            team=spec.team,
            retry_of=spec.retry_of,
            requeue=spec.requeue,
            host=spec.host,
        )

    def retried(self, job_id: str) -> "JobSpec":
        """The same job again, as a retry of job_id."""
        return replace(self, retry_of=job_id)
