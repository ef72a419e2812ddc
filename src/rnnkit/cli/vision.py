"""`rnnkit predict-video` and `rnnkit caption`: options and printing over `rnnkit.apps.video` and
`rnnkit.apps.caption` (`rnnkit train video` and `rnnkit train caption` are made from their settings)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

import click

from .._optional import require_extra
from ..apps.rundir import run_device
from .options import checkpoint_option, device_option, out_option


@click.command("predict-video")
@checkpoint_option
@click.option("--input", "input_", default=None, help="Frames .npy (T, S, S), uint8 or [0, 1] floats; the first "
                                                       "k are read. Default: a generated test-split sequence.")
@click.option("--index", type=click.IntRange(min=0), default=0, show_default=True,
              help="Test-split sequence (without --input).")
@out_option("video-prediction", "video_strip.png (input | truth | prediction), video.gif (truth | prediction) "
                                "and prediction.npy (the predicted frames (n, S, S), float32)")
@device_option
def predict_video(checkpoint: str, input_: Optional[str], index: int, out: str, device: str) -> None:
    """Predict the next frames of a sequence with a trained video model."""
    require_extra("vision", "rnnkit predict-video")
    from ..apps import video
    run = video.load(checkpoint, run_device(device))
    frames = input_ if input_ is not None else video.example_sequence(run, index)
    paths = video.write_examples(run, frames, out)
    click.echo(f"rnnkit: wrote {', '.join(str(p) for p in paths.values())}")


@click.command("caption")
@checkpoint_option
@click.argument("images", nargs=-1, required=True)
@click.option("--beam", type=click.IntRange(min=1), default=1, show_default=True, help="Beam width (1 = greedy).")
@click.option("--out", default=None, help="Directory (created if needed) for attention.png: the attention map of "
                                          "every word, one row per image. Default: only print the captions.")
@device_option
def caption(checkpoint: str, images: Tuple[str, ...], beam: int, out: Optional[str], device: str) -> None:
    """Caption image files with a trained captioner (one line per image: path, tab, caption)."""
    from ..apps import caption as app
    require_extra("vision", "rnnkit caption", app.NEEDS)
    run = app.load(checkpoint, run_device(device))
    if out is None:
        captions = app.caption(run, list(images), beam=beam)
    else:
        Path(out).mkdir(parents=True, exist_ok=True)
        captions = app.write_attention(run, list(images), Path(out) / "attention.png", beam=beam)
    for path, text in zip(images, captions):
        click.echo(f"{path}\t{text}")
    if out is not None:
        click.echo(f"rnnkit: wrote {Path(out) / 'attention.png'}")


def register(cli: click.Group, train: click.Group) -> None:
    """Add `rnnkit predict-video` and `rnnkit caption` (their train commands come from rnnkit.apps)."""
    cli.add_command(predict_video)
    cli.add_command(caption)
