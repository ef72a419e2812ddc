"""Convolutional LSTM cell (Shi et al. 2015), 1D, 2D or 3D."""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from .base import masked
from .conv_base import ConvCell, IntOrTuple
from ..errors import InputError, InputTypeError


class ConvLSTMCell(ConvCell):
    """Convolutional LSTM cell, one time step (Shi et al. 2015, "Convolutional LSTM Network").

    Every matrix product of the LSTM becomes a "same" convolution (∗) over a
    spatial state; peepholes are Hadamard products (⊙) with C:

        i_t = σ(W_xi ∗ x_t + b_xi + W_hi ∗ h_{t-1} + b_hi + W_ci ⊙ C_{t-1})   (B, Hc, *S)
        f_t = σ(W_xf ∗ x_t + b_xf + W_hf ∗ h_{t-1} + b_hf + W_cf ⊙ C_{t-1})   (B, Hc, *S)
        g_t = tanh(W_xg ∗ x_t + b_xg + W_hg ∗ h_{t-1} + b_hg)                 (B, Hc, *S)  C̃_t
        C_t = f_t ⊙ C_{t-1} + i_t ⊙ g_t                                       (B, Hc, *S)
        o_t = σ(W_xo ∗ x_t + b_xo + W_ho ∗ h_{t-1} + b_ho + W_co ⊙ C_t)       (B, Hc, *S)
        h_t = o_t ⊙ tanh(C_t)                                                 (B, Hc, *S)

    (the W_c· terms only with peephole=True). Returns (h_t, (h_t, C_t)).
    x_t: (B, C, *S); S = (L,), (H, W) or (D, H, W) for dims 1, 2, 3.

    Parameters: weight_ih (4Hc, C/groups, *k), weight_hh (4Hc, Hc/groups, *k),
    bias_ih, bias_hh (4Hc,); gate order i, f, g, o (torch's). With peephole,
    weight_peephole (3Hc, *P) holding W_ci, W_cf, W_co: P = (1,)*dims (one
    weight per channel, shared over space) by default, or P = peephole_size,
    a full spatial map as in the paper (then the input's spatial size must
    equal peephole_size).
    """

    state_names = ("h", "c")
    num_gates = 4
    keep_gate = (("bias_ih", "bias_hh"), 1, 1)  # f, the second block

    def __init__(self, input_size: int, hidden_size: int, kernel_size: IntOrTuple = 3, *, dims: int = 2,
                 bias: bool = True, dilation: IntOrTuple = 1, groups: int = 1, peephole: bool = False,
                 peephole_size: Optional[Sequence[int]] = None, device=None, dtype=None) -> None:
        super().__init__(input_size, hidden_size, kernel_size, dims=dims, bias=bias, dilation=dilation,
                         groups=groups, device=device, dtype=dtype)
        owner = type(self).__name__
        if not isinstance(peephole, bool):
            raise InputTypeError(f"{owner}: peephole must be a bool; got {peephole!r}")
        if peephole_size is not None:
            if not peephole:
                raise InputError(f"{owner}: peephole_size needs peephole=True")
            if (not isinstance(peephole_size, (tuple, list)) or len(peephole_size) != dims
                    or not all(isinstance(v, int) and v > 0 for v in peephole_size)):
                raise InputError(f"{owner}: peephole_size must be {dims} positive ints (the spatial size); "
                                 f"got {peephole_size!r}")
            peephole_size = tuple(peephole_size)
        self.peephole, self.peephole_size = peephole, peephole_size
        self.state_sizes = (hidden_size, hidden_size)
        P = peephole_size or (1,) * dims
        self.weight_peephole = (nn.Parameter(torch.empty(3 * hidden_size, *P, device=device, dtype=dtype))
                                if peephole else None)
        self.reset_parameters()

    def _check_spatial(self, x: Tensor) -> None:
        if self.peephole_size is not None and tuple(x.shape[-self.dims:]) != self.peephole_size:
            raise InputError(f"{type(self).__name__}: the spatial peepholes were built for spatial size "
                             f"{self.peephole_size}; got input of shape {tuple(x.shape)}")

    def step(self, u: Tensor, state: Tuple[Tensor, Tensor],
             recurrent_mask: Optional[Tensor] = None) -> Tuple[Tensor, Tuple[Tensor, Tensor]]:
        """u (B, 4Hc, *S) from `project`; state (h, C) each (B, Hc, *S); mask (B, Hc, *S) on h_{t-1}."""
        h, c = state
        i, f, g, o = (u + self.conv(masked(h, recurrent_mask), self.weight_hh, self.bias_hh, 4)).chunk(4, dim=1)
        if self.weight_peephole is not None:
            p_i, p_f, p_o = self.weight_peephole.chunk(3)
            i, f = i + p_i * c, f + p_f * c
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        if self.weight_peephole is not None:
            o = o + p_o * c
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, (h, c)

    def extra_repr(self) -> str:
        s = super().extra_repr()
        if self.peephole:
            s += ", peephole=True" + (f", peephole_size={self.peephole_size}" if self.peephole_size else "")
        return s
