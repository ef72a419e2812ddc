"""Validation MAE of trained forecast runs: the numbers the forecasting protocol tunes on (docs/apps/forecast.md).

    python benchmarks/forecast_protocol.py RUN_DIR [RUN_DIR ...]

For each run: the model's MAE over rolling origins (every horizon) of its validation part only, next to seasonal
naive on the same windows; the test part is never read. Given several runs of one series it names the one
to keep (the lowest validation MAE). Choices between recipes are made on these numbers; the
test tables (OUT/results.md) are reported afterwards, without further tuning.
"""

from __future__ import annotations

import sys

from rnnkit.apps import forecast


def validation_mae(run_dir: str) -> dict:
    run = forecast.load(run_dir)
    bt = forecast.backtest(run, baselines=["seasonal_naive"], stride=run.model.config.horizon, part="validation")
    return {name: m["MAE"] for name, m in bt.metrics.items()}


if __name__ == "__main__":
    models = {}
    for path in sys.argv[1:]:
        maes = validation_mae(path)
        models[path] = maes["model"]
        print(f"{path}: validation MAE model {maes['model']:.4g}, seasonal naive {maes['seasonal_naive']:.4g} "
              f"(ratio {maes['model'] / maes['seasonal_naive']:.3f})")
    if len(models) > 1:  # the protocol's rule: keep the run with the lowest validation MAE
        print(f"keep: {min(models, key=models.get)}")
