"""Gradient-flow runs behind `rnnkit gradflow`: cells trained on the adding problem, or a trained char-LM,
measured with `rnnkit.analysis.gradflow`, and the PNG + JSON they are written to."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
from torch.nn import functional as F

from ..data.synthetic import ADDING_BASELINE_MSE, adding_problem
from ..data.text import CharVocab, DataError, load_char_corpus
from ..models.regressor import RegressionTask, SequenceRegressor
from ..training.config import TrainConfig
from ..training.sources import GeneratedBatches
from ..training.trainer import Trainer
from .gradflow import gate_activations, gradient_flow, plot_gradflow

#: cell name -> {"grad": {state: (T,) norms}, "gates": {gate: (T,) means}, "info": {...}}
Flows = Dict[str, Dict[str, Any]]


def write_flows(results: Flows, title: str, out: Path) -> Path:
    """OUT/gradflow.png and OUT/gradflow.json (the curves); returns the PNG's path."""
    path = out / "gradflow.png"
    out.mkdir(parents=True, exist_ok=True)
    plot_gradflow(results, path, title)
    curves = {c: {"grad": {k: v.tolist() for k, v in r["grad"].items()},
                  "gates": {k: v.tolist() for k, v in r["gates"].items()}, **r.get("info", {})}
              for c, r in results.items()}
    path.with_suffix(".json").write_text(json.dumps({"title": title, "cells": curves}) + "\n")
    return path


def adding_flows(names: Sequence[str], T: int, hidden_size: int, batch_size: int, train_steps: int, lr: float,
                 seed: int, quiet: bool, forget_bias: float, init_scale: float) -> Tuple[Flows, str]:
    """Each cell of `names` trained `train_steps` Adam steps on the same adding-problem batches (T steps),
    then measured on one held-out batch: {cell: {"grad", "gates", "info"}} and the plot's title.
    `forget_bias` / `init_scale` 0: the cells' own initialisation."""
    probe_x, probe_y = adding_problem(batch_size, T, generator=torch.Generator().manual_seed(seed + 999),
                                      dtype=torch.float64)
    results: Flows = {}
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
                print(f"training {name} on the adding problem (T={T}) for {train_steps} steps", file=sys.stderr)
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


def language_model_flow(run: Any, text: Optional[str], T: int) -> Tuple[Flows, str]:
    """The gradient flow of a trained one-layer char-LM (an `rnnkit.apps.Run`) over `text` (default: the
    first T characters of its run's validation data); the loss is the last character's cross-entropy."""
    vocab = run.extras.get("vocab")
    model = run.model
    if run.app != "charlm" or not isinstance(vocab, CharVocab):
        raise DataError("gradflow --checkpoint needs a char-LM run")
    if text is None:
        config = run.out / "config.json" if run.out is not None else None
        data = json.loads(config.read_text())["settings"]["data"] if config and config.is_file() else None
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
