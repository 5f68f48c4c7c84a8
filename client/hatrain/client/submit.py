"""What `submit` does: check everything locally, upload what the host lacks, rewrite, submit."""

import os
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from hatrain.rpc.spec import JobFile, JobSpec
from hatrain.rpc.v1 import agent_pb2 as pb

from .axolotl_config import Analysis, analyse, finalize
from .check import check_analysis
from .errors import BadInput
from .findings import refuse
from .hash_cache import HashCache
from .records import UploadReport
from .transport import HostConnection
from .upload import upload

_CONFIG_NAME = re.compile(r"[^A-Za-z0-9._-]")


@dataclass
class SubmitRequest:
    """A config to submit: its local files, and what the job asks for (`spec`, whose config
    and files are filled in from the config once it is checked and uploaded)."""

    config: Path
    spec: JobSpec
    datasets: dict[str, Path] = field(default_factory=dict)
    secret_names: tuple[str, ...] = ()


def parse_dataset_option(values: tuple[str, ...]) -> dict[str, Path]:
    mapping = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise BadInput(f"--dataset {value}: expected NAME=PATH, e.g. sample.jsonl=data/x.jsonl")
        mapping[name] = Path(path).expanduser()
    return mapping


@dataclass
class Prepared:
    analysis: Analysis
    hashes: dict[Path, str]


def prepare(request: SubmitRequest, cache: HashCache) -> Prepared:
    """Everything that can be checked without the host; raises BadInput naming every finding.
    Nothing has been sent when it raises."""
    analysis = analyse(request.config, request.datasets, scratch=cache.directory / "copies")
    refuse(analysis.findings, f"{request.config}: Axolotl would refuse this config")
    checked = check_analysis(analysis, cache)
    refuse(checked.findings, f"{request.config}: Axolotl would refuse its data")
    hashes = {f.path: cache.sha256(f.path) for f in analysis.files}
    return Prepared(analysis, hashes)


def secrets_from_env(names: tuple[str, ...]) -> dict[str, str]:
    secrets = {}
    for name in ("HF_TOKEN", *names):
        value = os.environ.get(name)
        if value:
            secrets[name] = value
        elif name != "HF_TOKEN":
            raise BadInput(f"--secret {name}: the environment variable {name} is not set")
    return secrets


def config_name(path: Path) -> str:
    stem = _CONFIG_NAME.sub("-", path.stem).lstrip(".-_") or "config"
    return f"{stem[:120]}.yml"


def submit(
    session: HostConnection,
    request: SubmitRequest,
    prepared: Prepared,
    on_bytes: Callable[[int], None] = lambda n: None,
    team_queue: bool = False,
) -> tuple[pb.Job, UploadReport]:
    """Upload what the host lacks, then submit the rewritten config; nothing is submitted if an
    upload fails."""
    analysis, hashes = prepared.analysis, prepared.hashes
    report = upload(session, {sha: path for path, sha in hashes.items()}, on_bytes)
    name = request.spec.name or request.config.stem
    spec = replace(
        request.spec,
        name=name,
        config_name=config_name(request.config),
        config_yaml=finalize(analysis, hashes, name),
        files=tuple(JobFile(f.name, hashes[f.path], f.path.stat().st_size) for f in analysis.files),
    )
    job = submit_spec(session, spec, secrets_from_env(request.secret_names), team_queue)
    return job, report


def submit_spec(
    session: HostConnection, spec: JobSpec, secrets: dict[str, str], team_queue: bool = False
) -> pb.Job:
    """Queue a job of this spec (in the team queue, if asked); the request id makes a repeated
    send return the same job."""
    return session.submit_job(
        pb.SubmitJobRequest(
            spec=spec.to_wire(),
            secrets=secrets,
            client_request_id=uuid.uuid4().hex,
            team_queue=team_queue,
        )
    )
