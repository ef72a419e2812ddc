"""Elman RNN cell."""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from .base import RecurrentCell, linear, masked
from ..errors import InputError

_NONLINEARITIES = {"tanh": torch.tanh, "relu": torch.relu}


class ElmanCell(RecurrentCell):
    """Elman (vanilla) RNN cell, one time step.

        h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)      (B, H)

    (relu instead of tanh with nonlinearity="relu"). Returns (h_t, h_t).

    x_t: (B, I), h_{t-1}: (B, H).
    weight_ih: (H, I), weight_hh: (H, H), bias_ih, bias_hh: (H,) — torch.nn.RNNCell's layout.
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh",
                 device=None, dtype=None) -> None:
        super().__init__()
        if nonlinearity not in _NONLINEARITIES:
            raise InputError(f"ElmanCell: nonlinearity must be 'tanh' or 'relu'; got {nonlinearity!r}")
        kw = {"device": device, "dtype": dtype}
        self.set_sizes(input_size, hidden_size)
        self.nonlinearity = nonlinearity
        self.weight_ih = nn.Parameter(torch.empty(hidden_size, input_size, **kw))
        self.weight_hh = nn.Parameter(torch.empty(hidden_size, hidden_size, **kw))
        self.bias_ih = nn.Parameter(torch.empty(hidden_size, **kw)) if bias else None
        self.bias_hh = nn.Parameter(torch.empty(hidden_size, **kw)) if bias else None
        self.reset_parameters()

    def project(self, x: Tensor) -> Tensor:
        return linear(x, self.weight_ih, self.bias_ih)  # (..., H)

    def step(self, u: Tensor, state: Tensor, recurrent_mask: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        h = _NONLINEARITIES[self.nonlinearity](u + linear(masked(state, recurrent_mask), self.weight_hh, self.bias_hh))
        return h, h

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, nonlinearity={self.nonlinearity!r}"
