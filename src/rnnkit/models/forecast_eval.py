"""Forecast evaluation: rolling-origin backtests against naive, seasonal-naive, Holt-Winters and ARIMA; plots.

Every method forecasts the same windows: at each test origin t (every `stride`
steps from the start of the test part) it sees the values before t only and
forecasts t .. t+H−1. Errors are taken in data units over observed actuals:

    MAE   = mean |y − ŷ|               RMSE  = sqrt(mean (y − ŷ)²)
    MAPE  = 100 · mean |y − ŷ| / |y|   sMAPE = 200 · mean |y − ŷ| / (|y| + |ŷ|)
    MASE  = MAE / mean_t |y_t − y_{t−m}| over the training part (in-sample seasonal naive, m the season)

Classical peers (as in Cortez et al. 2012): Holt-Winters (no trend, multiplicative
season for positive series, statsmodels ExponentialSmoothing) and a seasonal ARIMA(2,0,1)
on the seasonally differenced series, i.e. SARIMA(2,0,1)(0,1,0)_m (statsmodels
ARIMA on y_t − y_{t−m}; the differencing is done here so that m = 288 stays
cheap). Both are refitted at every origin on at most `fit_window` past values.
A fit that fails is reported (its forecasts count as missing), never hidden.

The model's interval (conformally calibrated when a `Calibration` is given, see `forecast_intervals`) is
scored over every test window (stride 1): coverage, mean width, the width needed, CRPS or pinball loss.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .._optional import pyplot, require
from ..data.timeseries import ForecastFrame, Split, window_origins
from ..data.exponential_smoothing import ESTIMATED_INIT_MAX_SEASON
from .forecast import Forecaster, gaussian_sigma
from .forecast_intervals import Calibration, Predictive, interval_report, interval_table
from ..errors import InputError, MissingExtraError

BASELINES = ("naive", "seasonal_naive", "holt_winters", "arima")
LABELS = {"model": "model", "naive": "naive (last value)", "seasonal_naive": "seasonal naive",
          "holt_winters": "Holt-Winters", "arima": "SARIMA(2,0,1)(0,1,0)m"}
METRICS = ("MAE", "RMSE", "sMAPE", "MAPE", "MASE")


# ------------------------------------------------------------------ metrics
#: a seasonal-naive error below this fraction of the series' size is rounding noise of an exact repeat
MASE_SCALE_RTOL = 1e-8


def mase_season(n_train: int, season: int) -> int:
    """The lag m of MASE's scale: the season, or 1 when the training part is shorter than two seasons."""
    return season if n_train > 2 * season else 1


def mase_scale(train: np.ndarray, season: int) -> np.ndarray:
    """Per column mean |y_t − y_{t−m}| over the training values (N_train, C) (m: `mase_season`); NaN where
    that is (about) zero, i.e. the training part repeats itself exactly every m steps: dividing by it would
    print rounding noise as a huge MASE (an exactly periodic series gave 2.4e14)."""
    m = mase_season(train.shape[0], season)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-missing column: NaN, reported as such
        scale = np.nanmean(np.abs(train[m:] - train[:-m]), axis=0)
        size = np.maximum(np.nanmean(np.abs(train), axis=0), np.nanstd(train, axis=0))
    return np.where(scale > MASE_SCALE_RTOL * size, scale, np.nan)


def mase_notes(scale: np.ndarray, columns: Sequence[str], m: int) -> List[str]:
    """One line per column whose MASE is undefined, saying why."""
    rest = "; MASE is averaged over the other columns" if not np.isnan(scale).all() else ""
    return [f"MASE undefined for {c!r}: its training part repeats itself exactly every {m} step"
            f"{'s' if m > 1 else ''} (in-sample seasonal-naive error 0 up to rounding), so there is no error "
            f"scale to divide by{rest}" for c, v in zip(columns, scale) if np.isnan(v)]


def error_metrics(actual: np.ndarray, pred: np.ndarray, scale: np.ndarray) -> Dict[str, float]:
    """actual, pred (..., C) in data units, NaN where missing; scale (C,) for MASE."""
    ok = ~np.isnan(actual) & ~np.isnan(pred)
    if not ok.any():
        return {k: float("nan") for k in METRICS}
    a, p = actual[ok], pred[ok]
    e = np.abs(a - p)
    s = np.broadcast_to(scale, actual.shape)[ok]
    with np.errstate(divide="ignore", invalid="ignore"):
        mape = 100.0 * np.nanmean(np.where(a != 0, e / np.abs(a), np.nan))
        smape = 200.0 * np.nanmean(np.where(np.abs(a) + np.abs(p) > 0, e / (np.abs(a) + np.abs(p)), 0.0))
        mase = float(np.nanmean(e / s)) if not np.isnan(s).all() else float("nan")
    return {"MAE": float(e.mean()), "RMSE": float(np.sqrt((e ** 2).mean())), "sMAPE": float(smape),
            "MAPE": float(mape), "MASE": mase}


# ------------------------------------------------------------------ baselines
def _filled(history: np.ndarray) -> np.ndarray:
    """History (T,) with NaN (masked steps) linearly interpolated from past values only; the classical
    methods cannot take gaps."""
    h = history.copy()
    bad = np.isnan(h)
    if bad.any():
        idx = np.arange(len(h))
        h[bad] = np.interp(idx[bad], idx[~bad], h[~bad])
    return h


def naive(history: np.ndarray, horizon: int, season: int) -> np.ndarray:
    return np.full(horizon, _filled(history)[-1])


def seasonal_naive(history: np.ndarray, horizon: int, season: int) -> np.ndarray:
    h = _filled(history)
    if len(h) < season:
        return np.full(horizon, h[-1])
    return np.array([h[len(h) - season + (k % season)] for k in range(horizon)])


def holt_winters(history: np.ndarray, horizon: int, season: int) -> np.ndarray:
    """Holt-Winters without trend (a trend extrapolated over a day overshoots on traffic), multiplicative
    season for positive series, additive otherwise."""
    ExponentialSmoothing = require("statsmodels.tsa.holtwinters", extra="forecast",
                                   purpose="the Holt-Winters baseline").ExponentialSmoothing
    h = _filled(history)
    seasonal = ("mul" if h.min() > 0 else "add") if len(h) >= 2 * season and season > 1 else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = ExponentialSmoothing(h, trend=None if seasonal else "add", seasonal=seasonal,
                                   seasonal_periods=season if seasonal else None,
                                   initialization_method="estimated" if season <= ESTIMATED_INIT_MAX_SEASON
                                   else "heuristic").fit()
        return np.asarray(fit.forecast(horizon))


def seasonal_arima(history: np.ndarray, horizon: int, season: int) -> np.ndarray:
    """SARIMA(2,0,1)(0,1,0)_m: ARMA(2,1) with a constant on d_t = y_t − y_{t−m}, then undifferenced."""
    ARIMA = require("statsmodels.tsa.arima.model", extra="forecast", purpose="the SARIMA baseline").ARIMA
    h = _filled(history)
    m = season if len(h) > 3 * season else 1
    d = h[m:] - h[:-m]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = ARIMA(d, order=(2, 0, 1), trend="c").fit()
        dhat = np.asarray(fit.forecast(horizon))
    out = np.concatenate([h, np.zeros(horizon)])
    n = len(h)
    for k in range(horizon):  # y_{n+k} = d̂_k + y_{n+k−m} (the latter a forecast itself when k >= m)
        out[n + k] = dhat[k] + out[n + k - m]
    return out[n:]


BASELINE_FUNCTIONS: Dict[str, Callable[[np.ndarray, int, int], np.ndarray]] = {
    "naive": naive, "seasonal_naive": seasonal_naive, "holt_winters": holt_winters, "arima": seasonal_arima,
}


# ------------------------------------------------------------------ backtest
@dataclass
class Backtest:
    """Forecasts of every method at every origin, in data units.

    origins (O,); actual (O, H, C) NaN where missing; forecasts {method: (O, H, C)};
    lower, upper (O, H, C) the model's interval; metrics {method: {metric: value}};
    failures {method: number of failed fits}.
    """

    origins: np.ndarray
    actual: np.ndarray
    forecasts: Dict[str, np.ndarray]
    lower: np.ndarray
    upper: np.ndarray
    metrics: Dict[str, Dict[str, float]]
    failures: Dict[str, int] = field(default_factory=dict)
    coverage: Optional[float] = None
    level: float = 0.9
    notes: List[str] = field(default_factory=list)  # e.g. why a metric is undefined
    #: {"calibrated"/"uncalibrated": coverage, width, needed_width, width_ratio, CRPS or pinball} (not for a
    #: point head without calibration)
    intervals: Dict[str, Dict[str, float]] = field(default_factory=dict)

    def table(self) -> str:
        """Markdown table: one row per method, the model first; the notes below it; then the model's interval:
        coverage, width and distribution score."""
        lines = ["| method | " + " | ".join(METRICS) + " |", "|---|" + "---:|" * len(METRICS)]
        for name, m in self.metrics.items():
            cells = ["undefined" if k == "MASE" and self.notes and math.isnan(m[k]) else f"{m[k]:.4g}"
                     for k in METRICS]
            note = f" ({self.failures[name]} failed fits)" if self.failures.get(name) else ""
            lines.append(f"| {LABELS.get(name, name)}{note} | " + " | ".join(cells) + " |")
        intervals = ["", interval_table(self.intervals, self.level)] if self.intervals else []
        return "\n".join(lines + [""] * bool(self.notes) + self.notes + intervals)

    def verdict(self) -> str:
        model = self.metrics["model"]["MAE"]
        beaten = [LABELS[b] for b in self.metrics if b != "model" and self.metrics[b]["MAE"] <= model]
        cov = (f"; {100 * self.coverage:.1f}% of the test windows' actuals inside the model's "
               f"{100 * self.level:.0f}% interval"
               if self.coverage is not None else "")
        if beaten:
            return f"the model does NOT beat {', '.join(beaten)} on MAE" + cov
        return "the model beats every baseline on MAE" + cov


@torch.no_grad()
def model_predictive(model: Forecaster, frame: ForecastFrame, origins: np.ndarray,
                     batch_size: int = 256) -> Predictive:
    """The model's forecast distribution (data units) for windows at `origins` (rolled out, eval mode)."""
    c = model.config
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    thetas: List[np.ndarray] = []
    try:
        for i in range(0, len(origins), batch_size):
            b = frame.batch(origins[i:i + batch_size], c.lookback, c.horizon)
            thetas.append(model(b["x"].to(device), b["future"].to(device)).double().cpu().numpy())
    finally:
        model.train(was)
    theta = np.concatenate(thetas)  # (O, H, C, P), scaled
    point = frame.to_data(theta[..., model.point_index], origins)
    if c.head == "gaussian":
        sigma = frame.to_data(gaussian_sigma(torch.from_numpy(theta[..., 1])).numpy(), origins, spread=True)
        return Predictive(c.head, point, sigma=sigma)
    if c.head == "quantile":
        return Predictive(c.head, point, quantiles=frame.to_data(theta, origins, column_axis=-2),
                          quantile_levels=list(c.quantiles))
    return Predictive(c.head, point)


def model_forecast(model: Forecaster, frame: ForecastFrame, origins: np.ndarray, level: float = 0.9,
                   calibration: Optional[Calibration] = None) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(point, lower, upper) (O, H, C) in data units for windows at `origins`: the central `level` interval,
    conformally calibrated when `calibration` is given, else the model's own."""
    pred = model_predictive(model, frame, origins)
    q = calibration.q(level) if calibration is not None else pred.default_q(level)
    return (pred.point, *pred.interval(q))


def backtest(model: Forecaster, frame: ForecastFrame, split: Split, *, season: int, stride: Optional[int] = None,
             baselines: Sequence[str] = BASELINES, fit_window: int = 2000, level: float = 0.9,
             first: Optional[int] = None, progress: bool = False,
             calibration: Optional[Calibration] = None) -> Backtest:
    """Rolling-origin backtest over the test part [split.n_val, split.n) (or from `first`).

    stride defaults to the horizon (forecasts tile the test part). The model's interval is the calibrated one
    when `calibration` is given; `intervals` reports both.
    """
    c = model.config
    L, H = c.lookback, c.horizon
    stride = stride or H
    origins = window_origins(split.n_val if first is None else first, split.n, L, H, stride)
    if len(origins) == 0:
        raise InputError(f"no test windows: the test part [{split.n_val}, {split.n}) is shorter than the horizon {H}")
    for b in baselines:
        if b not in BASELINE_FUNCTIONS:
            raise InputError(f"unknown baseline {b!r}; expected some of {BASELINES}")
    values = np.where(frame.target_mask[:len(frame.series)], frame.series.values, np.nan)
    pred, actual = forecast_windows(model, frame, origins)  # actual (O, H, C)
    point = pred.point
    lower, upper = pred.interval(calibration.q(level) if calibration is not None else pred.default_q(level))
    forecasts = {"model": point}
    failures: Dict[str, int] = {}
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(baselines) * len(origins) * frame.num_series, desc="baselines", leave=False)
    for name in baselines:
        fn = BASELINE_FUNCTIONS[name]
        out = np.full_like(actual, np.nan)
        for i, o in enumerate(origins):
            for j in range(frame.num_series):
                hist = values[max(0, o - fit_window):o, j]
                try:
                    out[i, :, j] = fn(hist, H, season)
                except MissingExtraError:  # statsmodels absent: not a failed fit
                    raise
                except Exception:  # noqa: BLE001 — a failed classical fit is counted and shown, not fatal
                    failures[name] = failures.get(name, 0) + 1
                if bar is not None:
                    bar.update(1)
        forecasts[name] = out
    if bar is not None:
        bar.close()
    scale = mase_scale(values[:split.n_train], season)
    notes = mase_notes(scale, frame.series.columns, mase_season(split.n_train, season))
    metrics = {name: error_metrics(actual, f, scale) for name, f in forecasts.items()}
    intervals = model_intervals(model, frame, split, level, calibration, first, (pred, actual) if stride == 1 else None)
    coverage = intervals["calibrated" if calibration else "uncalibrated"]["coverage"] if intervals else None
    return Backtest(origins, actual, forecasts, lower, upper, metrics, failures, coverage, level, notes, intervals)


def model_intervals(model: Forecaster, frame: ForecastFrame, split: Split, level: float,
                    calibration: Optional[Calibration], first: Optional[int] = None,
                    known: Optional[Tuple[Predictive, np.ndarray]] = None) -> Dict[str, Dict[str, float]]:
    """`interval_report` over every test window (stride 1: the backtest's few origins, 7 days of the hourly
    series, would make a coverage of 90% a matter of one window); `known`: those windows' forecasts and
    actuals when already made. {} for the point head without calibration (no interval)."""
    c = model.config
    if calibration is None and c.head == "point":
        return {}
    if known is None:
        origins = window_origins(split.n_val if first is None else first, split.n, c.lookback, c.horizon, 1)
        known = forecast_windows(model, frame, origins)
    return interval_report(*known, level, calibration)


def forecast_windows(model: Forecaster, frame: ForecastFrame, origins: np.ndarray) -> Tuple[Predictive, np.ndarray]:
    """The model's forecasts of the windows at `origins` and their actuals (O, H, C), NaN where missing."""
    values = np.where(frame.target_mask[:len(frame.series)], frame.series.values, np.nan)
    actual = np.stack([values[o:o + model.config.horizon] for o in origins])
    return model_predictive(model, frame, origins), actual


# ------------------------------------------------------------------ outputs
def write_forecast_csv(path: Path, frame: ForecastFrame, origins: np.ndarray, forecasts: Dict[str, np.ndarray],
                       lower: np.ndarray, upper: np.ndarray, actual: Optional[np.ndarray] = None) -> None:
    """Long format: origin, time (or step index), step, series, actual, lower, upper, one column per method."""
    pd = require("pandas", extra="forecast", purpose="writing forecasts.csv")
    s = frame.series
    H = lower.shape[1]
    rows = []
    for i, o in enumerate(origins):
        times = s.future_times(int(o), H)
        for k in range(H):
            for j, col in enumerate(s.columns):
                row = {"origin": int(o), "time": str(pd.Timestamp(times[k])) if times is not None else int(o) + k, "step": k + 1,
                       "series": col, "actual": float(actual[i, k, j]) if actual is not None else np.nan,
                       "lower": float(lower[i, k, j]), "upper": float(upper[i, k, j])}
                for name, f in forecasts.items():
                    row[name] = float(f[i, k, j])
                rows.append(row)
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False)


def plot_forecast(path: Path, frame: ForecastFrame, origins: np.ndarray, point: np.ndarray, lower: np.ndarray,
                  upper: np.ndarray, *, history: int, actual: Optional[np.ndarray] = None,
                  baseline: Optional[Tuple[str, np.ndarray]] = None, title: str = "", level: float = 0.9,
                  max_series: int = 3) -> None:
    """PNG: history before the first origin, each origin's forecast with its interval band, actuals."""
    plt = pyplot(extra="forecast", purpose="the forecast plot")
    s = frame.series
    H = point.shape[1]
    C = min(s.num_series, max_series)
    first = int(origins[0])
    end = int(origins[-1]) + H
    t0 = max(0, first - history)
    full = s.future_times(0, end) if s.times is not None else None
    xs = (lambda a, b: full[a:b]) if full is not None else (lambda a, b: np.arange(a, b))
    fig, axes = plt.subplots(C, 1, figsize=(11, 3.2 * C), squeeze=False)
    for j in range(C):
        ax = axes[j, 0]
        hist_vals = np.where(s.observed[t0:first, j] | ~frame.mask_missing, s.values[t0:first, j], np.nan)
        ax.plot(xs(t0, first), hist_vals, color="0.3", lw=1, label="history")
        if actual is not None:  # one continuous line over the forecast span (origins may overlap or leave gaps)
            act = np.where(s.observed[first:end, j] | ~frame.mask_missing, s.values[first:end, j], np.nan)
            ax.plot(xs(first, end), act, color="black", lw=1, label="actual")
        for i, o in enumerate(origins):
            x = xs(int(o), int(o) + H)
            if not np.allclose(lower[i, :, j], upper[i, :, j]):
                ax.fill_between(x, lower[i, :, j], upper[i, :, j], color="tab:blue", alpha=0.2, lw=0,
                                label=f"{100 * level:.0f}% interval" if i == 0 else None)
            ax.plot(x, point[i, :, j], color="tab:blue", lw=1.3, label="forecast" if i == 0 else None)
            if baseline is not None:
                ax.plot(x, baseline[1][i, :, j], color="tab:orange", lw=0.8, ls="--",
                        label=baseline[0] if i == 0 else None)
        ax.axvline(xs(first, first + 1)[0], color="0.6", lw=0.8, ls=":")
        ax.set_title(f"{title} — {s.columns[j]}" if title else s.columns[j], fontsize=10)
        ax.legend(loc="upper left", fontsize=8, ncol=5)
    if full is not None:
        fig.autofmt_xdate()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
