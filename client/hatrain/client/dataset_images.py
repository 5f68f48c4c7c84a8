"""Image files a multimodal dataset names: found, uploaded, and pointed at in the job.

Axolotl's multimodal collator loads the images of a conversation from its `images` (or `image`)
column and from content parts {"type": "image", "path" | "url" | "image": ...}, a relative path
being read from its working directory. Local files among them are uploaded with the job, and the
dataset goes up as a copy whose references are the images' paths in the container.
"""

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .dataset_files import Unreadable, read_records
from .findings import Finding

_PART_KEYS = ("path", "url", "image")
_NOT_FILES = ("http://", "https://", "data:", "s3://", "gs://")


def _is_file_reference(value: Any) -> bool:
    return (
        isinstance(value, str)
        and 0 < len(value) < 1024
        and "\n" not in value
        and not value.startswith(_NOT_FILES)
    )


def _references(record: Any) -> Iterator[tuple[str, Any, Any]]:
    """(field, holder, key) of each image file reference in a record."""
    if not isinstance(record, dict):
        return
    for column in ("images", "image"):
        value = record.get(column)
        if isinstance(value, list):
            for i, item in enumerate(value):
                if _is_file_reference(item):
                    yield f"{column}[{i}]", value, i
        elif _is_file_reference(value):
            yield column, record, column
    for list_key in ("messages", "conversations"):
        messages = record.get(list_key)
        for i, message in enumerate(messages if isinstance(messages, list) else []):
            content = message.get("content") if isinstance(message, dict) else None
            for j, part in enumerate(content if isinstance(content, list) else []):
                if not isinstance(part, dict) or part.get("type") != "image":
                    continue
                for key in _PART_KEYS:
                    if _is_file_reference(part.get(key)):
                        yield f"{list_key}[{i}].content[{j}].{key}", part, key


def with_uploaded_images(
    dataset: Path,
    resolve: Callable[[str], list[Path]],
    place: Callable[[Path], str],
    scratch: Path,
) -> tuple[Path, list[Finding]]:
    """The file to upload in place of `dataset` (a copy pointing at the placed images, or the
    dataset itself when it names none), and a finding for each image that is nowhere.
    resolve: the places a relative path is looked for, in order; place: uploads a file and
    returns its container path."""
    findings: list[Finding] = []
    lines: list[str] = []
    changed = False
    try:
        records = list(read_records(dataset))
    except Unreadable as exc:
        return dataset, [Finding(dataset, exc.line, "", exc.message, exc.fix)]
    for record in records:
        for field_name, holder, key in _references(record.value):
            value = holder[key]
            places = resolve(value)
            found = next((p for p in places if p.is_file()), None)
            if found is None:
                looked = " and ".join(str(p) for p in places)
                findings.append(
                    Finding(
                        dataset,
                        record.line,
                        field_name,
                        f"{value}: no such image (looked in {looked})",
                        "image paths are read from the directory you run hatrain-client in, "
                        "then beside the config",
                    )
                )
                continue
            holder[key] = place(found)
            changed = True
        lines.append(json.dumps(record.value, ensure_ascii=False))
    if not changed or findings:
        return dataset, findings
    text = "".join(line + "\n" for line in lines).encode("utf-8")
    scratch.mkdir(parents=True, exist_ok=True)
    copy = scratch / f"{hashlib.sha256(text).hexdigest()[:16]}-{dataset.name}"
    if not copy.exists():
        copy.write_bytes(text)
    return copy, findings
