"""What `check-dataset` does: read local datasets as Axolotl would, and report every finding."""

from dataclasses import dataclass, field
from pathlib import Path

from .axolotl_config import Analysis, analyse, first_chat_reading
from .dataset_check import ChatReading, check_file, single_example
from .dataset_files import directory_files
from .errors import BadInput
from .findings import Finding
from .hash_cache import HashCache


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


def check_analysis(analysis: Analysis, cache: HashCache | None = None) -> CheckReport:
    """Check each local chat file of a config as its dataset entry reads it. With a cache, a
    file already found good (same content, same reading) is not read again."""
    report = CheckReport()
    counted: list[tuple[str, Path, int]] = []
    for check in analysis.checks:
        key = f"{cache.sha256(check.path)}:{check.reading.fingerprint()}" if cache else ""
        if cache is not None and cache.checked(key):
            counted.append((check.field, check.path, 2))  # marked only with two or more
            continue
        result = check_file(check.path, check.reading)
        report.findings += result.findings
        if check.field.startswith("datasets["):
            counted.append((check.field, check.path, result.records))
        if not result.findings:
            report.checked.append((check.path, result.records))
            if cache is not None and result.records >= 2:
                cache.mark_checked(key)
    datasets = analysis.config.get("datasets")
    unsplit = not analysis.config.get("val_set_size")
    if not report.findings and isinstance(datasets, list) and unsplit:
        one = single_example(counted, len(datasets))
        if one is not None:
            report.findings.append(one)
    return report


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
            checked = check_analysis(analysis)
            report.findings += analysis.findings + checked.findings
            report.notes += analysis.notes
            report.checked += checked.checked
            if not analysis.checks and not analysis.findings:
                report.notes.append(f"{config}: no local chat_template dataset to check")
    if files and reading.template is None:
        report.notes.append(reading.template_note)
    for path in files:
        if not path.exists():
            raise BadInput(f"{path}: no such file or directory")
        found = _files(path)
        if not found:
            report.notes.append(f"{path}: no JSON files in it for the loader to read")
        todo += [(f, reading) for f in found]
    for path, file_reading in todo:
        result = check_file(path, file_reading)
        report.findings += result.findings
        if not result.findings:
            report.checked.append((path, result.records))
    return report
