"""Forecast intervals that mean what they say: split-conformal calibration per horizon step, and the scores
that say how good an interval or a forecast distribution is.

Every head's interval is one family, a base interval widened by q times a scale:

    head       base [lo, hi]                  scale   uncalibrated q
    point      [ŷ, ŷ]                          1       0
    gaussian   [μ, μ]                          σ       z = Φ⁻¹(½ + level/2)
    quantile   [outermost quantiles]           1       0

    score s = max(lo − y, y − hi) / scale      (|y − ŷ|, |y − μ|/σ, or CQR's score)
    interval(q) = [lo − q·scale, hi + q·scale]

Split conformal (Vovk et al. 2005; for quantiles, conformalized quantile regression, Romano et al. 2019):
the scores of the validation windows, kept per horizon step k and series j, give
q̂_kj = the ⌈(n+1)·level⌉-th smallest of the n scores, so that a new window whose errors are exchangeable
with the validation ones falls inside interval(q̂) with probability ≥ level. The scores are kept (sorted),
so any level can be asked for later.

Scores of the forecast distribution (in data units, over observed actuals): the Gaussian head's CRPS
(closed form, of the calibrated Gaussian μ, q̂σ/z), the quantile head's mean pinball loss over its
quantiles (the model's own, uncalibrated).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..errors import InputError


def normal_quantile(level: float) -> float:
    """z with P(|Z| ≤ z) = level for a standard normal Z (1.645 for 0.9)."""
    from statistics import NormalDist
    return NormalDist().inv_cdf(0.5 + level / 2)


@dataclass
class Predictive:
    """The model's forecast distribution at O origins, in data units.

    point (O, H, C); sigma (O, H, C) for the gaussian head; quantiles (O, H, C, Q) at `quantile_levels`
    for the quantile head.
    """

    head: str
    point: np.ndarray
    sigma: Optional[np.ndarray] = None
    quantiles: Optional[np.ndarray] = None
    quantile_levels: Optional[List[float]] = None

    def base(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(lo, hi, scale) (O, H, C) of the interval family (module docstring)."""
        if self.head == "quantile":
            return self.quantiles[..., 0], self.quantiles[..., -1], np.ones_like(self.point)
        scale = self.sigma if self.head == "gaussian" else np.ones_like(self.point)
        return self.point, self.point, scale

    def default_q(self, level: float) -> float:
        """q of the model's own (uncalibrated) interval at `level`."""
        return normal_quantile(level) if self.head == "gaussian" else 0.0

    def interval(self, q: Any) -> Tuple[np.ndarray, np.ndarray]:
        """[lo − q·scale, hi + q·scale], q a number or (H, C); never on the wrong side of the point forecast
        (a negative CQR correction could otherwise cross the bounds)."""
        lo, hi, scale = self.base()
        return np.minimum(lo - q * scale, self.point), np.maximum(hi + q * scale, self.point)

    def scores(self, actual: np.ndarray) -> np.ndarray:
        """Conformity scores (O, H, C), NaN where the actual is missing."""
        lo, hi, scale = self.base()
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.maximum(lo - actual, actual - hi) / scale

    def distribution_score(self, actual: np.ndarray, q: Any = None, level: float = 0.9) -> Optional[Tuple[str, float]]:
        """("CRPS", value) for the gaussian head (σ scaled as interval(q) scales it at `level`), ("pinball",
        mean pinball loss over the quantiles) for the quantile head; None for the point head."""
        ok = ~np.isnan(actual)
        if self.head == "gaussian":
            sigma = self.sigma * (1.0 if q is None else q / self.default_q(level))
            return "CRPS", float(gaussian_crps(actual[ok], self.point[ok], sigma[ok]).mean())
        if self.head == "quantile":
            taus = np.asarray(self.quantile_levels)
            diff = actual[..., None] - self.quantiles  # (O, H, C, Q)
            loss = np.maximum(taus * diff, (taus - 1) * diff).mean(-1)
            return "pinball", float(loss[ok].mean())
        return None


def gaussian_crps(y: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """CRPS of N(μ, σ²) at y: σ [z (2Φ(z) − 1) + 2φ(z) − 1/√π], z = (y − μ)/σ (Gneiting et al. 2005)."""
    from scipy.stats import norm
    z = (y - mu) / sigma
    return sigma * (z * (2 * norm.cdf(z) - 1) + 2 * norm.pdf(z) - 1 / math.sqrt(math.pi))


def conformal_rank(n: int, level: float) -> int:
    """1-based rank of q̂ among n sorted scores, ⌈(n+1)·level⌉; above n when n scores are too few for `level`."""
    return math.ceil((n + 1) * level)


def conformal_index(n: int, level: float) -> int:
    """0-based index of q̂ among n sorted scores: conformal_rank − 1, at most n − 1 (with too few scores the
    largest one is used: coverage is then not guaranteed, see Calibration.shortfall)."""
    return min(conformal_rank(n, level), n) - 1


@dataclass
class Calibration:
    """Split-conformal calibration of a forecaster's intervals: the sorted validation scores of each horizon
    step and series (scores[k][j], a list), and how many validation windows gave them."""

    head: str
    scores: List[List[List[float]]]
    windows: int

    @classmethod
    def fit(cls, predictive: Predictive, actual: np.ndarray) -> "Calibration":
        """From the validation windows' forecasts and actuals (O, H, C)."""
        s = predictive.scores(actual)
        if not (~np.isnan(s)).any(axis=0).all():
            raise InputError("conformal calibration needs an observed actual at every horizon step of some "
                             "validation window; the validation part has none for some step")
        columns = [[np.sort(s[:, k, j][~np.isnan(s[:, k, j])]) for j in range(s.shape[2])]
                   for k in range(s.shape[1])]
        return cls(predictive.head, [[c.tolist() for c in row] for row in columns], s.shape[0])

    def shortfall(self, level: float) -> Optional[str]:
        """Why these windows cannot promise `level` coverage (too few of them: the conformal quantile's rank
        lies past the largest score, the same test conformal_index caps), in words; None when they can."""
        if conformal_rank(self.windows, level) <= self.windows:
            return None
        need = self.windows + 1  # the fewest windows whose rank fits: about level / (1 − level)
        while conformal_rank(need, level) > need:
            need += 1
        return (f"only {self.windows} validation windows: a {level:.0%} split-conformal interval needs at least "
                f"{need}, so the interval is the largest validation error and its coverage is not guaranteed")

    def q(self, level: float) -> np.ndarray:
        """q̂ (H, C) at `level`."""
        return np.array([[c[conformal_index(len(c), level)] for c in row] for row in self.scores])

    def to_json(self) -> Dict[str, Any]:
        return {"method": "split conformal", "head": self.head, "windows": self.windows,
                "scores": [[[float(f"{v:.6g}") for v in c] for c in row] for row in self.scores]}

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "Calibration":
        return cls(d["head"], d["scores"], int(d["windows"]))


def needed_q(predictive: Predictive, scores: np.ndarray, shape: Any, level: float) -> Any:
    """The q of the narrowest interval shaped like interval(`shape`) (q per step and series) that covers
    exactly a fraction `level` of the windows whose scores (O, H, C) are given: the shape scaled by one
    factor (gaussian, point: q = t·shape) or shifted by one offset (quantile, CQR: q = shape + t)."""
    ok = ~np.isnan(scores)
    shape = np.broadcast_to(shape, scores.shape[1:])
    if predictive.head == "quantile":
        return shape + np.quantile((scores - shape)[ok], level, method="inverted_cdf")
    with np.errstate(divide="ignore", invalid="ignore"):
        return shape * np.quantile((scores / shape)[ok], level, method="inverted_cdf")


def interval_report(predictive: Predictive, actual: np.ndarray, level: float,
                    calibration: Optional[Calibration] = None) -> Dict[str, Dict[str, float]]:
    """Coverage, mean width, the width needed (`needed_q` for the calibrated shape, else the model's own) and
    the distribution score, for the model's own interval (not the point head's: it has none) and, with
    `calibration`, the calibrated one."""
    ok = ~np.isnan(actual)
    qs = {} if predictive.head == "point" else {"uncalibrated": predictive.default_q(level)}
    if calibration is not None:
        qs["calibrated"] = calibration.q(level)
    shape = qs["calibrated" if calibration is not None else "uncalibrated"]
    lo, hi = predictive.interval(needed_q(predictive, predictive.scores(actual), shape, level))
    needed = float((hi - lo)[ok].mean())
    report = {}
    for name, q in qs.items():
        lo, hi = predictive.interval(q)
        width = float((hi - lo)[ok].mean())
        row = {"windows": int(actual.shape[0]), "coverage": float(((actual >= lo) & (actual <= hi))[ok].mean()),
               "width": width, "needed_width": needed, "width_ratio": width / needed if needed > 0 else float("nan")}
        score = predictive.distribution_score(actual, q if name == "calibrated" else None, level)
        if score is not None:
            row[score[0]] = score[1]
        report[name] = row
    return report


def interval_table(report: Dict[str, Dict[str, float]], level: float) -> str:
    """Markdown: one row per interval (calibrated first)."""
    extra = [k for k in ("CRPS", "pinball") if any(k in r for r in report.values())]
    windows = next(iter(report.values()))["windows"]
    lines = [f"| {100 * level:.0f}% interval, {windows} test windows | coverage | mean width | needed width | "
             f"width / needed |" + "".join(f" {k} |" for k in extra), "|---|" + "---:|" * (4 + len(extra))]
    for name in sorted(report, key=lambda n: n != "calibrated"):
        r = report[name]
        label = "split-conformal (validation windows)" if name == "calibrated" else "model's own"
        lines.append(f"| {label} | {100 * r['coverage']:.1f}% | {r['width']:.4g} | {r['needed_width']:.4g} | "
                     f"{r['width_ratio']:.2f} |" + "".join(f" {r[k]:.4g} |" for k in extra))
    return "\n".join(lines)
