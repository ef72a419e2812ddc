"""Two cells on the same char-LM task and the same CPU-time budget: parameters, speed, quality.

What `gru-vs-lstm` and `sru-vs-lstm` share. For each cell, a character language model (the char-LM
application's model, data and task: `rnnkit.apps.charlm.prepare`) on the first `chars` characters of
`data` (default: the embedded tinyshakespeare):

- parameters: of the whole model (embedding, recurrent layers, head) and of the recurrent layers;
- step time: forward + backward of one training batch in CPU time (one thread), the cells taking
  turns (`timing_rounds` rounds, the median of each) in this one process, so what a loaded machine
  still changes (caches, memory bandwidth) changes both alike;
- quality: each trained `seconds_per_cell` seconds of this process's CPU time on the shared Trainer
  (one thread: about the same work on a busy machine as on a quiet one), validation bits per
  character every `eval_every` seconds; the table compares the last evaluation.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from .._optional import pyplot
from ..apps import charlm
from ..apps.language_model import warm_up
from ..apps.runner import Prepared
from ..apps.settings import setting, settings_class
from ..data.text import DataError
from ..recipes import TINYSHAKESPEARE
from ..training import TrainConfig, Trainer
from . import ExperimentSettings

TITLES = {"lstm": "LSTM", "gru": "GRU", "sru": "SRU"}


@settings_class
class RaceSettings(ExperimentSettings):
    """Two cells, one char-LM, one CPU-time budget each."""

    data: Optional[str] = setting(None, "Text file the char-LM trains on (default: the embedded tinyshakespeare).",
                                  path=True)
    chars: int = setting(300_000, "Characters read from the start of --data (the last 10% validate).", min=1000)
    hidden_size: int = setting(256, "Units per recurrent layer (the same for both cells).", min=1)
    num_layers: int = setting(1, "Stacked recurrent layers (the same for both cells).", min=1)
    batch_size: int = setting(32, "Streams per training batch.", min=1)
    bptt: int = setting(64, "Characters per training chunk (truncated BPTT).", min=1)
    lr: float = setting(2e-3, "Adam learning rate.", min=0, min_open=True)
    seconds_per_cell: float = setting(90.0, "Training budget per cell, seconds of this process's CPU time.",
                                      min=0, min_open=True)
    eval_every: float = setting(10.0, "CPU seconds between validations.", min=0, min_open=True)
    timing_rounds: int = setting(20, "Interleaved forward+backward timings per cell.", min=1)


@dataclass
class Contestant:
    """One cell's numbers: size, speed, and its validation curve (CPU seconds, steps, bits per char)."""

    cell: str
    parameters: int = 0
    recurrent_parameters: int = 0
    step_ms: float = 0.0  # median CPU time of forward+backward of one batch, interleaved with the other cell
    backend: str = ""
    seconds: List[float] = field(default_factory=list)
    steps: List[int] = field(default_factory=list)
    bpc: List[float] = field(default_factory=list)

    @property
    def final_bpc(self) -> float:
        return self.bpc[-1]

    @property
    def cpu_ms_per_step(self) -> float:
        """CPU time per training step (optimizer and evaluations included) over the whole budget."""
        return 1000.0 * self.seconds[-1] / max(self.steps[-1], 1)


def text_slice(s: RaceSettings) -> Path:
    """The first `chars` characters of `data`, written to OUT/data.txt (what the char-LM reads)."""
    source = Path(s.data) if s.data is not None else TINYSHAKESPEARE
    text = source.read_text(encoding="utf-8")[: s.chars]
    if len(text) < 1000:
        raise DataError(f"{source}: the race needs at least 1000 characters of text; the file has {len(text)}")
    path = Path(s.out) / "data.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def prepare(cell: str, s: RaceSettings, data: Path) -> Prepared:
    torch.manual_seed(s.seed)
    settings = charlm.CharLMSettings(data=str(data), cell=cell, hidden_size=s.hidden_size, num_layers=s.num_layers,
                                     batch_size=s.batch_size, bptt=s.bptt, lr=s.lr, seed=s.seed, max_steps=1,
                                     out=str(Path(s.out) / cell), quiet=True, tensorboard=False)
    prepared = charlm.prepare(settings, None, 0, 1)
    warm_up(prepared.model, torch.device("cpu"))  # kernels that compile on first use do it outside the timings
    return prepared


def step_times(prepared: Dict[str, Prepared], rounds: int) -> Dict[str, float]:
    """Median CPU milliseconds of forward + backward of one training batch per cell, the cells taking
    turns every round (not a training loop: nothing is updated, the gradients are dropped)."""
    times: Dict[str, List[float]] = {cell: [] for cell in prepared}
    batches = {cell: next(iter(p.train_data.batches(0, 0))) for cell, p in prepared.items()}
    for _ in range(rounds + 1):  # round 0 warms the allocator and caches, and is not counted
        for cell, p in prepared.items():
            start = time.process_time()
            p.task.loss(p.model, batches[cell], None).loss_sum.backward()
            times[cell].append(1000.0 * (time.process_time() - start))
            p.model.zero_grad(set_to_none=True)
    return {cell: statistics.median(t[1:]) for cell, t in times.items()}


def train(contestant: Contestant, p: Prepared, s: RaceSettings) -> None:
    """Train for `seconds_per_cell` CPU seconds on the shared Trainer; fill the contestant's curve."""
    config = TrainConfig(max_minutes=s.seconds_per_cell / 60.0, clock="cpu", eval_every_minutes=s.eval_every / 60.0,
                         lr=s.lr, clip_norm=5.0, seed=s.seed, quiet=True, tensorboard=False)
    trainer = Trainer(p.model, p.task, p.train_data, config, val_data=p.val_data)
    contestant.seconds, contestant.steps, contestant.bpc = [0.0], [0], [trainer.evaluate()["val_bpc"]]
    trainer.fit()
    for r in trainer.history:
        contestant.seconds.append(r["elapsed_s"]), contestant.steps.append(r["step"])
        contestant.bpc.append(r["val_bpc"])
    contestant.backend = p.model.rnn.last_backend or ""


def race(cells: Sequence[str], s: RaceSettings) -> List[Contestant]:
    """Every cell of `cells`: parameters, interleaved step times, then its training run."""
    data = text_slice(s)
    prepared = {cell: prepare(cell, s, data) for cell in cells}
    contestants = [Contestant(cell, sum(p.numel() for p in prepared[cell].model.parameters()),
                              sum(p.numel() for p in prepared[cell].model.rnn.parameters())) for cell in cells]
    for c, ms in zip(contestants, step_times(prepared, s.timing_rounds).values()):
        c.step_ms = ms
    for c in contestants:
        torch.manual_seed(s.seed)
        train(c, prepare(c.cell, s, data), s)  # a fresh model: the timings' batches touched no weights, but
        # rebuilding keeps the training run independent of how many timing rounds ran
    return contestants


def format_table(contestants: Sequence[Contestant], reference: str) -> str:
    """Markdown: one row per cell; speed ratios are the reference cell's time over this cell's."""
    ref = next(c for c in contestants if c.cell == reference)
    lines = ["| cell | backend | parameters (recurrent) | fwd+bwd CPU ms/batch | speed vs "
             f"{TITLES[reference]} | CPU ms/training step | steps | val bits/char at the end |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for c in contestants:
        lines.append(f"| {TITLES[c.cell]} | {c.backend} | {c.parameters:,} ({c.recurrent_parameters:,}) | "
                     f"{c.step_ms:.1f} | {ref.step_ms / c.step_ms:.2f}× | {c.cpu_ms_per_step:.1f} | {c.steps[-1]} | "
                     f"{c.final_bpc:.3f} |")
    return "\n".join(lines)


def plot(contestants: Sequence[Contestant], path: Path, s: RaceSettings, title: str) -> None:
    """Validation bits per character against CPU seconds and against steps, one line per cell."""
    plt = pyplot(extra="plots", purpose="the race plot")
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True)
    for axis, key, label in ((axes[0], "seconds", "CPU time (s, one thread)"), (axes[1], "steps", "training steps")):
        for c in contestants:
            axis.plot(getattr(c, key), c.bpc, marker=".", label=f"{TITLES[c.cell]} ({c.step_ms:.0f} ms/batch)")
        axis.set_xlabel(label)
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("validation bits per character")
    axes[0].set_ylim(top=max(max(c.bpc[1:] or c.bpc) for c in contestants) * 1.05)  # the untrained value is off
    axes[1].legend()
    fig.suptitle(f"{title}: char-LM on {s.chars:,} characters, {s.num_layers}×{s.hidden_size}, batch {s.batch_size}"
                 f"×{s.bptt}, {s.seconds_per_cell:g} CPU s each", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def quality(a: Contestant, b: Contestant) -> str:
    """Which of two cells reached the lower validation loss in the same CPU time, with both numbers."""
    better = a if a.final_bpc < b.final_bpc else b
    return (f"in the same CPU time {TITLES[better.cell]} reached the lower validation loss ({a.final_bpc:.3f} vs "
            f"{b.final_bpc:.3f} bits/char for {TITLES[a.cell]} vs {TITLES[b.cell]})")


def run_race(cells: Tuple[str, str], s: RaceSettings, *, name: str, title: str,
             holds: Callable[[Contestant, Contestant], bool],
             verdict: Callable[[Contestant, Contestant], str]) -> Dict[str, Any]:
    """An experiment of this kind: the race of `cells` (the second the reference), OUT/NAME.png, the numbers,
    whether the claim `holds`, and the markdown: the table, then the `verdict`."""
    a, b = race(cells, s)
    return {**results((a, b), s, name=name, title=title, verdict=verdict(a, b), reference=b.cell),
            "holds": holds(a, b)}


def results(contestants: Sequence[Contestant], s: RaceSettings, *, name: str, title: str, verdict: str,
            reference: str) -> Dict[str, Any]:
    """The plot (OUT/NAME.png), the numbers and the markdown: the table, then the verdict."""
    plot(contestants, Path(s.out) / f"{name}.png", s, title)
    source = Path(s.data).name if s.data else "the embedded tinyshakespeare"
    markdown = (f"{title}: char-LM on the first {s.chars:,} characters of {source}, "
                f"{s.num_layers}×{s.hidden_size} units, {s.seconds_per_cell:g} s of CPU time per cell (one thread), "
                f"shared Trainer\n\n{format_table(contestants, reference)}\n\nPlot: {name}.png\n\n{verdict}\n")
    return {"contestants": [{**asdict(c), "final_bpc": c.final_bpc} for c in contestants], "markdown": markdown}
