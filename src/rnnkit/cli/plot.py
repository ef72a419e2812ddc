"""`rnnkit plot RUN`: the validation curve as text and the loss curves as a PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from .._optional import require_extra
from ..analysis.curves import eval_table, plot_run, read_metrics


@click.command()
@click.argument("run_dir")
@click.option("--out", default=None, help="Directory for loss_curve.png (default: RUN_DIR).")
def plot(run_dir: str, out: Optional[str]) -> None:
    """Print a run's validation curve and write its loss-curve PNG."""
    require_extra("plots", "rnnkit plot")
    _, evals = read_metrics(run_dir)
    click.echo(eval_table(evals))
    path = plot_run(run_dir, Path(out or run_dir) / "loss_curve.png")
    click.echo(f"loss curve: {path}")
