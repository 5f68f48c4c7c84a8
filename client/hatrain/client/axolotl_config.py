"""Find every local file an Axolotl config uses, and rewrite the config to the container's paths.

What is uploaded lands under /workspace/data/datasets/<name> in the job's container. Values that
are Hugging Face ids (no such local path, no ./ or / prefix) are left alone. Container paths
(/workspace/data/datasets/sample.jsonl, as the seed's configs have) are mapped to a local file given
with --dataset NAME=PATH, found beside the config, or found in a data/output/ directory.
"""

import hashlib
import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import BadInput

DATASETS = "/workspace/data/datasets"
RUNS = "/workspace/data/training-runs"
HF_CACHE = "/workspace/data/huggingface-cache"
_DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet", ".arrow", ".txt", ".tsv")
_DIRECTORY_KEYS = ("base_model", "base_model_config", "tokenizer_config", "lora_model_dir")
_HANDLED = {"datasets", "test_datasets", "chat_template_jinja", "deepspeed", "output_dir"}
_HANDLED |= {"dataset_prepared_path", *_DIRECTORY_KEYS}
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class LocalFile:
    name: str  # path under /workspace/data/datasets
    path: Path
    dataset_type: str = ""  # the Axolotl dataset type when it is a dataset


@dataclass
class Analysis:
    config_path: Path
    config: dict[str, Any]
    files: list[LocalFile] = field(default_factory=list)
    _names: dict[str, Path] = field(default_factory=dict)

    def place(self, path: Path, name: str, dataset_type: str = "") -> str:
        """Reserve a name under the datasets directory; returns its container path."""
        path = path.resolve()
        base = name
        n = 1
        while self._names.get(name, path) != path:
            n += 1
            name = posixpath.join(f"{n}", base)
        if name not in self._names:
            self._names[name] = path
            self.files.append(LocalFile(name, path, dataset_type))
        return f"{DATASETS}/{name}"

    def place_dir(self, directory: Path, field_name: str) -> str:
        files = sorted(p for p in directory.rglob("*") if p.is_file())
        if not files:
            raise BadInput(f"{field_name}: directory {directory} is empty")
        prefix = directory.resolve().name
        n = 1
        while any(k.startswith(prefix + "/") for k in self._names):
            n += 1
            prefix = f"{directory.resolve().name}-{n}"
        for p in files:
            self.place(p, f"{prefix}/{p.relative_to(directory).as_posix()}")
        return f"{DATASETS}/{prefix}"


def load_config(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise BadInput(f"config {path}: no such file") from None
    except OSError as exc:
        raise BadInput(f"config {path}: cannot read it ({exc.strerror})") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInput(
            f"config {path}: not UTF-8 text (invalid byte at offset {exc.start})"
        ) from exc
    try:
        config = yaml.load(text, Loader=_YAML_LOADER)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "cannot parse"
        raise BadInput(f"config {path}: not valid YAML: {problem}{where}") from exc
    if not isinstance(config, dict):
        raise BadInput(
            f"config {path}: expected an Axolotl config (a YAML mapping), "
            f"got {type(config).__name__}"
        )
    return config


def _looks_local(value: str) -> bool:
    return value.startswith(("./", "../", "/", "~")) or value.lower().endswith(_DATA_SUFFIXES)


def _local(value: str, base: Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def _search_roots(base: Path) -> list[Path]:
    roots = [Path.cwd() / "data" / "output"]
    roots += [parent / "data" / "output" for parent in [base, *base.parents][:4]]
    return list(dict.fromkeys(roots))


def _map_container_path(
    value: str, field_name: str, base: Path, dataset_map: dict[str, Path]
) -> Path:
    relative = posixpath.normpath(value[len(DATASETS) + 1 :])
    leaf = posixpath.basename(relative)
    for key in (relative, leaf):
        if key in dataset_map:
            mapped = dataset_map[key]
            if not mapped.exists():
                raise BadInput(f"--dataset {key}={mapped}: no such file")
            return mapped
    candidates = [base / relative, base / leaf] + [root / leaf for root in _search_roots(base)]
    for candidate in candidates:
        if candidate.exists():
            return candidate
    looked = ", ".join(str(c) for c in dict.fromkeys(candidates))
    raise BadInput(
        f"{field_name}: {value} is a path in the container; no local file for it "
        f"(looked at {looked})",
        fix=f"pass --dataset {leaf}=PATH/TO/{leaf}",
    )


def _dataset(
    analysis: Analysis, item: dict[str, Any], field_name: str, dataset_map: dict[str, Path]
) -> None:
    base = analysis.config_path.parent
    value = item.get("path")
    if isinstance(value, str):
        local: Path | None = None
        if value.startswith(DATASETS + "/"):
            local = _map_container_path(value, f"{field_name}.path", base, dataset_map)
        elif value.startswith("/workspace/"):
            raise BadInput(
                f"{field_name}.path: {value} is a container path outside {DATASETS}/; "
                "hatrain can only place datasets there"
            )
        elif _local(value, base).exists():
            local = _local(value, base)
        elif value in dataset_map:
            local = dataset_map[value]
        elif _looks_local(value):
            raise BadInput(f"{field_name}.path: {value}: no such file (relative to {base})")
        if local is not None:
            if local.is_dir():
                item["path"] = analysis.place_dir(local, f"{field_name}.path")
            else:
                name = posixpath.basename(str(value)) if value.startswith("/") else local.name
                kind = str(item.get("type") or "chat_template")
                item["path"] = analysis.place(local, name, dataset_type=kind)
    _template(analysis, item, f"{field_name}.chat_template_jinja")


def _template(analysis: Analysis, holder: dict[str, Any], field_name: str) -> None:
    value = holder.get("chat_template_jinja")
    if not isinstance(value, str) or "\n" in value or "{" in value:
        return  # absent, or the template text itself
    path = _local(value.strip(), analysis.config_path.parent)
    if not path.is_file():
        raise BadInput(
            f"{field_name}: template file {value} not found (relative to "
            f"{analysis.config_path.parent}); Axolotl would use the path text as the template"
        )
    holder["chat_template_jinja"] = analysis.place(path, path.name)


def _directory(analysis: Analysis, key: str) -> None:
    value = analysis.config.get(key)
    if not isinstance(value, str):
        return
    path = _local(value, analysis.config_path.parent)
    if path.is_dir():
        analysis.config[key] = analysis.place_dir(path, key)
    elif path.is_file():
        analysis.config[key] = analysis.place(path, path.name)
    elif value.startswith(("./", "../", "/", "~")):
        raise BadInput(f"{key}: {value}: no such directory (relative to {path.parent})")


def _deepspeed(analysis: Analysis) -> None:
    value = analysis.config.get("deepspeed")
    if not isinstance(value, str):
        return
    path = _local(value, analysis.config_path.parent)
    if path.is_file():
        analysis.config["deepspeed"] = analysis.place(path, path.name)
    elif value.startswith(("./", "../", "~")) or (
        value.startswith("/") and not value.startswith("/workspace/")
    ):
        raise BadInput(f"deepspeed: {value}: no such file (relative to {path.parent})")


def _unplaceable(value: Any, where: str) -> None:
    if isinstance(value, str) and value.startswith("/workspace/"):
        raise BadInput(
            f"{where}: {value} is a container path hatrain cannot place "
            f"(only datasets, templates, deepspeed and model directories are uploaded)"
        )
    if isinstance(value, dict):
        for k, v in value.items():
            _unplaceable(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _unplaceable(v, f"{where}[{i}]")


def analyse(config_path: Path, dataset_map: dict[str, Path] | None = None) -> Analysis:
    """Parse the config and find its local files; raises BadInput before anything is sent."""
    config = load_config(config_path)
    analysis = Analysis(config_path=config_path.resolve(), config=config)
    for key in ("datasets", "test_datasets"):
        items = config.get(key)
        if items is None:
            continue
        if not isinstance(items, list):
            raise BadInput(f"{key}: expected a list of datasets, got {type(items).__name__}")
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise BadInput(f"{key}[{i}]: expected a mapping with a path")
            _dataset(analysis, item, f"{key}[{i}]", dataset_map or {})
    _template(analysis, config, "chat_template_jinja")
    for key in _DIRECTORY_KEYS:
        _directory(analysis, key)
    _deepspeed(analysis)
    for key, value in config.items():
        if key not in _HANDLED:
            _unplaceable(value, key)
    return analysis


def finalize(analysis: Analysis, hashes: dict[Path, str], run_name: str) -> str:
    """Pin output_dir and dataset_prepared_path; returns the rewritten YAML text."""
    config = analysis.config
    original = config.get("output_dir")
    leaf = posixpath.basename(str(original).rstrip("/")) if isinstance(original, str) else ""
    config["output_dir"] = f"{RUNS}/{leaf or run_name}"
    key = hashlib.sha256()
    for f in sorted(analysis.files, key=lambda f: f.name):
        key.update(f"{f.name}\0{hashes[f.path]}\n".encode())
    config["dataset_prepared_path"] = f"{HF_CACHE}/prepared/{key.hexdigest()[:24]}"
    return yaml.safe_dump(config, sort_keys=False, allow_unicode=True)
