"""What `submit` does: check everything locally, upload what the host lacks, rewrite, submit."""

import os
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hatrain.rpc.v1 import agent_pb2 as pb

from .axolotl_config import Analysis, analyse, finalize
from .dataset_check import check_file, single_example
from .errors import BadInput
from .findings import Finding, refuse
from .hash_cache import HashCache
from .session import HostSession
from .upload import UploadReport, upload

_CONFIG_NAME = re.compile(r"[^A-Za-z0-9._-]")


@dataclass
class SubmitRequest:
    config: Path
    datasets: dict[str, Path] = field(default_factory=dict)
    name: str = ""
    image: str = ""
    gpus: int = 0
    min_gpu_memory_mb: int = 0
    gpu_type: str = ""
    priority: int = 0
    time_limit_seconds: int = 0
    team: str = ""
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


def check_datasets(analysis: Analysis, cache: HashCache) -> list[Finding]:
    """Check each local chat file as its dataset entry reads it. A file already found good (same
    content, same reading) is not read again."""
    findings: list[Finding] = []
    counted: list[tuple[str, Path, int]] = []
    for check in analysis.checks:
        key = f"{cache.sha256(check.path)}:{check.reading.fingerprint()}"
        if cache.checked(key):
            counted.append((check.field, check.path, 2))  # marked only with two or more
            continue
        result = check_file(check.path, check.reading)
        findings += result.findings
        if check.field.startswith("datasets["):
            counted.append((check.field, check.path, result.records))
        if not result.findings and result.records >= 2:
            cache.mark_checked(key)
    datasets = analysis.config.get("datasets")
    if not findings and isinstance(datasets, list) and not analysis.config.get("val_set_size"):
        train = [c for c in counted if c[0].startswith("datasets[")]
        if (one := single_example(train, len(datasets))) is not None:
            findings.append(one)
    return findings


def prepare(request: SubmitRequest, cache: HashCache) -> Prepared:
    """Everything that can be checked without the host; raises BadInput naming every finding.
    Nothing has been sent when it raises."""
    analysis = analyse(request.config, request.datasets)
    refuse(analysis.findings, f"{request.config}: Axolotl would refuse this config")
    refuse(check_datasets(analysis, cache), f"{request.config}: Axolotl would refuse its data")
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
    session: HostSession,
    request: SubmitRequest,
    prepared: Prepared,
    on_bytes: Callable[[int], None] = lambda n: None,
) -> tuple[pb.Job, UploadReport]:
    analysis, hashes = prepared.analysis, prepared.hashes
    report = upload(session, {sha: path for path, sha in hashes.items()}, on_bytes)
    name = request.name or request.config.stem
    text = finalize(analysis, hashes, name)
    spec = pb.JobSpec(
        name=name,
        config_name=config_name(request.config),
        config_yaml=text.encode("utf-8"),
        files=[
            pb.JobFile(path=f.name, sha256=hashes[f.path], size=f.path.stat().st_size)
            for f in analysis.files
        ],
        image=request.image,
        resources=pb.Resources(
            gpus=request.gpus,
            min_gpu_memory_mb=request.min_gpu_memory_mb,
            gpu_type=request.gpu_type,
        ),
        priority=request.priority,
        time_limit_seconds=request.time_limit_seconds,
        team=request.team,
    )
    answer = session.call(
        "SubmitJob",
        pb.SubmitJobRequest(
            spec=spec,
            secrets=secrets_from_env(request.secret_names),
            client_request_id=uuid.uuid4().hex,
        ),
    )
    return answer.job, report
