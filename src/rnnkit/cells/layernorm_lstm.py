"""Layer-normalised LSTM cell (Ba, Kiros & Hinton 2016)."""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .base import RecurrentCell, linear, masked

EPS = 1e-5


class LayerNormLSTMCell(RecurrentCell):
    """LSTM cell with layer normalisation, one time step.

        a_t = LN(W_ih x_t; γ_ih) + LN(W_hh h_{t-1}; γ_hh) + b     (B, 4H)
        i_t, f_t, g_t, o_t = σ, σ, tanh, σ of the four H-blocks of a_t
        c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t                          (B, H)
        h_t = o_t ⊙ tanh(LN(c_t; γ_c, β_c))                      (B, H)

    LN(v; γ, β) = γ ⊙ (v − mean(v)) / sqrt(var(v) + 1e-5) + β over the whole
    vector (haste's LayerNormLSTM); the gate terms have gains only, b is their
    shared bias. Returns (h_t, (h_t, c_t)); gate order i, f, g, o.

    weight_ih: (4H, I), weight_hh: (4H, H), bias: (4H,), ln_ih_weight, ln_hh_weight: (4H,),
    ln_cell_weight, ln_cell_bias: (H,).
    """

    state_names = ("h", "c")
    keep_gate = (("bias",), 1, 1)  # f, the second block

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None) -> None:
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        H = hidden_size
        self.set_sizes(input_size, H, num_states=2)
        self.weight_ih = nn.Parameter(torch.empty(4 * H, input_size, **kw))
        self.weight_hh = nn.Parameter(torch.empty(4 * H, H, **kw))
        self.bias = nn.Parameter(torch.empty(4 * H, **kw)) if bias else None
        self.ln_ih_weight = nn.Parameter(torch.empty(4 * H, **kw))
        self.ln_hh_weight = nn.Parameter(torch.empty(4 * H, **kw))
        self.ln_cell_weight = nn.Parameter(torch.empty(H, **kw))
        self.ln_cell_bias = nn.Parameter(torch.empty(H, **kw))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        for gain in (self.ln_ih_weight, self.ln_hh_weight, self.ln_cell_weight):
            nn.init.ones_(gain)
        nn.init.zeros_(self.ln_cell_bias)

    def project(self, x: Tensor) -> Tensor:
        return F.layer_norm(linear(x, self.weight_ih, None), (4 * self.hidden_size,), self.ln_ih_weight, self.bias, EPS)

    def step(self, u: Tensor, state: Tuple[Tensor, Tensor],
             recurrent_mask: Optional[Tensor] = None) -> Tuple[Tensor, Tuple[Tensor, Tensor]]:
        h, c = state
        rec = F.layer_norm(linear(masked(h, recurrent_mask), self.weight_hh, None), (4 * self.hidden_size,),
                           self.ln_hh_weight, None, EPS)
        i, f, g, o = (u + rec).chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        c_norm = F.layer_norm(c, (self.hidden_size,), self.ln_cell_weight, self.ln_cell_bias, EPS)
        h = torch.sigmoid(o) * torch.tanh(c_norm)
        return h, (h, c)
