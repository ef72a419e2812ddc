"""What the convolutional cells share: arguments, "same" convolutions, grouped gate layout.

A convolutional cell replaces every matrix product of its vector sibling by a
convolution over a spatial state (Shi et al. 2015). Its input x_t is
(B, C, *S) with S the spatial axes (L for dims=1, (H, W) for dims=2,
(D, H, W) for dims=3), so `feature_dims = dims + 1`; its state tensors are
(B, Hc, *S) with the same spatial size ("same" padding, stride 1).

Weights keep torch.nn's gate-major layout: `weight_ih` (G·Hc, C/groups, *k)
holds gate 0's Hc output channels, then gate 1's, ...; `weight_hh`
(G·Hc, Hc/groups, *k) likewise. With groups > 1, hidden channel j of every
gate reads input group j // (Hc/groups) (and hidden group likewise): the
rows are permuted to the group-major order the convolution needs at call
time, so no second copy of the weights exists.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .base import RecurrentCell, State, check_sizes
from ..errors import InputError, InputTypeError

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
IntOrTuple = Union[int, Sequence[int]]


def _tuple(owner: str, name: str, value: IntOrTuple, dims: int) -> Tuple[int, ...]:
    if isinstance(value, bool):
        raise InputTypeError(f"{owner}: {name} must be an int or a tuple of {dims} ints; got {value!r}")
    if isinstance(value, int):
        return (value,) * dims
    if isinstance(value, (tuple, list)) and len(value) == dims and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value):
        return tuple(value)
    raise InputTypeError(f"{owner}: {name} must be an int or a tuple of {dims} ints (dims={dims}); got {value!r}")


def group_major(w: Tensor, gates: int, groups: int) -> Tensor:
    """Rows (gate, group, j) -> (group, gate, j) of a weight (G·Hc, ...) or bias (G·Hc,)."""
    if groups == 1:
        return w
    return w.reshape(gates, groups, -1, *w.shape[1:]).transpose(0, 1).reshape(w.shape)


def gate_major(y: Tensor, gates: int, groups: int) -> Tensor:
    """Channels (group, gate, j) -> (gate, group, j) of a conv output (N, G·Hc, *S)."""
    if groups == 1:
        return y
    N, S = y.shape[0], y.shape[2:]
    return y.reshape(N, groups, gates, -1, *S).transpose(1, 2).reshape(N, -1, *S)


class ConvCell(RecurrentCell):
    """Base of ConvLSTMCell and ConvGRUCell: arguments, parameters, the input convolution.

    Args:
        input_size: input channels C.
        hidden_size: hidden channels Hc (of every state tensor).
        kernel_size: odd int or tuple of `dims` odd ints (both convolutions).
        dims: spatial axes, 1, 2 or 3.
        bias: add bias_ih and bias_hh.
        dilation: int or tuple; "same" padding is dilation·(k−1)/2 per axis.
        groups: grouped convolutions; C and Hc must be divisible by it.
    """

    #: gate blocks G of weight_ih / weight_hh (LSTM 4, GRU 3); set by subclasses
    num_gates: int = 1

    def __init__(self, input_size: int, hidden_size: int, kernel_size: IntOrTuple = 3, *, dims: int = 2,
                 bias: bool = True, dilation: IntOrTuple = 1, groups: int = 1, device=None, dtype=None) -> None:
        super().__init__()
        owner = type(self).__name__
        check_sizes(owner, input_size=input_size, hidden_size=hidden_size, groups=groups)
        if dims not in (1, 2, 3) or isinstance(dims, bool):
            raise InputError(f"{owner}: dims must be 1, 2 or 3 (spatial axes); got {dims!r}")
        if not isinstance(bias, bool):
            raise InputTypeError(f"{owner}: bias must be a bool; got {bias!r}")
        k = _tuple(owner, "kernel_size", kernel_size, dims)
        d = _tuple(owner, "dilation", dilation, dims)
        if any(v < 1 or v % 2 == 0 for v in k):
            raise InputError(f"{owner}: kernel_size must be odd and positive (\"same\" padding keeps the state's "
                             f"spatial size only for odd kernels); got {kernel_size!r}")
        if any(v < 1 for v in d):
            raise InputError(f"{owner}: dilation must be positive; got {dilation!r}")
        for name, size in (("input_size", input_size), ("hidden_size", hidden_size)):
            if size % groups:
                raise InputError(f"{owner}: {name}={size} must be divisible by groups={groups}")
        kw = {"device": device, "dtype": dtype}
        self.dims, self.kernel_size, self.dilation, self.groups = dims, k, d, groups
        self.padding = tuple(di * (ki - 1) // 2 for ki, di in zip(k, d))
        self.feature_dims = dims + 1
        self.input_size, self.hidden_size, self.output_size = input_size, hidden_size, hidden_size
        self.recurrent_input_size = hidden_size
        G = self.num_gates
        self.weight_ih = nn.Parameter(torch.empty(G * hidden_size, input_size // groups, *k, **kw))
        self.weight_hh = nn.Parameter(torch.empty(G * hidden_size, hidden_size // groups, *k, **kw))
        self.bias_ih = nn.Parameter(torch.empty(G * hidden_size, **kw)) if bias else None
        self.bias_hh = nn.Parameter(torch.empty(G * hidden_size, **kw)) if bias else None

    # ------------------------------------------------------------ helpers
    def conv(self, x: Tensor, weight: Tensor, bias: Optional[Tensor], gates: int) -> Tensor:
        """"Same" convolution (N, C_in, *S) -> (N, gates·Hc, *S), channels gate-major."""
        G = self.groups
        y = _CONV[self.dims](x, group_major(weight, gates, G), None if bias is None else group_major(bias, gates, G),
                             padding=self.padding, dilation=self.dilation, groups=G)
        return gate_major(y, gates, G)

    def project(self, x: Tensor) -> Tensor:
        """Input convolution of every step at once: (..., C, *S) -> (..., G·Hc, *S), one batched conv."""
        self._check_spatial(x)
        lead, fd = x.shape[:-self.feature_dims], self.feature_dims
        u = self.conv(x.reshape(-1, *x.shape[-fd:]), self.weight_ih, self.bias_ih, self.num_gates)
        return u.reshape(*lead, *u.shape[1:])

    def _check_spatial(self, x: Tensor) -> None:
        """Hook: cells with spatial-size parameters check the input's spatial size here."""

    def initial_state(self, batch_size: int, *, spatial_size: Optional[Sequence[int]] = None,
                      device: Optional[torch.device] = None, dtype: Optional[torch.dtype] = None) -> State:
        """Zeros: one (B, Hc, *spatial_size) tensor per state tensor."""
        if spatial_size is None or len(tuple(spatial_size)) != self.dims:
            raise InputError(f"{type(self).__name__}.initial_state needs spatial_size=({self.dims} ints), the "
                             f"spatial shape of the input; got {spatial_size!r}")
        ref = self.weight_ih
        zeros = tuple(torch.zeros(batch_size, s, *spatial_size, device=device or ref.device, dtype=dtype or ref.dtype)
                      for s in self.state_sizes)
        return zeros if len(zeros) > 1 else zeros[0]

    def forward(self, x: Tensor, state: Optional[State] = None) -> Tuple[Tensor, State]:
        """One time step: x (B, C, *S) -> (h (B, Hc, *S), new state)."""
        owner = type(self).__name__
        if x.dim() != 1 + self.feature_dims or x.shape[1] != self.input_size:
            raise InputError(f"{owner} expects x of shape (batch, {self.input_size}, {self._spatial_names()}); "
                             f"got {tuple(x.shape)}. For a whole sequence use rnnkit.Recurrent or "
                             f"rnnkit.Conv{'LSTM' if self.num_gates == 4 else 'GRU'}.")
        if state is None:
            state = self.initial_state(x.shape[0], spatial_size=x.shape[2:], device=x.device, dtype=x.dtype)
        for name, part in zip(self.state_names, self.unpack_state(state)):
            expected = (x.shape[0], self.hidden_size, *x.shape[2:])
            if tuple(part.shape) != expected:
                raise InputError(f"{owner}: state {name} must have shape {expected} (batch, hidden channels, "
                                 f"the input's spatial size); got {tuple(part.shape)}")
        return self.step(self.project(x), state)

    def _spatial_names(self) -> str:
        return {1: "length", 2: "height, width", 3: "depth, height, width"}[self.dims]

    def reset_parameters(self) -> None:
        """torch.nn.Conv's default: U(−1/√fan_in, 1/√fan_in) with each weight's own fan-in."""
        k = math.prod(self.kernel_size)
        for name, p in self.named_parameters():
            fan_in = (self.input_size if name.endswith("_ih") else self.hidden_size) // self.groups * k
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(p, -bound, bound)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}, kernel_size={self.kernel_size}, dims={self.dims}"
        if any(d != 1 for d in self.dilation):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias_ih is None:
            s += ", bias=False"
        return s
