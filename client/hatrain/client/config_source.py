"""An Axolotl config as YAML text: its mapping, and the line each field is on (for findings)."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hatrain.rpc.config_yaml import ConfigYamlError, parse_config_yaml

from .errors import BadInput


@dataclass
class ConfigSource:
    path: Path
    data: dict[str, Any]
    lines: dict[str, int] = field(default_factory=dict)

    def line(self, field_name: str) -> int:
        """The line of the field, or of the nearest enclosing one that has a line."""
        name = field_name
        while name:
            if name in self.lines:
                return self.lines[name]
            cut = max(name.rfind("."), name.rfind("["))
            name = name[:cut] if cut > 0 else ""
        return 0


def _lines(node: yaml.Node, prefix: str, out: dict[str, int], seen: set[int]) -> None:
    """The line of every field, each node once (an alias's fields keep their anchor's lines)."""
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                name = f"{prefix}.{key.value}" if prefix else str(key.value)
                out[name] = key.start_mark.line + 1
                _lines(value, name, out, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            name = f"{prefix}[{i}]"
            out[name] = item.start_mark.line + 1
            _lines(item, name, out, seen)


def load_config(path: Path) -> ConfigSource:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise BadInput(f"config {path}: no such file") from None
    except IsADirectoryError:
        raise BadInput(f"config {path}: a directory, expected an Axolotl config file") from None
    except OSError as exc:
        raise BadInput(f"config {path}: cannot read it ({exc.strerror})") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInput(
            f"config {path}: not UTF-8 text (invalid byte at offset {exc.start})"
        ) from exc
    try:
        config, node = parse_config_yaml(text)
    except ConfigYamlError as exc:
        where = f" at line {exc.line}, column {exc.column}" if exc.line is not None else ""
        raise BadInput(f"config {path}: not valid YAML: {exc.problem}{where}") from exc
    if not isinstance(config, dict):
        raise BadInput(
            f"config {path}: expected an Axolotl config (a YAML mapping), "
            f"got {type(config).__name__}"
        )
    lines: dict[str, int] = {}
    if node is not None:
        _lines(node, "", lines, set())
    return ConfigSource(path, config, lines)
