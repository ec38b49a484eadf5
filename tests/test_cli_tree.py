"""Every console script's click tree, walked: every option has help, ``-h`` is plain text (no reStructuredText
markup), a flag that several commands share has one kind (the same choices, or free text everywhere) unless listed
below with its reason, and docs/cli.md is the table generated from the commands themselves (regenerate it with
``python tests/test_cli_tree.py > docs/cli.md``)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import click

sys.path.insert(0, str(Path(__file__).parent))
from test_cli_conventions import ROOT, _all_commands  # noqa: E402

MARKUP = re.compile(r"``|:(func|class|mod|meth|data):`")
# flags whose kind differs on purpose between commands
DIFFERENT_ON_PURPOSE = {
    "--executor": "clip-study status inspects a scheduler's jobs: 'local' has none",
}
# flags whose default differs on purpose between commands (each command reads a different stage's data)
DEFAULT_DIFFERS_ON_PURPOSE = {
    "--executor": DIFFERENT_ON_PURPOSE["--executor"],
    "--split": "statistics are computed on train, scores on test, learned merges fit on val",
    "--max-frames": "a learned merge holds its frames in memory (512); statistics stream them (no cap)",
    "--head-feature": "import infers it from the head's input width when not given; create builds a new head (pooled)",
}


def _options():
    for words, command in _all_commands():
        for param in command.params:
            if isinstance(param, click.Option) and "--help" not in param.opts:
                yield words, command, param


def _kind(param: click.Option) -> str:
    if param.is_flag:
        return "flag"
    if isinstance(param.type, click.Choice):
        return "one of " + "/".join(str(c) for c in param.type.choices)
    if isinstance(param.type, click.Path):
        return "path"  # file or folder: each command says which it wants in its check
    # a range is its number type with bounds (a batch size is an integer everywhere, >= 1 where checked)
    return {click.IntRange: "integer", click.FloatRange: "float"}.get(type(param.type), param.type.name)


def test_every_option_has_help():
    missing = [f"{words} {param.opts[0]}" for words, _, param in _options() if not (param.help or "").strip()]
    assert missing == []


def test_help_is_plain_text():
    marked = [words for words, command in _all_commands() if MARKUP.search(command.help or "")]
    marked += [f"{words} {param.opts[0]}" for words, _, param in _options() if MARKUP.search(param.help or "")]
    assert marked == []


def test_a_shared_flag_has_one_kind():
    kinds: dict[str, dict[str, str]] = {}
    for words, _, param in _options():
        kinds.setdefault(param.opts[0], {})[words] = _kind(param)
    mixed = {flag: uses for flag, uses in kinds.items() if len(set(uses.values())) > 1}
    assert set(mixed) <= set(DIFFERENT_ON_PURPOSE), mixed


def _default(param: click.Option) -> str:
    unset = param.required or param.default is None or "Sentinel" in repr(param.default)
    return "" if unset or callable(param.default) else repr(param.default)


def test_a_shared_flag_has_one_default():
    defaults: dict[str, dict[str, str]] = {}
    for words, _, param in _options():
        defaults.setdefault(param.opts[0], {})[words] = _default(param)
    mixed = {flag: uses for flag, uses in defaults.items() if len(set(uses.values())) > 1}
    assert set(mixed) <= set(DEFAULT_DIFFERS_ON_PURPOSE), mixed


def test_the_default_check_can_fail():
    """A flag given another default on one command is caught (the check is not vacuous)."""
    a = click.Option(["--workers"], type=int, default=None, help="x")
    b = click.Option(["--workers"], type=int, default=0, help="x")
    assert _default(a) != _default(b)


def cli_table() -> str:
    lines = ["# Command-line options", "",
             "Generated from the click commands by `python tests/test_cli_tree.py > docs/cli.md` (a test checks it).",
             "", "| command | option | kind | default | help |", "|---|---|---|---|---|"]  # fmt: skip
    for words, _, param in sorted(_options(), key=lambda item: (item[0], item[2].opts[0])):
        unset = param.required or param.default in (None, False) or "Sentinel" in repr(param.default)
        default = "" if unset or callable(param.default) else f"`{param.default}`"
        names = ", ".join(f"`{o}`" for o in (*param.opts, *param.secondary_opts))
        text = (param.help or "").replace("|", "\\|").replace("\n", " ")
        lines.append(f"| `{words}` | {names} | {_kind(param)} | {default} | {text} |")
    return "\n".join(lines) + "\n"


def test_docs_cli_md_is_the_generated_table():
    assert (ROOT / "docs" / "cli.md").read_text(encoding="utf-8") == cli_table()


if __name__ == "__main__":
    sys.stdout.write(cli_table())
