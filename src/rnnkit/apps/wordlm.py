"""Word-level language model (Zaremba et al. 2014) on DIR/{train,valid,test}.txt (the PTB layout).

`<eos>` ends every line; the vocabulary comes from train.txt; validation and test report
perplexity (val_ppl, test_ppl). The packaged recipes zaremba-small and zaremba-medium are
the paper's settings.

    >>> from rnnkit.apps import wordlm
    >>> run = wordlm.train(data="data/ptb", max_epochs=1)   # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

from ..data.streams import StreamLoader
from ..data.text import DataError, load_word_corpus, vocab_from_json
from ..models.char_lm import LanguageModelTask, LMConfig
from .language_model import LMSettings, generate, lm_recipe, prepared
from .runner import Prepared, Run
from .settings import setting, setting_name, settings_class

__all__ = ["WordLMSettings", "train", "load", "generate", "RECIPE"]


@settings_class
class WordLMSettings(LMSettings):
    """Settings of `rnnkit train wordlm` (defaults: Zaremba et al.'s small model)."""

    DEFAULTS = dict(out="runs/wordlm", hidden_size=200, num_layers=2, batch_size=20, bptt=20, optimizer="sgd",
                    lr=1.0, clip_norm=5.0, schedule="epoch_decay", lr_gamma=0.5, lr_decay_after_epochs=4,
                    max_epochs=13, checkpoint_every=1000, val_batch_size=10)
    init_range: float = setting(0.1, "Initialise every parameter U(-r, r).", min=0, min_open=True)
    tie_weights: bool = setting(False, "Share the embedding and output matrices.")
    loss_normalization: str = setting("sequence", "token: mean per word; sequence: summed over steps, averaged over "
                                                  "the batch (Zaremba).", choices=("token", "sequence"))


def prepare(s: WordLMSettings, resumed: Optional[Dict[str, Any]], rank: int, world: int) -> Prepared:
    if not s.data:
        raise DataError("wordlm needs data: a folder holding train.txt, valid.txt and test.txt")
    corpus = load_word_corpus(s.data, vocab_from_json(resumed["vocab"]) if resumed else None)
    config = LMConfig(vocab_size=len(corpus.vocab), cell=s.cell, hidden_size=s.hidden_size,
                      num_layers=s.num_layers, embedding_size=s.hidden_size, dropout=s.dropout,
                      tie_weights=s.tie_weights, init_range=s.init_range)

    def streams(split: str, batch_size: int, bptt: int, option: str) -> StreamLoader:
        return StreamLoader([getattr(corpus, split)], batch_size, bptt, rank=rank, world_size=world,
                            source=str(Path(s.data) / f"{split}.txt"), batch_option=setting_name(option))

    return prepared(s, config, corpus.vocab, LanguageModelTask("word"),
                    streams("train", s.batch_size, s.bptt, "batch_size"),
                    streams("valid", s.val_batch_size, 512, "val_batch_size"),
                    streams("test", s.val_batch_size, 512, "val_batch_size"))


RECIPE = lm_recipe("wordlm", WordLMSettings, prepare)


def train(settings: Optional[WordLMSettings] = None, **changes: Any) -> Run:
    """Train a word-LM: `train(WordLMSettings(data="data/ptb"))`."""
    return RECIPE.train(settings, **changes)


def load(path: str, device: str = "cpu") -> Run:
    """A trained word-LM from its run directory or a checkpoint (best weights first)."""
    return RECIPE.load(path, device)
