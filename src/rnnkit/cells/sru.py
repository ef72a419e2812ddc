"""Simple Recurrent Unit (Lei et al. 2018) with its highway connection."""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from .base import RecurrentCell, linear
from ..errors import InputError


class SRUCell(RecurrentCell):
    """SRU cell, one time step.

        x̃_t = W x_t                                                  (B, H)
        f_t = σ(W_f x_t + v_f ⊙ c_{t-1} + b_f)                       (B, H)  forget gate
        r_t = σ(W_r x_t + v_r ⊙ c_{t-1} + b_r)                       (B, H)  reset gate
        c_t = f_t ⊙ c_{t-1} + (1 − f_t) ⊙ x̃_t                        (B, H)
        h_t = r_t ⊙ c_t + (1 − r_t) ⊙ x'_t                           (B, H)  highway

    x'_t = x_t when input_size == hidden_size, else W_h x_t (a learned projection).
    The only recurrence is element-wise (no W_hh), so everything that depends on
    x_t is one GEMM over all steps. State: c_t. Returns (h_t, c_t).

    weight_ih: (3H, I) or (4H, I), blocks W, W_f, W_r[, W_h]; weight_c: (2H,) v_f, v_r;
    bias: (2H,) b_f, b_r.
    """

    state_names = ("c",)
    outputs_state = False
    keep_gate = (("bias",), 0, 1)  # b_f, the first block

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None) -> None:
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.set_sizes(input_size, hidden_size, recurrent=False)
        self.highway_projection = input_size != hidden_size
        blocks = 4 if self.highway_projection else 3
        self.weight_ih = nn.Parameter(torch.empty(blocks * hidden_size, input_size, **kw))
        self.weight_c = nn.Parameter(torch.empty(2 * hidden_size, **kw))
        self.bias = nn.Parameter(torch.empty(2 * hidden_size, **kw)) if bias else None
        self.reset_parameters()

    def project(self, x: Tensor) -> Tensor:
        """(..., I) -> (..., 4H): x̃, W_f x + b_f, W_r x + b_r, highway x'."""
        H = self.hidden_size
        wx = linear(x, self.weight_ih, None)
        if self.bias is not None:
            wx = torch.cat([wx[..., :H], wx[..., H:3 * H] + self.bias, wx[..., 3 * H:]], dim=-1)
        return wx if self.highway_projection else torch.cat([wx, x], dim=-1)

    def step(self, u: Tensor, state: Tensor, recurrent_mask: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        if recurrent_mask is not None:
            raise InputError("SRUCell has no recurrent matrix, so recurrent dropout is not defined for it")
        c = state
        x_tilde, u_f, u_r, highway = u.chunk(4, dim=-1)
        v_f, v_r = self.weight_c.chunk(2)
        f = torch.sigmoid(u_f + v_f * c)
        r = torch.sigmoid(u_r + v_r * c)
        c = f * c + (1 - f) * x_tilde
        h = r * c + (1 - r) * highway
        return h, c
