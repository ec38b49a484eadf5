"""The start-up hook: free for processes that never import mergekit, active for those that do, switchable."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

PROBE_MODULES = (
    "import sys; print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'mergekit', 'mergekit_clip'}))"
)
PROBE_REGISTERED = (
    "import mergekit.merge, sys; from mergekit.architecture.json_definitions import NAME_TO_ARCH; "
    "print('CLIPDetector' in NAME_TO_ARCH, 'CLIPForImageClassification' in NAME_TO_ARCH, "
    "any(type(f).__name__ == 'MergekitClipHook' for f in sys.meta_path))"
)


def _python(code: str, **env: str) -> str:
    full_env = {k: v for k, v in os.environ.items() if k != "MERGEKIT_CLIP_DISABLE"}
    full_env.update(env)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, check=True)
    return proc.stdout.strip()


def test_pth_file_is_installed():
    installed = Path(sysconfig.get_paths()["purelib"]) / "mergekit_clip.pth"
    shipped = Path(__file__).parents[1] / "mergekit_clip" / "_data" / "startup_hook.pth.txt"
    assert installed.read_text() == shipped.read_text()


def test_bare_interpreter_imports_nothing_of_ours():
    assert _python(PROBE_MODULES) == "[]"


def test_importing_mergekit_registers_the_plugin_once():
    assert _python(PROBE_REGISTERED) == "True True False"


@pytest.mark.parametrize("value", ["1", "true", "yes"])
def test_environment_switch_turns_the_plugin_off(value):
    assert _python(PROBE_REGISTERED, MERGEKIT_CLIP_DISABLE=value) == "False False False"


def test_register_is_idempotent_and_refuses_conflicts():
    from mergekit.architecture.json_definitions import NAME_TO_ARCH

    from mergekit_clip.plugin import install_architectures, register
    from mergekit_clip.plugin.architectures import OPEN_CLIP_DETECTOR

    register()
    register()
    install_architectures()
    assert NAME_TO_ARCH["CLIPDetector"].count(OPEN_CLIP_DETECTOR) == 1
    foreign = NAME_TO_ARCH["LlamaForCausalLM"][0]
    NAME_TO_ARCH["CLIPDetector"].append(foreign)
    try:
        with pytest.raises(RuntimeError, match="already defines architecture 'CLIPDetector'.*would conflict"):
            install_architectures()
    finally:
        NAME_TO_ARCH["CLIPDetector"].remove(foreign)
