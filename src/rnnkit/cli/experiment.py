"""`rnnkit experiment NAME`: the study notes' claims as experiments; options made from each one's settings."""

from __future__ import annotations

from typing import Any

import click
from click.core import ParameterSource

from .. import experiments
from .options import settings_options


class ExperimentGroup(click.Group):
    """Its commands are the experiments, made on first use."""

    def list_commands(self, ctx: click.Context) -> list:
        return list(experiments.EXPERIMENTS)

    def get_command(self, ctx: click.Context, name: str) -> Any:
        if name not in self.commands and name in experiments.EXPERIMENTS:
            self.add_command(experiment_command(name))
        return self.commands.get(name)


@click.group(cls=ExperimentGroup, invoke_without_command=True)
@click.option("--list", "show", is_flag=True, help="Name every experiment and the claim it tests.")
@click.pass_context
def experiment(ctx: click.Context, show: bool) -> None:
    """Run an experiment that tests a claim of the study notes (`--list` names them)."""
    if show or ctx.invoked_subcommand is None:
        for name in experiments.EXPERIMENTS:
            click.echo(f"{name:14} {experiments.module(name).CLAIM}")


def experiment_command(name: str) -> click.Command:
    module = experiments.module(name)

    @click.pass_context
    def run(ctx: click.Context, **values: Any) -> None:
        given = {k: v for k, v in values.items() if ctx.get_parameter_source(k) == ParameterSource.COMMANDLINE}
        experiments.run_experiment(module, module.SETTINGS(**given))

    doc = (module.__doc__ or "").split("\n    >>>")[0].strip()
    return click.Command(name, callback=run, params=settings_options(module.SETTINGS), help=doc,
                         short_help=module.CLAIM)
