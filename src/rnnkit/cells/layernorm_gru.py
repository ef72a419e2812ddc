"""Layer-normalised GRU cell (reset-after form)."""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .base import RecurrentCell, linear, masked
from .layernorm_lstm import EPS


class LayerNormGRUCell(RecurrentCell):
    """GRU cell with layer normalisation on both gate pre-activations, one time step.

        a_t = LN(W_ih x_t; γ_ih) + b_ih      (B, 3H)  blocks a_r, a_z, a_n
        e_t = LN(W_hh h_{t-1}; γ_hh) + b_hh  (B, 3H)  blocks e_r, e_z, e_n
        r_t = σ(a_r + e_r),  z_t = σ(a_z + e_z)                 (B, H)
        n_t = tanh(a_n + r_t ⊙ e_n)                             (B, H)
        h_t = (1 − z_t) ⊙ n_t + z_t ⊙ h_{t-1}                   (B, H)

    LN normalises over the whole 3H vector. Returns (h_t, h_t); gate order r, z, n.
    weight_ih: (3H, I), weight_hh: (3H, H), bias_ih, bias_hh: (3H,), ln_ih_weight, ln_hh_weight: (3H,).
    """

    keep_gate = (("bias_ih", "bias_hh"), 1, 1)  # z, the second block: h_t = … + z_t ⊙ h_{t-1}

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None) -> None:
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        H = hidden_size
        self.set_sizes(input_size, H)
        self.weight_ih = nn.Parameter(torch.empty(3 * H, input_size, **kw))
        self.weight_hh = nn.Parameter(torch.empty(3 * H, H, **kw))
        self.bias_ih = nn.Parameter(torch.empty(3 * H, **kw)) if bias else None
        self.bias_hh = nn.Parameter(torch.empty(3 * H, **kw)) if bias else None
        self.ln_ih_weight = nn.Parameter(torch.empty(3 * H, **kw))
        self.ln_hh_weight = nn.Parameter(torch.empty(3 * H, **kw))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        nn.init.ones_(self.ln_ih_weight)
        nn.init.ones_(self.ln_hh_weight)

    def project(self, x: Tensor) -> Tensor:
        return F.layer_norm(linear(x, self.weight_ih, None), (3 * self.hidden_size,), self.ln_ih_weight,
                            self.bias_ih, EPS)

    def step(self, u: Tensor, state: Tensor, recurrent_mask: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        h = state
        e = F.layer_norm(linear(masked(h, recurrent_mask), self.weight_hh, None), (3 * self.hidden_size,),
                         self.ln_hh_weight, self.bias_hh, EPS)
        a_r, a_z, a_n = u.chunk(3, dim=-1)
        e_r, e_z, e_n = e.chunk(3, dim=-1)
        r, z = torch.sigmoid(a_r + e_r), torch.sigmoid(a_z + e_z)
        n = torch.tanh(a_n + r * e_n)
        h = (1 - z) * n + z * h
        return h, h
