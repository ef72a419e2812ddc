"""Character-level language model (Karpathy's char-rnn) on a text file or a folder of them.

    >>> from rnnkit.apps import charlm
    >>> s = charlm.CharLMSettings(data="input.txt", max_steps=500, out="runs/mine")
    >>> run = charlm.train(s)                                    # doctest: +SKIP
    >>> print("".join(charlm.generate(run, "ROMEO:", 300, seed=1)))  # doctest: +SKIP

Validation: bits per character (val_bpc) on the last `val_fraction` of each file. The
weights with the lowest validation loss are kept (OUT/best.safetensors); `generate`
samples from them.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from ..data.streams import StreamLoader
from ..data.text import load_char_corpus, vocab_from_json
from ..models.char_lm import LanguageModelTask, LMConfig
from ..recipes import TINYSHAKESPEARE
from .language_model import LMSettings, generate, lm_recipe, prepared
from .runner import Prepared, Run
from .settings import setting, setting_name, settings_class

__all__ = ["CharLMSettings", "train", "load", "generate", "RECIPE"]


@settings_class
class CharLMSettings(LMSettings):
    """Settings of `rnnkit train charlm` (defaults: a 256-unit LSTM on the embedded tinyshakespeare)."""

    DEFAULTS = dict(out="runs/charlm", data=str(TINYSHAKESPEARE), hidden_size=256, num_layers=1, batch_size=32,
                    bptt=128, lr=2e-3, clip_norm=5.0, eval_every=200, checkpoint_every=500, max_epochs=10,
                    val_batch_size=32)
    embedding_size: int = setting(64, "Character embedding size (0 = one-hot input).", min=0)
    val_fraction: float = setting(0.1, "Last fraction of each file held out for validation.", min=0, max=0.5,
                                  min_open=True)


def prepare(s: CharLMSettings, resumed: Optional[Dict[str, Any]], rank: int, world: int) -> Prepared:
    vocab = vocab_from_json(resumed["vocab"]) if resumed else None
    corpus = load_char_corpus(s.data, s.val_fraction, vocab)
    config = LMConfig(vocab_size=len(corpus.vocab), cell=s.cell, hidden_size=s.hidden_size,
                      num_layers=s.num_layers, embedding_size=s.embedding_size, dropout=s.dropout)
    train_data = StreamLoader(corpus.train, s.batch_size, s.bptt, rank=rank, world_size=world,
                              source=f"the training part of {s.data!r}", batch_option=setting_name("batch_size"))
    val_data = (StreamLoader(corpus.valid, s.val_batch_size, 512, rank=rank, world_size=world,
                             source=f"the validation part (last {s.val_fraction:.0%}) of {s.data!r}",
                             batch_option=setting_name("val_batch_size"))
                if corpus.valid else None)
    return prepared(s, config, corpus.vocab, LanguageModelTask("char"), train_data, val_data)


RECIPE = lm_recipe("charlm", CharLMSettings, prepare)


def train(settings: Optional[CharLMSettings] = None, **changes: Any) -> Run:
    """Train a char-LM: `train(CharLMSettings(...))` or `train(data="input.txt", max_steps=500)`."""
    return RECIPE.train(settings, **changes)


def load(path: str, device: str = "cpu") -> Run:
    """A trained char-LM from its run directory or a checkpoint (best weights first)."""
    return RECIPE.load(path, device)
