"""The forecasting protocol's numbers (docs/apps/forecast.md, "Series nobody tuned on").

    python benchmarks/forecast_protocol.py RUN_DIR [RUN_DIR ...]
    python benchmarks/forecast_protocol.py daily-from-hourly --part validation|test [--seeds 0,1,2]

RUN_DIR ...: for each trained forecast run, the model's MAE over rolling origins (every horizon) of its
validation part only, next to seasonal naive on the same windows; the test part is never read. Given several
runs of one series it names the one to keep (the lowest validation MAE). Choices between recipes are made
on these numbers; the test tables (OUT/results.md) are reported afterwards, without further tuning.

daily-from-hourly: the candidate for a daily series that is a finer series summed by day (the ISP series
A1D is A1H summed over each day from 06:57). The hourly recipe (`forecast-isp-hourly`, unchanged) is
trained on the hourly series up to the end of the daily window, its last 7 days held out (so it is fitted
and early-stopped on hours before the window's origin only), rolled forward over those 7 days (each
24-hour forecast fed back as history) and summed by day. Printed: the daily MAE (and MASE) of that
forecast and of every baseline fitted on the daily series up to the same origin, for the window the
daily run scores: its one validation origin (day 35) or its one test origin (day 43) with the default
15 % / 15 % split.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import tomllib
from pathlib import Path

import numpy as np

from rnnkit.apps import forecast
from rnnkit.data.timeseries import split_by_time
from rnnkit.models.forecast_eval import BASELINE_FUNCTIONS, BASELINES, mase_scale
from rnnkit.recipes import find_recipe

DATA = Path(__file__).resolve().parents[1] / "data" / "isp-traffic-cortez"
HOURS, DAYS = 24, 7  # one day of the finer series; the daily series' horizon and season


def validation_mae(run_dir: str) -> dict:
    run = forecast.load(run_dir)
    bt = forecast.backtest(run, baselines=["seasonal_naive"], stride=run.model.config.horizon, part="validation")
    return {name: m["MAE"] for name, m in bt.metrics.items()}


def keep_lowest(paths: list) -> None:
    models = {}
    for path in paths:
        maes = validation_mae(path)
        models[path] = maes["model"]
        print(f"{path}: validation MAE model {maes['model']:.4g}, seasonal naive {maes['seasonal_naive']:.4g} "
              f"(ratio {maes['model'] / maes['seasonal_naive']:.3f})")
    if len(models) > 1:  # the protocol's rule: keep the run with the lowest validation MAE
        print(f"keep: {min(models, key=models.get)}")


def daily_origin(n_days: int, part: str) -> int:
    """The daily run's one origin of `part` (lookback 14, horizon 7, default fractions)."""
    split = split_by_time(n_days, 2 * DAYS, DAYS, 0.15, 0.15)
    return split.n_train if part == "validation" else split.n_val


def hourly_sum_forecast(hourly: np.ndarray, origin_day: int, seed: int, folder: Path) -> np.ndarray:
    """The hourly recipe trained on `hourly` up to the end of the daily window at `origin_day` (that week held
    out), rolled forward over the week and summed by day: (7,)."""
    recipe = tomllib.loads(find_recipe("forecast-isp-hourly").read_text())
    end, origin = (origin_day + DAYS) * HOURS, origin_day * HOURS
    series = folder / "hours" / "A1H.txt"  # the same name as the recipe's file: the column is named after it
    series.parent.mkdir(parents=True, exist_ok=True)
    np.savetxt(series, hourly[:end], fmt="%.0f")
    settings = {k: v for k, v in recipe.items() if k not in ("data", "out")}
    run = forecast.train(forecast.ForecastSettings(
        **settings, data=str(series), start="2005-06-07 06:57", freq="h", test_fraction=DAYS * HOURS / end,
        baselines="seasonal_naive", seed=seed, out=str(folder / f"run-{origin_day}-{seed}"), quiet=True, threads=1,
        tensorboard=False))
    cut = folder / "cut" / "A1H.txt"  # the history up to the origin, under the same name
    cut.parent.mkdir(parents=True, exist_ok=True)
    np.savetxt(cut, hourly[:origin], fmt="%.0f")
    week = forecast.forecast(run, data=str(cut), steps=end - origin)  # a day at a time, fed back (horizon 24)
    return week.values[:, 0].reshape(DAYS, HOURS).sum(1)


def daily_from_hourly(part: str, seeds: list) -> None:
    hourly, daily = np.loadtxt(DATA / "A1H.txt"), np.loadtxt(DATA / "A1D.txt")
    origin = daily_origin(len(daily), part)
    actual = daily[origin:origin + DAYS]
    scale = float(mase_scale(daily[:daily_origin(len(daily), "validation"), None], DAYS)[0])
    rows = {name: BASELINE_FUNCTIONS[name](daily[:origin], DAYS, DAYS) for name in BASELINES}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            rows[f"hourly recipe summed by day, seed {seed}"] = hourly_sum_forecast(hourly, origin, seed, Path(tmp))
    print(f"A1D {part} window: days [{origin}, {origin + DAYS}), actual {np.round(actual / 1e11, 2)} (1e11)")
    print("| method | MAE | MASE | forecast (1e11) |\n|---|---:|---:|---|")
    for name, f in rows.items():
        mae = float(np.abs(f - actual).mean())
        print(f"| {name} | {mae:.3g} | {mae / scale:.3f} | {' '.join(f'{v:.2f}' for v in f / 1e11)} |")


if __name__ == "__main__":
    if sys.argv[1:2] == ["daily-from-hourly"]:
        parser = argparse.ArgumentParser(prog="forecast_protocol.py daily-from-hourly")
        parser.add_argument("--part", choices=("validation", "test"), required=True)
        parser.add_argument("--seeds", default="0", help="comma list of seeds")
        args = parser.parse_args(sys.argv[2:])
        daily_from_hourly(args.part, [int(s) for s in args.seeds.split(",")])
    else:
        keep_lowest(sys.argv[1:])
