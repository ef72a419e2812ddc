"""The adding problem at long range: which cells learn a 100-step dependency?

Trains one model per cell (Elman RNN, LSTM, peephole LSTM, GRU, SRU) for a
fixed time budget each, evaluates mean squared error on a fixed held-out
set, prints a table next to the predict-1.0 baseline (MSE ≈ 0.167) and saves
the learning curves as a PNG. The Elman RNN's gradient through 100 steps of
tanh and W_hh vanishes, so it stays at the baseline; gated cells carry the
marked values through their additive state and get far below it.

    rnnkit experiment adding --help

The experiment brings a model (`AddingModel`) and a task (`AddingTask`: data
sources and the MSE loss); the shared `Trainer` runs the loop (optimizer,
clipping, the time budget on the wall or CPU clock, time-based held-out
evaluation), so this module has no training loop of its own.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from .. import layers
from .._optional import pyplot
from ..data.synthetic import ADDING_BASELINE_MSE, adding_problem
from ..models.regressor import RegressionTask
from ..training import TrainConfig, Trainer, TrainingError
from ..training.config import CLOCKS
from ..training.sources import GeneratedBatches
from ..apps.settings import setting, settings_class
from ..errors import InputError
from . import ExperimentSettings, comma_list

#: the cells compared, by the name used on the command line and in the table.
CELLS: Dict[str, Callable[..., nn.Module]] = {
    "rnn": layers.RNN,
    "lstm": layers.LSTM,
    "peephole": layers.PeepholeLSTM,
    "gru": layers.GRU,
    "sru": layers.SRU,
}
CELL_TITLES = {"rnn": "Elman RNN", "lstm": "LSTM", "peephole": "peephole LSTM", "gru": "GRU", "sru": "SRU"}


class AddingModel(nn.Module):
    """A recurrent layer and a linear read-out of its last step.

    x (T, B, 2) -> prediction (B, 1) = W y_T + b, with y_T the layer's output at
    the last step.
    """

    def __init__(self, cell: str, hidden_size: int, num_layers: int = 1) -> None:
        super().__init__()
        if cell not in CELLS:
            raise InputError(f"AddingModel: cell must be one of {sorted(CELLS)}; got {cell!r}")
        self.rnn = CELLS[cell](2, hidden_size, num_layers)
        self.head = nn.Linear(hidden_size, 1)

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.rnn(x)  # (T, B, H)
        return self.head(out[-1])  # (B, 1)


class AddingTask(RegressionTask):
    """The adding problem as a trainer task: MSE of the prediction (B, 1) against the target
    (the loss and `eval_metrics` of `RegressionTask`), and its data sources.

    `train_data`: an endless source of fresh batches x (T, B, 2), y (B, 1), batch i drawn
    from a generator seeded with (seed, i). `heldout`: `eval_size` sequences in chunks of
    `eval_chunk`, drawn from `eval_seed` alone, so every cell and every training seed is
    scored on the same sequences.
    """

    #: batches in the training source's one "epoch": more than any time budget uses, so the
    #: run ends by its time or step budget and never at an epoch boundary
    ENDLESS = 10 ** 12

    def __init__(self, seq_len: int, batch_size: int, *, seed: int, eval_size: int = 1000,
                 eval_seed: int = 12345, eval_chunk: int = 500) -> None:
        self.seq_len, self.batch_size = seq_len, batch_size
        self.train_data = GeneratedBatches(lambda g: adding_problem(batch_size, seq_len, generator=g),
                                           self.ENDLESS, seed)
        chunks, rest = divmod(eval_size, eval_chunk)
        if rest or not chunks:
            raise InputError(f"AddingTask: eval_size must be a positive multiple of eval_chunk ({eval_chunk}); "
                             f"got {eval_size}")
        self.heldout = GeneratedBatches(lambda g: adding_problem(eval_chunk, seq_len, generator=g), chunks, eval_seed)


@dataclass
class AddingConfig:
    """Everything one run needs; the CLI builds it, the library never reads argv."""

    cells: Tuple[str, ...] = ("rnn", "lstm", "peephole", "gru", "sru")
    seq_len: int = 100
    hidden_size: int = 64
    num_layers: int = 1
    batch_size: int = 64
    learning_rate: float = 1e-2
    clip: float = 1.0
    seconds_per_cell: float = 60.0
    max_steps: Optional[int] = None  # also stop after this many steps (None: the time budget alone)
    clock: str = "wall"  # "wall": elapsed time; "cpu": this process's CPU time (steady on a busy machine)
    threads: int = 1  # torch intra-op threads, set by main(): 64-unit steps gain nothing from a second one
    eval_every: float = 2.0  # seconds (on `clock`) between held-out evaluations
    seed: int = 0
    out: str = "runs/adding"


@dataclass
class Curve:
    """One cell's run: held-out MSE at (seconds on the run's clock, steps), from the trainer's evaluations."""

    cell: str
    seconds: List[float] = field(default_factory=list)
    steps: List[int] = field(default_factory=list)
    mse: List[float] = field(default_factory=list)
    backend: str = ""

    @property
    def final(self) -> float:
        return self.mse[-1]


def train_config(config: AddingConfig) -> TrainConfig:
    """The shared trainer's settings for one cell of the experiment."""
    return TrainConfig(max_minutes=config.seconds_per_cell / 60.0, max_steps=config.max_steps, optimizer="adam",
                       lr=config.learning_rate, clip_norm=config.clip if config.clip > 0 else None,
                       eval_every_minutes=config.eval_every / 60.0, clock=config.clock, seed=config.seed,
                       quiet=True, tensorboard=False)


def train_cell(cell: str, config: AddingConfig, *, progress: bool = True) -> Curve:
    """Train one model on the adding problem with the shared `Trainer` for
    `config.seconds_per_cell` seconds (or `config.max_steps` steps, whichever
    comes first), evaluating the held-out MSE every `config.eval_every` seconds.

    `config.clock` picks what the budget counts: wall-clock time, or this
    process's CPU time, which gives about the same number of steps on a busy
    machine as on a quiet one (one thread). The held-out evaluations count
    towards the budget (they take a few per cent of it).
    """
    from tqdm.auto import tqdm

    torch.manual_seed(config.seed)
    model = AddingModel(cell, config.hidden_size, config.num_layers)
    task = AddingTask(config.seq_len, config.batch_size, seed=config.seed)
    trainer = Trainer(model, task, task.train_data, train_config(config), val_data=task.heldout)
    curve = Curve(cell)
    curve.seconds.append(0.0), curve.steps.append(0), curve.mse.append(trainer.evaluate()["val_mse"])
    budget = config.seconds_per_cell
    bar = tqdm(total=round(budget), desc=f"{CELL_TITLES[cell]:>13}", unit="s", disable=not progress,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total}s {postfix}")

    def advance(_: Trainer, record: dict) -> None:  # the bar counts the budget's seconds, not steps
        bar.update(max(0.0, min(record["elapsed_s"], budget) - bar.n))

    def show(_: Trainer, record: dict) -> None:
        bar.set_postfix_str(f"step {record['step']}, held-out MSE {record['val_mse']:.4f}")

    trainer.add_hook("step_end", advance)
    trainer.add_hook("eval_end", show)
    try:
        trainer.fit()
    except TrainingError as err:
        raise TrainingError(f"{CELL_TITLES[cell]}: {err}") from None
    finally:
        bar.close()
    for record in trainer.history:
        curve.seconds.append(record["elapsed_s"]), curve.steps.append(record["step"])
        curve.mse.append(record["val_mse"])
    curve.backend = model.rnn.last_backend or ""
    return curve


def format_table(curves: Sequence[Curve], baseline: float = ADDING_BASELINE_MSE) -> str:
    """A plain-text table: cell, backend, steps, seconds, final held-out MSE, ratio to the baseline."""
    rows = [f"{'cell':<14} {'backend':<9} {'steps':>6} {'seconds':>7} {'final MSE':>10} {'/ baseline':>10}  verdict"]
    for c in curves:
        ratio = c.final / baseline
        verdict = "learned" if ratio < 0.1 else ("baseline (failed)" if ratio > 0.7 else "partly")
        rows.append(f"{CELL_TITLES[c.cell]:<14} {c.backend:<9} {c.steps[-1]:>6} {c.seconds[-1]:>7.1f} {c.final:>10.4f} "
                    f"{ratio:>10.3f}  {verdict}")
    rows.append(f"{'predict 1.0':<14} {'':<9} {'':>6} {'':>7} {baseline:>10.4f} {1.0:>10.3f}  baseline")
    return "\n".join(rows)


def plot_curves(curves: Sequence[Curve], path: Path, config: AddingConfig) -> None:
    """Held-out MSE (log scale) against training seconds and steps, one line per cell."""
    plt = pyplot(extra="plots", purpose="the adding-problem plot")

    fig, axes = plt.subplots(1, 2, figsize=(12.5, 4.2), sharey=True)
    clock = "wall-clock" if config.clock == "wall" else "CPU"
    for axis, key, label in ((axes[0], "seconds", f"{clock} time (s)"), (axes[1], "steps", "training steps")):
        for c in curves:
            axis.plot(getattr(c, key), c.mse, label=CELL_TITLES[c.cell])
        axis.axhline(ADDING_BASELINE_MSE, color="grey", linestyle="--", label="predict 1.0 (≈0.167)")
        axis.set_yscale("log")
        axis.set_xlabel(label)
        axis.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("held-out MSE")
    axes[1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0))  # outside: the curves fill both panels
    fig.suptitle(f"Adding problem, T={config.seq_len}, hidden {config.hidden_size}, batch {config.batch_size}, "
                 f"Adam lr {config.learning_rate:g}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def compare(config: AddingConfig, *, progress: bool = True) -> Dict[str, Any]:
    """Train every cell of `config.cells`; curves.png in `config.out`; the numbers and the table."""
    curves = [train_cell(cell, config, progress=progress) for cell in config.cells]
    out = Path(config.out)
    plot_curves(curves, out / "curves.png", config)
    clock = "wall-clock" if config.clock == "wall" else "CPU"
    markdown = (f"Adding problem, T={config.seq_len}: held-out MSE (1000 sequences) after "
                f"{config.seconds_per_cell:g} s of {clock} time per cell (shared Trainer)\n\n```\n"
                f"{format_table(curves)}\n```\n\nLearning curves: curves.png\n")
    return {"config": asdict(config), "curves": [asdict(c) for c in curves], "markdown": markdown}


# ---------------------------------------------------------------------- as an experiment
CLAIM = ("An Elman RNN cannot learn a dependency across 100 steps, while LSTM, GRU and SRU can "
         "(seeds 002, 003: vanishing gradients, gated cells).")


@settings_class
class AddingExperimentSettings(ExperimentSettings):
    """Settings of `rnnkit experiment adding` (`make demo-adding`)."""

    DEFAULTS = dict(out="runs/adding")
    cells: str = setting(",".join(CELLS), f"Comma-separated cells to train, from {','.join(CELLS)}.")
    seq_len: int = setting(100, "Sequence length T (the markers are up to T-1 steps apart).", min=2)
    seconds_per_cell: float = setting(60.0, "Training budget per cell, in seconds on --clock.", min=0,
                                      min_open=True)
    max_steps: Optional[int] = setting(None, "Also stop each cell after this many training steps.", min=1)
    hidden_size: int = setting(64, "Units per recurrent layer.", min=1)
    num_layers: int = setting(1, "Stacked recurrent layers.", min=1)
    batch_size: int = setting(64, "Sequences per training step.", min=1)
    lr: float = setting(1e-2, "Adam learning rate.", min=0, min_open=True)
    clip: float = setting(1.0, "Clip the gradient's global norm to this (0: no clipping).", min=0)
    eval_every: float = setting(2.0, "Seconds (on --clock) between held-out evaluations.", min=0, min_open=True)
    clock: str = setting("wall", "What the budget counts: elapsed time, or this process's CPU time (steadier on "
                                 "a busy machine).", choices=CLOCKS)

    def check(self) -> None:
        self.cell_names()

    def cell_names(self) -> Tuple[str, ...]:
        return comma_list(self.cells, CELLS)

    def config(self) -> AddingConfig:
        return AddingConfig(cells=self.cell_names(), seq_len=self.seq_len, hidden_size=self.hidden_size,
                            num_layers=self.num_layers, batch_size=self.batch_size, learning_rate=self.lr,
                            clip=self.clip, seconds_per_cell=self.seconds_per_cell, max_steps=self.max_steps,
                            clock=self.clock, threads=self.threads, eval_every=self.eval_every, seed=self.seed,
                            out=self.out)


SETTINGS = AddingExperimentSettings


def run(settings: AddingExperimentSettings) -> Dict[str, Any]:
    """The experiment: every cell for the same budget, the table and the curves (see `compare`)."""
    return compare(settings.config(), progress=not settings.quiet)


if __name__ == "__main__":  # `python -m rnnkit.experiments.adding`, as before: `rnnkit experiment adding`
    from ..cli import main
    import sys
    main(["experiment", "adding", *sys.argv[1:]])
