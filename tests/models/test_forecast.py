"""Forecasters: shapes, teacher forcing vs rollout, both likelihood heads, baselines, metrics, the CLI end to end."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from rnnkit.data.timeseries import ForecastFrame, Scaler, Series, Split, WindowLoader, window_origins
from rnnkit.models.forecast import ForecastConfig, Forecaster, ForecastTask, forecast_loss, gaussian_sigma
from rnnkit.models.forecast_eval import (backtest, error_metrics, mase_scale, naive, seasonal_arima, seasonal_naive)
from rnnkit.training import TrainConfig, Trainer

C, K, L, H = 2, 2, 12, 5


def make(mode: str, head: str = "point", **kw) -> Forecaster:
    cfg = ForecastConfig(C, C + K, K, L, H, mode=mode, head=head, hidden_size=8, **kw)
    return Forecaster(cfg)


def inputs(B: int = 3):
    return torch.randn(B, L, C + K), torch.randn(B, H, K), torch.randn(B, H, C)


@pytest.mark.parametrize("mode", ["direct", "autoregressive", "seq2seq"])
@pytest.mark.parametrize("head,P", [("point", 1), ("gaussian", 2), ("quantile", 3)])
def test_shapes(mode, head, P):
    m = make(mode, head)
    x, fut, y = inputs()
    assert m(x, fut, y).shape == (3, H, C, P)
    m.eval()
    assert m(x, fut).shape == (3, H, C, P)


@pytest.mark.parametrize("mode", ["autoregressive", "seq2seq"])
def test_rollout_feeds_its_own_forecasts(mode):
    """The rolled-out forecast equals the teacher-forced one when the 'teacher' is the rollout's own point
    forecasts: each step is fed exactly the previous prediction, and never the true future."""
    m = make(mode, "gaussian").double()
    x, fut, y = (t.double() for t in inputs())
    m.eval()
    rolled = m(x, fut)
    assert torch.equal(rolled, m(x, fut, y))  # in eval mode the true targets are ignored
    m.train()  # no dropout in this model: train mode only switches on teacher forcing
    forced = m(x, fut, m.point(rolled))
    torch.testing.assert_close(forced, rolled, rtol=1e-10, atol=1e-10)
    # and teacher forcing with the true targets differs from the rollout after the first step
    tf = m(x, fut, y)
    torch.testing.assert_close(tf[:, 0], rolled[:, 0], rtol=1e-10, atol=1e-10)
    assert not torch.allclose(tf[:, 1:], rolled[:, 1:])


@pytest.mark.parametrize("mode", ["autoregressive", "seq2seq"])
def test_free_running_training_is_the_rollout(mode):
    m = make(mode, "point", teacher_forcing=0.0).double()
    x, fut, y = (t.double() for t in inputs())
    m.train()
    free = m(x, fut, y)
    m.eval()
    torch.testing.assert_close(free, m(x, fut), rtol=1e-10, atol=1e-10)
    m.config.teacher_forcing = 0.5  # mixed: some steps get the truth, so it is neither extreme
    m.train()
    mixed = m(x, fut, y)
    assert not torch.allclose(mixed[:, 1:], free[:, 1:])


def test_direct_never_sees_targets():
    m = make("direct")
    x, fut, y = inputs()
    assert torch.equal(m(x, fut, y), m(x, fut, torch.zeros_like(y)))


def test_gaussian_likelihood():
    cfg = ForecastConfig(C, C + K, K, L, H, head="gaussian")
    theta = torch.randn(3, H, C, 2, dtype=torch.float64)
    y = torch.randn(3, H, C, dtype=torch.float64)
    mask = torch.rand(3, H, C) > 0.3
    expect = -(torch.distributions.Normal(theta[..., 0], gaussian_sigma(theta[..., 1])).log_prob(y) * mask).sum()
    torch.testing.assert_close(forecast_loss(cfg, theta, y, mask), expect)


def test_quantile_pinball():
    cfg = ForecastConfig(1, 1, 0, L, 1, head="quantile", quantiles=[0.1, 0.5, 0.9])
    theta = torch.tensor([[[[0.0, 1.0, 2.0]]]])
    y = torch.tensor([[[1.5]]])
    # y above q0.1 and q0.5 (loss q·diff), below q0.9 (loss (1 − q)·|diff|)
    expect = 0.1 * 1.5 + 0.5 * 0.5 + 0.1 * 0.5
    assert float(forecast_loss(cfg, theta, y, torch.ones(1, 1, 1, dtype=torch.bool))) == pytest.approx(expect)
    assert float(forecast_loss(cfg, theta, y, torch.zeros(1, 1, 1, dtype=torch.bool))) == 0.0
    with pytest.raises(ValueError, match="include 0.5"):
        ForecastConfig(1, 1, 0, L, 1, head="quantile", quantiles=[0.1, 0.9])


def test_intervals():
    m = make("direct", "gaussian")
    theta = torch.randn(2, H, C, 2)
    p, lo, hi = m.distribution(theta, 0.9)
    torch.testing.assert_close(hi - p, 1.6448536 * gaussian_sigma(theta[..., 1]))
    q = make("direct", "quantile", quantiles=[0.05, 0.5, 0.95])
    theta = torch.randn(2, H, C, 3)
    p, lo, hi = q.distribution(theta)
    assert torch.equal(p, theta[..., 1]) and torch.equal(lo, theta[..., 0]) and torch.equal(hi, theta[..., 2])


def test_bad_config():
    with pytest.raises(ValueError, match="horizon must be a positive int; got 0"):
        ForecastConfig(1, 1, 0, L, 0)
    with pytest.raises(ValueError, match="num_features must be 3"):
        ForecastConfig(1, 5, 2, L, 2)
    m = make("direct")
    with pytest.raises(ValueError, match=r"expects x of shape \(batch, 12, 4\); got \(3, 11, 4\)"):
        m(torch.randn(3, 11, 4), torch.randn(3, H, K))


# ------------------------------------------------------------------ training and evaluation
def sine_series(n: int = 400, period: int = 24, missing=()) -> Series:
    t = pd.date_range("2024-01-01", periods=n, freq="h")
    rng = np.random.default_rng(0)
    v = (10 + 3 * np.sin(2 * np.pi * np.arange(n) / period) + 0.1 * rng.standard_normal(n))[:, None]
    obs = np.ones_like(v, bool)
    for i in missing:
        v[i] = np.nan
        obs[i] = False
    return Series(v, obs, t.values, "h", ["v"])


@pytest.mark.parametrize("mode,head", [("direct", "gaussian"), ("autoregressive", "quantile"), ("seq2seq", "point")])
def test_training_reduces_loss(mode, head):
    s = sine_series()
    sp = Split(300, 350, 400)
    frame = ForecastFrame(s, Scaler.fit(s.values[:300]), ["hour"])
    cfg = ForecastConfig(1, frame.num_features, frame.num_calendar, 24, 6, mode=mode, head=head, hidden_size=16)
    model = Forecaster(cfg)
    train = WindowLoader(frame, window_origins(0, sp.n_train, 24, 6, 3), 24, 6, 16, shuffle=True)
    val = WindowLoader(frame, window_origins(sp.n_train, sp.n_val, 24, 6), 24, 6, 64)
    trainer = Trainer(model, ForecastTask(), train, TrainConfig(max_steps=60, lr=1e-2, quiet=True,
                                                                tensorboard=False), val_data=val)
    before = trainer.evaluate()["val_loss"]
    trainer.fit()
    after = trainer.evaluate()["val_loss"]
    assert after < before - 0.3 * abs(before)


def test_masked_targets_are_skipped():
    s = sine_series(missing=range(100, 110))
    sc = Scaler.fit(np.where(s.observed, s.values, np.nan)[:300])
    frame = ForecastFrame(s, sc, [], mask_missing=True)
    b = frame.batch(np.array([95]), 24, 10)
    assert int(b["y_mask"].sum()) == 5
    cfg = ForecastConfig(1, 2, 0, 24, 10, masked=True, hidden_size=4)
    model = Forecaster(cfg)
    r = ForecastTask().loss(model, b)
    assert int(r.count) == 5
    b2 = dict(b, y=b["y"].clone())
    b2["y"][0, 5:] = 1e6  # values at masked steps do not count
    assert torch.equal(ForecastTask().loss(model, b2).loss_sum, r.loss_sum)


def test_metrics_by_hand():
    a = np.array([[[1.0], [2.0], [4.0]]])
    p = np.array([[[2.0], [2.0], [2.0]]])
    m = error_metrics(a, p, np.array([2.0]))
    assert m["MAE"] == pytest.approx(1.0) and m["RMSE"] == pytest.approx(math.sqrt(5 / 3))
    assert m["MAPE"] == pytest.approx(100 * (1 + 0 + 0.5) / 3)
    assert m["sMAPE"] == pytest.approx(200 * (1 / 3 + 0 + 2 / 6) / 3)
    assert m["MASE"] == pytest.approx(0.5)
    np.testing.assert_allclose(mase_scale(np.array([[1.0], [3.0], [2.0], [5.0], [4.0]]), 1), [1.75])


def test_baselines():
    h = np.arange(48.0) % 24
    assert (naive(h, 3, 24) == 23).all()
    np.testing.assert_array_equal(seasonal_naive(h, 30, 24), np.arange(30.0) % 24)


def test_seasonal_arima_undifferences(monkeypatch):
    """SARIMA(2,0,1)(0,1,0)_m forecasts d̂ for y_t − y_{t−m}; y is rebuilt recursively past one season."""
    import statsmodels.tsa.arima.model as arima

    class Fake:  # the fitted ARMA forecasts a constant d̂ = 1 for every step
        def __init__(self, d, **kw):
            self.d = d

        def fit(self):
            return self

        def forecast(self, h):
            return np.ones(h)

    monkeypatch.setattr(arima, "ARIMA", Fake)
    h = np.arange(40.0) % 4
    out = seasonal_arima(h, 10, 4)
    # y_{n+k} = 1 + y_{n+k−4}: one season ahead last season + 1, two seasons ahead + 2
    np.testing.assert_array_equal(out, (np.arange(10) % 4) + 1 + np.arange(10) // 4)


@pytest.mark.slow
def test_seasonal_arima_real_fit():
    # (noise keeps the ARMA fit well-posed: on an exact wave the differenced series is constant)
    wave = 5 + np.sin(2 * np.pi * np.arange(6 * 8) / 6) + 0.3 * np.random.default_rng(0).standard_normal(48)
    err = np.abs(seasonal_arima(wave, 12, 6) - (5 + np.sin(2 * np.pi * np.arange(12) / 6)))
    assert err.mean() < 0.5


def test_backtest_uses_the_same_windows():
    s = sine_series(n=300)
    frame = ForecastFrame(s, Scaler.fit(s.values[:200]), [])
    model = Forecaster(ForecastConfig(1, 1, 0, 24, 6, hidden_size=4))
    bt = backtest(model, frame, Split(200, 250, 300), season=24, baselines=["naive", "seasonal_naive"])
    assert list(bt.origins) == [250, 256, 262, 268, 274, 280, 286, 292]
    np.testing.assert_array_equal(bt.actual[0, :, 0], s.values[250:256, 0])
    assert set(bt.metrics) == {"model", "naive", "seasonal_naive"}
    assert bt.metrics["seasonal_naive"]["MAE"] < 0.5  # a clean daily sine: last day's value is close
    assert "does NOT beat" in bt.verdict()  # an untrained model loses, and says so


# ------------------------------------------------------------------ CLI
def test_cli_train_and_forecast(tmp_path):
    from rnnkit.cli import main
    s = sine_series(n=260)
    p = tmp_path / "load.csv"
    pd.DataFrame({"when": pd.DatetimeIndex(s.times), "load": s.values[:, 0]}).to_csv(p, index=False)
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        _run(main, ["train", "forecast", "--data", str(p), "--time-column", "when", "--lookback", "24",
                    "--horizon", "6", "--hidden-size", "8", "--max-steps", "4", "--baselines", "naive,seasonal_naive",
                    "--out", str(out), "--quiet", "--no-tensorboard", "--mode", "seq2seq"])
    assert e.value.code == 0
    for name in ("results.md", "results.json", "forecast.csv", "forecast.png", "best.safetensors"):
        assert (out / name).is_file(), name
    table = (out / "results.md").read_text()
    assert "| seasonal naive |" in table and "| model |" in table
    fc = tmp_path / "fc"
    with pytest.raises(SystemExit) as e:
        _run(main, ["forecast", "--checkpoint", str(out), "--out", str(fc)])
    assert e.value.code == 0
    df = pd.read_csv(fc / "forecast.csv")
    assert len(df) == 6 and df["time"].iloc[0] == str(pd.Timestamp(s.times[-1]) + pd.Timedelta("1h"))
    assert (fc / "forecast.png").stat().st_size > 1000


def _run(main, argv):
    main(argv)
    raise SystemExit(0)


def test_cli_bad_input_one_line(tmp_path, capsys):
    from rnnkit.cli import main
    p = tmp_path / "x.csv"
    p.write_text("time,load\n2024-01-01 00:00,1\n2024-01-01 01:00,2\n2024-01-01 02:00,3\n")
    with pytest.raises(SystemExit) as e:
        main(["train", "forecast", "--data", str(p), "--value-columns", "traffic", "--out", str(tmp_path / "r")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no value column 'traffic'" in err
    with pytest.raises(SystemExit) as e:
        main(["train", "forecast", "--data", str(p), "--lookback", "10", "--out", str(tmp_path / "r")])
    assert "lookback 10 + horizon 24 is longer than the series (3 steps)" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # nothing written for a run that could not start
