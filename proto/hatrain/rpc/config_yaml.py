"""Reading an Axolotl config's YAML, with the expansion of aliases bounded.

Both sides read configs: the client before it uploads anything, the agent before it stores a
job. YAML aliases let a few hundred bytes stand for billions of nodes (the "billion laughs"):
harmless while they stay references, ruinous once anything walks or copies the result. The
document's size is therefore counted with every alias expanded, before anything is built.
"""

from pathlib import Path
from typing import Any

import yaml

# Nodes of a config with its aliases expanded; real Axolotl configs have a few hundred.
MAX_NODES = 100_000
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class ConfigYamlError(ValueError):
    """The text is not a YAML document this side will read; `problem` says why."""

    def __init__(self, problem: str, line: int | None = None, column: int | None = None) -> None:
        where = f" (line {line}, column {column})" if line is not None else ""
        super().__init__(f"{problem}{where}")
        self.problem = problem
        self.line = line
        self.column = column


def _expanded_size(root: yaml.Node, limit: int) -> int:
    """Nodes of the document with aliases expanded, stopping as soon as it passes limit."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            on_path.discard(key)
            size = 1 + sum(sizes[id(child)] for child in _children(node))
            if size > limit:
                raise ConfigYamlError(
                    f"too large: more than {limit} nodes once its aliases are expanded"
                )
            sizes[key] = size
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise ConfigYamlError("an alias refers to a node that contains it")
        on_path.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in sizes)
    return sizes[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def load_config_yaml(text: str, max_nodes: int = MAX_NODES) -> Any:
    """The parsed document (None when empty); ConfigYamlError when it cannot be read or is too
    large once its aliases are expanded."""
    return parse_config_yaml(text, max_nodes)[0]


def parse_config_yaml(text: str, max_nodes: int = MAX_NODES) -> tuple[Any, yaml.Node | None]:
    """The parsed document and its node graph (for line numbers); both None when empty."""
    loader = _LOADER(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None
        _expanded_size(node, max_nodes)
        return loader.construct_document(node), node
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or "cannot parse"
        if mark is None:
            raise ConfigYamlError(problem) from exc
        raise ConfigYamlError(problem, mark.line + 1, mark.column + 1) from exc
    except RecursionError as exc:
        raise ConfigYamlError("nested too deeply") from exc
    finally:
        loader.dispose()


def load_yaml_mapping(path: Path) -> dict[str, Any]:
    """A settings file: YAML holding a mapping (an empty file is an empty one). ConfigYamlError
    says what is wrong, starting with the file's path."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigYamlError(f"{path}: cannot read: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigYamlError(f"{path}: not UTF-8 text (invalid byte at {exc.start})") from exc
    try:
        data = load_config_yaml(text)
    except ConfigYamlError as exc:
        raise ConfigYamlError(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigYamlError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    return data
