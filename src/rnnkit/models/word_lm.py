"""Word-level language model (Zaremba, Sutskever & Vinyals 2014, "Recurrent Neural Network Regularization").

The same network as the char-level model (`RecurrentLM`): embedding → stacked
LSTM → linear head; the paper's recipes differ only in sizes, uniform
initialisation, dropout on non-recurrent connections, and SGD with an epoch
schedule (recipes zaremba-small, zaremba-medium). Weight tying
(Press & Wolf 2017; Inan et al. 2017) is optional.
"""

from __future__ import annotations

from .char_lm import LanguageModelTask, LMConfig, RecurrentLM


def word_lm(vocab_size: int, *, cell: str = "lstm", hidden_size: int = 200, num_layers: int = 2,
            dropout: float = 0.0, init_range: float = 0.1, tie_weights: bool = False) -> RecurrentLM:
    """Zaremba's model: embedding size = hidden size, every parameter U(-init_range, init_range)."""
    return RecurrentLM(LMConfig(vocab_size=vocab_size, cell=cell, hidden_size=hidden_size, num_layers=num_layers,
                                embedding_size=hidden_size, dropout=dropout, tie_weights=tie_weights,
                                init_range=init_range))


def word_task() -> LanguageModelTask:
    """Cross-entropy per word; evaluation reports perplexity (val_ppl)."""
    return LanguageModelTask(unit="word")
