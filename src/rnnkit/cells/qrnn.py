"""Quasi-recurrent network (Bradbury et al. 2017): a causal convolution over time, then element-wise pooling."""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from .base import RecurrentCell, State, check_sizes, linear
from ..errors import InputError

#: pooling -> its gates after the candidate z (block order of weight_ih)
POOLINGS = {"f": ("f",), "fo": ("f", "o"), "ifo": ("f", "o", "i")}


class QRNNCell(RecurrentCell):
    """QRNN cell, one time step; a masked (causal) convolution of width k = `window` over the inputs.

        a_t = Σ_{j=0}^{k-1} W[:, :, k−1−j] x_{t−j} + b               (B, G·H)  x_{t<0} = 0 (causal)
        z_t = tanh(a_z),  f_t = σ(a_f),  o_t = σ(a_o),  i_t = σ(a_i)  (B, H)    blocks of a_t
        f-pooling:    c_t = f_t ⊙ c_{t-1} + (1 − f_t) ⊙ z_t,  h_t = c_t
        fo-pooling:   c_t = f_t ⊙ c_{t-1} + (1 − f_t) ⊙ z_t,  h_t = o_t ⊙ c_t
        ifo-pooling:  c_t = f_t ⊙ c_{t-1} + i_t ⊙ z_t,        h_t = o_t ⊙ c_t

    G = 2, 3, 4 (f, fo, ifo). Nothing reads h_{t-1}: every gate is a function of the
    last k inputs, so the input term of all steps is one GEMM (`project`) and the
    recurrence is element-wise and linear in c (c_t = f_t ⊙ c_{t-1} + b_t, a scan).

    State (c, window), window only when k > 1: window (B, (k−1)·G·H) holds, for each
    of the next k−1 steps, the part of its a that the inputs already seen contribute
    (block j−1: Σ_{m≥j} W[:, :, k−1−m] x_{t+j−m}, for step t+j). It is the
    convolution's memory of the last k−1 inputs in a width that is the same for every
    layer, so a second call continues the sequence exactly:
    `out_a, s = m(x[:t]); out_b, _ = m(x[t:], s)` equals `m(x)`. Zeros = zero inputs
    before the start. Returns (h_t, state).

    weight_ih: (G·H, I, k), torch.nn.Conv1d's layout ([:, :, k−1] multiplies x_t);
    bias_ih: (G·H,); gate order z, f, o, i.

    >>> cell = QRNNCell(3, 4, window=2, pooling="fo")
    >>> y, (c, window) = cell(torch.randn(5, 3))
    >>> y.shape, c.shape, window.shape
    (torch.Size([5, 4]), torch.Size([5, 4]), torch.Size([5, 12]))
    """

    keep_gate = (("bias_ih",), 1, 1)  # f, the block after z

    def __init__(self, input_size: int, hidden_size: int, window: int = 2, pooling: str = "fo", bias: bool = True,
                 device=None, dtype=None) -> None:
        super().__init__()
        check_sizes(type(self).__name__, window=window)
        if pooling not in POOLINGS:
            raise InputError(f"QRNNCell: pooling must be one of {', '.join(POOLINGS)}; got {pooling!r}")
        kw = {"device": device, "dtype": dtype}
        self.set_sizes(input_size, hidden_size, recurrent=False)
        self.window, self.pooling = window, pooling
        self.num_gates = 1 + len(POOLINGS[pooling])
        G_H = self.num_gates * hidden_size
        self.state_names = ("c", "window") if window > 1 else ("c",)
        self.state_sizes = (hidden_size, (window - 1) * G_H) if window > 1 else (hidden_size,)
        self.outputs_state = pooling == "f"  # h_t = c_t: zoneout on c changes the output too
        self.weight_ih = nn.Parameter(torch.empty(G_H, input_size, window, **kw))
        self.bias_ih = nn.Parameter(torch.empty(G_H, **kw)) if bias else None
        self.reset_parameters()

    def taps(self) -> Tuple[Tensor, Optional[Tensor]]:
        """weight_ih as one matrix (k·G·H, I), newest tap first (block j multiplies x_t by W[:, :, k−1−j]),
        and the bias of its rows (bias_ih on block 0, zeros below; None without bias)."""
        G_H, k = self.weight_ih.shape[0], self.window
        weight = self.weight_ih.flip(-1).permute(2, 0, 1).reshape(k * G_H, self.input_size)
        bias = self.bias_ih
        if bias is not None and k > 1:
            bias = torch.cat([bias, bias.new_zeros((k - 1) * G_H)])
        return weight, bias

    def project(self, x: Tensor) -> Tensor:
        """(..., I) -> (..., k·G·H): every tap applied to x_t (see `taps`). One GEMM; `step` adds the taps
        of earlier inputs from the window state."""
        return linear(x, *self.taps())

    def gates(self, a: Tensor) -> Tuple[Tensor, Tensor, Optional[Tensor], Optional[Tensor]]:
        """a (..., G·H) -> z, f, o, i (..., H) each; o and i are None where the pooling has none."""
        blocks = a.chunk(self.num_gates, dim=-1)
        z, f = torch.tanh(blocks[0]), torch.sigmoid(blocks[1])
        o = torch.sigmoid(blocks[2]) if self.num_gates > 2 else None
        i = torch.sigmoid(blocks[3]) if self.num_gates > 3 else None
        return z, f, o, i

    def pool(self, z: Tensor, f: Tensor, i: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
        """The recurrence as c_t = f_t ⊙ c_{t-1} + b_t: (f_t, b_t)."""
        return f, (i * z if i is not None else (1 - f) * z)

    def step(self, u: Tensor, state: State, recurrent_mask: Optional[Tensor] = None) -> Tuple[Tensor, State]:
        if recurrent_mask is not None:
            raise InputError("QRNNCell has no recurrent matrix, so recurrent dropout is not defined for it")
        G_H = self.num_gates * self.hidden_size
        if self.window == 1:
            c, a = state, u
        else:
            c, pending = state
            a = u[..., :G_H] + pending[..., :G_H]
            # step t+j gets this input's tap j plus what earlier inputs left for it
            pending = u[..., G_H:] + torch.cat([pending[..., G_H:], pending.new_zeros(*pending.shape[:-1], G_H)], -1)
        z, f, o, i = self.gates(a)
        keep, b = self.pool(z, f, i)
        c = keep * c + b
        h = c if o is None else o * c
        return h, (c if self.window == 1 else (c, pending))

    def convolve(self, x: Tensor, window: Optional[Tensor],
                 lengths: Optional[Tensor] = None) -> Tuple[Tensor, Optional[Tensor]]:
        """The convolution of a whole sequence at once, for the backends that run all steps together.

        x: (T, B, I); window: (B, (k−1)·G·H) initial window state, or None when k = 1. Returns a (T, B, G·H)
        for every step (garbage past a row's length) and the window state after each row's last valid step
        (None when k = 1): what stepping `step` T times gives. G·H outputs per step, not the k·G·H of
        `project`'s taps.
        """
        k, (T, B, I) = self.window, x.shape
        G_H = self.num_gates * self.hidden_size
        if k == 1:
            return linear(x, self.weight_ih[:, :, 0], self.bias_ih), None
        # a_t = Σ_j W[:, :, k−1−j] x_{t−j}: one GEMM per tap (Conv1d's sum, without k shifted inputs side by
        # side). Tap j reads x delayed by j steps, zeros first: padded to T + j rows and cut to T, never a
        # T − j slice, so torch.export keeps the time dimension dynamic (a T − j view guards T − j ≠ 1).
        a = linear(x, self.weight_ih[:, :, k - 1], self.bias_ih)
        for j in range(1, k):
            delayed = torch.cat([x.new_zeros(j, B, I), x])[:T]
            a = a + linear(delayed, self.weight_ih[:, :, k - 1 - j], None)
        old = window.view(B, k - 1, G_H)
        a[:k - 1] += old[:, :T].transpose(0, 1)  # what the inputs before this call left for its first steps
        last = torch.full((B,), T, device=x.device, dtype=torch.long) if lengths is None else lengths
        ago = last[None, :] - 1 - torch.arange(k - 1, device=x.device)[:, None]  # (k−1, B): L−1, L−2, ...
        recent = x.gather(0, ago.clamp(min=0)[:, :, None].expand(k - 1, B, I))
        recent = torch.where((ago >= 0)[:, :, None], recent, 0.0)  # [r] = x_{L−1−r}, zero before the start
        blocks = []
        for j in range(1, k):  # block j−1: step L−1+j gets tap k−1−j−r of x_{L−1−r}, and the old window's share
            step = last - 1 + j
            carried = old.gather(1, step.clamp(max=k - 2).view(B, 1, 1).expand(B, 1, G_H))[:, 0]
            block = torch.where((step <= k - 2)[:, None], carried, 0.0)
            for r in range(k - j):
                block = block + linear(recent[r], self.weight_ih[:, :, k - 1 - j - r], None)
            blocks.append(block)
        return a, torch.cat(blocks, dim=-1)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, window={self.window}, pooling={self.pooling!r}"
