"""`rnnkit predict`: the label of each text (a classify run) or the tags of each sentence (a tag run)."""

from __future__ import annotations

import click

from ..apps import load
from ..apps.rundir import run_device
from ..training.checkpoint import CheckpointError
from .options import checkpoint_option, device_option


@click.command()
@checkpoint_option
@click.option("--input", "input_file", type=click.File("r", encoding="utf-8"), default="-", show_default=True,
              help="Texts one a line (classify), or sentences one a line with tokens separated by spaces (tag); "
                   "- reads standard input.")
@device_option
def predict(checkpoint: str, input_file: click.utils.LazyFile, device: str) -> None:
    """Print one prediction a line: a classify run's label of each text, a tag run's tags of each sentence
    (separated by spaces)."""
    from ..apps import classify, tag  # imported when used: `rnnkit --help` stays quick
    run = load(checkpoint, run_device(device))
    lines = [line.rstrip("\r\n") for line in input_file]
    if run.app == "classify":
        predictions = classify.predict(run, lines)
    elif run.app == "tag":
        predictions = [" ".join(tags) for tags in tag.predict(run, lines)]
    else:
        raise CheckpointError(f"{checkpoint!r} is a {run.app} run; rnnkit predict runs classify and tag runs")
    for prediction in predictions:
        click.echo(prediction)


def register(cli: click.Group, train: click.Group) -> None:
    """Add `rnnkit predict` (`rnnkit train classify` and `train tag` come from rnnkit.apps)."""
    cli.add_command(predict)
