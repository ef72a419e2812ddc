"""`rnnkit train forecast` (train + rolling-origin backtest) and `rnnkit forecast` (forecast past the data's end).

Default data: the hourly ISP traffic series A of Cortez et al. (2012), 24-step
horizon, one week of lookback. The run directory gets, next to the checkpoints,
backtest.md / backtest.json (model vs naive, seasonal naive, Holt-Winters,
SARIMA), forecast.csv and forecast.png.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional

import click
import numpy as np
import torch

from .._optional import require_extra
from ..data.text import DataError
from ..data.timeseries import (CALENDAR_FEATURES, MISSING_POLICIES, ForecastFrame, Scaler, Series, WindowLoader,
                               load_kaggle_ipasn, load_series, split_by_time, window_origins)
from ..cells import CELLS
from ..models.forecast import HEADS, MODES, ForecastConfig, Forecaster, ForecastTask
from ..models.forecast_eval import BASELINES, backtest, model_forecast, plot_forecast, write_forecast_csv
from ..recipes import repository_data
from .apps import app_training_specs, load_app_model, run_app
from ._old_options import INPUT_PATH, NONNEG_INT, POS_INT, PROB, Settings, recipe_options, run_specs
from ..errors import InputError

DEFAULT_DATA = "data/isp-traffic-cortez/A1H.txt"
#: nominal timestamps of the embedded Cortez series A (SOURCE.md: from 06:57 on 7 June 2005)
CORTEZ_A = {"A1H.txt": ("2005-06-07 06:57", "h"), "A5M.txt": ("2005-06-07 06:57", "5min"),
            "A1D.txt": ("2005-06-07 06:57", "D")}
SEASONS = {"5min": 288, "min": 1440, "h": 24, "D": 7, "B": 5, "W": 52}

FORECAST_DEFAULTS = dict(batch_size=32, optimizer="adam", lr=3e-3, clip_norm=1.0, max_epochs=40,
                         early_stop_patience=8, checkpoint_every=500)

DATA_SPECS = [
    ("data", INPUT_PATH, None, f"Series file: .csv/.parquet (time + value columns), .txt (one number a line) or the "
                        f"Kaggle cs448b_ipasn.csv (--format kaggle-ipasn). Default: {DEFAULT_DATA}."),
    ("format", click.Choice(["auto", "kaggle-ipasn"]), "auto", "File format."),
    ("time_column", str, None, "Time column (default: the first column)."),
    ("value_columns", str, None, "Comma-separated value columns to forecast (default: all but the time column)."),
    ("freq", str, None, "Frequency to resample to (pandas alias: 5min, h, D). Default: inferred; an irregular "
                        "index is an error."),
    ("start", str, None, "Timestamp of the first value of a .txt series (with --freq; for calendar features)."),
    ("aggregate", click.Choice(["mean", "sum"]), "mean", "How resampling combines values in one bucket."),
    ("missing", click.Choice(MISSING_POLICIES), "interpolate", "Missing steps: interpolate, mask (loss and "
                                                             "metrics skip them) or error."),
    ("machines", str, None, "kaggle-ipasn: comma-separated l_ipn ids to keep (default: all)."),
    ("calendar", str, "auto", "Past covariates: comma list of hour,dow; 'none'; 'auto' = both when the series "
                              "has timestamps."),
]

FORECAST_SPECS = [
    *run_specs("runs/forecast", "Run directory (config.json, metrics.jsonl, checkpoints/, backtest.md, "
                                "forecast.csv, forecast.png)."),
] + DATA_SPECS + [
    ("lookback", POS_INT, 168, "History steps each forecast sees (L)."),
    ("horizon", POS_INT, 24, "Steps forecast at once (H)."),
    ("stride", POS_INT, 1, "Steps between training windows."),
    ("val_fraction", click.FloatRange(0.0, 0.5), 0.15, "Validation part (after the training part, by time)."),
    ("test_fraction", click.FloatRange(0.0, 0.5, min_open=True), 0.15, "Test part (the end of the series)."),
    ("season", NONNEG_INT, 0, "Season length m for seasonal naive, Holt-Winters, SARIMA and MASE "
                              "(0: from the frequency: 5min 288, h 24, D 7)."),
    ("mode", click.Choice(MODES), "direct", "direct (many-to-one, H outputs at once), autoregressive (teacher "
                                            "forcing, rolled out) or seq2seq (encoder-decoder)."),
    ("teacher_forcing", click.FloatRange(0.0, 1.0), 1.0,
     "autoregressive/seq2seq training: probability of feeding the true previous value (1: teacher forcing; "
     "lower: its own forecast otherwise, against exposure bias)."),
    ("head", click.Choice(HEADS), "gaussian", "point (MSE), gaussian (likelihood) or quantile (pinball)."),
    ("quantiles", str, "0.05,0.5,0.95", "Quantiles of the quantile head (must include 0.5)."),
    ("level", click.FloatRange(0.0, 1.0, min_open=True, max_open=True), 0.9,
     "Central interval shown for the gaussian head."),
    ("cell", click.Choice(list(CELLS)), "lstm", "Recurrent cell."),
    ("hidden_size", POS_INT, 64, "Hidden units per layer."),
    ("num_layers", POS_INT, 1, "Stacked layers."),
    ("dropout", PROB, 0.0, "Dropout between layers and before the head."),
    ("backtest_stride", NONNEG_INT, 0, "Steps between backtest origins (0: the horizon, forecasts tile the "
                                       "test part)."),
    ("baselines", str, ",".join(BASELINES), "Comma list of baselines to run (naive, seasonal_naive, "
                                            "holt_winters, arima)."),
    ("fit_window", POS_INT, 2000, "Past values Holt-Winters and SARIMA are fitted on at each origin."),
] + app_training_specs(FORECAST_DEFAULTS)


def _split_list(text: Optional[str]) -> Optional[List[str]]:
    if text is None:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    return items or None


def load_from_settings(s: Dict[str, Any], report: Optional[List[str]] = None) -> Series:
    """The series the settings name (shared by training and `rnnkit forecast`)."""
    path = s.get("data") or repository_data(DEFAULT_DATA)
    if s.get("format") == "kaggle-ipasn":
        machines = _split_list(s.get("machines"))
        try:
            ids = [int(m) for m in machines] if machines else None
        except ValueError:
            raise InputError(f"--machines must be integers; got {s.get('machines')!r}") from None
        series = load_kaggle_ipasn(path, machines=ids, missing=s.get("missing", "interpolate"))
    else:
        start, freq = s.get("start"), s.get("freq")
        name = Path(path).name
        if Path(path).suffix == ".txt" and start is None and freq is None and name in CORTEZ_A:
            start, freq = CORTEZ_A[name]
            if report is not None:
                report.append(f"{name}: nominal timestamps from {start} every {freq} (Cortez series A)")
        if freq is None and isinstance(s, Settings) and s.explicit("aggregate"):
            raise click.UsageError("--aggregate has no effect without --freq (it says how values in one --freq "
                                   "bucket are combined): set --freq too, or leave it out")
        series = load_series(path, time_column=s.get("time_column"), value_columns=_split_list(s.get("value_columns")),
                             freq=freq, aggregate=s.get("aggregate", "mean"), missing=s.get("missing", "interpolate"),
                             start=start)
    if report is not None:
        report.extend(series.report)
    return series


def _calendar(s: Dict[str, Any], series: Series) -> List[str]:
    spec = (s.get("calendar") or "auto").strip()
    if spec == "none":
        return []
    if spec == "auto":
        if series.times is None:
            return []
        names = ["hour", "dow"] if series.freq and not series.freq.endswith("D") else ["dow"]
        return names
    names = _split_list(spec) or []
    for n in names:
        if n not in CALENDAR_FEATURES:
            raise InputError(f"--calendar: unknown feature {n!r}; expected some of {CALENDAR_FEATURES}, 'auto' "
                             f"or 'none'")
    return names


def _season(s: Dict[str, Any], series: Series) -> int:
    if s.get("season"):
        return int(s["season"])
    return SEASONS.get((series.freq or "").lstrip("1"), 1)


def _quantiles(text: str) -> List[float]:
    try:
        return [float(q) for q in _split_list(text) or []]
    except ValueError:
        raise InputError(f"--quantiles must be comma-separated numbers; got {text!r}") from None


def _build(s: Dict[str, Any]):
    report: List[str] = []
    series = load_from_settings(s, report)
    L, H = s["lookback"], s["horizon"]
    split = split_by_time(len(series), L, H, s["val_fraction"], s["test_fraction"])
    scaler = Scaler.fit(series.values[:split.n_train] if s["missing"] == "interpolate"
                        else np.where(series.observed, series.values, np.nan)[:split.n_train])
    calendar = _calendar(s, series)
    frame = ForecastFrame(series, scaler, calendar, mask_missing=s["missing"] == "mask")
    train_origins = window_origins(0, split.n_train, L, H, s["stride"])
    val_origins = window_origins(split.n_train, split.n_val, L, H, 1)
    cfg = ForecastConfig(frame.num_series, frame.num_features, frame.num_calendar, L, H, mode=s["mode"],
                         head=s["head"], quantiles=_quantiles(s["quantiles"]), cell=s["cell"],
                         hidden_size=s["hidden_size"], num_layers=s["num_layers"], dropout=s["dropout"],
                         masked=frame.mask_missing, teacher_forcing=s["teacher_forcing"])
    model = Forecaster(cfg)
    train = WindowLoader(frame, train_origins, L, H, s["batch_size"], shuffle=True, seed=s["seed"])
    val = WindowLoader(frame, val_origins, L, H, 256) if len(val_origins) else None
    report.append(f"split by time: train [0, {split.n_train}), validation [{split.n_train}, {split.n_val}), test "
                  f"[{split.n_val}, {split.n}); {len(train_origins)} training windows, {len(val_origins)} validation "
                  f"windows; scaler fitted on the training part; calendar covariates {calendar or 'none'}")
    season = _season(s, series)
    if season == 1 and not s.get("season"):
        report.append(f"season 1 (seasonal naive = naive): no season is known for "
                      f"{'a series without timestamps' if series.freq is None else f'frequency {series.freq}'}; "
                      f"give --season m if the series repeats every m steps")
    run_info = {"model": cfg.to_dict(), "scaler": scaler.to_json(), "calendar": calendar,
                "split": [split.n_train, split.n_val, split.n], "season": season,
                "data": {k: s.get(k) for k in ("data", "format", "time_column", "value_columns", "freq", "start",
                                               "aggregate", "missing", "machines")},
                "columns": series.columns}
    return model, ForecastTask(), train, val, run_info, report


@click.command("forecast")
@recipe_options(FORECAST_SPECS)
@click.pass_context
def train_forecast(ctx: click.Context, **values: Any) -> None:
    """Forecaster on a time series (default: hourly ISP traffic, Cortez et al. 2012), then a backtest.

    The series is split by time into train / validation / test; the scaler sees the
    training part only. After training, the best-validation model is backtested with
    rolling origins over the test part next to naive, seasonal-naive, Holt-Winters and
    SARIMA forecasts of the same windows (OUT/backtest.md, forecast.csv, forecast.png).
    """
    require_extra("forecast", "rnnkit train forecast")
    run_app(ctx, "forecast", values, _build, _finish)


def _finish(model: Forecaster, s: Dict[str, Any], out: Path, trainer) -> None:
    from ..data.timeseries import Split
    info = trainer.run_info
    report: List[str] = []
    series = load_from_settings(s, None)
    scaler = Scaler.from_json(info["scaler"])
    frame = ForecastFrame(series, scaler, info["calendar"], mask_missing=s["missing"] == "mask")
    split = Split(*info["split"])
    baselines = _split_list(s["baselines"]) or []
    bt = backtest(model, frame, split, season=info["season"], stride=s["backtest_stride"] or None,
                  baselines=baselines, fit_window=s["fit_window"], level=s["level"], progress=not s["quiet"])
    write_backtest(out, bt, frame, s, info, model)
    if not s["quiet"]:
        click.echo(f"rnnkit: backtest over {len(bt.origins)} origins of the test part (H={model.config.horizon}, "
                   f"season {info['season']}):")
        click.echo(bt.table())
        click.echo(f"rnnkit: {bt.verdict()}")
        click.echo(f"rnnkit: wrote {out / 'backtest.md'}, {out / 'forecast.csv'}, {out / 'forecast.png'}")


def write_backtest(out: Path, bt, frame: ForecastFrame, s: Dict[str, Any], info: Dict[str, Any],
                   model: Forecaster) -> None:
    c = model.config
    header = (f"Backtest: {s.get('data') or DEFAULT_DATA}, {c.mode} {c.cell} {c.num_layers}x{c.hidden_size}, "
              f"{c.head} head, L={c.lookback}, H={c.horizon}, {len(bt.origins)} rolling origins, season "
              f"{info['season']}\n\n")
    (out / "backtest.md").write_text(header + bt.table() + "\n\n" + bt.verdict() + "\n")
    (out / "backtest.json").write_text(json.dumps({"metrics": bt.metrics, "failures": bt.failures,
                                                   "coverage": bt.coverage, "origins": bt.origins.tolist(),
                                                   "verdict": bt.verdict(), "notes": bt.notes}, indent=1))
    write_forecast_csv(out / "forecast.csv", frame, bt.origins, bt.forecasts, bt.lower, bt.upper, bt.actual)
    base = ("seasonal naive", bt.forecasts["seasonal_naive"]) if "seasonal_naive" in bt.forecasts else None
    plot_forecast(out / "forecast.png", frame, bt.origins, bt.forecasts["model"], bt.lower, bt.upper,
                  history=3 * c.lookback, actual=bt.actual, baseline=base, level=bt.level,
                  title=f"backtest ({c.mode}, {c.head})")


# ------------------------------------------------------------------ rnnkit forecast
def load_forecaster(path: str, device: torch.device):
    """(model in eval mode, run info) of a forecast run directory or checkpoint; best.safetensors wins."""
    return load_app_model(path, "forecast", "a forecaster", lambda m: Forecaster(ForecastConfig(**m)), device)


@click.command("forecast")
@click.option("--checkpoint", required=True, help="Forecast run directory (uses best.safetensors) or checkpoint.")
@click.option("--data", default=None, help="Series to continue (default: the training data). Same format and "
                                           "columns as in training.")
@click.option("--out", default="forecast-out", show_default=True, help="Directory for forecast.csv and forecast.png.")
@click.option("--backtest", "do_backtest", is_flag=True, help="Also backtest on the run's test part and print the "
                                                             "table.")
@click.option("--level", type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True), default=0.9,
              show_default=True, help="Central interval of the gaussian head.")
def forecast(checkpoint: str, data: Optional[str], out: str, do_backtest: bool, level: float) -> None:
    """Forecast the next H steps past the end of a series with a trained forecaster (CSV + PNG)."""
    require_extra("forecast", "rnnkit forecast")
    model, run = load_forecaster(checkpoint, torch.device("cpu"))
    c = model.config
    s = dict(run["data"])
    if data is not None:
        s["data"] = data
    series = load_from_settings(s, None)
    if series.columns != run["columns"]:
        raise DataError(f"--data has columns {series.columns}; the model was trained on {run['columns']}")
    if len(series) < c.lookback:
        raise DataError(f"--data holds {len(series)} steps; the model needs a lookback of {c.lookback}")
    frame = ForecastFrame(series, Scaler.from_json(run["scaler"]), run["calendar"], mask_missing=c.masked)
    # calendar of the future steps: extend the series' clock past its end
    N = len(series)
    future_times = series.future_times(N, c.horizon)
    from ..data.timeseries import calendar_features
    cal_future = calendar_features(future_times, run["calendar"], c.horizon).astype(np.float32)
    frame.calendar_values = np.concatenate([frame.calendar_values, cal_future])
    frame.targets = np.concatenate([frame.targets, np.zeros((c.horizon, c.num_series), np.float32)])
    frame.target_mask = np.concatenate([frame.target_mask, np.zeros((c.horizon, c.num_series), bool)])
    origins = np.array([N])
    point, lower, upper = model_forecast(model, frame, origins, level)
    out_dir = Path(out)
    write_forecast_csv(out_dir / "forecast.csv", frame, origins, {"forecast": point}, lower, upper, None)
    plot_forecast(out_dir / "forecast.png", frame, origins, point, lower, upper, history=3 * c.lookback,
                  title=f"forecast ({c.mode}, {c.head})", level=level)
    click.echo(f"rnnkit: forecast of {c.horizon} steps past {N} observed -> {out_dir / 'forecast.csv'}, "
               f"{out_dir / 'forecast.png'}")
    if do_backtest:
        from ..data.timeseries import Split
        frame = ForecastFrame(series, Scaler.from_json(run["scaler"]), run["calendar"], mask_missing=c.masked)
        bt = backtest(model, frame, Split(*run["split"]), season=run["season"], level=level)
        click.echo(bt.table())
        click.echo(f"rnnkit: {bt.verdict()}")


def register(cli: click.Group, train: click.Group) -> None:
    """Add `rnnkit train forecast` and `rnnkit forecast`."""
    train.add_command(train_forecast)
    cli.add_command(forecast)
