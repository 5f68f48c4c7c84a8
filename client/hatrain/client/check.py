"""What `check-dataset` does: read local datasets as Axolotl would, and report every finding."""

from dataclasses import dataclass, field
from pathlib import Path

from .axolotl_config import analyse, first_chat_reading
from .dataset_check import ChatReading, check_file
from .dataset_files import directory_files
from .errors import BadInput
from .findings import Finding


@dataclass
class CheckReport:
    findings: list[Finding] = field(default_factory=list)
    checked: list[tuple[Path, int]] = field(default_factory=list)  # file, records
    notes: list[str] = field(default_factory=list)


_READING_KEYS = (
    "chat_template",
    "field_messages",
    "message_property_mappings",
    "message_field_",
    "roles",
    "train_on_eo",
)


def _about_reading(field_name: str) -> bool:
    return any(key in field_name for key in _READING_KEYS)


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        selected = directory_files(path)
        return selected.files if selected.loader == "json" else []
    return [path]


def check_datasets(files: list[Path], config: Path | None) -> CheckReport:
    """FILEs with Axolotl's default chat reading, or with the reading of CONFIG's first chat
    dataset; without FILEs, every local chat dataset of CONFIG as its own entry reads it."""
    report = CheckReport()
    todo: list[tuple[Path, ChatReading]] = []
    reading = ChatReading()
    if config is not None:
        analysis = analyse(config)
        if files:
            # Only how the config reads data matters here, not where its own datasets are.
            report.findings += [f for f in analysis.findings if _about_reading(f.field)]
            reading = first_chat_reading(analysis) or reading
        else:
            report.findings += analysis.findings
            report.notes += analysis.notes
            todo = [(c.path, c.reading) for c in analysis.checks]
            if not todo and not analysis.findings:
                report.notes.append(f"{config}: no local chat_template dataset to check")
    if files and reading.template is None:
        report.notes.append(reading.template_note)
    for path in files:
        if not path.exists():
            raise BadInput(f"{path}: no such file or directory")
        todo += [(f, reading) for f in _files(path)]
    for path, file_reading in todo:
        result = check_file(path, file_reading)
        report.findings += result.findings
        if not result.findings:
            report.checked.append((path, result.records))
    return report
