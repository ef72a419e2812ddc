"""Loss curves from a run's metrics.jsonl (reads saved artifacts only)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Dict, List, Tuple, Union

from ..errors import InputError
from .._optional import pyplot

PathLike = Union[str, Path]


def read_metrics(run_dir: PathLike) -> Tuple[List[dict], List[dict]]:
    """(train records, eval records) of a run; lines cut short by a kill are skipped."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise InputError(f"{str(path)!r} does not exist (is {str(run_dir)!r} a run directory?)")
    train, evals = [], []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        (evals if rec.get("kind") == "eval" else train if rec.get("kind") == "train" else []).append(rec)
    return train, evals


def eval_table(evals: List[dict]) -> str:
    """The validation curve as text: step, elapsed time, val loss and its derived metric."""
    if not evals:
        return "(no validation records)"
    extra = [k for k in evals[-1] if k.startswith("val_") and k != "val_loss"]
    head = f"{'step':>7} {'val_loss':>9} " + " ".join(f"{k:>9}" for k in extra)
    rows = [head]
    for r in evals:
        rows.append(f"{r['step']:>7} {r['val_loss']:>9.4f} " + " ".join(f"{r.get(k, math.nan):>9.4f}" for k in extra))
    return "\n".join(rows)


def plot_run(run_dir: PathLike, out: PathLike = None, smooth: int = 20) -> Path:
    """Write the run's loss curves (training, smoothed; validation) to a PNG; returns its path."""
    plt = pyplot(extra="plots", purpose="plotting loss curves")

    train, evals = read_metrics(run_dir)
    if not train:
        raise InputError(f"run {str(run_dir)!r} has no training records to plot")
    out = Path(out) if out is not None else Path(run_dir) / "loss_curve.png"
    steps = [r["step"] for r in train]
    losses = [r["loss"] for r in train]
    smoothed = []
    for i in range(len(losses)):
        window = losses[max(0, i - smooth + 1): i + 1]
        smoothed.append(sum(window) / len(window))
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
    ax.plot(steps, losses, color="tab:blue", alpha=0.25, linewidth=0.8)
    ax.plot(steps, smoothed, color="tab:blue", label=f"train (mean of {smooth} steps)")
    title = Path(run_dir).name
    if evals:
        ax.plot([r["step"] for r in evals], [r["val_loss"] for r in evals], "o-", color="tab:orange",
                label="validation")
        last = evals[-1]
        metric = "val_bpc" if "val_bpc" in last else "val_ppl" if "val_ppl" in last else None
        if metric:
            title += f" — final {metric} {last[metric]:.3f} (val loss {last['val_loss']:.3f} nats)"
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats per token)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out
