"""Data matrix, forecast: tiny generated series in every documented format through the whole path
(`rnnkit train forecast` → `rnnkit forecast` → `rnnkit export`), run from the data's folder as a stranger
would. Each row either works or stops with one `rnnkit: error:` line naming the file; nothing is misread
without a word (an integer index is not a clock, an exactly periodic series has no MASE)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable, List, Tuple

import numpy as np
import pandas as pd
import pytest


TINY = ["--lookback", "12", "--horizon", "3", "--hidden-size", "4", "--max-steps", "2", "--batch-size", "8",
        "--baselines", "naive,seasonal_naive", "--no-tensorboard"]


def wave(n: int, seed: int = 0, noise: float = 0.1) -> np.ndarray:
    t = np.arange(n)
    return 10.0 + np.sin(2 * np.pi * t / 24) + noise * np.random.default_rng(seed).standard_normal(n)


def train_forecast_export(rnnkit: Callable, data: Path, extra: List[str], name: str = "run"
                          ) -> Tuple[str, Path, pd.DataFrame]:
    """Train into `name`, forecast past the end and export; returns (training stdout, run dir, forecast CSV)."""
    run = data.parent / name
    code, out, err = rnnkit(["train", "forecast", "--data", data.name, "--out", name, *TINY, *extra])
    assert code == 0, err
    for file in ("results.md", "results.json", "forecast.csv", "best.safetensors"):
        assert (run / file).is_file(), file
    code, _, err = rnnkit(["forecast", "--checkpoint", name, "--out", f"{name}-next"])
    assert code == 0, err
    code, export_out, err = rnnkit(["export", "--checkpoint", name, "--output", f"{name}/model.onnx"])
    assert code == 0 and (run / "model.onnx").is_file(), err
    assert "max |diff|" in export_out
    return out, run, pd.read_csv(data.parent / f"{name}-next" / "forecast.csv")


def one_error_line(code: int, err: str, *needles: str) -> None:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("rnnkit: error:"), err
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_txt_without_timestamps(tmp_path, rnnkit, monkeypatch):
    """Failure 2 of issue 14: one number a line, no --start/--freq, so no calendar (crashed in ForecastFrame)."""
    monkeypatch.chdir(tmp_path)
    np.savetxt(tmp_path / "series.txt", wave(200))
    out, run, fc = train_forecast_export(rnnkit, tmp_path / "series.txt", [])
    assert "calendar covariates none" in out and "season 1" in out
    assert json.loads((run / "config.json").read_text())["calendar"] == []
    assert fc["time"].tolist() == [200, 201, 202]  # steps past the end, no invented clock


def test_txt_with_start_and_freq(tmp_path, rnnkit, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.savetxt(tmp_path / "series.txt", wave(200))
    out, run, fc = train_forecast_export(rnnkit, tmp_path / "series.txt",
                                         ["--start", "2024-03-01 00:00", "--freq", "h"])
    assert json.loads((run / "config.json").read_text())["calendar"] == ["hour", "dow"]
    assert fc["time"].iloc[0] == str(pd.Timestamp("2024-03-01") + pd.Timedelta(hours=200))


def gappy_csv(path: Path) -> Path:
    """Hourly CSV with three missing hours and one hour given twice."""
    t = pd.date_range("2024-01-01", periods=200, freq="h")
    df = pd.DataFrame({"time": t, "load": wave(200)}).drop(index=[40, 41, 90])
    df = pd.concat([df, df.iloc[[100]]]).sort_values("time", kind="stable")
    df.to_csv(path, index=False)
    return path


def test_csv_with_gaps_and_duplicates(tmp_path, rnnkit, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = gappy_csv(tmp_path / "gappy.csv")
    code, _, err = rnnkit(["train", "forecast", "--data", data.name, "--out", "run", *TINY])
    one_error_line(code, err, "gappy.csv", "repeats the time", "--freq")
    assert not (tmp_path / "run").exists()
    out, _, _ = train_forecast_export(rnnkit, data, ["--freq", "h"])  # with a frequency: aggregated, gaps filled
    assert "resampled to h" in out and "missing steps: load: 3" in out


def test_several_value_columns_user_picks_one(tmp_path, rnnkit, monkeypatch):
    monkeypatch.chdir(tmp_path)
    t = pd.date_range("2024-01-01", periods=200, freq="h")
    pd.DataFrame({"time": t, "a": wave(200, 1), "b": wave(200, 2), "c": wave(200, 3)}).to_csv("multi.csv",
                                                                                              index=False)
    out, run, fc = train_forecast_export(rnnkit, tmp_path / "multi.csv", ["--value-columns", "b"])
    assert "forecasting 'b' of the value columns ['a', 'b', 'c']" in out
    assert set(fc["series"]) == {"b"} and json.loads((run / "config.json").read_text())["columns"] == ["b"]


def test_parquet(tmp_path, rnnkit, monkeypatch):
    pytest.importorskip("pyarrow")
    monkeypatch.chdir(tmp_path)
    t = pd.date_range("2024-01-01", periods=200, freq="h")
    pd.DataFrame({"time": t, "load": wave(200)}).to_parquet(tmp_path / "s.parquet")
    out, _, fc = train_forecast_export(rnnkit, tmp_path / "s.parquet", [])
    assert len(fc) == 3


def test_non_utf8_txt_names_the_file(tmp_path, rnnkit, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "latin1.txt").write_bytes("1.0\n2.0\n3,5 \xb0C\n".encode("latin-1"))
    code, _, err = rnnkit(["train", "forecast", "--data", "latin1.txt", "--out", "run", *TINY])
    one_error_line(code, err, "latin1.txt", "not UTF-8")


def test_integer_index_is_not_a_clock(tmp_path, rnnkit, monkeypatch):
    """A first column 0, 1, 2, ... was read as nanoseconds since 1970: 1 ns frequency, season 1, constant
    hour/day-of-week features. It is a step index: no calendar, and the user is told so in one line."""
    monkeypatch.chdir(tmp_path)
    pd.DataFrame({"step": np.arange(200), "load": wave(200)}).to_csv("indexed.csv", index=False)
    out, run, fc = train_forecast_export(rnnkit, tmp_path / "indexed.csv", [])
    assert "column 'step' holds integers (0 .. 199, step 1): read as a step index, not as times" in out
    assert json.loads((run / "config.json").read_text())["calendar"] == []
    assert fc["time"].tolist() == [200, 201, 202]
    # with --start and --freq the index becomes a clock
    _, run, fc = train_forecast_export(rnnkit, tmp_path / "indexed.csv", ["--start", "2024-01-01", "--freq", "h"],
                                       "run-clock")
    assert json.loads((run / "config.json").read_text())["calendar"] == ["hour", "dow"]
    assert fc["time"].iloc[0] == "2024-01-09 08:00:00"  # index 200 = 200 hours after the start


def test_exactly_periodic_series_has_no_mase(tmp_path, rnnkit, monkeypatch):
    """An exact daily repeat makes the seasonal-naive scale ~1e-15: MASE was printed as 2.4e14."""
    monkeypatch.chdir(tmp_path)
    t = pd.date_range("2024-01-01", periods=200, freq="h")
    pd.DataFrame({"time": t, "load": wave(200, noise=0.0)}).to_csv("periodic.csv", index=False)
    out, run, _ = train_forecast_export(rnnkit, tmp_path / "periodic.csv", [])
    assert "MASE undefined for 'load': its training part repeats itself exactly every 24 steps" in out
    table = (run / "results.md").read_text()
    assert "| undefined |" in table and "e+1" not in table
    assert all(math.isnan(m["MASE"]) for m in json.loads((run / "results.json").read_text())["metrics"].values())
