"""The exposure-bias experiment: errors by horizon step, the verdict, and a tiny run end to end."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rnnkit import experiments
from rnnkit.errors import InputError
from rnnkit.experiments import exposure_bias


def test_errors_by_step_skip_missing_actuals():
    forecasts = np.zeros((2, 3, 1))
    actual = np.array([[[1.0], [2.0], [np.nan]], [[3.0], [np.nan], [5.0]]])
    np.testing.assert_allclose(exposure_bias.errors_by_step(forecasts, actual), [2.0, 2.0, 5.0])


def test_verdict_on_made_up_errors():
    holds, line = exposure_bias.verdict({"teacher forcing": 10.0, "scheduled sampling": 9.0,
                                         "free running": 9.5}, margin=0.02)
    assert holds and "9 for scheduled sampling" in line and "+10.0%" in line
    holds, line = exposure_bias.verdict({"teacher forcing": 10.0, "scheduled sampling": 9.9,
                                         "free running": 10.5}, margin=0.02)
    assert not holds and "does NOT hold" in line


@pytest.mark.parametrize("changes", [dict(sampling=1.0), dict(sampling=0.0), dict(horizon=1), dict(steps=0)])
def test_settings_reject(changes):
    with pytest.raises(InputError):
        exposure_bias.ExposureBiasSettings(**changes)


def test_run_end_to_end_on_a_tiny_series(tmp_path):
    t = np.arange(400)
    series = tmp_path / "series.txt"
    series.write_text("\n".join(f"{v:.4f}" for v in 10 + np.sin(2 * np.pi * t / 12)), encoding="utf-8")
    s = exposure_bias.ExposureBiasSettings(data=str(series), hidden_size=4, lookback=12, horizon=4, steps=4,
                                           eval_every=2, batch_size=8, out=str(tmp_path / "out"), quiet=True)
    results = experiments.run_experiment(exposure_bias, s)
    assert list(results["metrics"]) == ["teacher forcing", "scheduled sampling", "free running", "seasonal_naive"]
    assert all(len(v) == 4 for v in results["mae_by_step"].values())
    assert [c["steps"] for c in results["curves"]] == [[2, 4]] * 3
    for name, m in results["metrics"].items():  # the mean of the per-step errors is the backtest MAE
        assert math.isclose(np.mean(results["mae_by_step"][name]), m["MAE"], rel_tol=1e-6)
    assert (tmp_path / "out" / "exposure-bias.png").read_bytes()[:4] == b"\x89PNG"
    assert "teacher forcing" in (tmp_path / "out" / "results.md").read_text()
