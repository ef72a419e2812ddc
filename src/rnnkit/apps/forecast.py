"""A time-series forecaster, backtested against classical baselines (default data: hourly ISP traffic,
Cortez et al. 2012).

The series is split by time into train / validation / test; the scaler sees the training part
only. After training, the best-validation model is backtested with rolling origins over the test
part next to naive, seasonal-naive, Holt-Winters and SARIMA forecasts of the same windows
(OUT/results.md and results.json, forecast.csv, forecast.png). Its intervals are split-conformal: calibrated
on the validation windows' errors per horizon step (OUT/calibration.json, used again after `load`). With
`es` (the ES-RNN hybrid) each window is normalised by Holt-Winters level and seasonality fitted on the
training part (`rnnkit.data.exponential_smoothing`), and the forecasts are mapped back.

    >>> from rnnkit.apps import forecast
    >>> run = forecast.train(forecast.ForecastSettings(data="series.csv", max_epochs=3))  # doctest: +SKIP
    >>> fc = forecast.forecast(run)            # the next `horizon` steps past the data  # doctest: +SKIP
    >>> fc.to_frame().head()                                                             # doctest: +SKIP
    >>> print(forecast.backtest(run).table())  # model vs baselines on the test part     # doctest: +SKIP
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np

from ..cells import CELLS
from ..checks import check_int
from ..data.text import DataError
from ..data.exponential_smoothing import ES_KINDS, ESDecomposition
from ..data.series import MISSING_POLICIES, Series, load_kaggle_ipasn, load_series, series_from_frame
from ..data.timeseries import (CALENDAR_FEATURES, ForecastFrame, Scaler, Split, WindowLoader, split_by_time,
                               window_origins)
from ..errors import InputError
from ..models.forecast import HEADS, MODES, ForecastConfig, Forecaster, ForecastTask
from ..models.forecast_eval import BASELINES, Backtest, backtest as run_backtest, forecast_windows, model_forecast, \
    plot_forecast, write_forecast_csv
from ..models.forecast_intervals import Calibration
from ..training.checkpoint import CheckpointError, write_json_atomic
from ..recipes import repository_data
from .rundir import saved_settings
from .runner import Prepared, Recipe, Run, say
from .settings import TrainingSettings, setting, setting_name, settings_class

__all__ = ["ForecastSettings", "Forecast", "train", "load", "forecast", "backtest", "RECIPE"]

DEFAULT_DATA = "data/isp-traffic-cortez/A1H.txt"
#: nominal timestamps of the embedded Cortez series A (SOURCE.md: from 06:57 on 7 June 2005)
CORTEZ_A = {"A1H.txt": ("2005-06-07 06:57", "h"), "A5M.txt": ("2005-06-07 06:57", "5min"),
            "A1D.txt": ("2005-06-07 06:57", "D")}
#: the season of a frequency (seasonal naive, Holt-Winters, SARIMA and MASE), when --season is 0
SEASONS = {"5min": 288, "min": 1440, "h": 24, "D": 7, "B": 5, "W": 52}
#: the conformal calibration of the intervals, written after training (read by `forecast` and `backtest`)
CALIBRATION_FILE = "calibration.json"
#: the settings that say how the series is read (kept in the run's info: inference reads new data alike)
DATA_KEYS = ("data", "format", "time_column", "value_columns", "freq", "start", "aggregate", "missing", "machines")


@settings_class
class ForecastSettings(TrainingSettings):
    """Settings of `rnnkit train forecast` (defaults: a 64-unit LSTM, one week of lookback, one day ahead)."""

    DEFAULTS = dict(out="runs/forecast", batch_size=32, optimizer="adam", lr=3e-3, clip_norm=1.0, max_epochs=40,
                    early_stop_patience=8, checkpoint_every=500)
    data: Optional[str] = setting(None, f"Series file: .csv/.parquet (time + value columns), .txt (one number a "
                                        f"line) or the Kaggle cs448b_ipasn.csv (--format kaggle-ipasn). Default: "
                                        f"{DEFAULT_DATA}.", path=True)
    format: str = setting("auto", "File format.", choices=("auto", "kaggle-ipasn"))
    time_column: Optional[str] = setting(None, "Time column (default: the first column).")
    value_columns: Optional[str] = setting(None, "Comma-separated value columns to forecast (default: all but the "
                                                 "time column).")
    freq: Optional[str] = setting(None, "Frequency to resample to (pandas alias: 5min, h, D). Default: inferred; "
                                        "an irregular index is an error.")
    start: Optional[str] = setting(None, "Timestamp of the first value of a .txt series (with --freq; for calendar "
                                         "features).")
    aggregate: str = setting("mean", "How resampling to --freq combines values in one bucket.",
                             choices=("mean", "sum"))
    missing: str = setting("interpolate", "Missing steps: interpolate, mask (loss and metrics skip them) or error.",
                           choices=MISSING_POLICIES)
    machines: Optional[str] = setting(None, "kaggle-ipasn: comma-separated l_ipn ids to keep (default: all).",
                                      acts_with=("format", ("kaggle-ipasn",)))
    calendar: str = setting("auto", "Past covariates: comma list of hour,dow; 'none'; 'auto' = both when the "
                                    "series has timestamps.")
    lookback: int = setting(168, "History steps each forecast sees (L).", min=1)
    horizon: int = setting(24, "Steps forecast at once (H).", min=1)
    stride: int = setting(1, "Steps between training windows.", min=1)
    val_fraction: float = setting(0.15, "Validation part (after the training part, by time).", min=0, max=0.5)
    test_fraction: float = setting(0.15, "Test part (the end of the series).", min=0, max=0.5, min_open=True)
    season: int = setting(0, "Season length m for seasonal naive, Holt-Winters, SARIMA and MASE (0: from the "
                             "frequency: 5min 288, h 24, D 7).", min=0)
    mode: str = setting("direct", "direct (many-to-one, H outputs at once), autoregressive (teacher forcing, "
                                  "rolled out) or seq2seq (encoder-decoder).", choices=MODES)
    es: str = setting("none", "ES-RNN hybrid: normalise each window by the level and seasonality (season m) of "
                              "Holt-Winters exponential smoothing fitted on the training part (statsmodels, no "
                              "trend, coefficients then fixed); the network forecasts the remainder. auto: "
                              "multiplicative for a positive series, additive otherwise.", choices=ES_KINDS)
    es_level_smoothing: float = setting(0.0, "ES-RNN: the level's smoothing coefficient α, fixed (0: fitted with "
                                             "the rest). A smaller α gives a smoother level to normalise by.",
                                        min=0, max=1, acts_with=("es", ("auto", "multiplicative", "additive")))
    teacher_forcing: float = setting(1.0, "autoregressive/seq2seq training: probability of feeding the true "
                                          "previous value (1: teacher forcing; lower: its own forecast otherwise, "
                                          "against exposure bias).", min=0, max=1,
                                     acts_with=("mode", ("autoregressive", "seq2seq")))
    head: str = setting("gaussian", "point (MSE), gaussian (likelihood) or quantile (pinball).", choices=HEADS)
    quantiles: str = setting("0.05,0.5,0.95", "Quantiles of the quantile head (must include 0.5).",
                             acts_with=("head", ("quantile",)))
    level: float = setting(0.9, "Central forecast interval (nominal coverage; split-conformal on the validation "
                                "windows, per horizon step).", min=0, max=1, min_open=True, max_open=True)
    cell: str = setting("lstm", "Recurrent cell.", choices=tuple(CELLS))
    hidden_size: int = setting(64, "Hidden units per layer.", min=1)
    num_layers: int = setting(1, "Stacked layers.", min=1)
    dropout: float = setting(0.0, "Dropout between layers and before the head.", min=0, max=1, max_open=True)
    backtest_stride: int = setting(0, "Steps between backtest origins (0: the horizon, forecasts tile the test "
                                      "part).", min=0)
    baselines: str = setting(",".join(BASELINES), "Comma list of baselines to run (naive, seasonal_naive, "
                                                  "holt_winters, arima).")
    fit_window: int = setting(2000, "Past values Holt-Winters and SARIMA are fitted on at each origin.", min=1)

    def check(self) -> None:
        super().check()
        if self.explicit("aggregate") and self.freq is None:
            aggregate, freq = setting_name("aggregate"), setting_name("freq")
            raise InputError(f"{aggregate} has no effect without {freq} (it says how values in one {freq} bucket "
                             f"are combined): set {freq} too, or leave it out")
        quantile_list(self.quantiles)
        calendar_names(self.calendar)
        baseline_names(self.baselines)
        machine_ids(self.machines)


# ---------------------------------------------------------------------- settings given as comma lists
def items(text: Optional[str]) -> Optional[List[str]]:
    """The entries of a comma list ("a, b" -> ["a", "b"]); None for None or an empty list."""
    if text is None:
        return None
    return [t.strip() for t in text.split(",") if t.strip()] or None


def quantile_list(text: str) -> List[float]:
    try:
        qs = [float(q) for q in items(text) or []]
    except ValueError:
        raise InputError(f"{setting_name('quantiles')} must be comma-separated numbers; got {text!r}") from None
    if sorted(qs) != qs or len(set(qs)) != len(qs) or not all(0.0 < q < 1.0 for q in qs) or 0.5 not in qs:
        raise InputError(f"{setting_name('quantiles')} must be increasing, in (0, 1) and include 0.5; got {text!r}")
    return qs


def calendar_names(spec: str, series: Optional[Series] = None) -> List[str]:
    """The calendar covariates of `spec` ("auto": hour and day of week when `series` has timestamps)."""
    spec = spec.strip()
    if spec == "none":
        return []
    if spec == "auto":
        if series is None or series.times is None:
            return []
        return ["hour", "dow"] if series.freq and not series.freq.endswith("D") else ["dow"]
    return known_items("calendar", spec, CALENDAR_FEATURES, "feature", ", 'auto' or 'none'")


def baseline_names(text: str) -> List[str]:
    return known_items("baselines", text, BASELINES, "baseline")


def known_items(name: str, text: str, known: Tuple[str, ...], what: str, others: str = "") -> List[str]:
    """The entries of the comma list `text` of setting `name`, each one of `known`."""
    entries = items(text) or []
    for entry in entries:
        if entry not in known:
            raise InputError(f"{setting_name(name)}: unknown {what} {entry!r}; expected some of "
                             f"{', '.join(known)}{others}")
    return entries


def machine_ids(text: Optional[str]) -> Optional[List[int]]:
    try:
        return [int(m) for m in items(text) or []] or None
    except ValueError:
        raise InputError(f"{setting_name('machines')} must be integers; got {text!r}") from None


# ---------------------------------------------------------------------- data
def read_series(spec: Mapping[str, Any], report: Optional[List[str]] = None, frame: Any = None) -> Series:
    """The series the data settings `spec` (DATA_KEYS) name; `frame`: a pandas DataFrame read instead of
    the file. What was done (resampling, missing steps) is appended to `report`."""
    path = spec.get("data") or repository_data(DEFAULT_DATA)
    start, freq = spec.get("start"), spec.get("freq")
    columns = dict(time_column=spec.get("time_column"), value_columns=items(spec.get("value_columns")))
    how = dict(freq=freq, aggregate=spec.get("aggregate") or "mean", missing=spec.get("missing") or "interpolate")
    if frame is not None:
        series = series_from_frame(frame, **columns, **how, source="the DataFrame", start=start)
    elif spec.get("format") == "kaggle-ipasn":
        series = load_kaggle_ipasn(path, machines=machine_ids(spec.get("machines")), missing=how["missing"])
    else:
        name = Path(path).name
        if Path(path).suffix == ".txt" and start is None and freq is None and name in CORTEZ_A:
            start, how["freq"] = CORTEZ_A[name]
            if report is not None:
                report.append(f"{name}: nominal timestamps from {start} every {how['freq']} (Cortez series A)")
        series = load_series(path, **columns, **how, start=start)
    if report is not None:
        report.extend(series.report)
    return series


def season_of(s: ForecastSettings, series: Series) -> int:
    return s.season or SEASONS.get((series.freq or "").lstrip("1"), 1)


def prepare(s: ForecastSettings, resumed: Optional[Dict[str, Any]], rank: int, world: int) -> Prepared:
    """Read and split the series, fit the scaler on the training part, cut the windows, build the model."""
    report: List[str] = []
    data = {k: getattr(s, k) for k in DATA_KEYS}
    series = read_series(data, report)
    L, H, mask = s.lookback, s.horizon, s.missing == "mask"
    split = split_by_time(len(series), L, H, s.val_fraction, s.test_fraction)
    observed = np.where(series.observed, series.values, np.nan) if mask else series.values
    season = season_of(s, series)
    es = fit_es(s, observed[:split.n_train], season, report, series)
    train_origins = window_origins(0, split.n_train, L, H, s.stride)
    scaler = Scaler.fit(remainders(es, observed[:split.n_train], train_origins, L, H))
    calendar = calendar_names(s.calendar, series)
    frame = ForecastFrame(series, scaler, calendar, mask_missing=mask, es=es)
    val_origins = window_origins(split.n_train, split.n_val, L, H, 1)
    config = ForecastConfig(frame.num_series, frame.num_features, frame.num_calendar, L, H, mode=s.mode,
                            head=s.head, quantiles=quantile_list(s.quantiles), cell=s.cell,
                            hidden_size=s.hidden_size, num_layers=s.num_layers, dropout=s.dropout, masked=mask,
                            teacher_forcing=s.teacher_forcing)
    train_data = WindowLoader(frame, train_origins, L, H, s.batch_size, shuffle=True, seed=s.seed)
    val_data = WindowLoader(frame, val_origins, L, H, 256) if len(val_origins) else None
    report.append(f"split by time: train [0, {split.n_train}), validation [{split.n_train}, {split.n_val}), test "
                  f"[{split.n_val}, {split.n}); {len(train_origins)} training windows, {len(val_origins)} "
                  f"validation windows; scaler fitted on the training part; calendar covariates "
                  f"{calendar or 'none'}")
    if season == 1 and not s.season:
        what = "a series without timestamps" if series.freq is None else f"frequency {series.freq}"
        report.append(f"season 1 (seasonal naive = naive): no season is known for {what}; give "
                      f"{setting_name('season')} m if the series repeats every m steps")
    info = {"model": config.to_dict(), "scaler": scaler.to_json(), "calendar": calendar,
            "split": [split.n_train, split.n_val, split.n], "season": season,
            "data": data, "columns": series.columns, "es": es.to_json() if es is not None else None}
    return Prepared(Forecaster(config), ForecastTask(), train_data, val_data, info=info, report=report)


def fit_es(s: ForecastSettings, train: np.ndarray, season: int, report: List[str], series: Series) -> \
        Optional[ESDecomposition]:
    """The ES-RNN decomposition fitted on the training part (N_train, C); None for es none."""
    if s.es == "none":
        return None
    where = f"the training part of {s.data or DEFAULT_DATA} ({setting_name('es')} {s.es}, season {season})"
    es = ESDecomposition.fit(train, season, s.es, what=where, level_smoothing=s.es_level_smoothing or None,
                             columns=series.columns, start=None if series.times is None else str(series.times[0]))
    report.append(f"ES-RNN: Holt-Winters level and season m={season} fitted on the training part, coefficients "
                  f"fixed: {es.describe(series.columns)}")
    return es


def remainders(es: Optional[ESDecomposition], train: np.ndarray, origins: np.ndarray, lookback: int,
               horizon: int) -> np.ndarray:
    """What the scaler standardises (N', C): the training values, or with `es` the values of every training
    window normalised as the network sees them (by the level at its origin: a window strays further from it
    than one step does from the step before, so one-step remainders would scale the inputs far too large)."""
    if es is None:
        return train
    a, b = es.window_affine(es.filter(train), origins, lookback, horizon)
    steps = np.asarray(origins)[:, None] + np.arange(-lookback, horizon)[None, :]
    return es.normalise(train[steps], a, b).reshape(-1, train.shape[1])


# ---------------------------------------------------------------------- after training
def finish(run: Run) -> Dict[str, Any]:
    """Calibrate the intervals on the validation windows (OUT/calibration.json); backtest the best weights on
    the test part; forecast.csv and forecast.png; the table as results.md."""
    s, out, c = run.settings, run.out, run.model.config
    calibration = calibrate(run)
    run.extras = {**_extras(run), "calibration": calibration}
    if calibration is not None:
        write_json_atomic(out / CALIBRATION_FILE, calibration.to_json())
        say(s, f"intervals calibrated on {calibration.windows} validation windows -> {out / CALIBRATION_FILE}")
    bt, frame = _backtest(run, progress=not s.quiet)
    write_forecast_csv(out / "forecast.csv", frame, bt.origins, bt.forecasts, bt.lower, bt.upper, bt.actual)
    base = ("seasonal naive", bt.forecasts["seasonal_naive"]) if "seasonal_naive" in bt.forecasts else None
    plot_forecast(out / "forecast.png", frame, bt.origins, bt.forecasts["model"], bt.lower, bt.upper,
                  history=3 * c.lookback, actual=bt.actual, baseline=base, level=bt.level,
                  title=f"backtest ({'ES-RNN, ' * (s.es != 'none')}{c.mode}, {c.head})")
    say(s, f"wrote {out / 'forecast.csv'}, {out / 'forecast.png'}")
    hybrid = f"ES-RNN ({s.es}) " if s.es != "none" else ""
    header = (f"Backtest: {s.data or DEFAULT_DATA}, {hybrid}{c.mode} {c.cell} {c.num_layers}x{c.hidden_size}, "
              f"{c.head} head, L={c.lookback}, H={c.horizon}, {len(bt.origins)} rolling origins, season "
              f"{run.info['season']}\n\n")
    shortfall = calibration.shortfall(bt.level) if calibration is not None else None
    if shortfall:
        shortfall += f" (more validation data: {setting_name('val_fraction')})"
        say(s, f"warning: {shortfall}", err=True)
        header += f"**Warning:** {shortfall}.\n\n"
    return {"metrics": bt.metrics, "failures": bt.failures, "coverage": bt.coverage, "intervals": bt.intervals,
            "level": bt.level, "origins": bt.origins.tolist(),
            "verdict": bt.verdict(), "notes": bt.notes, "markdown": header + bt.table() + "\n\n" + bt.verdict()}


def calibrate(run: Run) -> Optional[Calibration]:
    """Split-conformal calibration on every validation window (stride 1) of the run's data; None without a
    validation part."""
    split, c = _extras(run)["split"], run.model.config
    origins = window_origins(split.n_train, split.n_val, c.lookback, c.horizon, 1)
    if len(origins) == 0:
        return None
    frame = _frame(run, _series(run, None, need=split.n))
    return Calibration.fit(*forecast_windows(run.model, frame, origins))


def calibration_of(run: Run) -> Optional[Calibration]:
    """The run's calibration: from training, else OUT/calibration.json; None for a run without one."""
    extras = _extras(run)
    if "calibration" not in extras:
        extras["calibration"] = read_calibration(run.out)
        run.extras = extras
    return extras["calibration"]


def read_calibration(out: Optional[Path]) -> Optional[Calibration]:
    """OUT/calibration.json of a run directory; None where there is none; CheckpointError for a bad file."""
    path = out / CALIBRATION_FILE if out is not None else None
    if path is None or not path.is_file():
        return None
    try:
        return Calibration.from_json(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{str(path)!r} is not a calibration file of rnnkit ({err})") from None


def load_extras(info: Dict[str, Any]) -> Dict[str, Any]:
    es = info.get("es")  # absent from runs saved before the ES-RNN hybrid
    return {"scaler": Scaler.from_json(info["scaler"]), "split": Split(*info["split"]),
            "calendar": list(info["calendar"]), "columns": list(info["columns"]),
            "es": ESDecomposition.from_json(es) if es else None}


RECIPE = Recipe("forecast", ForecastSettings, prepare, finish, lambda m: Forecaster(ForecastConfig(**m)),
                load_extras, extra="forecast")


def train(settings: Optional[ForecastSettings] = None, **changes: Any) -> Run:
    """Train a forecaster and backtest it: `train(ForecastSettings(data="series.csv", max_epochs=3))`."""
    return RECIPE.train(settings, **changes)


def load(path: Union[str, Path], device: str = "cpu") -> Run:
    """A trained forecaster from its run directory or a checkpoint (best weights first)."""
    return RECIPE.load(path, device)


# ---------------------------------------------------------------------- inference
Data = Union[None, str, Path, Any]  # the run's data, a series file read as in training, or a pandas DataFrame


@dataclass
class Forecast:
    """The forecast of the `horizon` steps past the end of a series, in data units.

    values, lower, upper: (H, C) point forecast and central interval (the point head: lower = upper =
    values); times (H,): timestamps, or step indices for a series without a clock; columns: the C series.
    """

    values: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    times: np.ndarray
    columns: List[str]
    level: float
    #: the history and the future's calendar, the model's lookback and a title (for the plot)
    frame: ForecastFrame = field(repr=False)
    lookback: int = field(default=0, repr=False)
    title: str = field(default="forecast", repr=False)

    def to_frame(self) -> Any:
        """A pandas DataFrame, one row per step and series: time, step, series, forecast, lower, upper."""
        import pandas as pd
        H, C = self.values.shape
        return pd.DataFrame({"time": np.repeat(self.times, C), "step": np.repeat(np.arange(1, H + 1), C),
                             "series": self.columns * H, "forecast": self.values.ravel(),
                             "lower": self.lower.ravel(), "upper": self.upper.ravel()})

    def save(self, out: Union[str, Path]) -> List[Path]:
        """OUT/forecast.csv and OUT/forecast.png (the folder is created); their paths."""
        out = Path(out)
        origins = np.array([len(self.frame.series)])
        point, lower, upper = self.values[None], self.lower[None], self.upper[None]
        write_forecast_csv(out / "forecast.csv", self.frame, origins, {"forecast": point}, lower, upper, None)
        plot_forecast(out / "forecast.png", self.frame, origins, point, lower, upper, history=3 * self.lookback,
                      title=self.title, level=self.level)
        return [out / "forecast.csv", out / "forecast.png"]


def forecast(run: Run, data: Data = None, *, level: Optional[float] = None, steps: Optional[int] = None) -> Forecast:
    """The next `steps` (default: the model's horizon) past the end of `data` (default: the run's own series).

    `data`: a series file in the training data's format and columns, or a pandas DataFrame with them;
    `level`: the central interval (default: the run's), split-conformal from the validation windows'
    errors when the run has a calibration (OUT/calibration.json), else the model's own. The model sees the last
    `lookback` steps and the calendar of the steps it forecasts. Past its horizon it goes on from its own
    point forecasts, fed back as history one horizon at a time; the interval covers the first `horizon`
    steps only (NaN after them: it is calibrated on the model's errors from true history, which
    forecasts built on forecasts exceed).
    """
    c = run.model.config
    steps = c.horizon if steps is None else steps
    check_int("steps", steps, hint=" (how many steps to forecast)")
    series = _series(run, data, need=c.lookback)
    level = _setting(run, "level") if level is None else level
    calibration = calibration_of(run)
    chunks: List[np.ndarray] = []
    intervals: List[np.ndarray] = []  # (lower, upper) of the first round: from true history only
    grown = series
    while len(chunks) * c.horizon < steps:
        frame = _frame(run, grown)
        frame.extend(c.horizon)
        point, lower, upper = model_forecast(run.model, frame, np.array([len(grown)]), level, calibration)
        if not intervals:
            intervals = [np.full((steps, series.num_series), np.nan) for _ in range(2)]
            n = min(steps, c.horizon)
            intervals[0][:n], intervals[1][:n] = lower[0, :n], upper[0, :n]
        chunks.append(point[0])
        grown = grown.extended(point[0])
    frame = _frame(run, series)
    frame.extend(steps)
    times = series.future_times(len(series), steps)
    times = np.arange(len(series), len(series) + steps) if times is None else times
    beyond = f", {steps - c.horizon} past the horizon from its own forecasts" if steps > c.horizon else ""
    return Forecast(np.concatenate(chunks)[:steps], *intervals, times, list(series.columns), level, frame, c.lookback,
                    f"forecast ({c.mode}, {c.head}{beyond})")


def backtest(run: Run, data: Data = None, *, baselines: Optional[List[str]] = None, stride: Optional[int] = None,
             fit_window: Optional[int] = None, level: Optional[float] = None, progress: bool = False,
             part: str = "test") -> Backtest:
    """Rolling-origin backtest of the model over the run's test part, next to the baselines' forecasts of the
    same windows (default: the run's baselines, backtest stride, fit window and level). `bt.table()` is the
    markdown table, `bt.verdict()` one line, `bt.metrics` the numbers. `part="validation"`: over the
    validation part instead, for choices that must not see the test part (its intervals are scored on the
    windows they were calibrated on, so their coverage there means nothing)."""
    return _backtest(run, data, baselines=baselines, stride=stride, fit_window=fit_window, level=level,
                     progress=progress, part=part)[0]


def _backtest(run: Run, data: Data = None, *, baselines: Optional[List[str]] = None, stride: Optional[int] = None,
              fit_window: Optional[int] = None, level: Optional[float] = None, progress: bool = False,
              part: str = "test") -> Tuple[Backtest, ForecastFrame]:
    split = _extras(run)["split"]
    series = _series(run, data, need=split.n)
    frame = _frame(run, series)
    if part not in ("test", "validation"):
        raise InputError(f"backtest part must be 'test' or 'validation'; got {part!r}")
    if part == "validation":  # the backtest reads [n_val, n): make that the validation part
        split = Split(split.n_train, split.n_train, split.n_val)
    bt = run_backtest(run.model, frame, split, season=run.info["season"],
                      stride=stride or _setting(run, "backtest_stride") or None,
                      baselines=baseline_names(_setting(run, "baselines")) if baselines is None else baselines,
                      fit_window=fit_window or _setting(run, "fit_window"),
                      level=_setting(run, "level") if level is None else level, progress=progress,
                      calibration=calibration_of(run))
    return bt, frame


def _extras(run: Run) -> Dict[str, Any]:
    return run.extras or load_extras(run.info)


def _setting(run: Run, name: str) -> Any:
    """A setting of the run: its settings, else its config.json, else the default."""
    if run.settings is not None:
        return getattr(run.settings, name)
    saved = (saved_settings(run.out) or {}).get("settings", {}) if run.out is not None else {}
    return saved[name] if name in saved else {f.name: f.default for f in fields(ForecastSettings)}[name]


def _series(run: Run, data: Data, need: int) -> Series:
    """The series to forecast from: the run's data, or `data` read with the run's data settings; it must
    have the run's columns and at least `need` steps."""
    spec = dict(run.info["data"])
    is_path = isinstance(data, (str, Path))
    if is_path:
        spec["data"] = str(data)
    series = read_series(spec, frame=None if data is None or is_path else data)
    what = "the run's data" if data is None else (f"{str(data)!r}" if is_path else "the DataFrame")
    if series.columns != _extras(run)["columns"]:
        raise DataError(f"{what} has columns {series.columns}; the model was trained on {_extras(run)['columns']}")
    if len(series) < need:
        raise DataError(f"{what} holds {len(series)} steps; this needs at least {need} (the model's lookback is "
                        f"{run.model.config.lookback})")
    return series


def _frame(run: Run, series: Series) -> ForecastFrame:
    extras = _extras(run)
    return ForecastFrame(series, extras["scaler"], extras["calendar"], mask_missing=run.model.config.masked,
                         es=extras["es"])
