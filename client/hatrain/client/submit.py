"""What `submit` does: check everything locally, upload what the host lacks, rewrite, submit
(one config, or several at once)."""

import os
import re
import uuid
from collections.abc import Callable, Sequence
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


def prepare_all(requests: Sequence[SubmitRequest], cache: HashCache) -> list[Prepared]:
    """prepare() for each config, every one checked before any is refused: one BadInput naming
    each refused config. Nothing has been sent when it raises."""
    prepared: list[Prepared] = []
    refused: list[BadInput] = []
    for request in requests:
        try:
            prepared.append(prepare(request, cache))
        except BadInput as exc:
            refused.append(exc)
    if len(refused) == 1:
        raise refused[0]  # it names its config
    if refused:
        raise BadInput(
            f"{len(refused)} of the {len(requests)} configs would be refused; nothing was sent:\n"
            + "\n".join(_whole(exc) for exc in refused)
        )
    return prepared


def _whole(error: BadInput) -> str:
    """An error with its fix and commands, as one block of lines."""
    lines = [error.message]
    if error.fix:
        lines.append(f"  fix: {error.fix}")
    lines += [f"    {command}" for command in error.commands]
    return "\n".join(lines)


def submit_all(
    session: HostConnection,
    requests: Sequence[SubmitRequest],
    prepared: Sequence[Prepared],
    on_bytes: Callable[[int], None] = lambda n: None,
    team_queue: bool = False,
) -> tuple[list[pb.Job], UploadReport]:
    """Upload what the host lacks of all the configs' files (each once), then submit the
    rewritten configs in one call: the jobs, in order, and the upload. Nothing is submitted if
    an upload fails; on a host's own queue the agent queues all or none."""
    objects = {sha: path for ready in prepared for path, sha in ready.hashes.items()}
    report = upload(session, objects, on_bytes)
    wire = [
        _wire_request(
            _final_spec(request, ready), secrets_from_env(request.secret_names), team_queue
        )
        for request, ready in zip(requests, prepared, strict=True)
    ]
    if len(wire) == 1:  # one job is one SubmitJob: its refusals name no index
        return [session.submit_job(wire[0])], report
    return session.submit_jobs(pb.SubmitJobsRequest(jobs=wire)), report


def _final_spec(request: SubmitRequest, prepared: Prepared) -> JobSpec:
    """The spec as sent: the config rewritten to the uploaded files, named."""
    analysis, hashes = prepared.analysis, prepared.hashes
    name = request.spec.name or request.config.stem
    return replace(
        request.spec,
        name=name,
        config_name=config_name(request.config),
        config_yaml=finalize(analysis, hashes, name),
        files=tuple(JobFile(f.name, hashes[f.path], f.path.stat().st_size) for f in analysis.files),
    )


def submit_spec(
    session: HostConnection, spec: JobSpec, secrets: dict[str, str], team_queue: bool = False
) -> pb.Job:
    """Queue a job of this spec (in the team queue, if asked); the request id makes a repeated
    send return the same job."""
    return session.submit_job(_wire_request(spec, secrets, team_queue))


def _wire_request(spec: JobSpec, secrets: dict[str, str], team_queue: bool) -> pb.SubmitJobRequest:
    return pb.SubmitJobRequest(
        spec=spec.to_wire(),
        secrets=secrets,
        client_request_id=uuid.uuid4().hex,
        team_queue=team_queue,
    )
