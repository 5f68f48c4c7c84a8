"""Find every local file an Axolotl config uses, and rewrite the config to the container's paths.

Relative paths are resolved as Axolotl resolves them: from the working directory `axolotl` runs in.
The current directory stands for it here (as Axolotl's docs run it, from the project's root); a
path not found there is looked for beside the config, and a path found in neither place is flagged,
naming both. What is uploaded lands under /workspace/data/datasets/<name> in the job's container.

Left to Axolotl, and said so: remote datasets (s3://, gs://, gcs://, az://, abfs://, oci://,
https://) and Hugging Face ids (no such local path). Container paths such as the seed's
/workspace/data/datasets/sample.jsonl are mapped to a local file given with --dataset NAME=PATH,
found beside the config, or found in a data/output/ directory.
"""

import hashlib
import os
import posixpath
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .chat_template import ChatTemplate
from .config_source import ConfigSource, load_config
from .dataset_check import DEFAULT_ROLES, ChatReading
from .dataset_files import directory_files, loader_of
from .dataset_images import with_uploaded_images
from .findings import Finding

DATASETS = "/workspace/data/datasets"
RUNS = "/workspace/data/training-runs"
HF_CACHE = "/workspace/data/huggingface-cache"
# Custom prompt-strategy modules are placed here; the agent puts it on the job's PYTHONPATH.
PYTHON_MODULES = "python"
REMOTE = ("s3://", "gs://", "gcs://", "az://", "adl://", "abfs://", "oci://", "https://")
_DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet", ".arrow", ".txt", ".tsv")
_MODEL_KEYS = ("base_model", "base_model_config", "tokenizer_config", "lora_model_dir")
_TRAIN_ON = ("all", "turn", "last", "none")
_HANDLED = {"datasets", "test_datasets", "chat_template_jinja", "deepspeed", "output_dir"}
_HANDLED |= {"dataset_prepared_path", "pretraining_dataset", "resume_from_checkpoint"}
_HANDLED |= set(_MODEL_KEYS)

__all__ = ["DATASETS", "Analysis", "analyse", "finalize", "load_config"]


@dataclass(frozen=True)
class LocalFile:
    name: str  # path under /workspace/data/datasets
    path: Path


@dataclass(frozen=True)
class DatasetCheck:
    """A local chat file to check record by record, as the dataset entry `field` reads it."""

    field: str
    path: Path
    reading: ChatReading


@dataclass
class Analysis:
    source: ConfigSource
    workdir: Path
    # Where rewritten copies of datasets go (multimodal data pointing at uploaded images).
    scratch: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "hatrain-copies")
    files: list[LocalFile] = field(default_factory=list)
    checks: list[DatasetCheck] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # The --dataset names that some dataset of the config was mapped to.
    datasets_used: set[str] = field(default_factory=set)
    _names: dict[str, Path] = field(default_factory=dict)

    @property
    def config_path(self) -> Path:
        return self.source.path

    @property
    def config(self) -> dict[str, Any]:
        return self.source.data

    @property
    def config_dir(self) -> Path:
        return self.source.path.parent

    def flag(self, field_name: str, message: str, fix: str) -> None:
        line = self.source.line(field_name)
        self.findings.append(Finding(self.config_path, line, field_name, message, fix))

    def note(self, field_name: str, text: str) -> None:
        self.notes.append(f"{field_name}: {text}")

    def candidates(self, value: str) -> list[Path]:
        path = Path(value).expanduser()
        if path.is_absolute():
            return [path]
        places = [self.workdir / path, self.config_dir / path]
        return list(dict.fromkeys(Path(os.path.normpath(p)) for p in places))

    def resolve(self, value: str) -> Path | None:
        return next((p for p in self.candidates(value) if p.exists()), None)

    def missing(self, field_name: str, value: str, what: str = "file or directory") -> None:
        looked = " and ".join(str(p) for p in self.candidates(value))
        self.flag(
            field_name,
            f"{value}: no such {what} (looked in {looked})",
            "relative paths are read from the directory you run hatrain-client in (Axolotl's "
            "working directory), then beside the config: fix the path, or run from where it is",
        )

    def place(self, path: Path, name: str) -> str:
        """Reserve a name under the datasets directory; returns its container path."""
        path = path.resolve()
        base = name
        n = 1
        while self._names.get(name, path) != path:
            n += 1
            name = posixpath.join(f"{n}", base)
        if name not in self._names:
            self._names[name] = path
            self.files.append(LocalFile(name, path))
        return f"{DATASETS}/{name}"

    def place_dir(
        self, directory: Path, files: list[Path], uploads: dict[Path, Path] | None = None
    ) -> tuple[str, list[str]]:
        """Place the given files of a directory under one fresh folder (a file outside it goes
        in by its name); returns the folder's container path and each file's. uploads: a file
        to send in place of one of them, under its name."""
        prefix = directory.resolve().name or "dir"
        n = 1
        while any(k.startswith(prefix + "/") for k in self._names):
            n += 1
            prefix = f"{directory.resolve().name}-{n}"
        placed = []
        for p in files:
            try:
                relative = p.resolve().relative_to(directory.resolve()).as_posix()
            except ValueError:
                relative = p.name
            placed.append(self.place((uploads or {}).get(p, p), f"{prefix}/{relative}"))
        return f"{DATASETS}/{prefix}", placed


def _looks_local(value: str) -> bool:
    return value.startswith(("./", "../", "/", "~")) or value.lower().endswith(_DATA_SUFFIXES)


def _search_roots(base: Path, workdir: Path) -> list[Path]:
    roots = [workdir / "data" / "output"]
    roots += [parent / "data" / "output" for parent in [base, *base.parents][:4]]
    return list(dict.fromkeys(roots))


def _map_container_path(
    analysis: Analysis, value: str, field_name: str, dataset_map: dict[str, Path]
) -> Path | None:
    base = analysis.config_dir
    relative = posixpath.normpath(value[len(DATASETS) + 1 :])
    leaf = posixpath.basename(relative)
    for key in (relative, leaf):
        if key in dataset_map:
            analysis.datasets_used.add(key)
            mapped = dataset_map[key]
            if not mapped.exists():
                analysis.flag(
                    field_name,
                    f"--dataset {key}={mapped}: no such file",
                    f"give --dataset {key}= the path of a file that exists",
                )
                return None
            return mapped
    candidates = [base / relative, base / leaf]
    candidates += [root / leaf for root in _search_roots(base, analysis.workdir)]
    for candidate in candidates:
        if candidate.exists():
            return candidate
    looked = ", ".join(str(c) for c in dict.fromkeys(candidates))
    analysis.flag(
        field_name,
        f"{value} is a path in the container; no local file for it (looked at {looked})",
        f"pass --dataset {leaf}=PATH/TO/{leaf}",
    )
    return None


def _remote(analysis: Analysis, value: str, field_name: str) -> bool:
    """Remote and container paths are not local files; flags those Axolotl cannot load."""
    if value.startswith(REMOTE):
        analysis.note(field_name, f"{value}: remote, loaded by Axolotl itself (not checked)")
        return True
    if value.startswith("http://"):
        analysis.flag(
            field_name,
            f"{value}: Axolotl loads dataset URLs only over https://",
            "use the https:// address",
        )
        return True
    return False


def _template_for(
    analysis: Analysis, item: dict[str, Any], field_name: str
) -> tuple[str | None, str]:
    """The chat template text the dataset is rendered with, or None and why it is not known."""
    config = analysis.config
    choice = item.get("chat_template") or "tokenizer_default"
    if choice == "jinja":
        return _template_text(analysis, item, f"{field_name}.chat_template_jinja"), ""
    if not str(choice).startswith("tokenizer_default"):
        return None, f"Axolotl's built-in chat template {choice!r} is not rendered here"
    top = config.get("chat_template")
    if top == "jinja" or (not top and config.get("chat_template_jinja")):
        return _template_text(analysis, config, "chat_template_jinja"), ""
    if top and not str(top).startswith("tokenizer_default"):
        return None, f"Axolotl's built-in chat template {top!r} is not rendered here"
    own = _tokenizer_template(analysis)
    if own is not None:
        return own, ""
    model = config.get("tokenizer_config") or config.get("base_model")
    return None, f"the tokenizer's own chat template ({model}) is not rendered here"


def _tokenizer_template(analysis: Analysis) -> str | None:
    import json

    for key in ("tokenizer_config", "base_model"):
        value = analysis.config.get(key)
        folder = analysis.resolve(value) if isinstance(value, str) and value else None
        if folder is None or not folder.is_dir():
            continue
        if (folder / "chat_template.jinja").is_file():
            return (folder / "chat_template.jinja").read_text(encoding="utf-8")
        try:
            settings = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        template = settings.get("chat_template") if isinstance(settings, dict) else None
        if isinstance(template, str):
            return template
    return None


def _template_text(analysis: Analysis, holder: dict[str, Any], field_name: str) -> str | None:
    value = holder.get("chat_template_jinja")
    if not isinstance(value, str) or not value:
        return None
    if "\n" in value or "{" in value:
        return value
    path = analysis.resolve(value.strip())
    if path is None or not path.is_file():
        return None  # flagged by _template
    return path.read_text(encoding="utf-8")


def _template(analysis: Analysis, holder: dict[str, Any], field_name: str) -> None:
    value = holder.get("chat_template_jinja")
    if not isinstance(value, str) or not value or "\n" in value or "{" in value:
        return  # absent, or the template text itself
    path = analysis.resolve(value.strip())
    if path is None or not path.is_file():
        looked = " and ".join(str(p) for p in analysis.candidates(value.strip()))
        analysis.flag(
            field_name,
            f"template file {value} not found (looked in {looked}); Axolotl would use the "
            "path text itself as the template",
            "fix the path, or give the template text",
        )
        return
    holder["chat_template_jinja"] = analysis.place(path, path.name)


def _chat_reading(analysis: Analysis, item: dict[str, Any], field_name: str) -> ChatReading | None:
    """The reading of a chat_template dataset; None (flagged) when Axolotl refuses its config."""
    ok = True

    def bad(key: str, message: str, fix: str) -> None:
        nonlocal ok
        ok = False
        analysis.flag(f"{field_name}.{key}", message, fix)

    for key in ("field_messages", "message_field_role", "message_field_content"):
        if item.get(key) is not None and not isinstance(item[key], str):
            bad(
                key,
                f"expected the name of a key, got {type(item[key]).__name__}",
                f"set {key} to the key in your data, e.g. messages",
            )
    mappings = item.get("message_property_mappings") or {}
    if not isinstance(mappings, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in mappings.items()
    ):
        bad(
            "message_property_mappings",
            "expected a mapping of property: key in the data",
            "write it as e.g. {role: from, content: value}",
        )
        mappings = {}
    mappings = dict(mappings)
    for target, legacy in (("role", "message_field_role"), ("content", "message_field_content")):
        old = item.get(legacy)
        if old and mappings.get(target, old) != old:
            bad(
                legacy,
                f"{legacy}={old!r} conflicts with message_property_mappings.{target}="
                f"{mappings[target]!r}",
                f"keep only message_property_mappings.{target}",
            )
        mappings.setdefault(target, old if isinstance(old, str) and old else target)
    roles = item.get("roles")
    role_map = dict(DEFAULT_ROLES)
    if roles is not None:
        if not isinstance(roles, dict) or not all(
            isinstance(v, list) and all(isinstance(s, str) for s in v) for v in roles.values()
        ):
            bad(
                "roles",
                "expected a mapping of role: [names in the data]",
                "write it as e.g. {assistant: [gpt], user: [human]}",
            )
        else:
            role_map = {s: t for t, sources in roles.items() for s in sources}
    to_train = item.get("roles_to_train")
    if to_train is not None and not (
        isinstance(to_train, list) and all(isinstance(r, str) for r in to_train)
    ):
        bad("roles_to_train", "expected a list of roles", "write it as e.g. [assistant]")
    for key in ("train_on_eos", "train_on_eot"):
        if item.get(key) is not None and item[key] not in _TRAIN_ON:
            bad(
                key,
                f"{item[key]!r}: not one of {', '.join(_TRAIN_ON)}",
                f"set {key} to one of {', '.join(_TRAIN_ON)}",
            )
    if item.get("chat_template") == "jinja" and not item.get("chat_template_jinja"):
        bad(
            "chat_template",
            "jinja needs chat_template_jinja beside it",
            "add chat_template_jinja (the template, or a path to it)",
        )
    training = item.get("message_field_training")
    thinking = item.get("template_thinking_key") or "reasoning_content"
    text, note = _template_for(analysis, item, field_name)
    template = None
    if text is not None:
        special = analysis.config.get("special_tokens")
        tokens = (
            {k: v for k, v in special.items() if k.endswith("_token") and isinstance(v, str)}
            if isinstance(special, dict)
            else {}
        )
        extra = analysis.config.get("chat_template_kwargs")
        try:
            template = ChatTemplate(text, tokens, extra if isinstance(extra, dict) else None)
        except Exception as exc:  # jinja2.TemplateSyntaxError and the like
            line = getattr(exc, "lineno", None)
            where = f" (template line {line})" if line else ""
            analysis.flag(
                f"{field_name}.chat_template_jinja"
                if item.get("chat_template") == "jinja"
                else "chat_template_jinja",
                f"the chat template does not parse{where}: {exc}",
                "fix the Jinja syntax",
            )
            ok = False
    if not ok:
        return None
    return ChatReading(
        field_messages=item.get("field_messages") or "messages",
        mappings=mappings,
        roles=role_map,
        message_field_training=training if isinstance(training, str) else None,
        drop_system_message=bool(item.get("drop_system_message")),
        thinking_key=thinking if isinstance(thinking, str) else "reasoning_content",
        template=template,
        template_text=text or "",
        template_note=note,
    )


def _custom_module(analysis: Analysis, item: dict[str, Any], field_name: str) -> bool:
    """A `type:` naming a Python module of the user's (a file or package beside the config or in
    the working directory): upload it where the job's Python finds it. True when it is one.

    Axolotl imports such types in two ways. Preference types (`rl:` set) are module.function: it
    imports the module and calls the function. Supervised types are package.module: it imports
    the module from the package and calls its `load`; a name ending in `.load` or `.load_*` is
    looked up among Axolotl's own strategies only.
    """
    kind = item.get("type")
    if not isinstance(kind, str) or "." not in kind:
        return False
    parts = kind.split(".")
    top = parts[0]
    module = analysis.resolve(f"{top}.py")
    package = analysis.resolve(top)
    is_package = package is not None and package.is_dir() and any(package.glob("*.py"))
    is_module = module is not None and module.is_file()
    if not (is_module or is_package):
        return False
    where = f"{field_name}.type"
    if not analysis.config.get("rl"):
        last = parts[-1]
        inner = package / f"{parts[1]}.py" if package is not None and len(parts) == 2 else None
        if last == "load" or last.startswith("load_"):
            analysis.flag(
                where,
                f"{kind}: Axolotl looks up a type ending in .{last} among its own strategies "
                f"only, so your {top} is never imported",
                f"make {top} a package folder and name the module in it: type: {top}.MODULE, "
                "where MODULE.py defines load(tokenizer, cfg, ds_cfg)",
            )
            return True
        if not is_package or (inner is not None and not inner.is_file()):
            analysis.flag(
                where,
                f"{kind}: Axolotl imports {parts[-1]} as a module of the package {top}, and "
                f"there is no {top}/{parts[1]}.py",
                f"make {top} a folder holding {parts[1]}.py, which defines load(tokenizer, cfg, "
                "ds_cfg)",
            )
            return True
    if is_package and package is not None:
        for source in sorted(package.rglob("*.py")):
            relative = source.relative_to(package)
            if not any(part.startswith((".", "__pycache__")) for part in relative.parts):
                analysis.place(source, f"{PYTHON_MODULES}/{top}/{relative.as_posix()}")
    elif module is not None:
        analysis.place(module, f"{PYTHON_MODULES}/{top}.py")
    analysis.note(where, f"{kind}: the module {top} is uploaded with the job")
    return True


def _multimodal(analysis: Analysis) -> bool:
    return bool(analysis.config.get("processor_type"))


def _is_chat(analysis: Analysis, item: dict[str, Any]) -> bool:
    """A dataset read by the chat_template strategy at preprocess (a multimodal one is read by
    the processor at train time instead, and preference data by the RL loaders)."""
    chat = item.get("type") == "chat_template"
    return chat and not analysis.config.get("rl") and not _multimodal(analysis)


def _images(
    analysis: Analysis, field_name: str, files: list[Path], loader: str
) -> dict[Path, Path]:
    """For a multimodal config: upload the images each file names; the copies to send."""
    if not _multimodal(analysis) or loader != "json":
        return {}
    uploads = {}
    for path in files:
        upload, findings = with_uploaded_images(
            path,
            analysis.candidates,
            lambda image: analysis.place(image, f"images/{image.name}"),
            analysis.scratch,
        )
        analysis.findings += findings
        if upload != path:
            uploads[path] = upload
    analysis.note(
        f"{field_name}.path",
        "multimodal: Axolotl's processor reads the conversations at train time; the images "
        "they name are uploaded",
    )
    return uploads


def _check_files(
    analysis: Analysis, item: dict[str, Any], field_name: str, files: list[Path], loader: str
) -> None:
    if not _is_chat(analysis, item) or loader != "json":
        return
    reading = _chat_reading(analysis, item, field_name)
    if reading is None:
        return
    if reading.template is None:
        analysis.note(f"{field_name}.path", reading.template_note)
    for path in files:
        analysis.checks.append(DatasetCheck(field_name, path, reading))


def _data_files(
    analysis: Analysis, item: dict[str, Any], field_name: str, directory: Path
) -> list[Path] | None:
    """A local directory's data_files, read (like Axolotl) from the working directory."""
    value = item.get("data_files")
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        analysis.flag(
            f"{field_name}.data_files",
            "expected a path or a list of paths",
            "write it as e.g. [data/train.jsonl]",
        )
        return None
    found: list[Path] = []
    for i, name in enumerate(names):
        here = f"{field_name}.data_files" + ("" if isinstance(value, str) else f"[{i}]")
        path = analysis.resolve(name)
        if path is None or not path.is_file():
            analysis.missing(here, name, "file")
            continue
        found.append(path)
    return found


def _dataset(
    analysis: Analysis, item: dict[str, Any], field_name: str, dataset_map: dict[str, Path]
) -> None:
    _dataset_path(analysis, item, field_name, dataset_map)
    # After the files: their reading takes the template from where the user has it.
    _template(analysis, item, f"{field_name}.chat_template_jinja")


def _dataset_path(
    analysis: Analysis, item: dict[str, Any], field_name: str, dataset_map: dict[str, Path]
) -> None:
    value = item.get("path")
    custom = _custom_module(analysis, item, field_name)
    if not isinstance(value, str) or not value:
        return
    where = f"{field_name}.path"
    if _remote(analysis, value, where):
        return
    local: Path | None = None
    if value.startswith(DATASETS + "/"):
        local = _map_container_path(analysis, value, where, dataset_map)
        if local is None:
            return
    elif value.startswith("/workspace/"):
        analysis.flag(
            where,
            f"{value} is a container path outside {DATASETS}/; hatrain can only place "
            "datasets there",
            "give the local path of the dataset instead",
        )
        return
    else:
        local = analysis.resolve(value)
        if local is None and value in dataset_map:
            analysis.datasets_used.add(value)
            local = dataset_map[value]
    if local is None:
        if _looks_local(value):
            analysis.missing(where, value)
        else:
            analysis.note(where, f"{value}: not a local path, so a Hugging Face Hub dataset")
        return
    loader = loader_of(value, item.get("ds_type"))
    if local.is_file():
        name = posixpath.basename(value) if value.startswith("/") else local.name
        uploads = _images(analysis, field_name, [local], loader)
        item["path"] = analysis.place(uploads.get(local, local), name)
        if not custom:
            _check_files(analysis, item, field_name, [local], loader)
        return
    if item.get("data_files") is not None:
        files = _data_files(analysis, item, field_name, local)
        if files is None:
            return
        item["path"], placed = analysis.place_dir(
            local, files, _images(analysis, field_name, files, loader)
        )
        item["data_files"] = placed if isinstance(item["data_files"], list) else placed[0]
        if not custom:
            _check_files(analysis, item, field_name, files, loader)
        return
    selected = directory_files(local)
    if not selected.files:
        analysis.flag(
            where,
            f"{value}: the directory holds no dataset files",
            "put the .jsonl (or .parquet, .csv, ...) files in it, or name a file",
        )
        return
    uploads = _images(analysis, field_name, selected.files, selected.loader)
    item["path"], _ = analysis.place_dir(local, selected.files, uploads)
    if not custom:
        _check_files(analysis, item, field_name, selected.files, selected.loader)


def _local_path(analysis: Analysis, key: str, kind: str) -> None:
    """A model, tokenizer, adapter or checkpoint: a local file or folder is uploaded; a relative
    or absolute path that is nowhere is flagged; anything else is a Hugging Face id."""
    value = analysis.config.get(key)
    if not isinstance(value, str) or not value.strip():
        return  # absent, or "" (Axolotl's "none")
    if value.startswith("/workspace/"):
        return  # a container path, left for the container to have
    path = analysis.resolve(value)
    if path is not None and path.is_dir():
        files = [p for p in sorted(path.rglob("*")) if p.is_file()]
        files = [p for p in files if not p.relative_to(path).parts[0].startswith(".")]
        if not files:
            analysis.flag(key, f"{value}: the directory is empty", "name a folder with files")
            return
        analysis.config[key], _ = analysis.place_dir(path, files)
    elif path is not None:
        analysis.config[key] = analysis.place(path, path.name)
    elif kind == "checkpoint" or value.startswith(("./", "../", "/", "~")):
        analysis.missing(key, value, "directory")


def _deepspeed(analysis: Analysis) -> None:
    value = analysis.config.get("deepspeed")
    if not isinstance(value, str) or not value or value.lstrip().startswith("{"):
        return
    if value.startswith("/workspace/"):
        return  # a path in the image, such as Axolotl's own deepspeed_configs
    path = analysis.resolve(value)
    if path is not None and path.is_file():
        analysis.config["deepspeed"] = analysis.place(path, path.name)
    else:
        analysis.missing("deepspeed", value, "file")


def _pretraining(analysis: Analysis) -> None:
    value = analysis.config.get("pretraining_dataset")
    entries: list[tuple[dict[str, Any], str, str]] = []
    if isinstance(value, str):
        entries.append((analysis.config, "pretraining_dataset", "pretraining_dataset"))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, dict):
                entries.append((item, "path", f"pretraining_dataset[{i}].path"))
    for holder, key, where in entries:
        path_value = holder.get(key)
        if not isinstance(path_value, str) or not path_value:
            continue
        if _remote(analysis, path_value, where):
            continue
        local = analysis.resolve(path_value)
        if local is None:
            if _looks_local(path_value):
                analysis.missing(where, path_value)
            else:
                analysis.note(where, f"{path_value}: a Hugging Face Hub dataset, streamed")
            continue
        if local.is_file():
            holder[key] = analysis.place(local, local.name)
        else:
            holder[key], _ = analysis.place_dir(local, directory_files(local).files)


def _unplaceable(analysis: Analysis, value: Any, where: str) -> None:
    if isinstance(value, str) and value.startswith("/workspace/"):
        analysis.flag(
            where,
            f"{value} is a container path hatrain cannot place (only datasets, templates, "
            "deepspeed, models and checkpoints are uploaded)",
            "give the local path instead",
        )
    if isinstance(value, dict):
        for k, v in value.items():
            _unplaceable(analysis, v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _unplaceable(analysis, v, f"{where}[{i}]")


def analyse(
    config_path: Path,
    dataset_map: dict[str, Path] | None = None,
    workdir: Path | None = None,
    scratch: Path | None = None,
) -> Analysis:
    """Parse the config and find its local files. Raises BadInput for a config that is not YAML;
    everything else Axolotl would refuse is in `findings` (nothing has been sent)."""
    source = load_config(config_path)
    source.path = config_path.resolve()
    analysis = Analysis(source=source, workdir=(workdir or Path.cwd()).resolve())
    if scratch is not None:
        analysis.scratch = scratch
    config = analysis.config
    for key in ("datasets", "test_datasets"):
        items = config.get(key)
        if items is None:
            continue
        if not isinstance(items, list):
            analysis.flag(
                key,
                f"expected a list of datasets, got {type(items).__name__}",
                f"write {key} as a list: - path: ...",
            )
            continue
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                analysis.flag(
                    f"{key}[{i}]", "expected a mapping with a path", "write it as - path: ..."
                )
                continue
            _dataset(analysis, item, f"{key}[{i}]", dataset_map or {})
    _template(analysis, config, "chat_template_jinja")
    if config.get("chat_template") == "jinja" and not config.get("chat_template_jinja"):
        analysis.flag(
            "chat_template",
            "jinja needs chat_template_jinja beside it",
            "add chat_template_jinja (the template, or a path to it)",
        )
    for key in _MODEL_KEYS:
        _local_path(analysis, key, "model")
    _local_path(analysis, "resume_from_checkpoint", "checkpoint")
    _deepspeed(analysis)
    _pretraining(analysis)
    for key, value in config.items():
        if key not in _HANDLED:
            _unplaceable(analysis, value, key)
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


def first_chat_reading(analysis: Analysis) -> ChatReading | None:
    """How the config's first chat_template dataset reads its files (for check-dataset)."""
    if analysis.checks:
        return analysis.checks[0].reading
    fresh = Analysis(source=load_config(analysis.config_path), workdir=analysis.workdir)
    for key in ("datasets", "test_datasets"):
        items = fresh.config.get(key)
        for i, item in enumerate(items if isinstance(items, list) else []):
            if isinstance(item, dict) and _is_chat(fresh, item):
                return _chat_reading(fresh, item, f"{key}[{i}]")
    return None
