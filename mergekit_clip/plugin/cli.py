"""``mergekit-clip plugin``: is the mergekit plugin installed, and which of its seams are active?"""

from __future__ import annotations

import os
import sys
import sysconfig
from pathlib import Path

import click


@click.group("plugin", context_settings={"help_option_names": ["-h", "--help"]})
def plugin() -> None:
    """Inspect the mergekit plugin."""


@plugin.command("status")
def status() -> None:
    """Show the start-up hook, every seam (active or not, and why) and the merge methods the plugin adds."""
    from mergekit_clip._autoload import DISABLE_ENV, plugin_disabled

    pth = Path(sysconfig.get_paths()["purelib"]) / "mergekit_clip.pth"
    click.echo(f"start-up hook: {pth} ({'present' if pth.exists() else 'MISSING: reinstall mergekit-clip'})")
    click.echo(f"{DISABLE_ENV}={os.environ.get(DISABLE_ENV, '')!r}: plugin {'OFF' if plugin_disabled() else 'on'}")
    if plugin_disabled():
        return
    import mergekit  # noqa: F401  (triggers registration through the hook)

    from mergekit_clip.plugin import is_registered, register
    from mergekit_clip.plugin.seams import SEAMS, _mergekit_version, added_methods, states

    register()  # a no-op after the hook; registers when the hook is missing
    click.echo(f"registered: {is_registered()} (python {sys.version.split()[0]}, mergekit {_mergekit_version()})")
    found = states()
    width = max(len(s.name) for s in SEAMS)
    inactive = 0
    click.echo("seams:")
    for seam in SEAMS:
        state = found.get(seam.name)
        if state is not None and state.active:
            click.echo(f"  {seam.name:<{width}}  active    {seam.purpose}")
            continue
        inactive += 1
        reason = state.reason if state is not None else "not installed"
        click.echo(f"  {seam.name:<{width}}  INACTIVE  {reason}")
        click.echo(f"  {'':<{width}}            lesser mode: {seam.lesser_mode}")
    click.echo(f"{len(SEAMS) - inactive} of {len(SEAMS)} seams active")
    if found.get("architectures") is not None and found["architectures"].active:
        from mergekit.architecture.json_definitions import NAME_TO_ARCH

        from mergekit_clip.plugin.architectures import ALL_ARCHITECTURES

        for arch in ALL_ARCHITECTURES:
            names = [n for n in arch.architectures if n in NAME_TO_ARCH]
            click.echo(f"architectures ({arch.expected_model_type}): {', '.join(names)}")
    ours = added_methods()
    click.echo(f"merge methods added by the plugin: {len(ours)} ({', '.join(ours) or 'none'})")
    try:
        from mergekit.merge_methods import registered_methods

        methods = sorted(m.spec.name for m in registered_methods())
        click.echo(f"all merge methods: {len(methods)} ({', '.join(methods)})")
    except Exception as e:  # status must report, not crash, on a mergekit whose registry moved
        click.echo(f"all merge methods: unknown ({type(e).__name__}: {e})")
