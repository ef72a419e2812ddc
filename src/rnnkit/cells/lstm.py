"""LSTM cell (torch.nn's gate order and layout, optional output projection)."""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from .base import RecurrentCell, check_sizes, linear, masked
from ..errors import InputError


class LSTMCell(RecurrentCell):
    """LSTM cell, one time step (Hochreiter & Schmidhuber 1997, with forget gate).

        i_t = σ(W_ii x_t + b_ii + W_hi h_{t-1} + b_hi)        (B, H)  input gate
        f_t = σ(W_if x_t + b_if + W_hf h_{t-1} + b_hf)        (B, H)  forget gate
        g_t = tanh(W_ig x_t + b_ig + W_hg h_{t-1} + b_hg)     (B, H)  candidate C̃_t
        o_t = σ(W_io x_t + b_io + W_ho h_{t-1} + b_ho)        (B, H)  output gate
        c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t                       (B, H)
        h_t = o_t ⊙ tanh(c_t)                                 (B, H)
        h_t = W_hr h_t                     if proj_size > 0   (B, P)

    Returns (h_t, (h_t, c_t)). x_t: (B, I), h_{t-1}: (B, P or H), c_{t-1}: (B, H).
    weight_ih: (4H, I), weight_hh: (4H, P or H), bias_ih, bias_hh: (4H,), weight_hr: (P, H);
    gate order i, f, g, o (torch's).
    """

    state_names = ("h", "c")
    keep_gate = (("bias_ih", "bias_hh"), 1, 1)  # f, the second block

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, proj_size: int = 0,
                 device=None, dtype=None) -> None:
        super().__init__()
        check_sizes(type(self).__name__, input_size=input_size, hidden_size=hidden_size)
        if isinstance(proj_size, bool) or not isinstance(proj_size, int) or proj_size < 0:
            raise InputError(f"{type(self).__name__}: proj_size must be an int >= 0; got {proj_size!r}")
        if proj_size >= hidden_size:
            raise InputError(f"{type(self).__name__}: proj_size must be smaller than hidden_size "
                             f"({hidden_size}); got {proj_size}")
        kw = {"device": device, "dtype": dtype}
        out = proj_size or hidden_size
        self.input_size, self.hidden_size, self.proj_size, self.output_size = input_size, hidden_size, proj_size, out
        self.state_sizes = (out, hidden_size)
        self.recurrent_input_size = out
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden_size, input_size, **kw))
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden_size, out, **kw))
        self.bias_ih = nn.Parameter(torch.empty(4 * hidden_size, **kw)) if bias else None
        self.bias_hh = nn.Parameter(torch.empty(4 * hidden_size, **kw)) if bias else None
        self.weight_hr = nn.Parameter(torch.empty(proj_size, hidden_size, **kw)) if proj_size else None
        self._init_extra(kw)
        self.reset_parameters()

    def _init_extra(self, kw: dict) -> None:
        """Hook for subclasses that add parameters (peepholes)."""

    def project(self, x: Tensor) -> Tensor:
        return linear(x, self.weight_ih, self.bias_ih)  # (..., 4H)

    def gates(self, u: Tensor, h: Tensor, c: Tensor, recurrent_mask: Optional[Tensor]) -> Tuple[Tensor, ...]:
        """Pre-activations of i, f, g, o, each (B, H)."""
        return (u + linear(masked(h, recurrent_mask), self.weight_hh, self.bias_hh)).chunk(4, dim=-1)

    def step(self, u: Tensor, state: Tuple[Tensor, Tensor],
             recurrent_mask: Optional[Tensor] = None) -> Tuple[Tensor, Tuple[Tensor, Tensor]]:
        h, c = state
        i, f, g, o = self.gates(u, h, c, recurrent_mask)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(self.output_gate(o, c)) * torch.tanh(c)
        if self.weight_hr is not None:
            h = linear(h, self.weight_hr, None)
        return h, (h, c)

    def output_gate(self, o: Tensor, c: Tensor) -> Tensor:
        """Pre-activation of o_t given c_t (the peephole cell adds p_o ⊙ c_t)."""
        return o

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}" + (f", proj_size={self.proj_size}" if self.proj_size else "")
