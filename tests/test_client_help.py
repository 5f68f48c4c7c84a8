"""`hatrain-client --help` and every verb's help, as printed at 80 columns: each option says
what it does, each verb shows examples that its own parser accepts, and no summary is cut."""

import re
import shlex
import subprocess

import click
import pytest
from hatrain.client.cli import main

from tests.support.client import CLIENT

VERBS = sorted(main.commands)


def _help(*args: str) -> str:
    result = subprocess.run(
        [CLIENT, *args, "--help"],
        capture_output=True,
        text=True,
        env={"COLUMNS": "80", "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _examples(text: str) -> list[str]:
    """The command lines under `Examples:`, up to the first shell operator or comment (the
    command inside `eval "$(...)"`)."""
    block = text.split("Examples:\n", 1)[1].split("\n\n", 1)[0]
    lines = []
    for line in block.splitlines():
        words = shlex.split(line, comments=True)
        if words[0] == "eval" and words[1].startswith("$("):  # eval "$(hatrain-client ...)"
            words = shlex.split(words[1][2:-1])
        for i, word in enumerate(words):
            if word in ("&&", "|", ">", ";") or word.startswith("$("):
                words = words[:i]
                break
        lines.append(shlex.join(words))
    return lines


def test_the_overview_shows_examples_and_every_summary_whole() -> None:
    """`hatrain-client --help`: examples, exit codes, and each verb's summary a whole sentence
    (click would otherwise cut a long one short with "...")."""
    text = _help()
    assert "Examples:" in text and "Exit codes:" in text
    commands = text.split("Commands:\n", 1)[1]
    summaries: dict[str, str] = {}
    for line in commands.splitlines():
        if re.match(r"  \S", line):
            name, _, summary = line.strip().partition(" ")
            summaries[name] = summary.strip()
        elif line.strip():
            summaries[name] += " " + line.strip()
    assert sorted(summaries) == VERBS
    for name, summary in summaries.items():
        assert summary.endswith(".") and not summary.endswith("..."), (name, summary)
    assert all(len(line) <= 80 for line in text.splitlines())


@pytest.mark.parametrize("verb", VERBS)
def test_every_option_is_described_and_every_verb_has_examples(verb: str) -> None:
    """Each option of the verb has a description in its help; the help has examples, each one
    accepted by the verb's own parser; nothing is wider than 80 columns."""
    command = main.commands[verb]
    text = _help(verb)
    shown = " ".join(text.split())
    with click.Context(command) as ctx:
        options = [p for p in command.get_params(ctx) if isinstance(p, click.Option)]
    for option in options:
        assert option.help and option.help.strip(), (verb, option.opts)
        start = " ".join(option.help.split())[:40]
        assert start in shown, (verb, option.opts, start)
    assert all(len(line) <= 80 for line in text.splitlines()), verb

    examples = _examples(text)
    assert examples, verb
    for example in examples:
        words = shlex.split(example)
        assert words[:2] == ["hatrain-client", verb], example
        with click.Context(main) as ctx:
            command.make_context(verb, words[2:], parent=ctx)  # raises on a bad option
