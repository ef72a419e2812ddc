"""The adding problem (Hochreiter & Schmidhuber 1997): can a cell carry two marked numbers over T steps?

Each input step is (value, marker); the target is the sum of the two marked values, far apart.
Predicting 1.0 always gives MSE ≈ 0.167: a cell that learned the dependency gets far below that.
An Elman RNN's gradient through T steps of tanh and W_hh vanishes, so at T = 100 it stays at the
baseline; the gated cells' additive state carries the values.

    >>> from rnnkit.apps import adding
    >>> run = adding.train(cell="gru", seq_len=50, max_minutes=1)        # doctest: +SKIP
    >>> adding.evaluate(run)["mse"] < 0.1 * adding.BASELINE_MSE           # doctest: +SKIP

`rnnkit.experiments.adding` compares several cells for the same time budget (`make demo-adding`).
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import torch

from ..data.synthetic import ADDING_BASELINE_MSE, adding_problem
from ..experiments.adding import CELLS, AddingModel, AddingTask
from .runner import Prepared, Recipe, Run
from .settings import TrainingSettings, setting, settings_class

__all__ = ["AddingSettings", "BASELINE_MSE", "train", "load", "evaluate", "predict", "RECIPE"]

#: the mean squared error of always predicting 1.0
BASELINE_MSE = ADDING_BASELINE_MSE


@settings_class
class AddingSettings(TrainingSettings):
    """Settings of `rnnkit train adding` (defaults: an LSTM at T = 100 for two minutes)."""

    DEFAULTS = dict(out="runs/adding", batch_size=64, lr=1e-2, clip_norm=1.0, max_minutes=2.0, eval_every=100,
                    checkpoint_every=500, threads=1)
    cell: str = setting("lstm", "Recurrent cell.", choices=tuple(CELLS))
    seq_len: int = setting(100, "Sequence length T (the two markers are up to T-1 steps apart).", min=2)
    hidden_size: int = setting(64, "Hidden units per layer.", min=1)
    num_layers: int = setting(1, "Stacked layers.", min=1)
    eval_size: int = setting(1000, "Held-out sequences (a multiple of 500), the same for every cell and seed.",
                             min=500)


def prepare(s: AddingSettings, resumed: Optional[Dict[str, Any]], rank: int, world: int) -> Prepared:
    model = AddingModel(s.cell, s.hidden_size, s.num_layers)
    task = AddingTask(s.seq_len, s.batch_size, seed=s.seed, eval_size=s.eval_size)
    report = [f"adding problem, T={s.seq_len}: {s.cell} {s.num_layers}x{s.hidden_size}, baseline (predict 1.0) "
              f"MSE {BASELINE_MSE:.4f}"]
    info = {"model": {"cell": s.cell, "hidden_size": s.hidden_size, "num_layers": s.num_layers},
            "seq_len": s.seq_len}
    return Prepared(model, task, task.train_data, task.heldout, info=info, report=report)


def finish(run: Run) -> Dict[str, Any]:
    mse = (run.summary.get("best") or {}).get("val_loss")
    ratio = mse / BASELINE_MSE if mse is not None else None
    verdict = ("no evaluation" if ratio is None else "learned" if ratio < 0.1
               else "baseline (failed)" if ratio > 0.7 else "partly")
    m = run.info["model"]
    markdown = (f"Adding problem, T={run.info['seq_len']}, {m['cell']} {m['num_layers']}x{m['hidden_size']}, "
                f"step {run.summary.get('step')}\n\n| | held-out MSE | / baseline |\n|---|---|---|\n"
                f"| model | {mse:.4f} | {ratio:.3f} ({verdict}) |\n| predict 1.0 | {BASELINE_MSE:.4f} | 1.000 |\n"
                if ratio is not None else "no held-out evaluation\n")
    return {"mse": mse, "baseline_mse": BASELINE_MSE, "ratio": ratio, "verdict": verdict, "markdown": markdown}


RECIPE = Recipe("adding", AddingSettings, prepare, finish, lambda m: AddingModel(m["cell"], m["hidden_size"],
                                                                                   m["num_layers"]))


def train(settings: Optional[AddingSettings] = None, **changes: Any) -> Run:
    """Train one cell on the adding problem: `train(cell="gru", seq_len=50, max_minutes=1)`."""
    return RECIPE.train(settings, **changes)


def load(path: str, device: str = "cpu") -> Run:
    """A trained adding-problem model from its run directory or a checkpoint (best weights first)."""
    return RECIPE.load(path, device)


@torch.no_grad()
def predict(run: Run, x: torch.Tensor) -> torch.Tensor:
    """The predicted sums (B,) of inputs x (T, B, 2): (value, marker) per step."""
    run.model.eval()
    return run.model(x.to(run.device, next(run.model.parameters()).dtype)).squeeze(-1)


def evaluate(run: Run, seq_len: Optional[int] = None, size: int = 1000, seed: int = 12345) -> Dict[str, float]:
    """MSE on `size` fresh sequences of length `seq_len` (default: the training length) next to the baseline;
    a length other than the training one shows how far the learned dependency reaches."""
    T = seq_len or run.info["seq_len"]
    x, y = adding_problem(size, T, generator=torch.Generator().manual_seed(seed))
    mse = float(((predict(run, x) - y.squeeze(-1).to(run.device)) ** 2).mean())
    return {"seq_len": T, "mse": mse, "baseline_mse": BASELINE_MSE, "ratio": mse / BASELINE_MSE}
