"""Exploding gradients: an Elman RNN whose recurrent weights have spectral radius above 1.

For each cell (Elman with ReLU, Elman with tanh), the initial recurrent matrix W_hh is scaled to
spectral radius `init_scale` (> 1). On the adding problem the experiment then

1. measures ||∂L_T/∂h_t|| over t at initialisation (`rnnkit.analysis.gradflow`), next to the same
   cell at its default initialisation (radius ≈ 0.6): the first grows back through time, the second
   vanishes;
2. trains the same model twice with plain SGD on the shared Trainer, once without clipping (the
   Trainer stops with a TrainingError when the loss stops being finite) and once with the gradient's
   global norm clipped to `clip` (Pascanu et al. 2013), recording the loss and the gradient norm
   before clipping at every step and the held-out MSE every `eval_every` steps.

SGD, not Adam: Adam divides each update by the gradient's running magnitude, which hides an
exploding gradient; with SGD the step is the gradient.

    rnnkit experiment exploding --help
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from .._optional import pyplot
from ..analysis.gradflow import gradient_flow
from ..apps.settings import setting, settings_class
from ..cells.base import spectral_radius
from ..data.synthetic import ADDING_BASELINE_MSE, adding_problem
from ..models.regressor import SequenceRegressor
from ..training import TrainConfig, Trainer, TrainingError
from . import ExperimentSettings, comma_list
from .adding import AddingTask

CLAIM = ("With ReLU, or with tanh and recurrent weights of spectral radius > 1, an Elman RNN's gradient grows "
         "back through time and training diverges unless the gradient is clipped by norm (seed 001: ReLU "
         "products above 1 explode; seed 004: vanishing/exploding gradients).")

#: the Elman cells this experiment knows, as named in rnnkit.cells.CELLS, and their titles
ELMAN_CELLS = {"rnn-relu": "Elman ReLU", "rnn": "Elman tanh"}


@settings_class
class ExplodingSettings(ExperimentSettings):
    """Settings of `rnnkit experiment exploding`."""

    DEFAULTS = dict(out="runs/exploding")
    cells: str = setting("rnn-relu,rnn", f"Comma-separated Elman cells, from {','.join(ELMAN_CELLS)} (tanh).")
    init_scale: float = setting(1.6, "Spectral radius the initial recurrent weights W_hh are scaled to.", min=0,
                                min_open=True)
    seq_len: int = setting(100, "Sequence length T of the adding problem.", min=2)
    hidden_size: int = setting(64, "Units of the Elman layer.", min=1)
    batch_size: int = setting(32, "Sequences per training step.", min=1)
    steps: int = setting(1000, "SGD steps per run (a diverging run stops earlier).", min=1)
    lr: float = setting(0.1, "SGD learning rate.", min=0, min_open=True)
    clip: float = setting(1.0, "Global gradient norm the clipped run clips to.", min=0, min_open=True)
    eval_every: int = setting(100, "Steps between held-out evaluations (1000 sequences).", min=1)

    def check(self) -> None:
        self.cell_names()

    def cell_names(self) -> Tuple[str, ...]:
        return comma_list(self.cells, ELMAN_CELLS)


SETTINGS = ExplodingSettings


@dataclass
class TrainingRun:
    """One SGD run: training loss and pre-clipping gradient norm per step, held-out MSE per evaluation."""

    cell: str
    clip: Optional[float]
    loss: List[float] = field(default_factory=list)
    grad_norm: List[float] = field(default_factory=list)
    eval_steps: List[int] = field(default_factory=list)
    eval_mse: List[float] = field(default_factory=list)
    diverged_at: Optional[int] = None  # the step whose loss was not finite
    error: str = ""

    def trained(self) -> bool:
        """Finished every step with a finite loss, and the held-out MSE fell."""
        return (self.diverged_at is None and math.isfinite(self.eval_mse[-1])
                and self.eval_mse[-1] < self.eval_mse[0])


def build_model(cell: str, s: ExplodingSettings, init_scale: Optional[float]) -> SequenceRegressor:
    torch.manual_seed(s.seed)
    return SequenceRegressor(cell, 2, s.hidden_size, init_scale=init_scale)


def growth(curve: Sequence[float]) -> float:
    """||∂L/∂h_0|| / ||∂L/∂h_T−1||: above 1 the gradient grows back through time (nan if the last is 0)."""
    return curve[0] / curve[-1] if curve[-1] > 0 else float("nan")


def gradient_norms(model: SequenceRegressor, s: ExplodingSettings) -> List[float]:
    """||∂L_T/∂h_t|| for t = 0 … T−1 on one held-out batch (float64 copy of the model)."""
    x, y = adding_problem(s.batch_size, s.seq_len, generator=torch.Generator().manual_seed(s.seed + 999),
                          dtype=torch.float64)
    probe = SequenceRegressor(model.cell_name, 2, s.hidden_size).double()
    probe.load_state_dict(model.state_dict())
    curve = gradient_flow(probe.rnn.cells[0], x, lambda y_T: ((probe.head(y_T) - y) ** 2).mean())["h"]
    return curve.tolist()


def train(cell: str, s: ExplodingSettings, clip: Optional[float]) -> TrainingRun:
    """SGD on the adding problem on the shared Trainer, `clip` None: no clipping."""
    model = build_model(cell, s, s.init_scale)
    task = AddingTask(s.seq_len, s.batch_size, seed=s.seed)
    config = TrainConfig(max_steps=s.steps, optimizer="sgd", lr=s.lr, clip_norm=clip, eval_every=s.eval_every,
                         seed=s.seed, quiet=True, tensorboard=False)
    trainer = Trainer(model, task, task.train_data, config, val_data=task.heldout)
    run = TrainingRun(cell, clip, eval_steps=[0], eval_mse=[trainer.evaluate()["val_mse"]])

    def record(_: Trainer, r: Dict[str, Any]) -> None:
        run.loss.append(r["loss"]), run.grad_norm.append(r["grad_norm"])

    trainer.add_hook("step_end", record)
    try:
        trainer.fit()
    except TrainingError as err:  # the loss stopped being finite: the divergence this experiment looks for
        run.diverged_at, run.error = trainer.step, str(err)
    for r in trainer.history:
        run.eval_steps.append(r["step"]), run.eval_mse.append(r["val_mse"])
    return run


def verdict(growth: float, unclipped: TrainingRun, clipped: TrainingRun) -> bool:
    """The claim for one cell: the gradient grows back through time, no clipping diverges, clipping trains."""
    return growth > 1.0 and unclipped.diverged_at is not None and clipped.trained()


def format_table(rows: Sequence[Dict[str, Any]], s: ExplodingSettings) -> str:
    """Markdown: one row per cell with the growth, both runs' outcomes and the verdict."""
    lines = ["| cell | W_hh radius | ‖∂L/∂h_0‖ / ‖∂L/∂h_T−1‖ | same at default init | no clipping | "
             f"clip norm {s.clip:g}: held-out MSE start → end (predict 1.0: {ADDING_BASELINE_MSE:.3f}) | claim |",
             "|---|---:|---:|---:|---|---|---|"]
    for r in rows:
        u, c = r["unclipped"], r["clipped"]
        free = f"diverged at step {u.diverged_at}" if u.diverged_at is not None else f"finite for {s.steps} steps"
        kept = (f"{c.eval_mse[0]:.4g} → {c.eval_mse[-1]:.4f}" if c.diverged_at is None
                else f"diverged at step {c.diverged_at}")
        lines.append(f"| {ELMAN_CELLS[r['cell']]} | {r['radius']:.2f} (default {r['default_radius']:.2f}) | "
                     f"{r['growth']:.3g} | {r['default_growth']:.3g} | {free} | {kept} | "
                     f"{'holds' if r['holds'] else 'does not hold'} |")
    return "\n".join(lines)


def plot(rows: Sequence[Dict[str, Any]], path: Path, s: ExplodingSettings) -> None:
    """Three panels: ||∂L/∂h_t|| over t relative to t = T−1; training loss and gradient norm before
    clipping per step."""
    plt = pyplot(extra="plots", purpose="the exploding-gradient plot")
    fig, (grad, loss, norm) = plt.subplots(1, 3, figsize=(16, 4.6))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for n, r in enumerate(rows):
        color, title = colors[n % len(colors)], ELMAN_CELLS[r["cell"]]
        relative = [g / r["grad"][-1] for g in r["grad"]]  # the default init's vanishing curve is in the table
        grad.semilogy(relative, color=color, label=f"{title}, radius {r['radius']:.2f}")
        for run, style in ((r["unclipped"], "-"), (r["clipped"], "--")):
            label = f"{title}, " + ("no clipping" if run.clip is None else f"clip {run.clip:g}")
            steps = range(1, len(run.loss) + 1)
            loss.semilogy(steps, run.loss, color=color, linestyle=style, label=label)
            norm.semilogy(steps, run.grad_norm, color=color, linestyle=style, label=label)
            if run.diverged_at is not None:
                loss.axvline(run.diverged_at, color=color, alpha=0.4, linestyle=style)
    grad.set(xlabel="t (loss at the last step T)", title="gradient back through time",
             ylabel="‖∂L_T/∂h_t‖ / ‖∂L_T/∂h_T−1‖ at initialisation")
    loss.axhline(ADDING_BASELINE_MSE, color="grey", linestyle=":", label="predict 1.0")
    loss.set_ylim(top=1e4)  # a diverging loss reaches 1e30 and more: the axis would flatten the rest
    loss.set(xlabel="SGD step", ylabel="training MSE", title="loss (vertical line: non-finite loss)")
    norm.axhline(s.clip, color="grey", linestyle=":", label=f"clip norm {s.clip:g}")
    norm.set(xlabel="SGD step", ylabel="‖∇‖ before clipping", title="gradient norm")
    for axis in (grad, loss, norm):
        axis.grid(alpha=0.3, which="both")
        axis.legend(fontsize=7)
    fig.suptitle(f"Elman RNN on the adding problem, T={s.seq_len}, H={s.hidden_size}, SGD lr {s.lr:g}, "
                 f"batch {s.batch_size}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def measure_cell(cell: str, s: ExplodingSettings) -> Dict[str, Any]:
    """Gradient flow (scaled and default init) and the two SGD runs of one cell."""
    scaled, default = build_model(cell, s, s.init_scale), build_model(cell, s, None)
    row: Dict[str, Any] = {"cell": cell, "radius": float(spectral_radius(scaled.rnn.cells[0].weight_hh)),
                           "default_radius": float(spectral_radius(default.rnn.cells[0].weight_hh)),
                           "grad": gradient_norms(scaled, s), "default_grad": gradient_norms(default, s)}
    row["growth"], row["default_growth"] = growth(row["grad"]), growth(row["default_grad"])
    row["unclipped"], row["clipped"] = train(cell, s, None), train(cell, s, s.clip)
    row["holds"] = verdict(row["growth"], row["unclipped"], row["clipped"])
    return row


def run(s: ExplodingSettings) -> Dict[str, Any]:
    """The experiment (see the module docstring): exploding.png, the table and the verdict."""
    rows = [measure_cell(cell, s) for cell in s.cell_names()]
    out = Path(s.out)
    plot(rows, out / "exploding.png", s)
    held = all(r["holds"] for r in rows)
    summary = "; ".join(f"{ELMAN_CELLS[r['cell']]}: gradient ×{r['growth']:.3g} from t=T−1 back to t=0, "
                        + (f"no clipping diverged at step {r['unclipped'].diverged_at}"
                           if r["unclipped"].diverged_at is not None else "no clipping stayed finite")
                        + (", clipping trained" if r["clipped"].trained() else ", clipping did not train")
                        for r in rows)
    markdown = (f"Exploding gradients, adding problem T={s.seq_len}, initial W_hh spectral radius "
                f"{s.init_scale:g}, SGD lr {s.lr:g}, {s.steps} steps\n\n{format_table(rows, s)}\n\n"
                f"Plot: exploding.png\n\n**Verdict: the claim {'holds' if held else 'does not hold'} on this "
                f"machine.** {summary}.\n")
    runs = {r["cell"]: {k: (asdict(v) if isinstance(v, TrainingRun) else v) for k, v in r.items()} for r in rows}
    return {"holds": held, "cells": runs, "markdown": markdown}
