"""rnnkit.apps.forecast from Python, as a notebook user writes it: train on a tiny made-up series, forecast
past its end, backtest against the baselines, and the same from the run directory (`forecast.load`, `rnnkit.apps.load`)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from rnnkit import apps
from rnnkit.apps import forecast
from rnnkit.data.text import DataError
from rnnkit.errors import InputError

pytest.importorskip("statsmodels")


def hourly(n: int = 200) -> pd.DataFrame:
    t = pd.date_range("2024-01-01", periods=n, freq="h")
    load = 10 + np.sin(2 * np.pi * np.arange(n) / 24) + 0.1 * np.random.default_rng(0).standard_normal(n)
    return pd.DataFrame({"time": t, "load": load})


def maes(result) -> dict:
    metrics = result["metrics"] if isinstance(result, dict) else result.metrics
    return {method: m["MAE"] for method, m in metrics.items()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("forecast")
    hourly().to_csv(folder / "series.csv", index=False)
    settings = forecast.ForecastSettings(data=str(folder / "series.csv"), out=str(folder / "run"), lookback=12,
                                         horizon=3, hidden_size=4, batch_size=8, max_steps=3,
                                         baselines="naive,seasonal_naive", quiet=True, tensorboard=False)
    return forecast.train(settings), folder


def test_train_writes_the_report_and_returns_the_run(trained):
    run, folder = trained
    out = folder / "run"
    for name in ("results.md", "results.json", "forecast.csv", "forecast.png", "best.safetensors"):
        assert (out / name).is_file(), name
    assert set(run.results["metrics"]) == {"model", "naive", "seasonal_naive"}
    assert json.loads((out / "results.json").read_text())["verdict"] == run.results["verdict"]
    assert "| seasonal naive |" in (out / "results.md").read_text()


def test_forecast_past_the_end(trained, tmp_path):
    run, _ = trained
    fc = forecast.forecast(run)
    assert fc.values.shape == fc.lower.shape == fc.upper.shape == (3, 1) and fc.columns == ["load"]
    assert list(fc.times) == list(pd.date_range("2024-01-09 08:00", periods=3, freq="h").values)
    assert (fc.lower <= fc.values).all() and (fc.values <= fc.upper).all() and (fc.lower < fc.upper).all()
    table = fc.to_frame()
    assert table["forecast"].tolist() == pytest.approx(fc.values[:, 0].tolist())
    csv, png = fc.save(tmp_path / "next")
    assert pd.read_csv(csv)["forecast"].tolist() == pytest.approx(fc.values[:, 0].tolist()) and png.is_file()
    # new data in a DataFrame: the forecast starts after its end
    longer = forecast.forecast(run, hourly(210))
    assert longer.times[0] == pd.Timestamp("2024-01-09 18:00").to_datetime64()
    with pytest.raises(DataError, match=r"columns \['traffic'\]; the model was trained on \['load'\]"):
        forecast.forecast(run, hourly().rename(columns={"load": "traffic"}))


def test_forecast_further_than_the_horizon_goes_on_from_its_own_forecasts(trained, tmp_path, capsys):
    run, folder = trained
    one = forecast.forecast(run)
    assert forecast.forecast(run, steps=2).values[:, 0].tolist() == pytest.approx(one.values[:2, 0].tolist())
    far = forecast.forecast(run, steps=8)  # horizon 3: three rounds, the last cut to 2 steps
    assert far.values.shape == far.lower.shape == (8, 1)
    assert list(far.times) == list(pd.date_range("2024-01-09 08:00", periods=8, freq="h").values)
    np.testing.assert_allclose(far.values[:3], one.values, rtol=1e-6)
    np.testing.assert_allclose(far.lower[:3], one.lower, rtol=1e-6)
    assert np.isnan(far.lower[3:]).all() and np.isnan(far.upper[3:]).all()  # no calibrated interval past H
    # rounds 2 and 3 are the model's forecasts from the series continued by its own
    data = hourly()
    continued = pd.concat([data, pd.DataFrame({"time": far.times[:3], "load": one.values[:, 0]})], ignore_index=True)
    np.testing.assert_allclose(far.values[3:6], forecast.forecast(run, continued).values, rtol=1e-5)
    csv, png = far.save(tmp_path / "far")
    table = pd.read_csv(csv)
    assert len(table) == 8 and table["lower"].isna().sum() == 5 and png.is_file()
    with pytest.raises(InputError, match=r"^steps must be a positive int \(how many steps to forecast\); got 0$"):
        forecast.forecast(run, steps=0)
    from rnnkit.cli import main
    main(["forecast", "--checkpoint", str(folder / "run"), "--steps", "7", "--out", str(tmp_path / "cli")])
    assert "forecast of 7 steps" in capsys.readouterr().out and len(pd.read_csv(tmp_path / "cli" / "forecast.csv")) == 7


def test_backtest_and_load_agree_with_the_trained_run(trained):
    run, folder = trained
    bt = forecast.backtest(run)
    assert maes(bt) == pytest.approx(maes(run.results))  # the run's baselines, its best weights
    for loaded in (forecast.load(folder / "run"), apps.load(folder / "run")):
        assert loaded.app == "forecast"
        np.testing.assert_allclose(forecast.forecast(loaded).values, forecast.forecast(run).values, rtol=1e-6)
        assert maes(forecast.backtest(loaded)) == pytest.approx(maes(bt))
    only_naive = forecast.backtest(run, baselines=["naive"], stride=1)
    assert set(only_naive.metrics) == {"model", "naive"} and len(only_naive.origins) > len(bt.origins)


def test_a_backtest_of_the_validation_part_stays_inside_it(trained):
    run, _ = trained
    n_train, n_val, _ = run.info["split"]
    bt = forecast.backtest(run, baselines=["naive"], stride=1, part="validation")
    assert bt.origins.min() == n_train and bt.origins.max() == n_val - run.model.config.horizon
    assert maes(bt) != pytest.approx(maes(forecast.backtest(run, baselines=["naive"], stride=1)))
    with pytest.raises(InputError, match="backtest part must be 'test' or 'validation'; got 'train'"):
        forecast.backtest(run, part="train")


def test_the_conformal_calibration_is_kept_in_the_run_and_used_after_load(trained, tmp_path):
    run, folder = trained
    saved = json.loads((folder / "run" / "calibration.json").read_text())
    assert saved["method"] == "split conformal" and saved["windows"] == 28  # every validation window
    assert len(saved["scores"]) == 3  # one list of scores per horizon step
    assert "split-conformal" in (folder / "run" / "results.md").read_text()
    assert set(run.results["intervals"]) == {"calibrated", "uncalibrated"}
    loaded = forecast.load(folder / "run")
    again, first = forecast.forecast(loaded), forecast.forecast(run)
    np.testing.assert_allclose(again.lower, first.lower, rtol=1e-5)  # scores are kept to 6 digits
    np.testing.assert_allclose(again.upper, first.upper, rtol=1e-5)
    calibrated = forecast.backtest(loaded).intervals["calibrated"]
    assert calibrated == pytest.approx(run.results["intervals"]["calibrated"], rel=1e-4)
    # without the file the interval is the model's own (μ ± 1.645σ): a different one
    shutil.copytree(folder / "run", tmp_path / "bare")
    (tmp_path / "bare" / "calibration.json").unlink()
    bare = forecast.forecast(forecast.load(tmp_path / "bare"))
    assert not np.allclose(bare.upper - bare.lower, forecast.forecast(run).upper - forecast.forecast(run).lower)
    (tmp_path / "bare" / "calibration.json").write_text("{}")
    with pytest.raises(InputError, match="is not a calibration file"):
        forecast.forecast(forecast.load(tmp_path / "bare"))


def test_a_point_forecaster_gets_a_conformal_interval(tmp_path):
    hourly().to_csv(tmp_path / "series.csv", index=False)
    run = forecast.train(forecast.ForecastSettings(
        data=str(tmp_path / "series.csv"), out=str(tmp_path / "run"), lookback=12, horizon=3, hidden_size=4,
        batch_size=8, max_steps=3, head="point", level=0.8, baselines="naive", quiet=True, tensorboard=False))
    fc = forecast.forecast(forecast.load(tmp_path / "run"))
    assert (fc.lower < fc.values).all() and (fc.values < fc.upper).all()
    assert set(run.results["intervals"]) == {"calibrated"}
    assert "Warning" not in (tmp_path / "run" / "results.md").read_text()


def test_too_few_validation_windows_for_the_level_are_named(tmp_path, capsys):
    """A 99% interval needs 99 validation windows; with fewer the report says its coverage is not promised."""
    hourly().to_csv(tmp_path / "series.csv", index=False)
    run = forecast.train(data=str(tmp_path / "series.csv"), out=str(tmp_path / "run"), lookback=12, horizon=3,
                         hidden_size=4, batch_size=8, max_steps=2, level=0.99, baselines="naive", quiet=True,
                         tensorboard=False)
    windows = json.loads((tmp_path / "run" / "calibration.json").read_text())["windows"]
    assert windows < 99
    assert (f"only {windows} validation windows: a 99% split-conformal interval needs at least 99"
            in (tmp_path / "run" / "results.md").read_text())


@pytest.mark.parametrize("changes,needle", [
    (dict(head="quantile", quantiles="0.1,0.9"), "quantiles must be increasing, in (0, 1) and include 0.5"),
    (dict(aggregate="sum"), "aggregate has no effect without freq"),
    (dict(head="point", quantiles="0.2,0.5,0.8"), "quantiles has no effect with head point"),
    (dict(baselines="naive,prophet"), "baselines: unknown baseline 'prophet'"),
    (dict(calendar="hour,month"), "calendar: unknown feature 'month'"),
    (dict(format="kaggle-ipasn", machines="1,x"), "machines must be integers"),
    (dict(val_fraction=0.6), "val_fraction must be a number in [0, 0.5]"),
])
def test_settings_errors_name_the_setting(changes, needle):
    with pytest.raises(InputError) as err:
        forecast.ForecastSettings(**changes)
    assert needle in str(err.value)


def test_a_run_trained_on_a_relative_path_forecasts_from_another_folder(tmp_path, monkeypatch):
    """The data path is recorded absolute: the run, loaded in another folder, still finds its series."""
    (tmp_path / "here").mkdir()
    (tmp_path / "elsewhere").mkdir()
    hourly().to_csv(tmp_path / "here" / "series.csv", index=False)
    monkeypatch.chdir(tmp_path / "here")
    run = forecast.train(data="series.csv", out="run", lookback=12, horizon=3, hidden_size=4, batch_size=8,
                         max_steps=2, baselines="naive", quiet=True, tensorboard=False)
    assert run.settings.data == str(tmp_path / "here" / "series.csv")
    monkeypatch.chdir(tmp_path / "elsewhere")
    again = apps.load(tmp_path / "here" / "run")
    assert forecast.forecast(again).values.shape == (3, 1)
    assert forecast.backtest(again).metrics.keys() >= {"model", "naive"}
