"""Checks a chat dataset in the home-llm JSONL shape before it is uploaded, line by line.

One JSON object per line: "messages" (role + content, content as text or a list of
{"type": "text", "text": ...} parts; optional "train_on_turn" and "tool_calls" whose "arguments"
are JSON strings) and optional "tools". A tool message's parts may also be tool responses,
{"name": ..., "response": {...}}: home-llm's generator writes them so for FunctionGemma
(`--tool-response-format functiongemma`).
"""

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_ROLES = {"system", "user", "assistant", "tool"}


@dataclass(frozen=True)
class Problem:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


def _tool_response(part: Any) -> bool:
    return (
        isinstance(part, dict)
        and isinstance(part.get("name"), str)
        and isinstance(part.get("response"), dict)
    )


def _content(content: Any, where: str, role: Any) -> Iterator[str]:
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        yield f"{where}.content: expected text or a list of text parts"
        return
    for i, part in enumerate(content):
        if role == "tool" and _tool_response(part):
            continue
        if not isinstance(part, dict) or part.get("type") != "text":
            yield f'{where}.content[{i}]: expected {{"type": "text", "text": ...}}'
        elif not isinstance(part.get("text"), str):
            yield f"{where}.content[{i}].text: expected a string"


def _tool_calls(calls: Any, where: str) -> Iterator[str]:
    if not isinstance(calls, list):
        yield f"{where}.tool_calls: expected a list"
        return
    for i, call in enumerate(calls):
        function = call.get("function", call) if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            yield f"{where}.tool_calls[{i}]: expected a function with a name"
            continue
        arguments = function.get("arguments")
        if not isinstance(arguments, str):
            yield (
                f"{where}.tool_calls[{i}].function.arguments: expected a JSON string, "
                f"got {type(arguments).__name__}"
            )
            continue
        try:
            json.loads(arguments)
        except json.JSONDecodeError as exc:
            yield f"{where}.tool_calls[{i}].function.arguments: not valid JSON ({exc.msg})"


def _message(message: Any, where: str) -> Iterator[str]:
    if not isinstance(message, dict):
        yield f"{where}: expected an object with role and content"
        return
    role = message.get("role")
    if role not in _ROLES:
        yield f"{where}.role: expected one of {', '.join(sorted(_ROLES))}, got {role!r}"
    if "content" not in message:
        yield f"{where}.content: missing"
    elif message["content"] is not None or "tool_calls" not in message:
        yield from _content(message["content"], where, role)
    if "train_on_turn" in message and not isinstance(message["train_on_turn"], bool):
        yield f"{where}.train_on_turn: expected true or false"
    if "tool_calls" in message:
        yield from _tool_calls(message["tool_calls"], where)


def check_record(record: Any) -> Iterator[str]:
    if not isinstance(record, dict):
        yield f"expected a JSON object, got {type(record).__name__}"
        return
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        yield "messages: expected a non-empty list"
        return
    for i, message in enumerate(messages):
        yield from _message(message, f"messages[{i}]")
    tools = record.get("tools")
    if tools is not None and not isinstance(tools, list | str):
        yield "tools: expected a list of tool definitions"


def check_jsonl(path: Path, limit: int = 20) -> list[Problem]:
    """The first `limit` problems in the file (empty when it is fine)."""
    problems: list[Problem] = []
    records = 0
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            records += 1
            try:
                record = json.loads(raw)
            except UnicodeDecodeError:
                problems.append(Problem(number, "not UTF-8 text"))
            except json.JSONDecodeError as exc:
                problems.append(Problem(number, f"not JSON: {exc.msg} (column {exc.colno})"))
            else:
                problems += [Problem(number, m) for m in check_record(record)]
            if len(problems) >= limit:
                break
    if not records and not problems:
        problems.append(Problem(1, "the file has no records"))
    return problems[:limit]


def applies(name: str, dataset_type: str) -> bool:
    """Whether the check applies: a .jsonl file used as a chat_template dataset."""
    return name.endswith(".jsonl") and dataset_type == "chat_template"
