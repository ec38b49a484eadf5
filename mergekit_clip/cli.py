"""``mergekit-clip``: data tools, import/export of detectors, and plugin utilities.

Sub-command groups live next to the code they drive and are attached lazily, so ``mergekit-clip --help``
stays fast and a broken optional component cannot take the whole CLI down.
"""

from __future__ import annotations

import importlib

import click

# name -> "module:attribute" of a click command or group
_COMMANDS = {
    "data": "mergekit_clip.data.cli:data",
    "import": "mergekit_clip.convert.cli:import_command",
    "export": "mergekit_clip.convert.cli:export_command",
    "create": "mergekit_clip.detector.cli:create_command",
    "card": "mergekit_clip.detector.cli:card_command",
    "plugin": "mergekit_clip.plugin.cli:plugin",
    "stats": "mergekit_clip.stats.cli:stats_command",
    "recipe": "mergekit_clip.recipe.cli:recipe_command",
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(_COMMANDS)

    def get_command(self, ctx, name):
        target = _COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mergekit-clip")
def main() -> None:
    """Merge fine-tuned CLIP deepfake detectors with mergekit: data, import/export, plugin tools."""


if __name__ == "__main__":
    main()
