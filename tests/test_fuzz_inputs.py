"""Fuzz (hypothesis): truncated, bit-flipped and type-swapped versions of every file the project reads, fed through
the public commands in process. Each run either succeeds (the damage left a valid file: a flipped bit in a weight)
or refuses with exit 1 or 2, exactly one ``Error:`` line, no traceback and nothing written.

Default: :data:`DEFAULT_EXAMPLES` examples per (file, damage) pair. ``pytest -m fuzz_long tests/test_fuzz_inputs.py``
runs the long profile (:data:`LONG_EXAMPLES` each).
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from hostile_support import World, assert_refused, build_world, clip_eval, clip_study, mergekit_yaml, snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

OUTCOMES: dict[tuple[str, str, str], int] = {}  # (file, damage, ok|refused) -> examples (printed with -s)
DEFAULT_EXAMPLES = 2
LONG_EXAMPLES = 40
DAMAGES = ("truncated", "bit-flipped", "type-swapped")
SWAPS = (None, 0, -1, 2**40, 1e308, "x", "", [], {}, True, [1, "a"], {"k": None}, "../../etc/passwd")
CELLS = ("", "x", "-1", "2", "1e308", "../../outside.png", "/abs.png", "FF-DF", '"')


@dataclass(frozen=True)
class Target:
    """A file the project reads, how its content is structured, and the public command that reads it."""

    file: Callable[[World], Path]
    kind: str  # json | yaml | csv | safetensors | npz
    run: Callable[[World], object]
    written: Callable[[World], list[Path]]


def _rerun(world: World):
    """The finished study again, down the ordinary path (its fast-path record dropped), refusing damaged entries."""
    (world.root / "study_out" / "cache" / "outputs.json").unlink(missing_ok=True)
    return clip_study(world.root / "study.yml", "--no-rebuild")


def _score_entry(world: World) -> Path:
    """A source-val score file of the finished study: the first cache entry a rerun reads."""
    return sorted((world.root / "study_out" / "scores").rglob("Tiny-FF__val__*.npz"))[0]


TARGETS = {
    "detector config": Target(lambda w: w.detector / "config.json", "json", lambda w: clip_eval(w, w.detector),
                              lambda w: [w.out]),
    "weights": Target(lambda w: w.detector / "model.safetensors", "safetensors", lambda w: clip_eval(w, w.detector),
                      lambda w: [w.out]),
    "recipe": Target(lambda w: w.root / "recipe.yml", "yaml", lambda w: mergekit_yaml(w, w.root / "recipe.yml"),
                     lambda w: [w.out]),
    "study file": Target(lambda w: w.root / "dry.yml", "yaml", lambda w: clip_study(w.root / "dry.yml", "--dry-run"),
                         lambda w: [w.root / "dry_out"]),
    "dataset json": Target(lambda w: w.json_root / "Tiny-A.json", "json", lambda w: clip_eval(w, w.detector),
                           lambda w: [w.out]),
    "dataset csv": Target(lambda w: w.json_root / "Tiny-C.csv", "csv",
                          lambda w: clip_eval(w, w.detector, "Tiny-C"), lambda w: [w.out]),
    "stats": Target(lambda w: w.family / "ingredients" / "ft_b" / "merge_stats" / "gram.safetensors", "safetensors",
                    lambda w: mergekit_yaml(w, w.root / "regmean.yml"), lambda w: [w.out]),
    "score cache entry": Target(_score_entry, "npz", _rerun, lambda w: []),
}  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_spec):
    world = build_world(tmp_path_factory.mktemp("fuzz"), tiny_spec)
    raw = yaml.safe_load((world.root / "study.yml").read_text())
    (world.root / "dry.yml").write_text(yaml.safe_dump({**raw, "output": str(world.root / "dry_out")}))
    result = clip_study(world.root / "study.yml")  # a finished study: its score files are the cache entries
    assert result.exit_code == 0, result.output
    yield world
    if OUTCOMES:
        print(f"\nfuzz: {sum(OUTCOMES.values())} examples")
        for (name, damage, outcome), count in sorted(OUTCOMES.items()):
            print(f"  {name:18} {damage:13} {outcome:8} {count}")


# ---------------------------------------------------------------- damage


def _truncate(data: bytes, draw) -> bytes:
    return data[: draw(st.integers(0, max(0, len(data) - 1)))]


def _flip(data: bytes, draw) -> bytes:
    bit = draw(st.integers(0, len(data) * 8 - 1))
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def _swap_node(doc, draw):
    """``doc`` with one node (the root included) replaced by a value of another type."""
    paths: list[tuple] = [()]
    stack = [((), doc)]
    while stack and len(paths) < 5000:
        path, node = stack.pop()
        children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, child in children:
            paths.append((*path, key))
            stack.append(((*path, key), child))
    path = draw(st.sampled_from(paths))
    value = draw(st.sampled_from(SWAPS))
    if not path:
        return value
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    return doc


def _swap(data: bytes, kind: str, draw) -> bytes:
    if kind == "json":
        return json.dumps(_swap_node(json.loads(data), draw)).encode()
    if kind == "yaml":
        return yaml.safe_dump(_swap_node(yaml.safe_load(data), draw)).encode()
    if kind == "csv":
        rows = list(csv.reader(io.StringIO(data.decode())))
        r = draw(st.integers(0, len(rows) - 1))
        c = draw(st.integers(0, len(rows[r]) - 1))
        rows[r][c] = draw(st.sampled_from(CELLS))
        out = io.StringIO()
        csv.writer(out).writerows(rows)
        return out.getvalue().encode()
    if kind == "safetensors":  # the header is the structured part
        size = int.from_bytes(data[:8], "little")
        header = json.dumps(_swap_node(json.loads(data[8 : 8 + size]), draw)).encode()
        return len(header).to_bytes(8, "little") + header + data[8 + size :]
    # npz: one array replaced by another type (or dropped)
    with np.load(io.BytesIO(data)) as z:
        arrays = dict(z)
    name = draw(st.sampled_from(sorted(arrays)))
    swap = draw(st.sampled_from(["strings", "floats", "2-d", "empty", "dropped"]))
    n = len(arrays[name])
    replaced = {"strings": np.array(["x"] * n), "floats": np.full(n, 0.5), "2-d": np.zeros((n, 2)),
                "empty": np.zeros(0), "dropped": None}[swap]  # fmt: skip
    if replaced is None:
        del arrays[name]
    else:
        arrays[name] = replaced
    out = io.BytesIO()
    np.savez(out, **arrays)
    return out.getvalue()


def damage_file(data: bytes, kind: str, damage: str, draw) -> bytes:
    if damage == "truncated":
        return _truncate(data, draw)
    if damage == "bit-flipped":
        return _flip(data, draw)
    return _swap(data, kind, draw)


# ---------------------------------------------------------------- the property


def check_damaged(world: World, target: Target, damage: str, draw) -> str:
    """Damage the target file, run its command, check the outcome, restore; returns ``ok`` or ``refused``."""
    file = target.file(world)
    original = file.read_bytes()
    watched = world.root / "study_out"
    before = snapshot(watched)
    try:
        file.write_bytes(damage_file(original, target.kind, damage, draw))
        result = target.run(world)
        if result.exit_code == 0 and target.kind != "npz":  # the damage left a valid file (a flipped weight bit)
            assert result.exception is None, result.output
            return "ok"
        assert_refused(result, written=target.written(world))
        after = snapshot(watched)
        changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
        expected = {str(file.relative_to(watched))} if file.is_relative_to(watched) else set()
        # besides the damaged file: the fast-path record _rerun drops, and the stat-keyed hash cache of the inputs
        assert changed <= expected | {"cache/outputs.json", "cache/file_hashes.json"}, changed
        return "refused"
    finally:
        file.write_bytes(original)
        for path in (world.out, world.root / "dry_out"):
            shutil.rmtree(path, ignore_errors=True)


def _run_profile(world, target_name: str, damage: str, examples: int) -> None:
    target = TARGETS[target_name]

    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(st.data())
    def fuzz(data):
        outcome = check_damaged(world, target, damage, data.draw)
        OUTCOMES[(target_name, damage, outcome)] = OUTCOMES.get((target_name, damage, outcome), 0) + 1

    fuzz()


@pytest.mark.parametrize("damage", DAMAGES)
@pytest.mark.parametrize("target_name", list(TARGETS))
def test_damaged_file_is_refused_cleanly(world, target_name, damage):
    _run_profile(world, target_name, damage, DEFAULT_EXAMPLES)


@pytest.mark.fuzz_long
def test_damaged_files_are_refused_cleanly_long(world, request):
    """Every (file, damage) pair with the long profile; one test, so the default run shows one skip."""
    if "fuzz_long" not in (request.config.option.markexpr or ""):
        pytest.skip("the long fuzz profile runs with -m fuzz_long")
    for target_name in TARGETS:
        for damage in DAMAGES:
            _run_profile(world, target_name, damage, LONG_EXAMPLES)
