"""Recurrent language model (Karpathy's char-rnn; Zaremba et al.'s word LM) and its training task.

    e_t = Embed(x_t)  or one-hot(x_t)              (T, B, E)
    y_t, state = Recurrent(cell)(e_t, state)       (T, B, H)
    logits_t = W_o dropout(y_t) + b_o              (T, B, V)

The model knows nothing of training; `LanguageModelTask` turns a `StreamBatch`
into a summed cross-entropy for the trainer and zeroes the state of streams that
start a new document.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Dict, Iterator, Optional, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..checks import check_int, check_positive_ints, check_probability
from ..cells.registry import CELLS, check_cell, make_cell  # noqa: F401 (CELLS: its old home)
from ..data.streams import IGNORE_INDEX, StreamBatch
from ..recurrent import Recurrent
from .decoding import check_sampling, sample_next
from ..errors import InputError


@dataclass
class LMConfig:
    """Shape of a RecurrentLM. embedding_size 0 means one-hot input (char-rnn's original)."""

    vocab_size: int
    cell: str = "lstm"
    hidden_size: int = 256
    num_layers: int = 1
    embedding_size: int = 64
    dropout: float = 0.0
    tie_weights: bool = False
    init_range: Optional[float] = None  # U(-r, r) for every parameter (Zaremba); None: the cells' own init

    def __post_init__(self) -> None:
        check_positive_ints(self, ("vocab_size", "hidden_size", "num_layers"))
        check_int("embedding_size", self.embedding_size, minimum=0, hint=" (0 = one-hot input)")
        check_cell(self.cell)
        check_probability("dropout", self.dropout)
        if self.tie_weights and self.embedding_size != self.hidden_size:
            raise InputError(f"tie_weights needs embedding_size == hidden_size; got {self.embedding_size} "
                             f"and {self.hidden_size}")
        if self.init_range is not None and not self.init_range > 0:
            raise InputError(f"init_range must be positive; got {self.init_range}")

    def to_dict(self) -> dict:
        return asdict(self)


class RecurrentLM(nn.Module):
    """Embedding (or one-hot) → stacked recurrent layers → linear head over the vocabulary.

    forward(tokens (T, B) int64, state) -> (logits (T, B, V) or None, state); with
    `logits=False` only the state is advanced (truncated-BPTT context).
    Dropout (Zaremba's non-recurrent dropout) acts on the embedding, between layers
    and before the head.
    """

    def __init__(self, config: LMConfig) -> None:
        super().__init__()
        self.config = c = config
        width = c.embedding_size or c.vocab_size
        self.embedding = nn.Embedding(c.vocab_size, c.embedding_size) if c.embedding_size else None
        self.rnn = Recurrent(lambda size: make_cell(c.cell, size, c.hidden_size), c.num_layers,
                             dropout=c.dropout, input_size=width)
        self.drop = nn.Dropout(c.dropout)
        self.head = nn.Linear(self.rnn.output_size, c.vocab_size)
        if c.init_range is not None:
            for p in self.parameters():
                nn.init.uniform_(p, -c.init_range, c.init_range)
        if c.tie_weights:
            self.head.weight = self.embedding.weight  # type: ignore[union-attr]

    def embed(self, tokens: Tensor) -> Tensor:
        if self.embedding is not None:
            return self.drop(self.embedding(tokens))
        return F.one_hot(tokens, self.config.vocab_size).to(self.head.weight.dtype)

    def forward(self, tokens: Tensor, state=None, *, logits: bool = True):
        y, state = self.rnn(self.embed(tokens), state)  # (T, B, H)
        return (self.head(self.drop(y)) if logits else None), state

    def step(self, tokens: Tensor, state=None):
        """One time step for generation: tokens (B,) int64 -> (logits (B, V), state), through the recurrent
        stack's `step` (one call per layer, no sequence machinery); the same numbers as forward() on (1, B)."""
        y, state = self.rnn.step(self.embed(tokens), state)  # (B, H)
        return self.head(self.drop(y)), state


def reset_rows(state, reset: Optional[Tensor]):
    """Zero the state rows of streams that start a new document; state is (L, B, S) per tensor."""
    if state is None or reset is None:
        return state
    keep = (~reset).to(dtype=torch.float32).view(1, -1, 1)
    if isinstance(state, tuple):
        return tuple(s * keep.to(s.dtype) for s in state)
    return state * keep.to(state.dtype)


class LanguageModelTask:
    """Next-token cross-entropy on StreamBatch chunks, summed over tokens (IGNORE_INDEX skipped).

    `unit` names the token for the derived metrics: "char" gives bits per
    character (loss / ln 2), "word" gives perplexity (exp(loss)).
    """

    def __init__(self, unit: str = "char") -> None:
        if unit not in ("char", "word"):
            raise InputError(f"unit must be 'char' or 'word'; got {unit!r}")
        self.unit = unit

    def loss(self, model: nn.Module, batch: StreamBatch, state):
        from ..training.trainer import LossResult  # the task speaks the trainer's protocol
        state = reset_rows(state, batch.reset)
        logits, state = model(batch.inputs, state, logits=batch.targets is not None)
        B = batch.batch_size
        if batch.targets is None:
            return LossResult(torch.zeros((), device=batch.inputs.device), 0, B, state)
        flat = logits.flatten(0, 1)
        if flat.dtype in (torch.float16, torch.bfloat16):
            flat = flat.float()  # a sum over thousands of tokens needs more than 8-bit mantissas
        loss_sum = F.cross_entropy(flat, batch.targets.flatten(), ignore_index=IGNORE_INDEX, reduction="sum")
        return LossResult(loss_sum, (batch.targets != IGNORE_INDEX).sum(), B, state)

    def eval_metrics(self, loss: float) -> Dict[str, float]:
        if self.unit == "char":
            return {"bpc": loss / math.log(2)}
        return {"ppl": math.exp(min(loss, 700.0))}


# ----------------------------------------------------------------- sampling
@torch.no_grad()
def sample(model: RecurrentLM, prime: Sequence[int], length: int, *, temperature: float = 1.0,
           top_k: Optional[int] = None, top_p: Optional[float] = None,
           generator: Optional[torch.Generator] = None) -> Iterator[int]:
    """Yield `length` token ids sampled after the `prime` ids (one stream, state carried).

    temperature > 0 scales the logits; top_k keeps the k most likely tokens;
    top_p keeps the smallest set whose probability reaches p (nucleus sampling).
    """
    check_sampling(temperature, top_k, top_p)
    if len(prime) == 0:
        raise InputError("prime must hold at least one token")
    was_training = model.training
    model.eval()
    device = model.head.weight.device
    try:
        tokens = torch.tensor(list(prime), dtype=torch.int64, device=device).view(-1, 1)  # (T, 1)
        logits, state = model(tokens)  # the prime as one sequence
        last = logits[-1, 0]
        current = torch.empty(1, dtype=torch.int64, device=device)
        for _ in range(length):
            token = int(sample_next(last.float(), temperature, top_k, top_p, generator))
            yield token
            logits, state = model.step(current.fill_(token), state)  # one step per token (Recurrent.step)
            last = logits[0]
    finally:
        model.train(was_training)
