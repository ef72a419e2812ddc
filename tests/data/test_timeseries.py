"""Time-series data: loading, explicit missing values, bad input, time split, windows and a train-only scaler."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rnnkit.data.text import DataError
from rnnkit.data.timeseries import (ForecastFrame, Scaler, WindowLoader, calendar_features, load_kaggle_ipasn,
                                    load_series, split_by_time, window_origins)


def write_csv(path: Path, n: int = 48, freq: str = "h", drop=(), **extra) -> Path:
    t = pd.date_range("2024-01-01", periods=n, freq=freq)
    df = pd.DataFrame({"time": t, "load": np.arange(n, dtype=float), **extra})
    df = df.drop(index=list(drop))
    df.to_csv(path, index=False)
    return path


# ------------------------------------------------------------------ loading and missing values
def test_csv_regular(tmp_path):
    s = load_series(write_csv(tmp_path / "a.csv"), time_column="time", value_columns=["load"])
    assert s.values.shape == (48, 1) and s.freq == "h" and s.missing == {"load": 0}
    assert s.observed.all()


def test_missing_steps_are_reported_then_interpolated(tmp_path):
    s = load_series(write_csv(tmp_path / "a.csv", drop=(5, 6, 20)), time_column="time")
    assert len(s) == 48  # the grid is complete again: gaps are steps, not dropped rows
    assert s.missing == {"load": 3}
    assert any("missing steps: load: 3" in line and "interpolation" in line for line in s.report)
    np.testing.assert_allclose(s.values[:, 0], np.arange(48.0))  # linear data: interpolation is exact
    assert not s.observed[5, 0] and not s.observed[20, 0] and s.observed[4, 0]


def test_missing_mask_keeps_nan(tmp_path):
    s = load_series(write_csv(tmp_path / "a.csv", drop=(5,)), time_column="time", missing="mask")
    assert np.isnan(s.values[5, 0]) and s.missing == {"load": 1}
    sc = Scaler.fit(np.where(s.observed, s.values, np.nan)[:30])
    frame = ForecastFrame(s, sc, [], mask_missing=True)
    assert frame.num_features == 2  # value + observed flag
    assert frame.features[5, 1] == 0.0 and frame.features[5, 0] == 0.0 and not frame.target_mask[5, 0]


def test_missing_error_policy(tmp_path):
    with pytest.raises(DataError, match="1 missing steps"):
        load_series(write_csv(tmp_path / "a.csv", drop=(5,)), time_column="time", missing="error")


def test_resample_to_frequency(tmp_path):
    p = write_csv(tmp_path / "a.csv", n=48, freq="30min")
    s = load_series(p, time_column="time", freq="h", aggregate="sum")
    assert len(s) == 24 and s.freq == "h"
    assert s.values[0, 0] == 0 + 1 and s.values[1, 0] == 2 + 3


def test_txt_series_with_nominal_clock(tmp_path):
    p = tmp_path / "A.txt"
    p.write_text("\n".join(str(v) for v in range(30)) + "\n")
    s = load_series(p)
    assert s.times is None and len(s) == 30
    s = load_series(p, start="2005-06-07 06:00", freq="h")
    assert pd.Timestamp(s.times[1]) == pd.Timestamp("2005-06-07 07:00")


def test_calendar_features():
    t = pd.date_range("2024-01-01", periods=48, freq="h").values  # a Monday
    f = calendar_features(t, ["hour", "dow"], len(t))
    assert f.shape == (48, 4)
    np.testing.assert_allclose(f[0], [0.0, 1.0, 0.0, 1.0], atol=1e-12)
    np.testing.assert_allclose(f[6, :2], [1.0, 0.0], atol=1e-12)  # 06:00 is a quarter of the day
    with pytest.raises(ValueError, match="need timestamps"):
        calendar_features(None, ["hour"], 3)


# ------------------------------------------------------------------ bad input: one line naming what is wrong
def test_missing_column_named(tmp_path):
    p = write_csv(tmp_path / "a.csv")
    with pytest.raises(DataError, match="no value column 'traffic'.*'time', 'load'"):
        load_series(p, time_column="time", value_columns=["traffic"])
    with pytest.raises(DataError, match="no time column 'date'"):
        load_series(p, time_column="date")


def test_non_numeric_value_named(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("time,load\n2024-01-01 00:00,1\n2024-01-01 01:00,2\n2024-01-01 02:00,lots\n2024-01-01 03:00,4\n")
    with pytest.raises(DataError, match="column 'load' row 3: value 'lots' is not numeric"):
        load_series(p)


def test_bad_time_named(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("time,load\n2024-01-01 00:00,1\nyesterday,2\n2024-01-01 02:00,3\n")
    with pytest.raises(DataError, match="row 2: cannot read 'yesterday' as a time"):
        load_series(p)


def test_irregular_index_without_frequency(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("time,load\n2024-01-01 00:00,1\n2024-01-01 01:00,2\n2024-01-01 02:30,3\n2024-01-01 03:00,4\n")
    with pytest.raises(DataError, match="irregular.*pass a frequency"):
        load_series(p)
    s = load_series(p, freq="h")  # with a frequency it is resampled, and the gap is reported
    assert len(s) == 4 and s.missing == {"load": 0}


def test_unsorted_times(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("time,load\n2024-01-01 01:00,1\n2024-01-01 00:00,2\n2024-01-01 02:00,3\n")
    with pytest.raises(DataError, match="not sorted: row 2"):
        load_series(p)


def test_lookback_longer_than_series_and_zero_horizon():
    with pytest.raises(ValueError, match="lookback 100 \\+ horizon 5 is longer than the series \\(50 steps\\)"):
        split_by_time(50, 100, 5, 0.1, 0.1)
    with pytest.raises(ValueError, match="horizon must be a positive int; got 0"):
        split_by_time(50, 10, 0, 0.1, 0.1)


# ------------------------------------------------------------------ split, windows, scaler
def test_windows_respect_split_boundaries():
    n, L, H = 200, 24, 6
    sp = split_by_time(n, L, H, 0.15, 0.15)
    assert (sp.n_train, sp.n_val, sp.n) == (140, 170, 200)
    tr = window_origins(0, sp.n_train, L, H)
    va = window_origins(sp.n_train, sp.n_val, L, H)
    te = window_origins(sp.n_val, sp.n, L, H)
    assert tr[0] == L and tr[-1] + H == sp.n_train  # the last training target is the last training step
    assert va[0] == sp.n_train and va[-1] + H == sp.n_val
    assert te[0] == sp.n_val and te[-1] + H == sp.n
    # no training window reaches into validation, no validation window into test
    assert (tr + H <= sp.n_train).all() and (va + H <= sp.n_val).all()
    assert list(window_origins(0, 40, 10, 5, stride=10)) == [10, 20, 30]


def test_window_batch_contents():
    t = pd.date_range("2024-01-01", periods=60, freq="h")
    from rnnkit.data.timeseries import Series
    v = np.arange(60.0)[:, None]
    s = Series(v, np.ones_like(v, bool), t.values, "h", ["x"])
    frame = ForecastFrame(s, Scaler(np.zeros(1), np.ones(1)), ["hour"])
    b = frame.batch(np.array([10, 30]), 8, 4)
    assert b["x"].shape == (2, 8, 3) and b["y"].shape == (2, 4, 1) and b["future"].shape == (2, 4, 2)
    assert b["x"][0, :, 0].tolist() == list(range(2, 10)) and b["y"][0, :, 0].tolist() == [10, 11, 12, 13]
    loader = WindowLoader(frame, window_origins(0, 60, 8, 4), 8, 4, 16, shuffle=True, seed=1)
    seen = sorted(int(o) for b in loader.batches(0) for o in b["origin"])
    assert seen == list(range(8, 57)) and len(loader) == 4
    first_two = [b["origin"].tolist() for b in loader.batches(3)][1:]
    assert [b["origin"].tolist() for b in loader.batches(3, start=1)] == first_two  # resume mid-epoch


def test_scaler_fitted_on_training_part_only(tmp_path):
    """The real recipe's scaler must see the training part only: a validation part far from the training
    values would move it (this test fails if the scaler is fitted on more than [0, n_train))."""
    from rnnkit.apps.forecast import ForecastSettings, prepare
    n = 200
    values = np.concatenate([np.sin(np.arange(140)), 1000 + np.arange(60.0)])
    t = pd.date_range("2024-01-01", periods=n, freq="h")
    p = tmp_path / "s.csv"
    pd.DataFrame({"time": t, "v": values}).to_csv(p, index=False)
    settings = ForecastSettings(data=str(p), lookback=24, horizon=6, val_fraction=0.15, test_fraction=0.15,
                                quiet=True)
    prepared = prepare(settings, None, 0, 1)
    info, train = prepared.info, prepared.train_data
    n_train = info["split"][0]
    assert n_train == 140
    np.testing.assert_allclose(info["scaler"]["mean"], [values[:n_train].mean()])
    np.testing.assert_allclose(info["scaler"]["std"], [values[:n_train].std()])
    # and training batches never hold a value from past the training part
    for b in train.batches(0):
        assert float(b["y"].max()) < 10 and float(b["x"][..., 0].max()) < 10


# ------------------------------------------------------------------ Kaggle cs448b_ipasn format
def test_kaggle_ipasn_loader(tmp_path):
    p = tmp_path / "cs448b_ipasn.csv"
    p.write_text("date,l_ipn,r_asn,f\n"
                 "2006-07-01,0,701,1\n2006-07-01,0,714,3\n2006-07-01,1,701,5\n"
                 "2006-07-02,1,701,2\n"
                 "2006-07-04,0,701,7\n2006-07-04,1,3356,1\n")
    s = load_kaggle_ipasn(p)
    assert s.columns == ["l_ipn=0", "l_ipn=1"] and s.freq == "D" and len(s) == 4
    np.testing.assert_array_equal(s.values, [[4, 5], [0, 2], [0, 0], [7, 1]])
    assert any("3 machine-days without any row" in line for line in s.report)
    s = load_kaggle_ipasn(p, absent="missing", missing="mask")
    assert np.isnan(s.values[1, 0]) and s.missing == {"l_ipn=0": 2, "l_ipn=1": 1}
    s = load_kaggle_ipasn(p, machines=[1])
    assert s.columns == ["l_ipn=1"]
    bad = tmp_path / "bad.csv"
    bad.write_text("date,l_ipn,f\n2006-07-01,0,1\n")
    with pytest.raises(DataError, match="no column 'r_asn'"):
        load_kaggle_ipasn(bad)


def test_parquet(tmp_path):
    pytest.importorskip("pyarrow")
    t = pd.date_range("2024-01-01", periods=30, freq="D")
    p = tmp_path / "s.parquet"
    pd.DataFrame({"day": t, "a": np.arange(30.0), "b": np.ones(30)}).drop(index=[4]).to_parquet(p)
    s = load_series(p, time_column="day", missing="mask")
    assert s.columns == ["a", "b"] and s.freq == "D" and len(s) == 30 and s.missing == {"a": 1, "b": 1}
