"""A series of known structure, for judging forecasters on data nobody tuned them on.

    y_t = (level + slope · t) · (1 + a_d sin(2π t / m) + a_w sin(2π t / (7m))) · exp(ε_t)
    ε_t = φ ε_{t−1} + σ η_t,  η_t ~ N(0, 1)

a linear trend, a daily season of m steps and a weekly one, multiplicative, with AR(1) noise on the log scale;
every draw comes from `numpy.random.default_rng(seed)`, so a seed fixes the series.

    >>> frame = seasonal_trend_series(48, seed=0)
    >>> list(frame.columns), len(frame)
    (['time', 'value'], 48)
    >>> bool((frame["value"] > 0).all())
    True

`python -m rnnkit.data.synthetic_series OUT.csv` writes the default series (data/synthetic-seasonal/).
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from ..checks import check_int
from .series import _pandas

__all__ = ["seasonal_trend_series"]


def seasonal_trend_series(n: int = 1344, *, season: int = 24, level: float = 100.0, slope: float = 0.02,
                          daily: float = 0.3, weekly: float = 0.1, phi: float = 0.5, sigma: float = 0.03,
                          seed: int = 0, start: str = "2024-01-01", freq: str = "h") -> Any:
    """A pandas DataFrame (time, value) of n steps (module docstring; defaults: 8 weeks of hourly steps)."""
    check_int("n", n)
    check_int("season", season)
    rng = np.random.default_rng(seed)
    t = np.arange(n, dtype=np.float64)
    eps = np.zeros(n)
    eta = rng.standard_normal(n)
    for i in range(n):
        eps[i] = (phi * eps[i - 1] if i else 0.0) + sigma * eta[i]
    shape = 1 + daily * np.sin(2 * np.pi * t / season) + weekly * np.sin(2 * np.pi * t / (7 * season))
    pd = _pandas()
    return pd.DataFrame({"time": pd.date_range(start, periods=n, freq=freq),
                         "value": (level + slope * t) * shape * np.exp(eps)})


if __name__ == "__main__":  # pragma: no cover - writes the shipped fixture
    seasonal_trend_series().to_csv(sys.argv[1], index=False, float_format="%.6f")
