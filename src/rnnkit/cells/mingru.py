"""minGRU (Feng et al. 2024, "Were RNNs All We Needed?")."""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from .base import RecurrentCell, linear
from ..errors import InputError


class MinGRUCell(RecurrentCell):
    """minGRU cell, one time step.

        z_t = σ(W_z x_t + b_z)                        (B, H)  update gate
        h̃_t = W_h x_t + b_h                           (B, H)  candidate
        h_t = (1 − z_t) ⊙ h_{t-1} + z_t ⊙ h̃_t         (B, H)

    Neither gate reads h_{t-1}, so the recurrence is linear in the state
    (h_t = a_t ⊙ h_{t-1} + b_t) and can run as a scan. Returns (h_t, h_t).
    weight_ih: (2H, I), bias_ih: (2H,); block order z, h̃.
    """

    keep_gate = (("bias_ih",), 0, -1)  # h_t = (1 − z_t) ⊙ h_{t-1} + …: the keep gate is 1 − σ(b_z)

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None) -> None:
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.set_sizes(input_size, hidden_size, recurrent=False)
        self.weight_ih = nn.Parameter(torch.empty(2 * hidden_size, input_size, **kw))
        self.bias_ih = nn.Parameter(torch.empty(2 * hidden_size, **kw)) if bias else None
        self.reset_parameters()

    def project(self, x: Tensor) -> Tensor:
        return linear(x, self.weight_ih, self.bias_ih)  # (..., 2H)

    def step(self, u: Tensor, state: Tensor, recurrent_mask: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        if recurrent_mask is not None:
            raise InputError("MinGRUCell has no recurrent matrix, so recurrent dropout is not defined for it")
        u_z, h_tilde = u.chunk(2, dim=-1)
        z = torch.sigmoid(u_z)
        h = (1 - z) * state + z * h_tilde
        return h, h
