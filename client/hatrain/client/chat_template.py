"""A chat template rendered the way a Hugging Face tokenizer's `apply_chat_template` renders it.

The same Jinja set-up as transformers: a sandbox, trim_blocks and lstrip_blocks, the loop
controls, `{% generation %}` blocks, `raise_exception`, `strftime_now` and a `tojson` that keeps
non-ASCII text. A template that raises here raises in Axolotl's preprocess too.
"""

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
from jinja2 import nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

TemplateError = jinja2.TemplateError


class _Generation(jinja2.ext.Extension):
    """`{% generation %}...{% endgeneration %}` marks assistant text; it renders its body."""

    tags = {"generation"}

    def parse(self, parser: Any) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        call = self.call_method("_body")
        return nodes.CallBlock(call, [], [], body).set_lineno(lineno)

    def _body(self, caller: Callable[[], str]) -> str:
        return caller()


def _raise_exception(message: str) -> None:
    raise jinja2.TemplateError(message)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: Any = None,
    sort_keys: bool = False,
) -> str:
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_Generation, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env


def _names_read(tree: nodes.Template) -> set[str]:
    """Every property name the template reads off an object: x.name, x['name'], 'name' in x.
    Axolotl passes a message property to the template only when the template reads it."""
    names: set[str] = set()
    for node in tree.find_all((nodes.Getattr, nodes.Getitem, nodes.Compare)):
        if isinstance(node, nodes.Getattr):
            names.add(node.attr)
        elif isinstance(node, nodes.Getitem):
            if isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
                names.add(node.arg.value)
        elif (
            isinstance(node, nodes.Compare)
            and isinstance(node.expr, nodes.Const)
            and isinstance(node.expr.value, str)
            and any(op.op in ("in", "notin") for op in node.ops)
        ):
            names.add(node.expr.value)
    return names


class ChatTemplate:
    """A compiled chat template; raises jinja2.TemplateSyntaxError for one that does not parse."""

    def __init__(
        self,
        source: str,
        special_tokens: dict[str, str] | None = None,
        kwargs: dict[str, Any] | None = None,
    ) -> None:
        env = _environment()
        self.template = env.from_string(source)
        self.message_keys = _names_read(env.parse(source))
        self.special_tokens = {"bos_token": "<s>", "eos_token": "</s>", **(special_tokens or {})}
        # The config's chat_template_kwargs, which Axolotl passes to every rendering.
        self.kwargs = {k: v for k, v in (kwargs or {}).items() if isinstance(k, str)}

    def render(
        self, messages: list[dict[str, Any]], tools: Any = None, add_generation_prompt: bool = False
    ) -> str:
        return self.template.render(
            **self.special_tokens,
            **self.kwargs,
            messages=messages,
            tools=tools,
            documents=None,
            add_generation_prompt=add_generation_prompt,
        )
