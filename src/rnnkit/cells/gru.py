"""GRU cell in both forms: reset after (torch/cuDNN) and reset before (textbook)."""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from .base import RecurrentCell, linear, masked
from ..errors import InputError


class GRUCell(RecurrentCell):
    """GRU cell, one time step (Cho et al. 2014).

        r_t = σ(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)                  (B, H)  reset gate
        z_t = σ(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)                  (B, H)  update gate
      reset="after" (torch.nn.GRU, cuDNN, Keras reset_after=True):
        n_t = tanh(W_in x_t + b_in + r_t ⊙ (W_hn h_{t-1} + b_hn))       (B, H)
      reset="before" (the textbook form, h̃_t = tanh(W·[r_t ⊙ h_{t-1}, x_t])):
        n_t = tanh(W_in x_t + b_in + W_hn (r_t ⊙ h_{t-1}) + b_hn)       (B, H)
        h_t = (1 − z_t) ⊙ n_t + z_t ⊙ h_{t-1}                           (B, H)

    Returns (h_t, h_t). x_t: (B, I), h_{t-1}: (B, H).
    weight_ih: (3H, I), weight_hh: (3H, H), bias_ih, bias_hh: (3H,); gate order r, z, n (torch's).
    """

    keep_gate = (("bias_ih", "bias_hh"), 1, 1)  # z, the second block: h_t = … + z_t ⊙ h_{t-1}

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, reset: str = "after",
                 device=None, dtype=None) -> None:
        super().__init__()
        if reset not in ("after", "before"):
            raise InputError(f"{type(self).__name__}: reset must be 'after' or 'before'; got {reset!r}")
        kw = {"device": device, "dtype": dtype}
        self.set_sizes(input_size, hidden_size)
        self.reset = reset
        self.weight_ih = nn.Parameter(torch.empty(3 * hidden_size, input_size, **kw))
        self.weight_hh = nn.Parameter(torch.empty(3 * hidden_size, hidden_size, **kw))
        self.bias_ih = nn.Parameter(torch.empty(3 * hidden_size, **kw)) if bias else None
        self.bias_hh = nn.Parameter(torch.empty(3 * hidden_size, **kw)) if bias else None
        self.reset_parameters()

    def project(self, x: Tensor) -> Tensor:
        return linear(x, self.weight_ih, self.bias_ih)  # (..., 3H)

    def step(self, u: Tensor, state: Tensor, recurrent_mask: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        h = state
        hm = masked(h, recurrent_mask)
        u_r, u_z, u_n = u.chunk(3, dim=-1)
        H = self.hidden_size
        if self.reset == "after":
            w_r, w_z, w_n = linear(hm, self.weight_hh, self.bias_hh).chunk(3, dim=-1)
            r, z = torch.sigmoid(u_r + w_r), torch.sigmoid(u_z + w_z)
            n = torch.tanh(u_n + r * w_n)
        else:
            b = self.bias_hh
            w_rz = linear(hm, self.weight_hh[: 2 * H], None if b is None else b[: 2 * H])
            w_r, w_z = w_rz.chunk(2, dim=-1)
            r, z = torch.sigmoid(u_r + w_r), torch.sigmoid(u_z + w_z)
            n = torch.tanh(u_n + linear(r * hm, self.weight_hh[2 * H:], None if b is None else b[2 * H:]))
        h = (1 - z) * n + z * h
        return h, h

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, reset={self.reset!r}"
