"""Exposure bias: does a model trained on true previous values (teacher forcing) forecast worse when it
must feed itself its own forecasts, than one trained the way it is used?

Trains the autoregressive forecaster (`rnnkit.apps.forecast`, mode autoregressive, point head;
default data: the repository's hourly ISP traffic series) three times for the same number of steps:
with teacher forcing (every step of the horizon fed the true previous value, teacher_forcing 1),
with scheduled sampling (the true value with probability 0.5, else the model's own forecast: a
constant mix, not a decaying schedule) and free running (always its own forecast, teacher_forcing
0, as at inference).

All three are evaluated free-running: the validation loss during training (the forecaster rolls
out when it evaluates) and the rolling-origin backtest on the test part, whose error is also
broken down by step into the horizon, where fed-back errors compound.

    rnnkit experiment exposure-bias --help
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .._optional import pyplot
from ..apps import forecast
from ..apps.runner import Run
from ..apps.settings import setting, settings_class
from .app_runs import AppExperimentSettings, Curve, as_dict, eval_curve, train_quietly, verdict_line

CLAIM = ("A model trained with teacher forcing sees true previous outputs in training but its own predictions "
         "at inference (seed 001: Teacher Forcing), so it forecasts worse free-running than one trained "
         "free-running or with scheduled sampling (exposure bias).")

#: the training regimes: name -> teacher_forcing probability
REGIMES = {"teacher forcing": 1.0, "scheduled sampling": 0.5, "free running": 0.0}
#: the baseline shown next to the models (cheap, and the one to beat on a daily season)
BASELINE = "seasonal_naive"


@settings_class
class ExposureBiasSettings(AppExperimentSettings):
    """Settings of `rnnkit experiment exposure-bias`."""

    DEFAULTS = dict(out="runs/exposure-bias", steps=300)
    data: Optional[str] = setting(None, f"Series file (default: {forecast.DEFAULT_DATA}).", path=True)
    sampling: float = setting(0.5, "Probability of the true previous value in the scheduled-sampling run.", min=0,
                              max=1, min_open=True, max_open=True)
    hidden_size: int = setting(64, "Hidden units.", min=1)
    lookback: int = setting(72, "History steps each forecast sees.", min=1)
    horizon: int = setting(24, "Steps forecast free-running.", min=2)
    margin: float = setting(0.02, "Relative backtest MAE by which a regime must beat teacher forcing for the "
                                  "claim to hold.", min=0)


SETTINGS = ExposureBiasSettings


def regimes(s: ExposureBiasSettings) -> Dict[str, float]:
    return {**REGIMES, "scheduled sampling": s.sampling}


def train_regime(s: ExposureBiasSettings, name: str, teacher_forcing: float) -> Run:
    """One autoregressive forecaster trained with `teacher_forcing`; no backtest yet (see `backtest_errors`)."""
    recipe = dataclasses.replace(forecast.RECIPE, finish=lambda run: {})
    return train_quietly(recipe, s, name.replace(" ", "-"), data=s.data, mode="autoregressive", head="point",
                         teacher_forcing=teacher_forcing, hidden_size=s.hidden_size, lookback=s.lookback,
                         horizon=s.horizon, clip_norm=1.0, baselines=BASELINE)


def errors_by_step(forecasts: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """Mean absolute error at each step into the horizon, (O, H, C) -> (H,), ignoring missing actuals."""
    return np.nanmean(np.abs(forecasts - actual), axis=(0, 2))


def backtest_errors(run: Run) -> Tuple[Dict[str, Dict[str, float]], Dict[str, np.ndarray]]:
    """(metrics {method: {MAE, RMSE, ...}}, MAE by horizon step {method: (H,)}) of the free-running backtest."""
    bt = forecast.backtest(run, baselines=[BASELINE], stride=1)  # origins at every hour: step k is no fixed hour
    return bt.metrics, {m: errors_by_step(f, bt.actual) for m, f in bt.forecasts.items()}


def plot(curves: Sequence[Curve], by_step: Dict[str, np.ndarray], path: Path, title: str) -> None:
    """Free-running validation loss against steps; backtest MAE by step into the horizon."""
    plt = pyplot(extra="plots", purpose="the exposure-bias plot")
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    for c in curves:
        left.plot(c.steps, c.values, marker=".", label=c.label)
    left.set_xlabel("training steps")
    left.set_ylabel("validation MSE (scaled, free-running)")
    left.set_yscale("log")
    for name, errors in by_step.items():
        style = dict(linestyle="--", color="grey") if name == BASELINE else {}
        right.plot(range(1, len(errors) + 1), errors, label=name.replace("_", " "), **style)
    right.set_xlabel("steps into the horizon (each fed the model's previous forecast)")
    right.set_ylabel("backtest MAE (data units)")
    right.legend()
    for axis in (left, right):
        axis.grid(True, alpha=0.3)
    left.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def verdict(mae: Dict[str, float], margin: float) -> Tuple[bool, str]:
    """Whether a regime that feeds the model its own forecasts beats teacher forcing's backtest MAE by more
    than `margin` (relative), and the line."""
    tf = mae["teacher forcing"]
    best = min((r for r in mae if r != "teacher forcing"), key=mae.get)
    gain = (tf - mae[best]) / tf
    holds = gain > margin
    evidence = (f"free-running backtest MAE {mae[best]:.4g} for {best} against {tf:.4g} for teacher forcing "
                f"({100 * gain:+.1f}%; the margin asked is {100 * margin:g}%)")
    return holds, verdict_line(holds, "training on its own forecasts beats teacher forcing", evidence)


def run(s: ExposureBiasSettings) -> Dict[str, Any]:
    """The three regimes for s.steps each; exposure-bias.png, the table and the verdict."""
    curves: List[Curve] = []
    metrics: Dict[str, Dict[str, float]] = {}
    by_step: Dict[str, np.ndarray] = {}
    for name, p in regimes(s).items():
        trained = train_regime(s, name, p)
        curves.append(eval_curve(trained, f"{name} (p={p:g})"))
        m, e = backtest_errors(trained)
        metrics[name], by_step[name] = m["model"], e["model"]
        baseline = m[BASELINE], e[BASELINE]  # the same windows every time
        if not s.quiet:
            print(f"exposure-bias: {name}: backtest MAE {m['model']['MAE']:.4g} after {curves[-1].steps[-1]} "
                  f"steps, {curves[-1].seconds[-1]:.0f} s", flush=True)
    metrics[BASELINE], by_step[BASELINE] = baseline
    data = s.data or forecast.DEFAULT_DATA
    title = (f"autoregressive {s.cell} 1x{s.hidden_size} on {Path(data).name}, L={s.lookback}, H={s.horizon}, "
             f"{s.steps} steps per regime; evaluated free-running")
    plot(curves, by_step, Path(s.out) / "exposure-bias.png", title)
    holds, line = verdict({r: metrics[r]["MAE"] for r in REGIMES}, s.margin)
    rows = "\n".join(
        f"| {name.replace('_', ' ')} | {f'{regimes(s)[name]:g}' if c else ''} | {f'{c.final:.4g}' if c else ''} | "
        f"{metrics[name]['MAE']:.4g} | {metrics[name]['RMSE']:.4g} | {by_step[name][0]:.4g} | {by_step[name][-1]:.4g} |"
        for name, c in [*zip(REGIMES, curves), (BASELINE, None)])
    markdown = (f"{title}\n\n| training | p(true value) | final val MSE (scaled) | backtest MAE | RMSE | "
                f"MAE at step 1 | MAE at step {s.horizon} |\n|---|---:|---:|---:|---:|---:|---:|\n{rows}\n\n"
                f"Plot: exposure-bias.png\n\n{line}\n")
    return {"metrics": metrics, "mae_by_step": {k: v.tolist() for k, v in by_step.items()},
            "curves": [as_dict(c) for c in curves], "holds": holds, "markdown": markdown}
