"""The adding problem at long range: which cells learn a 100-step dependency?

Trains one model per cell (Elman RNN, LSTM, peephole LSTM, GRU, SRU) for a
fixed time budget each, evaluates mean squared error on a fixed held-out
set, prints a table next to the predict-1.0 baseline (MSE ≈ 0.167) and saves
the learning curves as a PNG. The Elman RNN's gradient through 100 steps of
tanh and W_hh vanishes, so it stays at the baseline; gated cells carry the
marked values through their additive state and get far below it.

    python -m rnnkit.experiments.adding --help

The experiment brings a model (`AddingModel`) and a task (`AddingTask`: data
sources and the MSE loss); the shared `Trainer` runs the loop (optimizer,
clipping, the time budget on the wall or CPU clock, time-based held-out
evaluation), so this module has no training loop of its own.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from .. import layers
from .._optional import pyplot
from ..data.synthetic import ADDING_BASELINE_MSE, adding_problem
from ..models.regressor import RegressionTask
from ..training import TrainConfig, Trainer, TrainingError
from ..training.config import CLOCKS
from ..training.sources import GeneratedBatches
from ..errors import InputError

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


def run(config: AddingConfig, *, progress: bool = True) -> List[Curve]:
    """Train every cell of `config.cells`, print the table, write curves.png and results.json to `config.out`."""
    curves = [train_cell(cell, config, progress=progress) for cell in config.cells]
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    clock = "wall-clock" if config.clock == "wall" else "CPU"
    print(f"\nAdding problem, T={config.seq_len}: held-out MSE (1000 sequences) after "
          f"{config.seconds_per_cell:g} s of {clock} time per cell (shared Trainer)")
    print(format_table(curves))
    plot_curves(curves, out / "curves.png", config)
    (out / "results.json").write_text(json.dumps({"config": asdict(config),
                                                  "curves": [asdict(c) for c in curves]}, indent=1))
    print(f"\nLearning curves: {out / 'curves.png'}  (numbers: {out / 'results.json'})")
    return curves


def _positive(kind: type) -> Callable[[str], object]:
    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive; got {text}")
        return value
    return parse


def parse_args(argv: Optional[Sequence[str]] = None) -> AddingConfig:
    defaults = AddingConfig()
    parser = argparse.ArgumentParser(
        prog="python -m rnnkit.experiments.adding",
        description="Train Elman RNN, LSTM, peephole LSTM, GRU and SRU on the adding problem and compare "
                    "their held-out MSE with the predict-1.0 baseline (0.167).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--T", dest="seq_len", type=_positive(int), default=defaults.seq_len,
                        help="sequence length (the markers are up to T-1 steps apart)")
    parser.add_argument("--seconds-per-cell", type=_positive(float), default=defaults.seconds_per_cell,
                        help="training budget per cell, in seconds on --clock")
    parser.add_argument("--max-steps", type=_positive(int), default=defaults.max_steps,
                        help="also stop each cell after this many training steps")
    parser.add_argument("--cells", default=",".join(defaults.cells),
                        help=f"comma-separated cells to train, from {','.join(CELLS)}")
    parser.add_argument("--hidden-size", type=_positive(int), default=defaults.hidden_size,
                        help="units per recurrent layer")
    parser.add_argument("--num-layers", type=_positive(int), default=defaults.num_layers,
                        help="stacked recurrent layers")
    parser.add_argument("--batch-size", type=_positive(int), default=defaults.batch_size,
                        help="sequences per training step")
    parser.add_argument("--lr", dest="learning_rate", type=_positive(float), default=defaults.learning_rate,
                        help="Adam learning rate")
    parser.add_argument("--clip", type=float, default=defaults.clip,
                        help="clip the gradient's global norm to this (0: no clipping)")
    parser.add_argument("--eval-every", type=_positive(float), default=defaults.eval_every,
                        help="seconds (on --clock) between held-out evaluations")
    parser.add_argument("--clock", choices=CLOCKS, default=defaults.clock,
                        help="what the budget counts: elapsed time, or this process's CPU time (steadier "
                             "on a busy machine)")
    parser.add_argument("--threads", type=_positive(int), default=defaults.threads,
                        help="torch intra-op threads (small per-step matrix products gain little from more)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed of the initialisation and the training batches")
    parser.add_argument("--out", default=defaults.out, help="directory for curves.png and results.json")
    args = parser.parse_args(argv)
    cells = tuple(c.strip() for c in args.cells.split(",") if c.strip())
    unknown = [c for c in cells if c not in CELLS]
    if unknown or not cells:
        parser.error(f"--cells must list some of {','.join(CELLS)}; got {args.cells!r}")
    if args.seq_len < 2:
        parser.error(f"--T must be >= 2; got {args.seq_len}")
    if args.clip < 0:
        parser.error(f"--clip must be >= 0; got {args.clip}")
    options = vars(args)
    options["cells"] = cells
    return AddingConfig(**options)


def main(argv: Optional[Sequence[str]] = None) -> None:
    config = parse_args(argv)
    torch.set_num_threads(config.threads)
    run(config)


if __name__ == "__main__":
    main()
