"""Code shape: no function over 80 lines without a reason written right above it (``# long: why``), so a long
function is a decision someone explained, not an accident (issue 28)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parents[1]
PACKAGES = ("mergekit_clip", "train", "eval", "study", "benchmarks")
LIMIT = 80


def long_functions_without_reason(files, root: Path = ROOT) -> list[str]:
    out = []
    for file in files:
        lines = file.read_text(encoding="utf-8").splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if node.end_lineno - node.lineno + 1 <= LIMIT:
                continue
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            above = lines[max(0, first - 4) : first - 1]
            if not any(line.strip().startswith("# long:") for line in above):
                out.append(f"{file.relative_to(root)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1})")
    return out


def test_long_functions_say_why():
    files = [f for package in PACKAGES for f in sorted((ROOT / package).rglob("*.py"))]
    assert long_functions_without_reason(files) == []


def test_the_check_sees_a_long_function(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(LIMIT))
    plain = tmp_path / "plain.py"
    plain.write_text(f"def f():\n{body}\n")
    explained = tmp_path / "explained.py"
    explained.write_text(f"# long: a table written out\n@staticmethod\ndef f():\n{body}\n")
    assert long_functions_without_reason([plain, explained], tmp_path) == ["plain.py:1 f (81)"]
