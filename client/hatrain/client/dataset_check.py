"""Check a chat dataset record by record the way Axolotl 0.19's `chat_template` strategy reads it.

For each record, as Axolotl does: nulls are dropped (the loader fills absent keys with them); the
conversation is taken from `field_messages` (a list, or a JSON string of one); each message's
properties are taken through `message_property_mappings` (role and content by default) plus those
the template reads; roles are renamed through `roles`; list content is joined from its parts'
text; string tool-call arguments and tools are parsed as JSON; then the conversation is rendered
through the chat template when the template is known here. Anything that raises there is a
finding, named by line and field; anything Axolotl lets through is not.
"""

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .chat_template import ChatTemplate, TemplateError
from .dataset_files import Unreadable, read_records
from .findings import Finding

# Part of the key under which a file found good is remembered: a change of rules re-reads files.
RULES = "axolotl-0.19 chat_template, 1"
DEFAULT_ROLES = {
    "human": "user",
    "user": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "system": "system",
    "tool": "tool",
}


@dataclass(frozen=True)
class Issue:
    field: str
    message: str
    fix: str


@dataclass
class ChatReading:
    """How a `type: chat_template` dataset is read: its dataset config, and the template."""

    field_messages: str = "messages"
    mappings: dict[str, str] = field(default_factory=lambda: {"role": "role", "content": "content"})
    roles: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_ROLES))
    message_field_training: str | None = None
    drop_system_message: bool = False
    thinking_key: str = "reasoning_content"
    template: ChatTemplate | None = None
    template_text: str = ""
    # Why the conversations are not rendered (the template is not known here).
    template_note: str = "no chat template given: conversations are not rendered"

    def fingerprint(self) -> str:
        settings = [
            RULES,
            self.field_messages,
            sorted(self.mappings.items()),
            sorted(self.roles.items()),
            self.message_field_training,
            self.drop_system_message,
            self.thinking_key,
            self.template_text,
            sorted(self.template.special_tokens.items()) if self.template else None,
            repr(sorted(self.template.kwargs.items())) if self.template else None,
        ]
        return hashlib.sha256(json.dumps(settings).encode()).hexdigest()[:16]


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "true/false"
    return {dict: "an object", list: "a list", str: "text", int: "a number", float: "a number"}.get(
        type(value), type(value).__name__
    )


def _json(text: str) -> tuple[Any, str]:
    try:
        return json.loads(text), ""
    except json.JSONDecodeError as exc:
        return None, f"{exc.msg} at column {exc.colno}"


def _messages(prompt: dict[str, Any], reading: ChatReading) -> tuple[list[Any] | None, list[Issue]]:
    key = reading.field_messages
    messages = prompt.get(key)
    if messages is None:
        present = ", ".join(sorted(prompt)) or "none"
        return None, [
            Issue(
                key,
                f'missing: the record has no "{key}" (its keys: {present})',
                f"give every record a {key} list, or set field_messages to the key that holds "
                "the conversation",
            )
        ]
    if isinstance(messages, str):
        parsed, error = _json(messages)
        if error:
            return None, [Issue(key, f"text that is not JSON ({error})", f"make {key} a list")]
        if not isinstance(parsed, list):
            return None, [
                Issue(
                    key,
                    f"JSON text holding {_kind(parsed)}, expected a list",
                    f"make {key} a list of messages",
                )
            ]
        for i, message in enumerate(parsed):
            if not isinstance(message, dict):
                got = _kind(message)
                return None, [
                    Issue(
                        f"{key}[{i}]",
                        f"expected a message object, got {got}",
                        'each message is an object such as {"role": "user", "content": "..."}',
                    )
                ]
        messages = parsed
    if not isinstance(messages, list):
        return None, [
            Issue(
                key,
                f"expected a list of messages, got {_kind(messages)}",
                f"make {key} a list of messages, or point field_messages at the list",
            )
        ]
    if not messages:
        return None, [Issue(key, "the conversation is empty", "give it at least one message")]
    return messages, []


def _part_text(parts: list[Any], where: str) -> tuple[str, list[Issue]]:
    """List content becomes the text of its object parts, joined (other parts are skipped)."""
    texts: list[str] = []
    for i, part in enumerate(parts):
        if not isinstance(part, dict):
            continue
        name = next((k for k in ("text", "content", "value") if part.get(k)), None)
        if name is None:
            continue
        value = part[name]
        if not isinstance(value, str):
            return "", [
                Issue(
                    f"{where}[{i}].{name}",
                    f"expected text, got {_kind(value)}",
                    f'a content part\'s "{name}" must be a string',
                )
            ]
        texts.append(value)
    return "".join(texts), []


def _tool_calls(calls: Any, where: str) -> Iterator[Issue]:
    if not isinstance(calls, (list, dict, str)):
        yield Issue(
            where,
            f"expected a list of tool calls, got {_kind(calls)}",
            'make tool_calls a list of {"function": {"name": ..., "arguments": ...}}',
        )
        return
    for j, call in enumerate(calls):
        here = f"{where}[{j}]"
        if isinstance(call, str) and "function" in call:
            yield Issue(
                here,
                "expected a tool call object, got text",
                'write the call as {"function": {"name": ..., "arguments": ...}}',
            )
            continue
        if not isinstance(call, dict) or "function" not in call:
            continue
        function = call["function"]
        if not isinstance(function, (dict, str, list)):
            yield Issue(
                f"{here}.function",
                f"expected an object, got {_kind(function)}",
                'write the function as {"name": ..., "arguments": ...}',
            )
            continue
        if "arguments" not in function:
            continue
        if not isinstance(function, dict):
            yield Issue(
                f"{here}.function",
                f"expected an object, got {_kind(function)}",
                'write the function as {"name": ..., "arguments": ...}',
            )
            continue
        arguments = function["arguments"]
        if isinstance(arguments, str):
            parsed, error = _json(arguments)
            if error:
                yield Issue(
                    f"{here}.function.arguments",
                    f"not valid JSON ({error})",
                    "arguments must be a JSON object, or a string holding one",
                )
            else:
                function["arguments"] = parsed


def _tools(prompt: dict[str, Any]) -> tuple[Any, list[Issue]]:
    tools = prompt.get("tools")
    if tools is None:
        return None, []
    if isinstance(tools, str):
        tools, error = _json(tools)
        if error:
            return None, [Issue("tools", f"text that is not JSON ({error})", "make tools a list")]
    if not isinstance(tools, list):
        return None, [
            Issue(
                "tools",
                f"expected a list of tool definitions, got {_kind(tools)}",
                'make tools a list, e.g. [{"type": "function", "function": {...}}]',
            )
        ]
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("function"), dict):
            continue
        function = tool["function"]
        if isinstance(function.get("parameters"), str):
            parsed, error = _json(function["parameters"])
            if error:
                return None, [
                    Issue(
                        f"tools[{i}].function.parameters",
                        f"not valid JSON ({error})",
                        "parameters must be a JSON schema object, or a string holding one",
                    )
                ]
            function["parameters"] = parsed
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            return None, [
                Issue(
                    f"tools[{i}]",
                    f"expected a tool object, got {_kind(tool)}",
                    'each tool is an object such as {"type": "function", "function": {...}}',
                )
            ]
    return tools, []


def _turn(
    message: dict[str, Any], where: str, reading: ChatReading
) -> tuple[dict[str, Any], list[Issue]]:
    turn = {t: message[s] for t, s in reading.mappings.items() if message.get(s) is not None}
    role = turn.get("role")
    if role is not None:
        try:
            turn["role"] = reading.roles.get(role, role)
        except TypeError:
            field_name = f"{where}.{reading.mappings['role']}"
            return turn, [
                Issue(
                    field_name,
                    f"expected text, got {_kind(role)}",
                    'a role is a name such as "user" or "assistant"',
                )
            ]
    if reading.template is not None:
        mapped = set(reading.mappings.values())
        for key in reading.template.message_keys:
            if key in message and key not in mapped and message[key] is not None:
                turn[key] = message[key]
    issues: list[Issue] = []
    if turn.get("tool_calls"):
        issues += _tool_calls(turn["tool_calls"], f"{where}.tool_calls")
    if reading.message_field_training and message.get(reading.message_field_training) is not None:
        turn["training"] = message[reading.message_field_training]
    for key in ("content", reading.thinking_key):
        if isinstance(turn.get(key), list):
            source = reading.mappings.get(key, key)
            turn[key], problems = _part_text(turn[key], f"{where}.{source}")
            issues += problems
    return turn, issues


def _render_issue(turns: list[dict[str, Any]], tools: Any, reading: ChatReading) -> Issue | None:
    assert reading.template is not None
    try:
        reading.template.render(turns, tools=tools or None)
        return None
    except (TemplateError, TypeError, ValueError, KeyError, AttributeError, IndexError) as exc:
        error = exc
    # Name the first message whose conversation prefix the template refuses.
    where = reading.field_messages
    for n in range(1, len(turns)):
        try:
            reading.template.render(turns[:n], tools=tools or None)
        except Exception:
            where = f"{reading.field_messages}[{n - 1}]"
            break
    else:
        where = f"{reading.field_messages}[{len(turns) - 1}]"
    return Issue(
        where,
        f"the chat template refuses this conversation: {type(error).__name__}: {error}",
        "shape the messages the way the template expects, or use a template for this data",
    )


def check_record(record: Any, reading: ChatReading) -> Iterator[Issue]:
    if not isinstance(record, dict):
        yield Issue(
            "",
            f"expected a JSON object, got {_kind(record)}",
            'each record is one JSON object, e.g. {"messages": [...]}',
        )
        return
    prompt = _drop_nulls(record)
    messages, issues = _messages(prompt, reading)
    yield from issues
    if messages is None:
        return
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        where = f"{reading.field_messages}[{i}]"
        if not isinstance(message, dict):
            yield Issue(
                where,
                f"expected a message object, got {_kind(message)}",
                'each message is an object such as {"role": "user", "content": "..."}',
            )
            return
        turn, issues = _turn(message, where, reading)
        if i == 0 and "role" not in turn:
            yield Issue(
                f"{where}.{reading.mappings['role']}",
                "missing: the first message has no role",
                "give each message a role, or map the key that holds it with "
                "message_property_mappings",
            )
            return
        yield from issues
        if issues:
            return
        turns.append(turn)
    if turns[0].get("role") != "system" and "system" in prompt:
        turns.insert(0, {"role": "system", "content": prompt["system"]})
    if reading.drop_system_message and turns[0].get("role") == "system":
        turns = turns[1:]
    tools, issues = _tools(prompt)
    yield from issues
    if issues or reading.template is None:
        return
    issue = _render_issue(turns, tools, reading)
    if issue is not None:
        yield issue


@dataclass
class FileCheck:
    findings: list[Finding]
    records: int = 0


def check_file(path: Path, reading: ChatReading, limit: int = 20) -> FileCheck:
    """The first `limit` findings in the file (none when Axolotl would read it)."""
    result = FileCheck([])
    try:
        for record in read_records(path):
            result.records += 1
            for issue in check_record(record.value, reading):
                result.findings.append(
                    Finding(path, record.line, issue.field, issue.message, issue.fix)
                )
            if len(result.findings) >= limit:
                break
    except Unreadable as exc:
        result.findings.append(Finding(path, exc.line, "", exc.message, exc.fix))
    result.findings = result.findings[:limit]
    return result


def single_example(counted: list[tuple[str, Path, int]], train_entries: int) -> Finding | None:
    """hatrain runs `axolotl preprocess --debug`, whose sample of the train set fails on a set of
    one example. counted: (field, file, records) of each checked train file; train_entries: how
    many datasets the config lists (all must be among the checked for the count to be known)."""
    fields = {name for name, _, _ in counted}
    if len(fields) != train_entries or sum(n for _, _, n in counted) != 1:
        return None
    path = next(file for _, file, n in counted if n == 1)
    return Finding(
        path,
        1,
        "",
        "the train set is this one example; Axolotl's preprocess (run with --debug, as hatrain "
        "runs it) fails on a train set of one example",
        "add at least one more example",
    )
