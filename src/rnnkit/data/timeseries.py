"""Time series for forecasting: splits by time, scaling, calendar covariates and windows over a `Series`.

    split    by time: train = [0, n_train), validation = [n_train, n_val), test = [n_val, N)
    window   origin t: history [t − L, t) (lookback L), targets [t, t + H) (horizon H)
    scaler   per-column mean/std fitted on the training part only (never on validation or test)

Reading series files (CSV, Parquet, text, the Kaggle ipasn file) onto a regular grid with explicit
missing values is `rnnkit.data.series`; its names are importable from here too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Iterator, Optional, Sequence

import numpy as np

from ..checks import check_int
from ..errors import InputError
from .exponential_smoothing import ESDecomposition
from .series import (MISSING_POLICIES, Series, _pandas, load_kaggle_ipasn, load_series,  # noqa: F401
                     series_from_frame)

__all__ = ["MISSING_POLICIES", "Series", "load_series", "series_from_frame", "load_kaggle_ipasn",
           "CALENDAR_FEATURES", "calendar_features", "Split", "split_by_time", "check_window", "Scaler",
           "window_origins", "ForecastFrame", "WindowLoader"]


# ------------------------------------------------------------------ calendar
CALENDAR_FEATURES = ("hour", "dow")


def calendar_features(times: Optional[np.ndarray], names: Sequence[str], steps: int) -> np.ndarray:
    """(steps, 2·len(names)) sin/cos encodings of hour-of-day and day-of-week at `times` (steps of them;
    None without timestamps, which only an empty `names` accepts: then the block is (steps, 0))."""
    if times is not None and len(times) != steps:
        raise InputError(f"calendar_features: {len(times)} timestamps for {steps} steps")
    if not names:
        return np.zeros((steps, 0))
    if times is None:
        raise InputError(f"calendar features {list(names)} need timestamps; this series has none "
                         f"(for a .txt file give start and freq)")
    pd = _pandas()
    idx = pd.DatetimeIndex(times)
    out = []
    for name in names:
        if name == "hour":
            phase = (idx.hour.values + idx.minute.values / 60.0) / 24.0
        elif name == "dow":
            phase = (idx.day_of_week.values + idx.hour.values / 24.0) / 7.0
        else:
            raise InputError(f"unknown calendar feature {name!r}; expected {CALENDAR_FEATURES}")
        out += [np.sin(2 * math.pi * phase), np.cos(2 * math.pi * phase)]
    return np.stack(out, axis=1)


# ------------------------------------------------------------------ split, scale, windows
@dataclass(frozen=True)
class Split:
    """Boundaries by time: train [0, n_train), validation [n_train, n_val), test [n_val, n)."""

    n_train: int
    n_val: int
    n: int


def split_by_time(n: int, lookback: int, horizon: int, val_fraction: float, test_fraction: float) -> Split:
    """Cut N steps into train / validation / test blocks (in that order; never shuffled across).

    Each block after the first must hold at least one horizon; the training block
    must hold at least one whole window (lookback + horizon).
    """
    check_window(n, lookback, horizon)
    for name, f in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= f < 1.0:
            raise InputError(f"{name} must be in [0, 1); got {f}")
    n_test = int(round(n * test_fraction))
    n_valid = int(round(n * val_fraction))
    for name, k in (("validation", n_valid), ("test", n_test)):
        if 0 < k < horizon:
            raise InputError(f"the {name} part ({k} steps) is shorter than the horizon ({horizon}); use a larger "
                             f"fraction or a shorter horizon")
    n_val = n - n_test
    n_train = n_val - n_valid
    if n_train < lookback + horizon:
        raise InputError(f"the training part ({n_train} of {n} steps) is shorter than lookback + horizon "
                         f"({lookback} + {horizon}); use a shorter lookback or smaller validation/test fractions")
    return Split(n_train, n_val, n)


def check_window(n: int, lookback: int, horizon: int) -> None:
    check_int("lookback", lookback)
    check_int("horizon", horizon)
    if lookback + horizon > n:
        raise InputError(f"lookback {lookback} + horizon {horizon} is longer than the series ({n} steps)")


@dataclass
class Scaler:
    """Per-column standardisation z = (x − mean) / std, fitted on the training part only."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, values: np.ndarray) -> "Scaler":
        """values: (N_train, C); NaN (masked) entries are ignored."""
        mean = np.nanmean(values, axis=0)
        std = np.nanstd(values, axis=0)
        std = np.where(std > 0, std, 1.0)  # a constant column stays constant (z = 0)
        return cls(mean, std)

    def transform(self, values: np.ndarray) -> np.ndarray:
        return (values - self.mean) / self.std

    def inverse(self, z: np.ndarray, column_axis: int = -1) -> np.ndarray:
        shape = [1] * z.ndim
        shape[column_axis] = -1
        return z * self.std.reshape(shape) + self.mean.reshape(shape)

    def inverse_scale(self, s: np.ndarray, column_axis: int = -1) -> np.ndarray:
        """A spread (standard deviation) back in data units."""
        shape = [1] * s.ndim
        shape[column_axis] = -1
        return s * self.std.reshape(shape)

    def to_json(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_json(cls, d: dict) -> "Scaler":
        return cls(np.asarray(d["mean"], dtype=np.float64), np.asarray(d["std"], dtype=np.float64))


def window_origins(first: int, last: int, lookback: int, horizon: int, stride: int = 1) -> np.ndarray:
    """Origins t with history [t − L, t) and targets [t, t + H) inside [0, last): t ∈ [max(first, L), last − H]."""
    check_int("stride", stride)
    lo = max(first, lookback)
    hi = last - horizon
    if hi < lo:
        return np.zeros(0, dtype=np.int64)
    return np.arange(lo, hi + 1, stride, dtype=np.int64)


class ForecastFrame:
    """A scaled series with covariates, cut into windows; the model's view of the data.

    features (N, F) float32: scaled values with missing → 0 (C), observed flags when
    masking (C), calendar sin/cos (K). targets (N, C) scaled, target_mask (N, C).

    With `es` (the ES-RNN hybrid) each window's values are first normalised by the level and seasonality
    known at its origin (`ESDecomposition`), then standardised by `scaler` (fitted on the training windows so
    normalised): `batch` computes them per window; `to_data` maps forecasts back.
    """

    def __init__(self, series: Series, scaler: Scaler, calendar: Sequence[str] = (), mask_missing: bool = False,
                 es: Optional[ESDecomposition] = None):
        self.series, self.scaler, self.es = series, scaler, es
        self.calendar = list(calendar)
        self.mask_missing = mask_missing
        z = scaler.transform(series.values)
        observed = series.observed & ~np.isnan(series.values)
        if not mask_missing:
            # interpolated values are real inputs and targets; only NaN would remain unobserved
            observed = ~np.isnan(series.values)
        self.targets = np.nan_to_num(z, nan=0.0).astype(np.float32)
        self.target_mask = observed
        parts = [self.targets]
        if mask_missing:
            parts.append(observed.astype(np.float32))
        self.calendar_values = calendar_features(series.times, self.calendar, len(series)).astype(np.float32)
        parts.append(self.calendar_values)
        self.features = np.concatenate(parts, axis=1).astype(np.float32)
        if es is not None:
            self.raw = np.where(observed, series.values, np.nan)  # (N, C) data units, NaN = missing
            self.es_states = es.filter(self.raw, es.phase(series.times))

    def extend(self, steps: int) -> None:
        """Add `steps` future steps past the end of the series: their calendar features (the series' clock
        continued) and no targets, so that a window at origin N (the series' length) can be forecast."""
        times = self.series.future_times(len(self.series), steps)
        future = calendar_features(times, self.calendar, steps).astype(np.float32)
        self.calendar_values = np.concatenate([self.calendar_values, future])
        self.targets = np.concatenate([self.targets, np.zeros((steps, self.num_series), np.float32)])
        self.target_mask = np.concatenate([self.target_mask, np.zeros((steps, self.num_series), bool)])
        if self.es is not None:  # the states already reach one season past the end (module docstring)
            self.raw = np.concatenate([self.raw, np.full((steps, self.num_series), np.nan)])

    @property
    def num_series(self) -> int:
        return self.targets.shape[1]

    @property
    def num_features(self) -> int:
        return self.features.shape[1]

    @property
    def num_calendar(self) -> int:
        return self.calendar_values.shape[1]

    def batch(self, origins: np.ndarray, lookback: int, horizon: int) -> Dict[str, Any]:
        """Windows at `origins` as tensors: x (B, L, F), y (B, H, C), y_mask (B, H, C),
        future (B, H, K) calendar of the target steps, origin (B,)."""
        import torch
        o = np.asarray(origins, dtype=np.int64)
        hist = o[:, None] + np.arange(-lookback, 0)[None, :]
        fut = o[:, None] + np.arange(horizon)[None, :]
        x, y = self.features[hist], self.targets[fut]
        if self.es is not None:
            a, b = self.es.window_affine(self.es_states, o, lookback, horizon)
            raw = self.raw[np.concatenate([hist, fut], axis=1)]  # (B, L + H, C)
            z = np.nan_to_num(self.scaler.transform(self.es.normalise(raw, a, b)), nan=0.0).astype(np.float32)
            x = x.copy()
            x[..., :self.num_series], y = z[:, :lookback], z[:, lookback:]
        return {
            "x": torch.from_numpy(x),
            "y": torch.from_numpy(y),
            "y_mask": torch.from_numpy(self.target_mask[fut]),
            "future": torch.from_numpy(self.calendar_values[fut]),
            "origin": torch.from_numpy(o),
        }


    def to_data(self, z: np.ndarray, origins: np.ndarray, *, column_axis: int = -1, spread: bool = False) -> \
            np.ndarray:
        """Forecasts z (O, H, C), or (O, H, C, P) with column_axis −2, of the windows at `origins` back in data
        units: undo the scaler and, with `es`, each window's level and seasonality. `spread`: z is a standard
        deviation (scaled, not shifted)."""
        v = self.scaler.inverse_scale(z, column_axis) if spread else self.scaler.inverse(z, column_axis)
        if self.es is None:
            return v
        a, b = self.es.window_affine(self.es_states, origins, 0, z.shape[1])  # (O, H, C)
        if column_axis == -2:
            a, b = a[..., None], b[..., None]
        return b * v if spread else self.es.inverse(v, a, b)


class WindowLoader:
    """Trainer data source: batches of windows at fixed origins (shuffled per epoch when `shuffle`)."""

    def __init__(self, frame: ForecastFrame, origins: np.ndarray, lookback: int, horizon: int, batch_size: int,
                 *, shuffle: bool = False, seed: int = 0) -> None:
        if len(origins) == 0:
            raise InputError("no windows: the part is shorter than lookback + horizon")
        self.frame, self.origins = frame, np.asarray(origins, dtype=np.int64)
        self.lookback, self.horizon, self.batch_size = lookback, horizon, batch_size
        self.shuffle, self.seed = shuffle, seed

    def __len__(self) -> int:
        return -(-len(self.origins) // self.batch_size)

    def batches(self, epoch: int, start: int = 0) -> Iterator[Dict[str, Any]]:
        order = self.origins
        if self.shuffle:
            order = order[np.random.default_rng(self.seed + epoch).permutation(len(order))]
        for i in range(start, len(self)):
            yield self.frame.batch(order[i * self.batch_size:(i + 1) * self.batch_size], self.lookback, self.horizon)
