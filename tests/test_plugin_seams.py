"""Plugin fail-safe: with any mergekit internal of the compatibility table missing, `import mergekit` still works,
one warning names the seam, and a CLIP merge still runs, or is refused with one `Error:` line when it needs the
missing seam (heads that need the head policy without the gather hook, anything without run_merge).

Each case runs in a fresh interpreter: the prelude renames one internal in the table (what a mergekit release
that renamed it looks like to the plugin) before `import mergekit` fires the start-up hook.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import yaml
from merge_support import build_open_clip_family, mergekit_env, recipe

from mergekit_clip.detector.spec import HeadSpec
from mergekit_clip.plugin.seams import SEAMS

PRELUDE = textwrap.dedent(
    """
    import dataclasses, json, sys
    from mergekit_clip.plugin import seams
    seam_name, index = sys.argv[1], int(sys.argv[2])
    if seam_name:
        rows = list(seams.SEAMS)
        at = next(i for i, s in enumerate(rows) if s.name == seam_name)
        internals = list(rows[at].internals)
        hidden = internals[index]
        if hidden.attribute:
            internals[index] = dataclasses.replace(hidden, attribute=hidden.attribute + "_renamed")
        else:
            internals[index] = dataclasses.replace(hidden, module=hidden.module + "_renamed")
        rows[at] = dataclasses.replace(rows[at], internals=tuple(internals))
        seams.SEAMS = tuple(rows)
    import mergekit  # the start-up hook registers the plugin here; this must never fail
    import mergekit.merge
    from mergekit.scripts.run_yaml import main
    codes = {}
    for name in sys.argv[3:]:
        try:
            main([name + ".yml", name], standalone_mode=True)
            codes[name] = 0
        except SystemExit as e:
            codes[name] = e.code
    states = {n: s.active for n, s in seams.states().items()}
    print("RESULT " + json.dumps({"codes": codes, "states": states}))
    """
)
# Seams a plain canonical-head merge cannot do without: the merge is refused instead.
ESSENTIAL = {"run_merge", "autoconfig", "architectures"}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiny_spec):
    root = tmp_path_factory.mktemp("seams")
    fam = build_open_clip_family(root, tiny_spec, [HeadSpec(), HeadSpec(labels=("fake", "real"))], base_head=True)
    plain = recipe("ties", fam["base"], [fam["ft0"]])  # canonical heads everywhere: no head policy needed
    policy = recipe("ties", fam["base"], [fam["ft0"], fam["ft1"]])  # a reversed head must be permuted
    (root / "plain.yml").write_text(yaml.safe_dump(plain))
    (root / "policy.yml").write_text(yaml.safe_dump(policy))
    return root


def run_hidden(workdir, seam: str, index: int) -> tuple[dict, str]:
    cmd = [sys.executable, "-c", PRELUDE, seam, str(index), "plain", "policy"]
    for name in ("plain", "policy"):
        subprocess.run(["rm", "-rf", str(workdir / name)], check=True)
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, env=mergekit_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :]), proc.stderr


def check_case(workdir, seam: str, index: int) -> None:
    result, stderr = run_hidden(workdir, seam, index)
    states, codes = result["states"], result["codes"]
    assert states[seam] is False
    assert stderr.count(f"seam {seam} inactive") == 1, stderr[-3000:]  # exactly one warning for the seam
    assert "Traceback" not in stderr, stderr[-3000:]
    errors = [x for x in stderr.splitlines() if x.startswith("Error:")]
    if seam in ESSENTIAL:
        assert codes == {"plain": 1, "policy": 1}, stderr[-3000:]
        assert len(errors) == 2 and all("seam" in e for e in errors), errors
        assert not (workdir / "plain").exists() and not (workdir / "policy").exists()
        return
    assert codes["plain"] == 0, stderr[-3000:]
    config = json.loads((workdir / "plain" / "config.json").read_text())
    assert config["head"]["labels"] == ["real", "fake"]
    if seam == "gather_hook":  # heads needing the policy are refused, not merged wrongly
        assert codes["policy"] == 1 and len(errors) == 1, stderr[-3000:]
        assert "gather_hook seam" in errors[0] and "ft1" in errors[0], errors[0]
        assert not (workdir / "policy").exists()
    else:
        assert codes["policy"] == 0, stderr[-3000:]


@pytest.mark.parametrize("seam", [s.name for s in SEAMS])
def test_missing_internal_degrades_one_seam(workdir, seam):
    check_case(workdir, seam, 0)


EVERY_OTHER_INTERNAL = [(s.name, i) for s in SEAMS for i in range(1, len(s.internals))]


@pytest.mark.slow
@pytest.mark.parametrize(("seam", "index"), EVERY_OTHER_INTERNAL)
def test_every_internal_in_turn(workdir, seam, index):
    check_case(workdir, seam, index)


def _fresh_interpreter(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a new Python (the start-up hook fires on its first mergekit import); it must exit 0."""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=mergekit_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_hidden_mergekit_module_cannot_break_import_mergekit():
    """The review's case: a module the plugin patches is gone (here task_adapter); `import mergekit` still works."""
    code = (
        "import sys; sys.modules['mergekit.merge_methods.task_adapter'] = None\n"
        "import mergekit\n"
        "from mergekit_clip.plugin.seams import states\n"
        "print('RESULT', sorted(n for n, s in states().items() if not s.active))"
    )
    proc = _fresh_interpreter(code)
    inactive = proc.stdout.split("RESULT", 1)[1]
    assert "identity_shortcut" in inactive and "Traceback" not in proc.stderr


@pytest.mark.parametrize("first", ["mergekit_clip.plugin.methods.tsv_m", "mergekit_clip.plugin.methods.regmean"])
def test_importing_a_method_module_first_still_registers_every_method(first):
    """``import <method module>`` imports mergekit, whose start-up hook registers the methods while that module is
    half-defined: it must register itself once defined, not switch the methods seam off."""
    code = (
        f"import {first}\n"
        "from mergekit.merge_methods import registry\n"
        "from mergekit_clip.plugin.methods import METHOD_MODULES\n"
        "from mergekit_clip.plugin.seams import added_methods, states\n"
        "print('RESULT', states()['methods'].active, [registry.get(n).spec.name for n in METHOD_MODULES],"
        " added_methods())"
    )
    proc = _fresh_interpreter(code)
    assert "inactive" not in proc.stderr, proc.stderr[-2000:]
    from mergekit_clip.plugin.methods import METHOD_MODULES

    names = sorted(METHOD_MODULES)
    assert proc.stdout.split("RESULT", 1)[1].strip() == f"True {list(METHOD_MODULES)} {names}"


def test_status_lists_every_seam_and_why(monkeypatch):
    from click.testing import CliRunner

    from mergekit_clip.plugin import register
    from mergekit_clip.plugin.cli import plugin

    register()
    result = CliRunner().invoke(plugin, ["status"])
    assert result.exit_code == 0, result.output
    for seam in SEAMS:
        assert f"  {seam.name} " in result.output
    assert "merge methods added by the plugin:" in result.output
    assert "seams active" in result.output
