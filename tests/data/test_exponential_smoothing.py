"""The ES of the ES-RNN hybrid: the Holt-Winters recursion matches statsmodels, a window's normalisation inverts
exactly and reads nothing after its origin, and fits that cannot work say why."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from rnnkit.data.exponential_smoothing import ESDecomposition
from rnnkit.data.synthetic_series import seasonal_trend_series
from rnnkit.data.timeseries import ForecastFrame, Scaler, Series
from rnnkit.errors import InputError

pytest.importorskip("statsmodels")

M = 12


def series(n: int = 240, additive: bool = False, seed: int = 0) -> np.ndarray:
    """(n, 2): a multiplicative seasonal series with trend, and a second column (additive if asked)."""
    t = np.arange(n)
    rng = np.random.default_rng(seed)
    first = (10 + 0.05 * t) * (1 + 0.3 * np.sin(2 * np.pi * t / M)) * np.exp(0.05 * rng.standard_normal(n))
    second = 3 * np.cos(2 * np.pi * t / M) + 0.02 * t + 0.3 * rng.standard_normal(n)
    return np.stack([first, second if additive else 5 + second], axis=1)


@pytest.mark.parametrize("kind", ["mul", "add"])
def test_the_recursion_reproduces_statsmodels_one_step_forecasts(kind):
    from statsmodels.tsa.holtwinters import ExponentialSmoothing
    y = series()[:, 0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = ExponentialSmoothing(y, trend=None, seasonal=kind, seasonal_periods=M,
                                   initialization_method="estimated").fit(smoothing_seasonal=0.3)
    p = fit.params
    es = ESDecomposition(M, ["multiplicative" if kind == "mul" else "additive"], np.array([p["smoothing_level"]]),
                         np.array([p["smoothing_seasonal"]]), np.array([p["initial_level"]]),
                         np.asarray(p["initial_seasons"])[:, None])
    a, b = es.step_affine(es.filter(y[:, None]), len(y))
    one_step = a + b if kind == "mul" else a  # the forecast of a remainder of 1 (mul) or 0 (add)
    np.testing.assert_allclose(one_step[:, 0], fit.fittedvalues, rtol=1e-10)


def test_normalising_then_denormalising_a_frame_is_the_identity():
    values = series(additive=True)
    es = ESDecomposition.fit(values[:150], M)
    assert es.kinds == ["multiplicative", "additive"] and (es.alpha > 0).all()
    frame = ForecastFrame(Series(values, np.ones_like(values, bool), None, None, ["a", "b"]),
                          Scaler(np.array([1.0, 0.5]), np.array([0.2, 3.0])), es=es)
    origins = np.array([30, 100, 200, 228])
    z = frame.batch(origins, 24, M)["y"].double().numpy()  # (4, H, 2) what the network is trained on
    assert np.abs(z).mean() < 2 and np.abs(z).mean() > 0
    np.testing.assert_allclose(frame.to_data(z, origins), values[origins[:, None] + np.arange(M)], rtol=2e-6)
    a, b = es.window_affine(frame.es_states, origins, 24, M)
    raw = values[origins[:, None] + np.arange(-24, M)]
    np.testing.assert_allclose(es.inverse(es.normalise(raw, a, b), a, b), raw, rtol=1e-13)


def test_a_window_is_normalised_by_nothing_after_its_origin():
    values = series()
    es = ESDecomposition.fit(values[:150], M)
    changed = values.copy()
    changed[181:] *= 3.0
    before = es.window_affine(es.filter(values), np.array([181]), 24, 30)
    after = es.window_affine(es.filter(changed), np.array([181]), 24, 30)
    np.testing.assert_array_equal(before[0], after[0])
    np.testing.assert_array_equal(before[1], after[1])


def test_a_saved_decomposition_loads_unchanged():
    es = ESDecomposition.fit(series()[:150], M, level_smoothing=0.2)
    again = ESDecomposition.from_json(es.to_json())
    assert es.alpha.tolist() == pytest.approx([0.2, 0.2]) and again.kinds == es.kinds
    np.testing.assert_array_equal(again.filter(series())[1], es.filter(series())[1])


@pytest.mark.parametrize("train,kind,needle", [
    (series()[:20], "auto", r"\(20 steps\) must hold two seasons \(2 × 12 steps\)"),
    (series(additive=True)[:150], "multiplicative", "needs a positive series; column 1 of the training part reaches"),
    (series()[:150], "trend", "es must be one of auto, multiplicative, additive"),
])
def test_fits_that_cannot_work_say_why(train, kind, needle):
    with pytest.raises(InputError, match=needle):
        ESDecomposition.fit(train, M, kind)


def test_the_generated_series_has_its_stated_structure():
    frame = seasonal_trend_series(24 * 7 * 4, seed=3)
    assert frame.equals(seasonal_trend_series(24 * 7 * 4, seed=3))
    detrended = frame["value"].to_numpy() / (100 + 0.02 * np.arange(len(frame)))
    daily = detrended.reshape(-1, 24).mean(axis=0)  # the mean day of 4 whole weeks: 1 + 0.3 sin(2π h / 24)
    np.testing.assert_allclose(daily, 1 + 0.3 * np.sin(2 * np.pi * np.arange(24) / 24), atol=0.03)
