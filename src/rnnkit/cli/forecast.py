"""`rnnkit forecast`: forecast past the end of a series with a trained forecaster (`rnnkit.apps.forecast`)."""

from __future__ import annotations

from typing import Optional

import click

from .._optional import require_extra
from ..apps.rundir import run_device
from .options import checkpoint_option, device_option, out_option


@click.command("forecast")
@checkpoint_option
@click.option("--data", default=None, help="Series to continue (default: the training data). Same format and "
                                           "columns as in training.")
@out_option("forecast-out", "forecast.csv and forecast.png")
@click.option("--backtest", "do_backtest", is_flag=True, help="Also backtest on the run's test part against its "
                                                             "baselines and print the table.")
@click.option("--level", type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True), default=None,
              help="Central interval, conformally calibrated (default: the run's --level).")
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="Steps to forecast (default: the model's horizon H). Past H the model goes on from its own "
                   "forecasts; the interval covers the first H steps only.")
@device_option
def forecast(checkpoint: str, data: Optional[str], out: str, do_backtest: bool, level: Optional[float],
             steps: Optional[int], device: str) -> None:
    """Forecast the next H steps (or --steps) past the end of a series with a trained forecaster (CSV + PNG)."""
    require_extra("forecast", "rnnkit forecast")
    from ..apps import forecast as app
    run = app.load(checkpoint, run_device(device))
    result = app.forecast(run, data, level=level, steps=steps)
    csv, png = result.save(out)
    how = "split-conformal" if app.calibration_of(run) is not None else "the model's own, uncalibrated"
    H = run.model.config.horizon
    covered = "" if len(result.times) <= H else f" for the first {H} steps"
    click.echo(f"rnnkit: forecast of {len(result.times)} steps past {len(result.frame.series)} observed, "
               f"{100 * result.level:g}% interval {how}{covered} -> {csv}, {png}")
    if do_backtest:
        bt = app.backtest(run, data, level=level)
        click.echo(bt.table())
        click.echo(f"rnnkit: {bt.verdict()}")


def register(cli: click.Group, train: click.Group) -> None:
    """Add `rnnkit forecast` (`rnnkit train forecast` is made from `rnnkit.apps.forecast`)."""
    cli.add_command(forecast)
