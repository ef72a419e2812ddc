"""`rnnkit predict`: the label of each text (a classify run), the tags of each sentence (a tag run) or the
direction of each clip (a clips run)."""

from __future__ import annotations

from pathlib import Path

import click

from ..apps import load
from ..apps.rundir import run_device
from ..errors import InputError
from ..training.checkpoint import CheckpointError
from .options import checkpoint_option, device_option


@click.command()
@checkpoint_option
@click.option("--input", "input_path", default="-", show_default=True,
              help="Texts one a line (classify), or sentences one a line with tokens separated by spaces (tag); "
                   "- reads standard input. A clips run: a .npy file of clips (N, T, S, S), uint8 or floats in "
                   "[0, 1].")
@device_option
def predict(checkpoint: str, input_path: str, device: str) -> None:
    """Print one prediction a line: a classify run's label of each text, a tag run's tags of each sentence
    (separated by spaces), a clips run's direction of each clip."""
    from ..apps import classify, clips, tag  # imported when used: `rnnkit --help` stays quick
    run = load(checkpoint, run_device(device))
    if run.app == "clips":
        if input_path == "-":
            raise InputError("a clips run reads its clips from a .npy file: --input CLIPS.npy")
        predictions = clips.predict(run, input_path)
    elif run.app in ("classify", "tag"):
        if input_path != "-" and not Path(input_path).is_file():
            raise InputError(f"--input {input_path!r} does not exist")
        with click.open_file(input_path, "r", encoding="utf-8") as lines_file:
            lines = [line.rstrip("\r\n") for line in lines_file]
        predictions = (classify.predict(run, lines) if run.app == "classify"
                       else [" ".join(tags) for tags in tag.predict(run, lines)])
    else:
        raise CheckpointError(f"{checkpoint!r} is a {run.app} run; rnnkit predict runs classify, tag and clips runs")
    for prediction in predictions:
        click.echo(prediction)


def register(cli: click.Group, train: click.Group) -> None:
    """Add `rnnkit predict` (`rnnkit train classify`, `train tag` and `train clips` come from rnnkit.apps)."""
    cli.add_command(predict)
