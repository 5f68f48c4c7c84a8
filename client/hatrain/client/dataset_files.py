"""Local dataset files as Axolotl 0.19 reads them, through Hugging Face `datasets`.

- The loader of a file is its `ds_type`, else the first of .parquet/.arrow/.csv/.txt that appears
  in the path, else json (Axolotl's own rule, a substring test on the whole path).
- A json file is JSON Lines (blank lines skipped), or one JSON array: of objects, each a record,
  or of strings, each a record {"text": ...}. A line that is not a JSON object stops the load.
- A directory saved with `save_to_disk` is loaded as such. Any other directory is read by the
  loader its most common file extension picks, and only that loader's files are read; hidden
  files and folders (a name starting with "." or "__", such as .cache/) are never read.
"""

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EXTENSION_LOADERS = {".parquet": "parquet", ".arrow": "arrow", ".csv": "csv", ".txt": "text"}
_LOADER_EXTENSIONS = {
    "json": (".json", ".jsonl", ".ndjson"),
    "csv": (".csv", ".tsv"),
    "parquet": (".parquet", ".geoparquet", ".gpq"),
    "arrow": (".arrow",),
    "text": (".txt",),
}
_EXTENSION_LOADER = {ext: name for name, exts in _LOADER_EXTENSIONS.items() for ext in exts}
# Extensions of the loaders the client does not read (image, audio, video, pdf folders, ...).
_OTHER_LOADERS = {
    *(".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff"),
    *(".wav", ".mp3", ".flac", ".ogg", ".mp4", ".avi", ".mkv", ".mov", ".webm"),
    *(".pdf", ".tar", ".xml", ".hdf5", ".h5", ".lance", ".eval", ".zip", ".nii"),
}
_SAVED_DATASET = ("dataset_info.json", "state.json")


def loader_of(path_value: str, ds_type: str | None) -> str:
    if ds_type:
        return ds_type
    for extension, loader in EXTENSION_LOADERS.items():
        if extension in path_value:
            return loader
    return "json"


@dataclass(frozen=True)
class Record:
    line: int
    value: Any


class Unreadable(Exception):
    """The file cannot be loaded as a dataset; `line` is where (0: the file as a whole)."""

    def __init__(self, line: int, message: str, fix: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message
        self.fix = fix


def _line_of(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


def _array_records(text: str) -> Iterator[Record]:
    """The elements of one JSON array, each with the line it starts on."""
    decoder = json.JSONDecoder()
    start = text.index("[")
    try:
        items = decoder.decode(text[start:].rstrip())
    except json.JSONDecodeError as exc:
        raise Unreadable(
            _line_of(text, start + exc.pos),
            f"not valid JSON: {exc.msg} (column {exc.colno})",
            "a file starting with [ must be one JSON array of records",
        ) from None
    if not isinstance(items, list):
        raise Unreadable(
            _line_of(text, start), "not a JSON array", "write one JSON object per line instead"
        )
    strings = "{" not in text[start : start + 100].split('"', 1)[0]
    index = start + 1
    for item in items:
        while text[index] in " \t\r\n,":
            index += 1
        line = _line_of(text, index)
        _, index = decoder.raw_decode(text, index)
        yield Record(line, {"text": item} if strings else item)


def read_records(path: Path) -> Iterator[Record]:
    """The records of a local json-loader file, in order; raises Unreadable where `datasets`
    would fail."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise Unreadable(
            line, f"not UTF-8 text (byte {raw[exc.start]:#x})", "save the file as UTF-8"
        ) from None
    body = text.lstrip("\ufeff \t\r\n")
    if not body:
        raise Unreadable(0, "the file has no records", "put one JSON object per line in it")
    if body.startswith("["):
        yield from _array_records(text)
        return
    found = False
    for number, text_line in enumerate(text.split("\n"), start=1):
        if not text_line.strip():
            continue
        try:
            value = json.loads(text_line)
        except json.JSONDecodeError as exc:
            if not found and (document := _one_document(text)) is not None:
                yield Record(1, document)  # the loader reads it whole, as one record
                return
            raise Unreadable(
                number,
                f"not JSON: {exc.msg} (column {exc.colno})",
                "each line must be one complete JSON object",
            ) from None
        if not isinstance(value, dict):
            raise Unreadable(
                number,
                f"expected a JSON object, got {_kind(value)}",
                'each line must be one JSON object, e.g. {"messages": [...]}',
            )
        found = True
        yield Record(number, value)


def _one_document(text: str) -> dict[str, Any] | None:
    """A single JSON object spread over lines."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _kind(value: Any) -> str:
    return {
        dict: "an object",
        list: "a list",
        str: "a string",
        bool: "true/false",
        int: "a number",
        float: "a number",
    }.get(type(value), "null")


def _hidden(relative: Path) -> bool:
    return any(part.startswith((".", "__")) for part in relative.parts)


def is_saved_dataset(directory: Path) -> bool:
    return all((directory / name).is_file() for name in _SAVED_DATASET)


@dataclass(frozen=True)
class DirectoryFiles:
    loader: str  # json, csv, ... or "" for a loader the client does not know
    files: list[Path]


def directory_files(directory: Path) -> DirectoryFiles:
    """The files `datasets` reads from a local dataset directory (given without data_files)."""
    visible = sorted(
        p for p in directory.rglob("*") if p.is_file() and not _hidden(p.relative_to(directory))
    )
    if is_saved_dataset(directory):
        return DirectoryFiles("saved", visible)
    counts: Counter[str] = Counter(
        "." + suffix.lower() for p in visible for suffix in p.name.split(".")[1:]
    )

    def rank(item: tuple[str, int]) -> tuple[int, bool, bool, bool, bool, str]:
        ext, count = item
        return (count, ext == ".parquet", ext == ".jsonl", ext == ".json", ext == ".csv", ext)

    for ext, _ in sorted(counts.items(), key=rank, reverse=True):
        if ext in _OTHER_LOADERS:
            break
        loader = _EXTENSION_LOADER.get(ext)
        if loader:
            extensions = _LOADER_EXTENSIONS[loader]
            return DirectoryFiles(loader, [p for p in visible if p.name.endswith(extensions)])
    return DirectoryFiles("", visible)
