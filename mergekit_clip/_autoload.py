"""Start-up hook: register the plugin with mergekit the moment a process imports mergekit.

``mergekit_clip.pth`` (installed into site-packages) holds one line that Python's ``site`` runs at every
interpreter start. To cost nothing measurable it imports no module: it only inserts a tiny meta-path finder
that compares each imported name with ``"mergekit"``. When, and only when, a process imports the ``mergekit``
package, the finder imports this module and calls :func:`find_spec`, which lets mergekit load and then runs
:func:`mergekit_clip.plugin.register` before mergekit plans any merge.

Set ``MERGEKIT_CLIP_DISABLE=1`` to switch the plugin off (stock mergekit behaviour).
"""

from __future__ import annotations

import os
import sys

DISABLE_ENV = "MERGEKIT_CLIP_DISABLE"
HOOK_NAME = "MergekitClipHook"


def plugin_disabled() -> bool:
    return os.environ.get(DISABLE_ENV, "0").strip().lower() not in ("", "0", "false", "no")


def _remove_hooks() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if type(f).__name__ != HOOK_NAME]


def find_spec(fullname: str):
    """Spec of ``mergekit`` whose loader registers our plugin right after the package body runs."""
    _remove_hooks()  # one shot; also keeps find_spec below from recursing into the hook
    import importlib.util

    spec = importlib.util.find_spec(fullname)
    if spec is None or spec.loader is None:
        return spec
    original_exec = spec.loader.exec_module

    def exec_module(module):
        original_exec(module)
        try:  # whatever goes wrong in the plugin, `import mergekit` must still work
            from mergekit_clip.plugin import register

            register()
        except Exception as e:
            import logging

            logging.getLogger("mergekit_clip").warning("mergekit-clip: plugin not loaded (%s: %s)", type(e).__name__, e)

    spec.loader.exec_module = exec_module
    return spec


class MergekitClipHook:
    """The same finder as the ``.pth`` line builds, for :func:`install` (tests, embedding)."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        return find_spec(name) if name == "mergekit" else None


def install() -> None:
    """Install the hook in this process (what the ``.pth`` line does), unless disabled or too late."""
    if plugin_disabled() or "mergekit" in sys.modules:
        return
    _remove_hooks()
    sys.meta_path.insert(0, MergekitClipHook())
