"""Attention over an encoder's memory: Bahdanau (additive) and Luong (dot, general).

    memory  m_s  (B, S, M)   encoder outputs, one row per source position
    query   q    (B, Q)      the decoder's state (Bahdanau: before the step, Luong: after)
    mask         (B, S)      True on real source positions, False on padding

    score_s = v^T tanh(W_q q + W_m m_s)      "bahdanau" (additive; Bahdanau et al. 2015)
    score_s = q^T m_s                        "dot"      (Luong et al. 2015; needs Q == M)
    score_s = q^T W_a m_s                    "general"  (Luong et al. 2015)
    a       = softmax(score masked to -inf on padding)  (B, S)
    context = Σ_s a_s m_s                                (B, M)

The part that depends only on the memory (W_m m_s, W_a m_s) is computed once per
source batch by `keys(memory)` and handed back at every decoder step: that is
why `forward` takes `keys` rather than the memory alone.
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor, nn

from ..errors import InputError

ATTENTIONS = ("none", "bahdanau", "dot", "general")


class Attention(nn.Module):
    """One attention head of kind `kind` ("bahdanau", "dot", "general").

    query_size: Q, memory_size: M, attention_size: A (the hidden width of the
    additive score; unused by dot/general).
    """

    def __init__(self, kind: str, query_size: int, memory_size: int, attention_size: int = 0) -> None:
        super().__init__()
        if kind not in ATTENTIONS[1:]:
            raise InputError(f"attention must be one of {ATTENTIONS[1:]}; got {kind!r}")
        if kind == "dot" and query_size != memory_size:
            raise InputError(f"dot attention needs the decoder's output size ({query_size}) to equal the encoder's "
                             f"memory size ({memory_size}); use 'general' or change hidden sizes")
        self.kind = kind
        self.query_size, self.memory_size = query_size, memory_size
        if kind == "bahdanau":
            a = attention_size or query_size
            self.w_query = nn.Linear(query_size, a, bias=False)
            self.w_memory = nn.Linear(memory_size, a, bias=True)
            self.v = nn.Linear(a, 1, bias=False)
        elif kind == "general":
            self.w_memory = nn.Linear(memory_size, query_size, bias=False)

    def keys(self, memory: Tensor) -> Tensor:
        """Memory-only part of the score: (B, S, M) -> (B, S, A|Q|M)."""
        if self.kind == "dot":
            return memory
        return self.w_memory(memory)

    def forward(self, query: Tensor, keys: Tensor, memory: Tensor, mask: Tensor) -> Tuple[Tensor, Tensor]:
        """(context (B, M), weights (B, S)); padded positions get weight exactly 0."""
        if self.kind == "bahdanau":
            scores = self.v(torch.tanh(keys + self.w_query(query).unsqueeze(1))).squeeze(-1)  # (B, S)
        else:
            scores = torch.bmm(keys, query.unsqueeze(-1)).squeeze(-1)  # (B, S)
        scores = scores.masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=-1)  # every row has >= 1 real position, so no NaN
        context = torch.bmm(weights.unsqueeze(1), memory).squeeze(1)  # (B, M)
        return context, weights
