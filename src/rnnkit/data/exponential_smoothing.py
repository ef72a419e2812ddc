"""Per-series level and seasonality from Holt-Winters exponential smoothing, the "ES" of an ES-RNN hybrid.

Smyl's ES-RNN (M4 winner, 2018) divides each window by the smoothed level and seasonal indices of its
series, lets the RNN forecast the normalised remainder, and multiplies the forecast back. Smyl learns the
smoothing coefficients jointly with the network by gradient; here they are fitted per series by statsmodels'
`ExponentialSmoothing` (no trend) on the training part only, then kept fixed. The recursion, per column
(Hyndman & Athanasopoulos' form; a missing y_t (NaN) carries the state unchanged):

    multiplicative   l_t = α y_t / s_{t−m} + (1 − α) l_{t−1}      s_t = γ y_t / l_{t−1} + (1 − γ) s_{t−m}
    additive         l_t = α (y_t − s_{t−m}) + (1 − α) l_{t−1}    s_t = γ (y_t − l_{t−1}) + (1 − γ) s_{t−m}

A window at origin o (history [o − L, o), targets [o, o + H)) is normalised by the level l_{o−1} known at
its origin and, at step i, the seasonal index known before step i: s_{i−m} for the history and the last
index of the same phase before o for the targets (s_{o−m+((i−o) mod m)}). Normalised values

    multiplicative   r_i = y_i / (l_{o−1} · s)         additive   r_i = y_i − l_{o−1} − s

are an affine map y = a + b·r per window, step and column (a = 0, b = l·s; or a = l + s, b = 1), so a
forecast's point, spread and quantiles go back to data units exactly (`inverse`, b > 0 while the level is
positive). Nothing after the origin enters a window's normalisation.

    >>> import numpy as np
    >>> t = np.arange(96.0)
    >>> y = (10 + 0.05 * t + 2 * np.sin(2 * np.pi * t / 24))[:, None]  # (N, C)
    >>> es = ESDecomposition.fit(y[:72], season=24)
    >>> es.kinds
    ['multiplicative']
    >>> states = es.filter(y)
    >>> a, b = es.window_affine(states, np.array([80]), lookback=8, horizon=4)  # (1, 12, 1) each
    >>> bool(np.allclose(es.inverse(es.normalise(y[72:84][None], a, b), a, b), y[72:84][None]))
    True
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np

from .._optional import require
from ..errors import InputError

__all__ = ["ES_KINDS", "ESDecomposition"]

#: the `es` setting: none (a global standardiser only), auto (multiplicative for a positive training part,
#: additive otherwise), or the kind named
ES_KINDS = ("none", "auto", "multiplicative", "additive")
#: the seasonal initialisation statsmodels estimates jointly up to this season length; longer seasons (288
#: five-minute steps) use its heuristic start, as the Holt-Winters baseline does
ESTIMATED_INIT_MAX_SEASON = 48


@dataclass
class ESDecomposition:
    """Fixed smoothing coefficients and initial states, one per column. alpha, gamma, level0 (C,); seasons0
    (m, C): the seasonal indices of the first m steps; kinds: "multiplicative" or "additive" per column;
    start: the timestamp of the first training step, if known (a series starting elsewhere gets its seasonal
    phase from it, see `phase`)."""

    season: int
    kinds: List[str]
    alpha: np.ndarray
    gamma: np.ndarray
    level0: np.ndarray
    seasons0: np.ndarray
    start: Optional[str] = None

    @classmethod
    def fit(cls, train: np.ndarray, season: int, kind: str = "auto", what: str = "the training part",
            level_smoothing: Optional[float] = None, columns: Optional[List[str]] = None,
            start: Optional[str] = None) -> "ESDecomposition":
        """Fit α, γ and the initial states of each column of `train` (N_train, C; NaN = missing, interpolated
        for the fit) by statsmodels' ExponentialSmoothing without trend. season m = 1: level only.
        `level_smoothing`: α fixed at this value (the rest fitted), e.g. a smoother level than the one-step
        optimum, which for traffic follows the last value (α ≈ 0.8–0.9) and so passes its noise to every
        target of the window (Smyl learns α for the whole horizon's loss). `what` and `columns` name the data in
        error messages; `start`: the timestamp of train's first step."""
        if kind not in ES_KINDS[1:]:
            raise InputError(f"es must be one of {', '.join(ES_KINDS[1:])}; got {kind!r}")
        n = train.shape[0]
        if season > 1 and n < 2 * season:
            raise InputError(f"es: {what} ({n} steps) must hold two seasons (2 × {season} steps) to fit the "
                             f"seasonal indices; give a shorter season, smaller validation/test fractions, or "
                             f"es none")
        if n < 10:
            raise InputError(f"es: {what} ({n} steps) is too short to fit exponential smoothing (10 steps at least)")
        names = [f"column {c!r} of {what}" for c in (columns or range(train.shape[1]))]
        fits = [_fit_column(_interpolated(train[:, j], name), season, kind, name, level_smoothing)
                for j, name in enumerate(names)]
        kinds, alpha, gamma, level0, seasons0 = zip(*fits)
        return cls(season, list(kinds), np.array(alpha), np.array(gamma), np.array(level0),
                   np.stack(seasons0, axis=1), start)

    # -------------------------------------------------------------- the recursion
    def phase(self, times: Optional[np.ndarray]) -> int:
        """Where in the season a series with timestamps `times` (N,) starts, counted from the training series'
        first step (0 without timestamps or `start`: the series is taken to start where training did)."""
        if self.start is None or times is None or len(times) < 2:
            return 0
        return int(round((times[0] - np.datetime64(self.start)) / (times[1] - times[0]))) % self.season

    def filter(self, values: np.ndarray, phase: int = 0) -> Tuple[np.ndarray, np.ndarray]:
        """The smoothed states over `values` (N, C; NaN = missing), whose first step is `phase` steps into the
        season of the initial states: level (N + 1, C), level[i] the level before step i; seasons (N + m, C),
        seasons[i] the seasonal index known before step i (the first m are the initial ones)."""
        n, m = values.shape[0], self.season
        mul = np.array([k == "multiplicative" for k in self.kinds])
        level = np.empty((n + 1, values.shape[1]))
        seasons = np.empty((n + m, values.shape[1]))
        level[0], seasons[:m] = self.level0, np.roll(self.seasons0, -phase, axis=0)
        for t in range(n):
            y, l, s = values[t], level[t], seasons[t]
            new_l = np.where(mul, self.alpha * y / s + (1 - self.alpha) * l,
                             self.alpha * (y - s) + (1 - self.alpha) * l)
            new_s = np.where(mul, self.gamma * y / l + (1 - self.gamma) * s,
                             self.gamma * (y - l) + (1 - self.gamma) * s)
            seen = ~np.isnan(y)
            level[t + 1] = np.where(seen, new_l, l)
            seasons[t + m] = np.where(seen, new_s, s) if m > 1 else seasons[t]
        return level, seasons

    def step_affine(self, states: Tuple[np.ndarray, np.ndarray], n: int) -> Tuple[np.ndarray, np.ndarray]:
        """(a, b) (n, C) of the one-step normalisation of steps 0 .. n − 1 (each by the state before it)."""
        level, seasons = states
        return self._affine(level[:n], seasons[:n])

    def window_affine(self, states: Tuple[np.ndarray, np.ndarray], origins: np.ndarray, lookback: int,
                      horizon: int) -> Tuple[np.ndarray, np.ndarray]:
        """(a, b) (B, L + H, C) of the windows at `origins` (B,): steps o − L .. o + H − 1 (module docstring)."""
        level, seasons = states
        o = np.asarray(origins, dtype=np.int64)[:, None]
        steps = o + np.arange(-lookback, horizon)[None, :]  # (B, L + H)
        known = np.where(steps < o, steps, o + (steps - o) % self.season)  # the index known before o
        return self._affine(level[o[:, 0]][:, None, :], seasons[known])

    def _affine(self, level: np.ndarray, season: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        mul = np.array([k == "multiplicative" for k in self.kinds])
        level = np.broadcast_to(level, season.shape)
        return np.where(mul, 0.0, level + season), np.where(mul, level * season, 1.0)

    @staticmethod
    def normalise(values: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (values - a) / b

    @staticmethod
    def inverse(r: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return a + b * r

    # -------------------------------------------------------------- saved with the run
    def to_json(self) -> dict:
        return {"season": self.season, "kinds": self.kinds, "alpha": self.alpha.tolist(),
                "gamma": self.gamma.tolist(), "level0": self.level0.tolist(), "seasons0": self.seasons0.tolist(),
                "start": self.start}

    @classmethod
    def from_json(cls, d: dict) -> "ESDecomposition":
        return cls(int(d["season"]), list(d["kinds"]), np.asarray(d["alpha"], float), np.asarray(d["gamma"], float),
                   np.asarray(d["level0"], float), np.asarray(d["seasons0"], float), d.get("start"))

    def describe(self, columns: List[str]) -> str:
        return "; ".join(f"{c}: {k}, α={a:.3g}, γ={g:.3g}" for c, k, a, g in
                         zip(columns, self.kinds, self.alpha, self.gamma))


def _interpolated(column: np.ndarray, name: str) -> np.ndarray:
    seen = ~np.isnan(column)
    if seen.sum() < 2:
        raise InputError(f"es: {name} has fewer than two observed values")
    idx = np.arange(len(column))
    return np.interp(idx, idx[seen], column[seen])


def _fit_column(y: np.ndarray, season: int, kind: str, name: str, level_smoothing: Optional[float]) -> \
        Tuple[str, float, float, float, np.ndarray]:
    positive = bool(y.min() > 0)
    if kind == "multiplicative" and not positive:
        raise InputError(f"es multiplicative needs a positive series; {name} reaches {y.min():.4g} (es additive "
                         f"or auto take any sign)")
    kind = ("multiplicative" if positive else "additive") if kind == "auto" else kind
    ExponentialSmoothing = require("statsmodels.tsa.holtwinters", extra="forecast",
                                   purpose="the ES-RNN hybrid (es)").ExponentialSmoothing
    seasonal = ("mul" if kind == "multiplicative" else "add") if season > 1 else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # statsmodels' convergence chatter; the fit is checked below
        fit = ExponentialSmoothing(y, trend=None, seasonal=seasonal, seasonal_periods=season if seasonal else None,
                                   initialization_method="estimated" if season <= ESTIMATED_INIT_MAX_SEASON
                                   else "heuristic").fit(smoothing_level=level_smoothing)
    p = fit.params
    seasons0 = np.asarray(p["initial_seasons"], float) if seasonal else np.full(1, float(kind == "multiplicative"))
    gamma = float(p.get("smoothing_seasonal") or 0.0) if seasonal else 0.0
    alpha, level0 = float(p["smoothing_level"]), float(p["initial_level"])
    if not np.isfinite([alpha, gamma, level0, *seasons0]).all():
        raise InputError(f"es: exponential smoothing did not converge on {name}")
    return kind, alpha, gamma, level0, seasons0
