"""Checks a submission before anything is stored: every problem names its field."""

import hashlib
import posixpath
import re
from collections.abc import Sized
from dataclasses import replace
from typing import Any

import yaml
from hatrain.rpc import limits
from hatrain.rpc.config_yaml import ConfigYamlError, load_config_yaml
from hatrain.rpc.contract import gpu_accepts
from hatrain.rpc.v1 import agent_pb2 as pb

from .config import AgentConfig
from .errors import InvalidArgument, ResourceExhausted
from .jobs import JobFile, JobSpec
from .objects import ObjectStore, check_sha256
from .scheduler import GpuSlot
from .workspace import CONFIGS, DATASETS, HF_CACHE, RUNS, SHARED_HUB

_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml: else a submit's largest cost

_CONFIG_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\.ya?ml$")
_SECRET_NAME = re.compile(r"^[A-Z_][A-Z0-9_]{0,63}$")
_JOB_ID = re.compile(r"^[A-Za-z0-9_-]+$")
# Strings under these keys are text for the model, not paths (a system prompt may begin with /).
_TEXT_KEYS = frozenset(
    {
        "system_prompt",
        "default_system_message",
        "special_tokens",
        "tokens",
        "added_tokens_overrides",
        "eot_tokens",
    }
)


def check_text(value: str, field: str, limit: int) -> str:
    if len(value) > limit:
        raise InvalidArgument(field, f"at most {limit} characters, got {len(value)}")
    return value


def check_count(values: Sized, field: str, limit: int) -> None:
    if len(values) > limit:
        raise InvalidArgument(field, f"at most {limit} entries, got {len(values)}")


def check_job_id(value: str, field: str = "job_id") -> str:
    check_text(value, field, limits.JOB_ID_CHARS)
    if not _JOB_ID.match(value):
        raise InvalidArgument(field, f"a job id (letters, digits, - and _), got {value[:40]!r}")
    return value


def _parse_config(raw: bytes, limit: int, max_nodes: int) -> dict[str, Any]:
    if len(raw) > limit:
        raise ResourceExhausted(f"spec.config_yaml: at most {limit} bytes, got {len(raw)}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidArgument(
            "spec.config_yaml", f"UTF-8 text (invalid byte at offset {exc.start})"
        ) from exc
    try:
        config = load_config_yaml(text, max_nodes)
    except ConfigYamlError as exc:
        raise InvalidArgument("spec.config_yaml", f"valid YAML: {exc}") from exc
    if not isinstance(config, dict):
        raise InvalidArgument(
            "spec.config_yaml", f"an Axolotl config: a YAML mapping, got {type(config).__name__}"
        )
    return config


def _check_output_dir(config: dict[str, Any]) -> None:
    output_dir = config.get("output_dir")
    if not isinstance(output_dir, str):
        raise InvalidArgument("spec.config_yaml: output_dir", f"a path under {RUNS}/")
    normal = posixpath.normpath(output_dir)
    if not normal.startswith(RUNS + "/"):
        raise InvalidArgument(
            "spec.config_yaml: output_dir", f"a path under {RUNS}/, got {output_dir!r}"
        )


def job_mounts(config: AgentConfig) -> tuple[str, ...]:
    """The container paths a job's config may point into: its own directories, the shared
    hub cache and the admin's extra mounts."""
    mounts = [CONFIGS, DATASETS, RUNS, HF_CACHE]
    if config.caches.shared_hub is not None:
        mounts.append(SHARED_HUB)
    if config.runtime == "docker":
        mounts += [m.target for m in config.docker.extra_mounts]
    return tuple(mounts)


def _inside(path: str, mounts: tuple[str, ...]) -> bool:
    normal = posixpath.normpath(path)
    return any(normal == m or normal.startswith(m.rstrip("/") + "/") for m in mounts)


def _check_paths(value: Any, field: str, mounts: tuple[str, ...]) -> None:
    """Every path in the config stays inside the job's mounts: an absolute path (or file: URL)
    under one of them, a relative one without climbing out with `..`."""
    if isinstance(value, dict):
        for key, item in value.items():
            if str(key) not in _TEXT_KEYS:
                _check_paths(item, f"{field}.{key}" if field else str(key), mounts)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_paths(item, f"{field}[{i}]", mounts)
    elif isinstance(value, str) and "\n" not in value:
        path = value
        if path.startswith("file:"):
            path = path.removeprefix("file:")
            path = "/" + path.lstrip("/") if path.startswith("//") else path
        if path.startswith("/") and not _inside(path, mounts):
            raise InvalidArgument(
                f"spec.config_yaml: {field}",
                f"a path inside the job's mounts ({', '.join(mounts)}), got {value!r}",
            )
        if not path.startswith("/") and posixpath.normpath(path).split("/")[0] == "..":
            raise InvalidArgument(
                f"spec.config_yaml: {field}",
                f"a path that stays inside the job's directories (no leading ..), got {value!r}",
            )


def prepared_path(files: tuple[JobFile, ...]) -> str:
    """Where Axolotl keeps the job's tokenized data: in its user's own cache, under a key of
    the content, so that a changed dataset never reuses a stale tokenization."""
    key = hashlib.sha256()
    for f in sorted(files, key=lambda f: f.path):
        key.update(f"{f.path}\0{f.sha256}\n".encode())
    return f"{HF_CACHE}/prepared/{key.hexdigest()[:24]}"


def _check_files(files: Any, objects: ObjectStore, max_files: int) -> tuple[JobFile, ...]:
    if len(files) > max_files:
        raise ResourceExhausted(f"spec.files: at most {max_files} files, got {len(files)}")
    checked = []
    seen: set[str] = set()
    for i, f in enumerate(files):
        field = f"spec.files[{i}]"
        check_text(f.path, f"{field}.path", limits.FILE_PATH_CHARS)
        normal = posixpath.normpath(f.path) if f.path else ""
        if not normal or normal.startswith(("/", "..")) or normal == ".":
            raise InvalidArgument(
                f"{field}.path", f"a relative path inside the datasets directory, got {f.path!r}"
            )
        if normal in seen:
            raise InvalidArgument(f"{field}.path", f"a path not listed twice ({normal!r})")
        seen.add(normal)
        check_sha256(f.sha256, f"{field}.sha256")
        if not objects.has(f.sha256):
            raise InvalidArgument(f"{field}.sha256", "an uploaded object; upload it first")
        checked.append(JobFile(normal, f.sha256, f.size))
    return tuple(checked)


def check_submission(
    request: pb.SubmitJobRequest,
    config: AgentConfig,
    gpus: list[GpuSlot],
    objects: ObjectStore,
) -> tuple[JobSpec, dict[str, str]]:
    """The validated spec and secrets, or InvalidArgument naming the field."""
    spec = request.spec
    check_text(spec.config_name, "spec.config_name", limits.CONFIG_NAME_CHARS)
    check_text(spec.name, "spec.name", limits.NAME_CHARS)
    check_text(spec.image, "spec.image", limits.IMAGE_CHARS)
    check_text(spec.team, "spec.team", limits.TEAM_CHARS)
    check_text(spec.resources.gpu_type, "spec.resources.gpu_type", limits.GPU_TYPE_CHARS)
    check_text(request.client_request_id, "client_request_id", limits.REQUEST_ID_CHARS)
    if spec.retry_of:
        check_job_id(spec.retry_of, "spec.retry_of")
    check_count(request.secrets, "secrets", limits.SECRETS)
    if not _CONFIG_NAME.match(spec.config_name):
        raise InvalidArgument(
            "spec.config_name", f"a file name ending in .yml or .yaml, got {spec.config_name!r}"
        )
    parsed = _parse_config(
        spec.config_yaml, config.limits.max_config_bytes, config.limits.max_config_nodes
    )
    _check_output_dir(parsed)
    parsed.pop("dataset_prepared_path", None)  # the agent's to choose, below
    _check_paths(parsed, "", job_mounts(config))
    image = spec.image or config.docker.default_image
    if config.runtime == "docker" and image not in config.docker.allowed_images:
        raise InvalidArgument(
            "spec.image",
            f"one of the allowed images ({', '.join(config.docker.allowed_images)}), got {image!r}",
        )
    resources = spec.resources
    if resources.gpus < 0:
        raise InvalidArgument("spec.resources.gpus", "0 or more")
    fitting = [
        g
        for g in gpus
        if gpu_accepts(g.name, g.memory_mb, resources.min_gpu_memory_mb, resources.gpu_type)
    ]
    if not request.team_queue and (spec.host or spec.requeue):
        field = "spec.host" if spec.host else "spec.requeue"
        raise InvalidArgument(field, "only for a job of the team queue (submit --team-queue)")
    check_text(spec.host, "spec.host", limits.NAME_CHARS)
    # A team job is checked against the team's hosts (team/front.py), not this one's.
    if not request.team_queue and resources.gpus > len(fitting):
        raise InvalidArgument(
            "spec.resources.gpus",
            f"at most {len(fitting)} (GPUs on this host matching the request), "
            f"got {resources.gpus}",
        )
    if not -1000 <= spec.priority <= 1000:
        raise InvalidArgument("spec.priority", "a number from -1000 to 1000")
    if spec.time_limit_seconds < 0:
        raise InvalidArgument("spec.time_limit_seconds", "0 (none) or more")
    for name, value in request.secrets.items():
        if not _SECRET_NAME.match(name):
            raise InvalidArgument("secrets", f"names like HF_TOKEN, got {name[:40]!r}")
        if len(value.encode()) > limits.SECRET_BYTES:
            raise InvalidArgument(f"secrets[{name}]", f"at most {limits.SECRET_BYTES} bytes")
    files = _check_files(spec.files, objects, config.limits.max_files)
    time_limit = spec.time_limit_seconds or config.default_time_limit_seconds or 0
    parsed["dataset_prepared_path"] = prepared_path(files)
    checked = replace(
        JobSpec.from_wire(spec),
        config_yaml=yaml.dump(parsed, Dumper=_DUMPER, sort_keys=False, allow_unicode=True),
        image=image,
        files=files,
        time_limit_seconds=time_limit,
    )
    return checked, dict(request.secrets)
