"""Peephole LSTM cell (Gers & Schmidhuber 2000)."""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from .lstm import LSTMCell


class PeepholeLSTMCell(LSTMCell):
    """LSTM cell with diagonal peephole connections, one time step.

        i_t = σ(W_ii x_t + b_ii + W_hi h_{t-1} + b_hi + p_i ⊙ c_{t-1})   (B, H)
        f_t = σ(W_if x_t + b_if + W_hf h_{t-1} + b_hf + p_f ⊙ c_{t-1})   (B, H)
        g_t = tanh(W_ig x_t + b_ig + W_hg h_{t-1} + b_hg)                (B, H)  C̃_t
        c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t                                  (B, H)
        o_t = σ(W_io x_t + b_io + W_ho h_{t-1} + b_ho + p_o ⊙ c_t)       (B, H)
        h_t = o_t ⊙ tanh(c_t)                                            (B, H)
        h_t = W_hr h_t                                if proj_size > 0   (B, P)

    Returns (h_t, (h_t, c_t)). Parameters as LSTMCell, plus
    weight_peephole: (3H,) holding p_i, p_f, p_o in that order.
    """

    def _init_extra(self, kw: dict) -> None:
        self.weight_peephole = nn.Parameter(torch.empty(3 * self.hidden_size, **kw))

    def gates(self, u: Tensor, h: Tensor, c: Tensor, recurrent_mask: Optional[Tensor]) -> Tuple[Tensor, ...]:
        i, f, g, o = super().gates(u, h, c, recurrent_mask)
        p_i, p_f, _ = self.weight_peephole.chunk(3)
        return i + p_i * c, f + p_f * c, g, o

    def output_gate(self, o: Tensor, c: Tensor) -> Tensor:
        return o + self.weight_peephole.chunk(3)[2] * c
