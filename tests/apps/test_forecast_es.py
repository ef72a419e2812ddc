"""The ES-RNN hybrid (`es`) end to end on a tiny made-up series: it trains, is saved with the run, loads and
forecasts the same numbers, backtests and calibrates; settings it cannot work with say why."""

from __future__ import annotations

import numpy as np
import pytest

from rnnkit.apps import forecast
from rnnkit.data.synthetic_series import seasonal_trend_series
from rnnkit.errors import InputError

pytest.importorskip("statsmodels")


def tiny(folder, **changes) -> forecast.ForecastSettings:
    seasonal_trend_series(240, seed=1).to_csv(folder / "series.csv", index=False)
    base = dict(data=str(folder / "series.csv"), out=str(folder / "run"), lookback=24, horizon=6, hidden_size=4,
                batch_size=8, max_steps=4, baselines="seasonal_naive", quiet=True, tensorboard=False, es="auto")
    return forecast.ForecastSettings(**{**base, **changes})


def test_an_es_rnn_run_trains_saves_loads_and_forecasts(tmp_path):
    run = forecast.train(tiny(tmp_path, head="quantile"))
    loaded = forecast.load(tmp_path / "run")
    saved = loaded.info["es"]  # read back from the run directory
    assert saved["kinds"] == ["multiplicative"] and saved["season"] == 24 and 0 < saved["alpha"][0] <= 1
    assert "ES-RNN (auto)" in (tmp_path / "run" / "results.md").read_text()
    fc = forecast.forecast(run)
    # forecasts are in data units: near the series' last day, not near the normalised remainder (about 1)
    assert 60 < fc.values.mean() < 160 and (fc.lower <= fc.values).all() and (fc.values <= fc.upper).all()
    np.testing.assert_allclose(forecast.forecast(loaded).values, fc.values, rtol=1e-6)
    assert forecast.backtest(loaded).metrics["model"]["MAE"] == pytest.approx(run.results["metrics"]["model"]["MAE"])
    assert forecast.backtest(loaded).intervals["calibrated"]["coverage"] > 0
    # past the horizon (a season and a half: the level and season states run on over the model's own forecasts)
    far = forecast.forecast(loaded, steps=36)
    np.testing.assert_allclose(far.values[:6], fc.values, rtol=1e-6)
    assert np.isfinite(far.values).all() and 60 < far.values.mean() < 160


def test_the_hybrid_changes_what_the_network_sees(tmp_path):
    es = forecast.train(tiny(tmp_path, max_steps=1, es_level_smoothing=0.3))
    plain = forecast.train(tiny(tmp_path, max_steps=1, es="none", out=str(tmp_path / "plain")))
    assert plain.info["es"] is None and es.info["es"]["alpha"] == [pytest.approx(0.3)]
    assert not np.allclose(forecast.forecast(es).values, forecast.forecast(plain).values)


@pytest.mark.parametrize("changes,needle", [
    (dict(season=200),
     r"es: the training part of .*series.csv \(es auto, season 200\) \(16\d steps\) must hold two seasons"),
    (dict(es="none", es_level_smoothing=0.5), "es_level_smoothing has no effect with es none"),
])
def test_settings_the_hybrid_cannot_use_say_why(tmp_path, changes, needle):
    with pytest.raises(InputError, match=needle):
        forecast.train(tiny(tmp_path, **changes))


def test_a_series_starting_later_gets_the_seasonal_phase_of_its_timestamps(tmp_path):
    run = forecast.train(tiny(tmp_path, es_level_smoothing=0.3))
    full = seasonal_trend_series(240, seed=1)
    recent = full.iloc[101:].reset_index(drop=True)  # starts 101 steps (5 in the season of 24) later
    np.testing.assert_allclose(forecast.forecast(run, recent).values, forecast.forecast(run, full).values,
                               rtol=0.01)
