"""Start-up hook: register the plugin with mergekit the moment mergekit is imported.

``mergekit_clip.pth`` (installed into site-packages) imports this module in every Python process.
It does no work beyond installing a meta-path finder: when, and only when, a process imports the
``mergekit`` package, the finder lets it load and then calls :func:`mergekit_clip.plugin.register`,
which adds our architectures, head handling and fast kernels before mergekit plans a merge.
Processes that never import mergekit pay one small import and one ``os.environ`` lookup.

Set ``MERGEKIT_CLIP_DISABLE=1`` to switch the plugin off (stock mergekit behaviour).
"""

from __future__ import annotations

import importlib.abc
import os
import sys

DISABLE_ENV = "MERGEKIT_CLIP_DISABLE"


def plugin_disabled() -> bool:
    return os.environ.get(DISABLE_ENV, "").strip().lower() not in ("", "0", "false", "no")


class _RegisterAfterImport(importlib.abc.MetaPathFinder):
    """Wraps the loader of the top-level ``mergekit`` package to run registration after it."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "mergekit":
            return None
        sys.meta_path.remove(self)  # one shot; also stops recursion into this finder
        import importlib.util

        spec = importlib.util.find_spec("mergekit")
        if spec is None or spec.loader is None:
            return spec
        original_exec = spec.loader.exec_module

        def exec_module(module):
            original_exec(module)
            from mergekit_clip.plugin import register

            register()

        spec.loader.exec_module = exec_module
        return spec


def install() -> None:
    if plugin_disabled() or "mergekit" in sys.modules:
        return
    if not any(isinstance(f, _RegisterAfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterAfterImport())


install()
