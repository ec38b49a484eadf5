"""Every third-party package our code imports is declared in pyproject.toml, with the lower bound the code needs."""

from __future__ import annotations

import ast
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).parents[1]
PACKAGES = ("mergekit_clip", "train", "eval", "study")
OURS = set(PACKAGES) | {"benchmarks", "tests"}


def _declared() -> dict[str, str]:
    """The dependencies and the optional extras' (an optional import such as mlflow is declared by its extra);
    the test extra is not a place to declare what the package imports."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project.get("optional-dependencies", {})
    deps = project["dependencies"] + [d for name, group in extras.items() if name != "test" for d in group]
    out = {}
    for dep in deps:
        name = dep.split(";")[0]
        for sep in "<>=!~ ":
            name = name.split(sep)[0]
        out[name.lower().replace("_", "-")] = dep
    return out


def _imported_top_level() -> set[str]:
    names = set()
    for package in PACKAGES:
        for file in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(file.read_text())):
                if isinstance(node, ast.Import):
                    names |= {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module.split(".")[0])
    return names - OURS - set(sys.stdlib_module_names)


def test_every_imported_package_is_declared():
    declared = _declared()
    dists = packages_distributions()
    missing = []
    for name in sorted(_imported_top_level()):
        candidates = {d.lower().replace("_", "-") for d in dists.get(name, [name])}
        if not candidates & set(declared):
            missing.append(f"{name} ({', '.join(sorted(candidates))})")
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


@pytest.mark.parametrize(
    ("dist", "bound"),
    [("open-clip-torch", ">=2.32"), ("numpy", ">=2"), ("transformers", ">=5")],  # _embeds, np.trapezoid, v5 config
)
def test_lower_bounds_the_code_needs(dist, bound):
    assert bound in _declared()[dist].replace(" ", "")
