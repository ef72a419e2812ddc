"""Convolutional GRU cell (Ballas et al. 2016), 1D, 2D or 3D."""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from .base import masked
from .conv_base import ConvCell, IntOrTuple


class ConvGRUCell(ConvCell):
    """Convolutional GRU cell, one time step (Ballas et al. 2016, "Delving Deeper into
    Convolutional Networks for Learning Video Representations").

    Every matrix product of the GRU becomes a "same" convolution (∗); the reset
    gate acts on h_{t-1} before its convolution, as in the paper:

        r_t = σ(W_xr ∗ x_t + b_xr + W_hr ∗ h_{t-1} + b_hr)             (B, Hc, *S)
        z_t = σ(W_xz ∗ x_t + b_xz + W_hz ∗ h_{t-1} + b_hz)             (B, Hc, *S)
        n_t = tanh(W_xn ∗ x_t + b_xn + W_hn ∗ (r_t ⊙ h_{t-1}) + b_hn)  (B, Hc, *S)
        h_t = (1 − z_t) ⊙ n_t + z_t ⊙ h_{t-1}                          (B, Hc, *S)

    (z as in torch.nn.GRU: z_t = 1 keeps the old state; the paper names 1 − z_t z_t.)
    Returns (h_t, h_t). x_t: (B, C, *S).

    Parameters: weight_ih (3Hc, C/groups, *k), weight_hh (3Hc, Hc/groups, *k),
    bias_ih, bias_hh (3Hc,); gate order r, z, n (torch's).
    """

    state_names = ("h",)
    num_gates = 3
    keep_gate = (("bias_ih", "bias_hh"), 1, 1)  # z, the second block: h_t = … + z_t ⊙ h_{t-1}

    def __init__(self, input_size: int, hidden_size: int, kernel_size: IntOrTuple = 3, *, dims: int = 2,
                 bias: bool = True, dilation: IntOrTuple = 1, groups: int = 1, device=None, dtype=None) -> None:
        super().__init__(input_size, hidden_size, kernel_size, dims=dims, bias=bias, dilation=dilation,
                         groups=groups, device=device, dtype=dtype)
        self.state_sizes = (hidden_size,)
        self.reset_parameters()

    def step(self, u: Tensor, state: Tensor, recurrent_mask: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """u (B, 3Hc, *S) from `project`; state h (B, Hc, *S); mask (B, Hc, *S) on what enters W_h·."""
        h = state
        Hc = self.hidden_size
        b_rz = b_n = None
        if self.bias_hh is not None:
            b_rz, b_n = self.bias_hh[:2 * Hc], self.bias_hh[2 * Hc:]
        rz = u[:, :2 * Hc] + self.conv(masked(h, recurrent_mask), self.weight_hh[:2 * Hc], b_rz, 2)
        r, z = torch.sigmoid(rz).chunk(2, dim=1)
        n = torch.tanh(u[:, 2 * Hc:] + self.conv(masked(r * h, recurrent_mask), self.weight_hh[2 * Hc:], b_n, 1))
        h = (1 - z) * n + z * h
        return h, h
