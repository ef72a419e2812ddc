"""Validation MAE of trained forecast runs: the numbers the forecasting protocol tunes on (docs/apps/forecast.md).

    python benchmarks/forecast_protocol.py RUN_DIR [RUN_DIR ...]

For each run: the model's MAE over rolling origins (every horizon) of its validation part only, next to seasonal
naive on the same windows; the test part is never read. Choices between recipes are made on these numbers; the
test tables (OUT/results.md) are reported afterwards, without further tuning.
"""

from __future__ import annotations

import sys

from rnnkit.apps import forecast
from rnnkit.data.timeseries import Split
from rnnkit.models.forecast_eval import backtest


def validation_mae(run_dir: str) -> dict:
    run = forecast.load(run_dir)
    split = forecast.load_extras(run.info)["split"]
    frame = forecast._frame(run, forecast._series(run, None, need=split.n))
    validation = Split(split.n_train, split.n_train, split.n_val)  # the "test part" of this backtest = validation
    bt = backtest(run.model, frame, validation, season=run.info["season"], baselines=["seasonal_naive"])
    return {name: m["MAE"] for name, m in bt.metrics.items()}


if __name__ == "__main__":
    for path in sys.argv[1:]:
        maes = validation_mae(path)
        print(f"{path}: validation MAE model {maes['model']:.4g}, seasonal naive {maes['seasonal_naive']:.4g} "
              f"(ratio {maes['model'] / maes['seasonal_naive']:.3f})")
