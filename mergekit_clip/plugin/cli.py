"""``mergekit-clip plugin``: is the mergekit plugin installed and active in this environment?"""

from __future__ import annotations

import os
import sys
import sysconfig
from pathlib import Path

import click


@click.group("plugin")
def plugin() -> None:
    """Inspect the mergekit plugin."""


@plugin.command("status")
def status() -> None:
    """Show whether the start-up hook is installed, enabled, and what it registers."""
    from mergekit_clip._autoload import DISABLE_ENV, plugin_disabled

    pth = Path(sysconfig.get_paths()["purelib"]) / "mergekit_clip.pth"
    click.echo(f"start-up hook: {pth} ({'present' if pth.exists() else 'MISSING: reinstall mergekit-clip'})")
    click.echo(f"{DISABLE_ENV}={os.environ.get(DISABLE_ENV, '')!r}: plugin {'OFF' if plugin_disabled() else 'on'}")
    if plugin_disabled():
        return
    import mergekit.merge  # noqa: F401  (triggers registration through the hook)
    from mergekit.architecture.json_definitions import NAME_TO_ARCH
    from mergekit.merge_methods import registered_methods

    from mergekit_clip.plugin import is_registered
    from mergekit_clip.plugin.architectures import ALL_ARCHITECTURES

    click.echo(f"registered: {is_registered()} (python {sys.version.split()[0]})")
    for arch in ALL_ARCHITECTURES:
        names = [n for n in arch.architectures if n in NAME_TO_ARCH]
        click.echo(f"  {arch.expected_model_type}: {', '.join(names)}")
    methods = sorted(m.spec.name for m in registered_methods())
    click.echo(f"  merge methods: {len(methods)} ({', '.join(methods)})")
