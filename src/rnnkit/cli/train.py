"""`rnnkit train APP`: one command per application of `rnnkit.apps`, its options made from its settings class.

Every command takes the application's settings as options, --config TOML (command-line values win),
--out (the run directory), --resume and --overwrite. Under torchrun (WORLD_SIZE > 1) the language
models train with DistributedDataParallel; --batch-size is per process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .. import apps
from .options import config_option, exit_preempted, resolve_run, settings_options


class TrainGroup(click.Group):
    """The `train` group: its commands are the applications, made on first use."""

    def list_commands(self, ctx: click.Context) -> list:
        return [name for name in apps.APPS if name in self.commands or _has_train(name)] + \
            sorted(n for n in self.commands if n not in apps.APPS)

    def get_command(self, ctx: click.Context, name: str) -> Any:
        if name not in self.commands and name in apps.APPS and _has_train(name):
            self.add_command(train_command(name))
        return self.commands.get(name)


def _has_train(name: str) -> bool:
    try:
        return hasattr(apps.module(name), "RECIPE")
    except ModuleNotFoundError:  # not ported yet: registered by its old command module
        return False


@click.group(cls=TrainGroup)
def train() -> None:
    """Train an application (one command each; `rnnkit train APP --help` for its settings)."""


def train_command(name: str) -> click.Command:
    """The `rnnkit train NAME` command of an application."""
    module = apps.module(name)
    recipe = module.RECIPE

    @click.pass_context
    def run(ctx: click.Context, **values: Any) -> None:
        settings = resolve_run(ctx, recipe.settings, values)
        result = recipe.train(settings)
        if result.preempted:
            exit_preempted(ctx, result.summary, Path(settings.out), show=result.summary.get("is_main", True))

    doc = (module.__doc__ or "").split("\n    >>>")[0].strip()
    summary = doc.split("\n\n")[0].replace("\n", " ")
    return click.Command(name, callback=run, params=[config_option(), *settings_options(recipe.settings)],
                         help=doc, short_help=summary)
