"""Scheduled sampling (Bengio et al. 2015) for every decoder that feeds back its previous token.

During training a decoder normally feeds the gold previous token (teacher forcing). Scheduled
sampling feeds, at each position after the first, the gold token with probability ε_i and
otherwise a token sampled from the model's own previous prediction, with ε_i falling over
training (`SamplingSchedule`, i the training step). `feed_previous` makes that choice for one
position of a batch; seq2seq and caption decoders both call it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional

import torch
from torch import Tensor

from ..checks import check_probability
from ..errors import InputError

SCHEDULES = ("none", "linear", "exponential", "inverse_sigmoid")


@dataclass
class SamplingSchedule:
    """ε_i, the probability of feeding the gold token at training step i.

        "none"             ε_i = 1 (teacher forcing)
        "linear"           ε_i = max(minimum, k − c·i)
        "exponential"      ε_i = max(minimum, k^i)          (k < 1)
        "inverse_sigmoid"  ε_i = max(minimum, k / (k + exp(i / k)))   (k >= 1)

    >>> SamplingSchedule("linear", k=1.0, c=0.1, minimum=0.25)(5)
    0.5
    """

    kind: str = "none"
    k: float = 1.0
    c: float = 0.0
    minimum: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise InputError(f"scheduled sampling must be one of {SCHEDULES}; got {self.kind!r}")
        if not 0.0 <= self.minimum <= 1.0:
            raise InputError(f"the schedule's minimum must be in [0, 1]; got {self.minimum}")
        if self.kind == "linear" and (self.c < 0 or not 0 < self.k <= 1):
            raise InputError(f"linear schedule needs 0 < k <= 1 and c >= 0; got k={self.k}, c={self.c}")
        if self.kind == "exponential" and not 0 < self.k < 1:
            raise InputError(f"exponential schedule needs 0 < k < 1; got k={self.k}")
        if self.kind == "inverse_sigmoid" and not self.k >= 1:
            raise InputError(f"inverse_sigmoid schedule needs k >= 1; got k={self.k}")

    def __call__(self, step: int) -> float:
        if self.kind == "none":
            return 1.0
        if self.kind == "linear":
            eps = self.k - self.c * step
        elif self.kind == "exponential":
            eps = self.k ** step
        else:
            eps = self.k / (self.k + math.exp(min(step / self.k, 700.0)))
        return max(self.minimum, min(1.0, eps))

    def to_dict(self) -> dict:
        return asdict(self)


def feed_previous(gold: Tensor, logits: Tensor, teacher_forcing: float, *, pad_id: int,
                  generator: Optional[torch.Generator] = None) -> Tensor:
    """The tokens (B,) a decoder feeds at one position under scheduled sampling.

    gold: (B,) int64, the target's previous token (what teacher forcing feeds).
    logits: (B, V), the model's prediction of that token (no gradient flows through the choice).
    Each row keeps its gold token with probability `teacher_forcing`, else takes a token drawn
    from softmax(logits). A gold padding token is always kept: a finished target must not start
    emitting again, and the loss skips those positions anyway.

    >>> gold = torch.tensor([5, 0]); logits = torch.zeros(2, 8)
    >>> feed_previous(gold, logits, 0.0, pad_id=0)[1].item()  # padding stays padding
    0
    """
    check_probability("teacher_forcing", teacher_forcing, include_one=True)
    if teacher_forcing == 1.0:
        return gold
    with torch.no_grad():
        own = torch.multinomial(torch.softmax(logits.detach().float(), -1), 1, generator=generator).squeeze(1)
        use_own = torch.rand(gold.shape, device=gold.device, generator=generator) >= teacher_forcing
        use_own &= gold != pad_id
    return torch.where(use_own, own, gold)
