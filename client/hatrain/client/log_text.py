"""A job's output as text: a header where a step begins, and each line's time when asked."""

from collections.abc import Iterable, Iterator

from .records import LogLine, iso_time
from .text import safe


def step_header(step: str) -> str:
    """The line that opens a step's output, as `tail` heads each file's."""
    return f"==> {step or 'output'} <=="


def log_text(lines: Iterable[LogLine], *, timestamps: bool = False) -> Iterator[str]:
    """Each line, escaped, after a header whenever the step changes (preprocess, then train);
    with timestamps, each begins with its time in ISO-8601 (UTC)."""
    return _text(lines, None, timestamps)


def log_text_runs(runs: Iterable[list[LogLine]], *, timestamps: bool = False) -> Iterator[str]:
    """log_text's lines, a run of lines at a time, joined by newlines (no newline at the end):
    one write a run for a printer."""
    step: str | None = None
    for run in runs:
        if run:
            yield "\n".join(_text(run, step, timestamps))
            step = run[-1].step


def _text(lines: Iterable[LogLine], step: str | None, timestamps: bool) -> Iterator[str]:
    """The lines as text, with a header where the step changes from `step` on."""
    for line in lines:
        if line.step != step:
            step = line.step
            yield step_header(step)
        text = safe(line.line)
        yield f"{iso_time(line.time)} {text}" if timestamps else text


def log_file_lines(lines: Iterable[LogLine]) -> Iterator[str]:
    """The lines of the log file `fetch --logs` writes: headers, and every line's time."""
    return log_text(lines, timestamps=True)
