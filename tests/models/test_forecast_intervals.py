"""Split-conformal forecast intervals (rnnkit.models.forecast_intervals) on made-up forecasts with known noise."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from rnnkit.models.forecast_intervals import (Calibration, Predictive, conformal_index, gaussian_crps,
                                              interval_report, interval_table)

pytest.importorskip("scipy")

O, H = 3000, 4
NOISE = np.array([1.0, 2.0, 3.0, 4.0])  # the noise grows with the horizon step


def windows(seed: int, n: int = O) -> np.ndarray:
    """Actuals (n, H, 1) around a known mean 0, noise σ_k per step k."""
    return (np.random.default_rng(seed).standard_normal((n, H, 1)) * NOISE[None, :, None])


def gaussian(n: int = O, sigma: float = 1.0) -> Predictive:
    """A Gaussian head that knows the mean but claims the same σ at every step (too narrow from step 2 on)."""
    return Predictive("gaussian", np.zeros((n, H, 1)), sigma=np.full((n, H, 1), sigma))


def quantile(n: int = O) -> Predictive:
    """A quantile head whose 5%/95% quantiles are those of N(0, 1): too narrow from step 2 on."""
    qs = np.broadcast_to(np.array([-1.645, 0.0, 1.645]), (n, H, 1, 3)).copy()
    return Predictive("quantile", np.zeros((n, H, 1)), quantiles=qs, quantile_levels=[0.05, 0.5, 0.95])


def covered(pred: Predictive, actual: np.ndarray, q) -> np.ndarray:
    lo, hi = pred.interval(q)
    return ((actual >= lo) & (actual <= hi)).mean(axis=(0, 2))  # per step


@pytest.mark.parametrize("make", [gaussian, quantile, lambda n=O: Predictive("point", np.zeros((n, H, 1)))])
def test_calibrated_coverage_is_near_nominal_at_every_step(make):
    calibration = Calibration.fit(make(), windows(0))
    test = windows(1)
    own = covered(make(), test, make().default_q(0.9))
    assert own[-1] < 0.6  # the model's own interval is far too narrow at the last step (point: empty)
    for level in (0.8, 0.9):  # the kept scores serve any level
        per_step = covered(make(), test, calibration.q(level))
        assert np.all(np.abs(per_step - level) < 0.03), per_step


def test_width_is_what_is_needed_and_the_report_says_so():
    calibration = Calibration.fit(gaussian(), windows(0))
    report = interval_report(gaussian(), windows(1), 0.9, calibration)
    cal, own = report["calibrated"], report["uncalibrated"]
    assert abs(cal["coverage"] - 0.9) < 0.02 and own["coverage"] < 0.75
    assert 0.95 < cal["width_ratio"] < 1.05 and own["width_ratio"] < 0.7
    # calibrated σ' = q̂σ/z is the true σ_k: its CRPS beats the overconfident model's own
    assert cal["CRPS"] < own["CRPS"]
    table = interval_table(report, 0.9)
    assert table.splitlines()[2].startswith("| split-conformal") and "CRPS" in table.splitlines()[0]


def test_calibration_survives_json():
    calibration = Calibration.fit(quantile(200), windows(0, 200))
    back = Calibration.from_json(json.loads(json.dumps(calibration.to_json())))
    np.testing.assert_allclose(back.q(0.9), calibration.q(0.9), rtol=1e-5)
    assert back.windows == 200 and back.head == "quantile"


def test_missing_actuals_are_left_out():
    actual = windows(0, 500)
    actual[::2, 0, 0] = np.nan  # half of step 0 unobserved
    calibration = Calibration.fit(gaussian(500), actual)
    assert len(calibration.scores[0][0]) == 250 and len(calibration.scores[1][0]) == 500


def test_conformal_index_is_the_finite_sample_quantile():
    assert conformal_index(19, 0.9) == 17  # ⌈20 · 0.9⌉ = 18th smallest
    assert conformal_index(99, 0.9) == 89
    assert conformal_index(5, 0.9) == 4  # too few scores: the largest


def test_gaussian_crps_matches_the_integral():
    from scipy.stats import norm
    y, mu, sigma = 0.7, 0.2, 1.3
    x = np.linspace(-15, 15, 200001)
    integral = np.trapezoid((norm.cdf(x, mu, sigma) - (x >= y)) ** 2, x)
    assert float(gaussian_crps(np.array(y), np.array(mu), np.array(sigma))) == pytest.approx(integral, rel=1e-4)


def test_quantile_pinball_by_hand():
    pred = Predictive("quantile", np.zeros((1, 1, 1)), quantiles=np.array([[[[-1.0, 0.0, 1.0]]]]),
                      quantile_levels=[0.1, 0.5, 0.9])
    name, value = pred.distribution_score(np.array([[[2.0]]]))
    # y = 2: pinball_τ = τ (y − q): 0.1·3, 0.5·2, 0.9·1 → mean 2.2 / 3
    assert name == "pinball" and value == pytest.approx((0.3 + 1.0 + 0.9) / 3)
    assert math.isclose(pred.scores(np.array([[[2.0]]]))[0, 0, 0], 1.0)  # CQR: 1 above the upper quantile
