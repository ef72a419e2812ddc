"""What the experiments that train through an application (`rnnkit.apps.<app>.train`) share: quiet
throw-away runs in sub-folders of the experiment's directory, and the validation curve each one logged.

    >>> Curve("2 layers", steps=[0, 100], seconds=[0.0, 4.5], values=[4.2, 2.9]).final
    2.9
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List

from ..apps.runner import Recipe, Run
from ..apps.settings import setting, settings_class
from ..cells import CELLS
from ..errors import InputError
from . import ExperimentSettings

#: what every run of an experiment leaves out: checkpoints beyond the last, TensorBoard, progress output
QUIET_RUN = dict(quiet=True, tensorboard=False, overwrite=True, checkpoint_every=10 ** 9, keep_checkpoints=1)


@settings_class
class AppExperimentSettings(ExperimentSettings):
    """What an experiment that trains through an application has: the cell and each run's budget (every
    run it compares trains for the same steps)."""

    cell: str = setting("lstm", "Recurrent cell.", choices=tuple(CELLS))
    steps: int = setting(300, "Training steps of each run compared.", min=1)
    eval_every: int = setting(50, "Steps between validation evaluations.", min=1)
    batch_size: int = setting(32, "Examples per batch (streams, sentences or windows).", min=1)
    lr: float = setting(3e-3, "Adam learning rate.", min=0, min_open=True)


@dataclass
class Curve:
    """One run's validation score at (training step, seconds trained), from its metrics.jsonl."""

    label: str
    steps: List[int] = field(default_factory=list)
    seconds: List[float] = field(default_factory=list)
    values: List[float] = field(default_factory=list)

    @property
    def final(self) -> float:
        return self.values[-1]


def train_quietly(recipe: Recipe, s: AppExperimentSettings, name: str, **settings: Any) -> Run:
    """Train `recipe` into OUT/runs/NAME with the experiment's seed, threads, cell and budget, quietly (see
    QUIET_RUN); `settings` add to them or change them."""
    values = {**QUIET_RUN, "seed": s.seed, "threads": s.threads, "cell": s.cell, "max_steps": s.steps,
              "eval_every": s.eval_every, "batch_size": s.batch_size, "lr": s.lr, **settings}
    return recipe.train(out=str(Path(s.out) / "runs" / name), **values)


def eval_curve(run: Run, label: str, metric: str = "val_loss") -> Curve:
    """`metric` at each evaluation of `run`, read from OUT/metrics.jsonl (seconds on the trainer's clock)."""
    curve = Curve(label)
    with open(Path(run.out) / "metrics.jsonl", encoding="utf-8") as f:
        for record in map(json.loads, f):
            if record.get("kind") == "eval" and metric in record:
                curve.steps.append(record["step"]), curve.seconds.append(record["elapsed_s"])
                curve.values.append(record[metric])
    return curve


def hidden_for_budget(budget: int, size_of: Callable[[int], int]) -> int:
    """The hidden size whose model (`size_of(hidden)` parameters, increasing in hidden) is closest to
    `budget`; InputError if even one unit per layer exceeds it."""
    if size_of(1) > budget:
        raise InputError(f"parameters: {budget:,} is below the smallest model "
                         f"({size_of(1):,} parameters with one unit per layer)")
    low, high = 1, 2
    while size_of(high) < budget:
        low, high = high, high * 2
    while high - low > 1:  # size_of(low) <= budget <= size_of(high)
        mid = (low + high) // 2
        low, high = (mid, high) if size_of(mid) <= budget else (low, mid)
    return min((low, high), key=lambda h: abs(size_of(h) - budget))


def parameter_count(run: Run) -> int:
    return sum(p.numel() for p in run.model.parameters())


def verdict_line(holds: bool, claim: str, evidence: str) -> str:
    """The plain verdict every experiment ends its markdown with."""
    said = "the claim holds" if holds else "the claim does NOT hold"
    return f"**Verdict: {said} on this machine** ({claim}): {evidence}"


def as_dict(curve: Curve) -> Dict[str, Any]:
    return {"label": curve.label, "steps": curve.steps, "seconds": curve.seconds, "values": curve.values}
