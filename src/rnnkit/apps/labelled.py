"""What the classify and tag applications share: their encoder settings, the held-out split, the two-class
check, the results table with its verdict, and running a trained model over token sequences in batches."""

from __future__ import annotations

import sys
from collections import Counter
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..cells import CELLS
from ..data.labelled import LabelVocab, SequenceLoader, tokenizer_from_json
from ..data.text import DataError
from ..errors import InputError
from .runner import Run
from .settings import TrainingSettings, setting, settings_class

#: how the results table names the scikit-learn baseline when it is missing
BASELINE = "the logistic-regression baseline"
#: examples per batch when a trained model predicts (no gradients: larger than training's)
PREDICT_BATCH = 256


@settings_class
class LabelledSettings(TrainingSettings):
    """A token encoder (embedding, recurrent layers) trained on labelled examples."""

    DEFAULTS = dict(optimizer="adam", clip_norm=5.0, max_epochs=8, early_stop_patience=2, checkpoint_every=1000)
    test_data: Optional[str] = setting(None, "Test file, same format as the training data (default: the default "
                                             "data set's test file when the data is not set).", path=True)
    val_fraction: float = setting(0.1, "Training examples (tag: sentences) held out at random (seeded) for "
                                       "validation and early stopping.", min=0, max=0.5, min_open=True)
    cell: str = setting("gru", "Recurrent cell.", choices=tuple(CELLS))
    bidirectional: bool = setting(True, "Bidirectional encoder.")
    dropout: float = setting(0.2, "Dropout on embeddings, between layers and before the head.", min=0, max=1,
                             max_open=True)
    word_dropout: float = setting(0.0, "Training: the probability that a token is read as <unk> (tag: its "
                                       "characters still seen), so the model learns to do without rare tokens.",
                                  min=0, max=1, max_open=True)
    embedding_size: int = setting(128, "Embedding size.", min=1)
    hidden_size: int = setting(128, "Hidden units per direction and layer.", min=1)
    num_layers: int = setting(1, "Stacked layers.", min=1)


def held_out(n: int, fraction: float, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """(kept, held out) indices of `n` examples, sorted: round(n·fraction), at least one, drawn at random."""
    perm = np.random.default_rng(seed).permutation(n)
    k = max(1, int(round(n * fraction)))
    return np.sort(perm[k:]), np.sort(perm[:k])


def check_two_classes(path: str, kept: Counter, held: Optional[str]) -> None:
    """DataError when what is left to train on (after holding out `held` for validation) has one class."""
    if len(kept) < 2:
        part = (f"after holding out {held} for validation, the training part has" if held
                else "the training data has")
        raise DataError(f"{path!r}: {part} only the label {next(iter(kept))!r}; give examples of at least two "
                        f"labels")


def show_notes(notes: Sequence[str]) -> None:
    """How the data files were read (a header skipped, columns swapped): shown even when quiet."""
    for note in notes:
        print(f"rnnkit: note: {note}", file=sys.stderr, flush=True)


def verdict(rows: Dict[str, Dict[str, float]], metric: str) -> str:
    """One line: does the model beat every baseline on `metric` (higher is better)?"""
    model = rows["model"][metric]
    beaten_by = [name for name, v in rows.items() if name != "model" and v[metric] >= model]
    if beaten_by:
        return f"the model does NOT beat {', '.join(beaten_by)} on {metric}"
    return f"the model beats every baseline on {metric}"


def results_markdown(header: str, rows: Dict[str, Dict[str, float]], metric: str) -> str:
    """`header`, a table with one row per method and one column per score, and the `verdict` on `metric`."""
    keys = list(rows["model"])
    table = "| method | " + " | ".join(keys) + " |\n|---|" + "---:|" * len(keys) + "\n" + "\n".join(
        f"| {name} | " + " | ".join(f"{v[k]:.4f}" for k in keys) + " |" for name, v in rows.items())
    return f"{header}\n\n{table}\n\n{verdict(rows, metric)}\n"


def run_numbers(run: Run) -> Dict[str, Any]:
    """What results.json says about the run itself: its last step, why it stopped, the runner's test loss."""
    return {"step": run.summary.get("step"), "stop": run.summary.get("stop"), **run.summary.get("test", {})}


def load_extras(info: Dict[str, Any], labels_key: str, size_key: str) -> Dict[str, Any]:
    """The tokenizer and the label vocabulary of a run (info[labels_key]; the model has info["model"][size_key]
    classes); ValueError when they do not fit the model description."""
    tokenizer = tokenizer_from_json(info["tokenizer"])
    labels = LabelVocab(list(info[labels_key]))
    model = info["model"]
    if len(tokenizer) != model["vocab_size"] or len(labels) != model[size_key]:
        raise ValueError(f"a tokenizer of {len(tokenizer)} tokens and {len(labels)} {labels_key} but the model "
                         f"expects {model['vocab_size']} and {model[size_key]}")
    return {"tokenizer": tokenizer, "labels": labels}


def extras(run: Run, app: str, load: Callable[[Dict[str, Any]], Dict[str, Any]]) -> Dict[str, Any]:
    """The run's tokenizer and labels (read from its info once by `load`, e.g. a `load_extras`); InputError if
    `run` is not an `app` run."""
    if run.app != app:
        raise InputError(f"expected a {app} run; got a {run.app} run")
    if "tokenizer" not in run.extras:
        run.extras.update(load(run.info))
    return run.extras


@torch.no_grad()
def model_outputs(run: Run, sequences: Sequence[Sequence[int]], max_length: Optional[int] = None,
                  chars: Optional[Sequence[Sequence[Sequence[int]]]] = None
                  ) -> Iterator[Tuple[torch.Tensor, List[int]]]:
    """(outputs on the CPU, lengths) of the run's model over `sequences` of token ids (and each token's
    character ids, for a model that reads them), a batch at a time, in order, in eval mode (the model's mode
    is restored afterwards)."""
    model, device = run.model, run.device
    was = model.training
    model.eval()
    try:
        loader = SequenceLoader(sequences, [0] * len(sequences), PREDICT_BATCH, max_length=max_length, chars=chars)
        for batch in loader.batches(0):
            extra = [batch["chars"].to(device)] if "chars" in batch else []
            yield model(batch["tokens"].to(device), batch["lengths"].to(device), *extra).float().cpu(), \
                batch["lengths"].tolist()
    finally:
        model.train(was)
