"""Rebuild a model from a checkpoint (for generate and the analysis commands). Never runs code from the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Tuple, Union

import torch

from ..data.text import CharVocab, WordVocab, vocab_from_json
from ..models.char_lm import LMConfig, RecurrentLM
from ..training.checkpoint import CheckpointError, load_checkpoint, sub_dict


def load_language_model(path: Union[str, Path], device: torch.device
                        ) -> Tuple[RecurrentLM, Union[CharVocab, WordVocab], Dict[str, Any]]:
    """(model in eval mode, vocabulary, checkpoint meta) of a charlm/wordlm checkpoint or run directory."""
    record, meta, tensors = load_checkpoint(path)
    run = meta.get("run") or {}
    if run.get("recipe") not in ("charlm", "wordlm"):
        raise CheckpointError(f"checkpoint {str(record)!r} is not a language model (recipe {run.get('recipe')!r})")
    try:
        config = LMConfig(**run["model"])
        vocab = vocab_from_json(run["vocab"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint {str(record)!r} has a malformed model description ({err})") from None
    if len(vocab) != config.vocab_size:
        raise CheckpointError(f"checkpoint {str(record)!r}: vocabulary of {len(vocab)} tokens but the model "
                              f"expects {config.vocab_size}")
    model = RecurrentLM(config)
    try:
        model.load_state_dict(sub_dict(tensors, "model"), strict=True)
    except RuntimeError as err:
        lines = " ".join(l.strip() for l in str(err).strip().splitlines()[:3])
        raise CheckpointError(f"checkpoint {str(record)!r} does not fit its own model description: {lines}") from None
    return model.to(device).eval(), vocab, meta
