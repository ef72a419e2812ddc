"""Deep RNNs: do 2, 3 or 4 stacked layers beat one at the same number of parameters?

Trains the character language model (`rnnkit.apps.charlm`, default data: the embedded
tinyshakespeare) once per depth, each with the hidden size that brings its parameter count
closest to the same budget, for the same number of steps; plots the validation loss (bits per
character) against steps and against seconds, and tabulates the final scores.

    rnnkit experiment depth --help

Step budgets make the comparison the same on a busy machine; the seconds are wall-clock (the
deeper, narrower stacks run more sequential steps per character, so they are slower per step).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .._optional import pyplot
from ..apps import charlm
from ..apps.settings import setting, settings_class
from ..data.text import load_char_corpus
from ..errors import InputError
from ..models.char_lm import LMConfig, RecurrentLM
from ..recipes import TINYSHAKESPEARE
from .app_runs import (AppExperimentSettings, Curve, as_dict, eval_curve, hidden_for_budget, parameter_count,
                       train_quietly, verdict_line)

CLAIM = ("Stacking several recurrent layers works better than one, empirically (seed 001: Deep RNN); "
         "tested on the char-LM at equal parameter count.")


@settings_class
class DepthSettings(AppExperimentSettings):
    """Settings of `rnnkit experiment depth`."""

    DEFAULTS = dict(out="runs/depth", steps=400)
    data: Optional[str] = setting(None, "Text file or folder (default: the embedded tinyshakespeare).", path=True)
    depths: str = setting("1,2,3,4", "Comma-separated numbers of stacked layers to compare.")
    parameters: int = setting(200_000, "Parameter budget: each depth gets the hidden size that comes closest.",
                              min=1000)
    embedding_size: int = setting(64, "Character embedding size.", min=1)
    bptt: int = setting(64, "Truncated BPTT length.", min=1)
    margin: float = setting(0.02, "Bits per character by which the best deeper model must beat one layer for "
                                  "the claim to hold.", min=0)

    def check(self) -> None:
        names = self.depth_list()
        if not names or len(set(names)) != len(names) or min(names) < 1:
            raise InputError(f"depths must be distinct positive integers, comma-separated; got {self.depths!r}")

    def depth_list(self) -> List[int]:
        try:
            return [int(d) for d in self.depths.split(",") if d.strip()]
        except ValueError:
            raise InputError(f"depths must be positive integers, comma-separated; got {self.depths!r}") from None


SETTINGS = DepthSettings


def model_size(vocab_size: int, cell: str, embedding_size: int, hidden_size: int, num_layers: int) -> int:
    """Parameters of the char-LM with these sizes."""
    config = LMConfig(vocab_size=vocab_size, cell=cell, hidden_size=hidden_size, num_layers=num_layers,
                      embedding_size=embedding_size)
    return sum(p.numel() for p in RecurrentLM(config).parameters())


def train_depth(s: DepthSettings, depth: int, hidden: int) -> Tuple[Curve, int]:
    """One char-LM of `depth` layers of `hidden` units: its validation curve (bits per char) and size."""
    run = train_quietly(charlm.RECIPE, s, f"layers-{depth}", data=s.data or str(TINYSHAKESPEARE),
                        hidden_size=hidden, num_layers=depth, embedding_size=s.embedding_size, bptt=s.bptt,
                        clip_norm=5.0)
    return eval_curve(run, f"{depth} x {hidden}", "val_bpc"), parameter_count(run)


def plot(curves: Sequence[Curve], path: Path, title: str) -> None:
    """Validation bits per character against steps and against seconds, one line per depth."""
    plt = pyplot(extra="plots", purpose="the depth plot")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for axis, key, label in ((axes[0], "steps", "training steps"), (axes[1], "seconds", "wall-clock seconds")):
        for c in curves:
            axis.plot(getattr(c, key), c.values, marker=".", label=c.label)
        axis.set_xlabel(label)
        axis.grid(True, alpha=0.3)
    axes[0].set_ylabel("validation bits per character")
    axes[1].legend(title="layers x hidden")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def verdict(finals: Dict[int, float], margin: float) -> Tuple[bool, str]:
    """Whether the best deeper model beats one layer by more than `margin` bits per char, and the line."""
    if 1 not in finals or len(finals) < 2:
        return False, "no verdict: the comparison needs one layer and at least one deeper model"
    best = min((d for d in finals if d > 1), key=finals.get)
    gain = finals[1] - finals[best]
    holds = gain > margin
    better = f"{gain:.3f} better" if gain >= 0 else f"{-gain:.3f} worse"
    evidence = (f"the best deeper model, {best} layers, reaches {finals[best]:.3f} bits/char against "
                f"{finals[1]:.3f} for one layer ({better}; the margin asked is {margin:g})")
    return holds, verdict_line(holds, "more layers are better at equal parameters", evidence)


def gap_trend(curves: Sequence[Curve], depths: Sequence[int]) -> str:
    """How the gap between one layer and the deepest model changed from the first evaluation to the last
    (a gap that is closing says the budget, not depth, decided)."""
    if 1 not in depths or len(depths) < 2:
        return ""
    one, deep = curves[depths.index(1)], curves[depths.index(max(depths))]
    return (f". The {max(depths)}-layer model trailed one layer by {deep.values[0] - one.values[0]:.3f} bits/char "
            f"at the first evaluation and by {deep.final - one.final:.3f} at the last")


def run(s: DepthSettings) -> Dict[str, Any]:
    """Every depth at the same parameter budget and steps; depth.png, the table and the verdict."""
    data = s.data or str(TINYSHAKESPEARE)
    vocab_size = len(load_char_corpus(data, 0.1).vocab)
    rows, curves = [], []
    for depth in s.depth_list():
        hidden = hidden_for_budget(s.parameters, lambda h, d=depth: model_size(
            vocab_size, s.cell, s.embedding_size, h, d))
        curve, size = train_depth(s, depth, hidden)
        curves.append(curve)
        rows.append({"layers": depth, "hidden": hidden, "parameters": size, "steps": curve.steps[-1],
                     "seconds": curve.seconds[-1], "val_bpc": curve.final, "best_val_bpc": min(curve.values)})
        if not s.quiet:
            print(f"depth: {depth} x {hidden} ({size:,} parameters): {curve.final:.3f} bits/char "
                  f"after {curve.steps[-1]} steps, {curve.seconds[-1]:.0f} s", flush=True)
    title = (f"char-LM ({s.cell}), ~{s.parameters:,} parameters, {s.steps} steps of {s.batch_size}x{s.bptt} chars")
    plot(curves, Path(s.out) / "depth.png", title)
    holds, line = verdict({r["layers"]: r["val_bpc"] for r in rows}, s.margin)
    line += gap_trend(curves, s.depth_list())
    table = "\n".join(f"| {r['layers']} | {r['hidden']} | {r['parameters']:,} | {r['steps']} | {r['seconds']:.1f} | "
                      f"{r['val_bpc']:.3f} | {r['best_val_bpc']:.3f} |" for r in rows)
    markdown = (f"{title}\n\n| layers | hidden | parameters | steps | seconds (wall) | final val bits/char | best |\n"
                f"|---|---|---|---|---|---|---|\n{table}\n\nPlot: depth.png\n\n{line}\n")
    return {"rows": rows, "curves": [as_dict(c) for c in curves], "holds": holds, "markdown": markdown}
