"""What the client found wrong in a config or a dataset: each finding names the file, the line, the
field and how to fix it; a list of them becomes one BadInput before anything is sent."""

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .errors import BadInput

_SHOWN = 20


@dataclass(frozen=True)
class Finding:
    file: Path
    line: int  # 1-based; 0 when the file as a whole is meant
    field: str  # e.g. "datasets[0].path" or "messages[2].tool_calls[0].function.arguments"
    message: str
    fix: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else str(self.file)
        field = f" {self.field}:" if self.field else ""
        text = f"{where}:{field} {self.message}"
        return f"{text}\n    fix: {self.fix}" if self.fix else text


def refuse(findings: Iterable[Finding], what: str = "") -> None:
    """Raise one BadInput listing the findings (the first few), if there are any."""
    found = list(findings)
    if not found:
        return
    lines = [str(f) for f in found[:_SHOWN]]
    if len(found) > _SHOWN:
        lines.append(f"... and {len(found) - _SHOWN} more")
    head = what or "Axolotl would refuse this input"
    raise BadInput(f"{head}:\n" + "\n".join(f"  {line}" for line in lines))
