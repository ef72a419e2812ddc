"""`rnnkit gradflow`: ||∂L_T/∂h_t|| over t and gate activations, for several cells on the same data, one PNG."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Optional

import click
import torch

from .._optional import require_extra
from ..analysis.gradflow import gate_activations, gradient_flow, plot_gradflow, summary_line
from ..data.synthetic import ADDING_BASELINE_MSE, adding_problem
from ..cells import CELLS
from ..models.regressor import RegressionTask, SequenceRegressor
from ..training.config import TrainConfig
from ..training.sources import GeneratedBatches
from ..training.trainer import Trainer
from .options import out_option


def _cells(value: str):
    names = [v.strip() for v in value.split(",") if v.strip()]
    bad = [n for n in names if n not in CELLS]
    if not names or bad:
        raise click.BadParameter(f"expected a comma-separated list of cells from {', '.join(CELLS)}; got {value!r}")
    return names


@click.command()
@click.option("--cells", default="rnn,lstm,gru", show_default=True,
              help=f"Cells to compare (comma-separated: {', '.join(CELLS)}).")
@click.option("--task", type=click.Choice(["adding"]), default="adding", show_default=True,
              help="Input sequences and loss: the adding problem (loss at the last step).")
@click.option("--T", "T", type=click.IntRange(min=2), default=200, show_default=True, help="Sequence length.")
@click.option("--hidden-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--train-steps", type=click.IntRange(min=0), default=100, show_default=True,
              help="Adam steps on the task before measuring (0: the freshly initialised model).")
@click.option("--lr", type=click.FloatRange(min=0.0, min_open=True), default=1e-2, show_default=True)
@click.option("--forget-bias", type=float, default=1.0, show_default=True,
              help="Initial forget-gate bias of LSTM-family cells and SRU (Gers et al. 2000; Keras's default); "
                   "0 keeps the cells' own initialisation.")
@click.option("--init-scale", type=click.FloatRange(min=0.0), default=0.0, show_default=True,
              help="Scale each cell's initial recurrent weights (every H×H block of weight_hh) to this spectral "
                   "radius; above 1 an Elman RNN's gradient grows back through time. 0 keeps the cells' own "
                   "initialisation.")
@click.option("--checkpoint", default=None,
              help="Measure a trained language model instead (checkpoint file or run directory) on --text.")
@click.option("--text", default=None, help="Input text for --checkpoint (default: the first T characters of "
                                           "the run's validation data).")
@click.option("--seed", type=int, default=0, show_default=True)
@out_option("runs/gradflow", "gradflow.png and gradflow.json (the curves)")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def gradflow(cells: str, task: str, T: int, hidden_size: int, batch_size: int, train_steps: int, lr: float,
             forget_bias: float, init_scale: float, checkpoint: Optional[str], text: Optional[str], seed: int,
             out: str, quiet: bool) -> None:
    """Gradient flow through time: ||∂L_T/∂h_t|| for every t (log scale) and mean gate activations.

    With the adding problem (default) each cell is trained --train-steps steps on the same
    batches, then measured on the same held-out batch: the Elman RNN's gradient vanishes
    over T steps, the LSTM's (through c) and GRU's fall far less.
    """
    require_extra("plots", "rnnkit gradflow")
    out_path = Path(out) / "gradflow.png"
    if checkpoint is not None:
        results, title = _from_checkpoint(checkpoint, text, T)
    else:
        names = _cells(cells)
        results, title = _adding(names, T, hidden_size, batch_size, train_steps, lr, seed, quiet, forget_bias,
                                 init_scale)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    plot_gradflow(results, out_path, title)
    curves = {c: {"grad": {k: v.tolist() for k, v in r["grad"].items()},
                  "gates": {k: v.tolist() for k, v in r["gates"].items()}, **r.get("info", {})}
              for c, r in results.items()}
    out_path.with_suffix(".json").write_text(json.dumps({"title": title, "cells": curves}) + "\n")
    for c, r in results.items():
        click.echo(summary_line(c, r["grad"]) + "".join(f", {k}={v:.4g}" for k, v in r.get("info", {}).items()))
    click.echo(f"gradient flow: {out_path}")


def _adding(names, T, hidden_size, batch_size, train_steps, lr, seed, quiet, forget_bias, init_scale):
    probe_x, probe_y = adding_problem(batch_size, T, generator=torch.Generator().manual_seed(seed + 999),
                                      dtype=torch.float64)
    results: Dict[str, dict] = {}
    for name in names:
        torch.manual_seed(seed)
        model = SequenceRegressor(name, 2, hidden_size, forget_bias=forget_bias or None,
                                  init_scale=init_scale or None)
        info = {}
        if train_steps:
            source = GeneratedBatches(lambda g: adding_problem(batch_size, T, generator=g), train_steps, seed)
            trainer = Trainer(model, RegressionTask(), source,
                              TrainConfig(max_steps=train_steps, lr=lr, clip_norm=1.0, seed=seed, quiet=quiet,
                                          tensorboard=False))
            if not quiet:
                click.echo(f"training {name} on the adding problem (T={T}) for {train_steps} steps", err=True)
            trainer.fit()
        model = model.double().eval()
        with torch.no_grad():
            info["mse"] = float(((model(probe_x) - probe_y) ** 2).mean())
        cell = model.rnn.cells[0]

        def readout(y_T, model=model):
            return ((model.head(y_T) - probe_y) ** 2).mean()

        results[name] = {"grad": gradient_flow(cell, probe_x, readout), "gates": gate_activations(cell, probe_x),
                         "info": info}
    what = f"after {train_steps} training steps" if train_steps else "freshly initialised"
    fb = f", forget bias {forget_bias:g}" if forget_bias else ""
    fb += f", initial W_hh spectral radius {init_scale:g}" if init_scale else ""
    title = (f"adding problem, T={T}, H={hidden_size}, {what}{fb}; loss = MSE at the last step "
             f"(baseline MSE {ADDING_BASELINE_MSE:.3f})")
    return results, title


def _from_checkpoint(checkpoint, text, T):
    from torch.nn import functional as F

    from ..data.text import CharVocab, DataError, load_char_corpus
    from ..apps import load
    run = load(checkpoint)
    model, vocab = run.model, run.extras["vocab"]
    if not isinstance(vocab, CharVocab):
        raise DataError("gradflow --checkpoint needs a char-LM checkpoint")
    if text is None:
        data = json.loads((Path(checkpoint) / "config.json").read_text())["settings"]["data"] \
            if Path(checkpoint).is_dir() else None
        if data is None:
            raise DataError("give --text (the checkpoint's run directory was not given, so its data is unknown)")
        corpus = load_char_corpus(data, 0.1, vocab)
        ids = corpus.valid[0][: T + 1] if corpus.valid else corpus.train[0][: T + 1]
    else:
        ids = vocab.encode(text, what="--text")[: T + 1]
    if len(ids) < 3:
        raise DataError("gradflow needs at least 3 characters of text")
    model = model.double()
    x = model.embed(ids[:-1].view(-1, 1))  # (T, 1, E)
    target = ids[-1:]
    cell = model.rnn.cells[0]
    if model.rnn.num_layers != 1:
        raise DataError("gradflow --checkpoint measures single-layer models")

    def readout(y_T):
        return F.cross_entropy(model.head(y_T), target)

    name = model.config.cell
    results = {name: {"grad": gradient_flow(cell, x.detach(), readout), "gates": gate_activations(cell, x.detach())}}
    return results, f"trained char-LM ({name}, H={model.config.hidden_size}); loss = cross-entropy of the last character"
