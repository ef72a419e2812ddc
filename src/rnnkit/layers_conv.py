"""Convolutional sequence layers: `ConvLSTM` and `ConvGRU` over (T, B, C, *S) sequences.

Thin constructors around `rnnkit.Recurrent` with a `ConvLSTMCell` /
`ConvGRUCell` factory, so stacking, bidirectionality, lengths, initial states,
dropout and backend selection are the ones every other layer has; they run on the
reference backend, which hoists the input convolution of all T·B frames into one
call (a hand-derived-BPTT `conv` backend was measured no faster and removed:
docs/DESIGN.md).

    x          (T, B, C, *S)    (B, T, C, *S) with batch_first; S = (L,), (H, W), (D, H, W)
    outputs    (T, B, D·Hc, *S) the last layer's h_t at every step (D = 2 if bidirectional)
    states     ConvLSTM: (h_n, c_n), ConvGRU: h_n, each (num_layers·D, B, Hc, *S)
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch

from .cells.conv_base import IntOrTuple
from .cells.conv_gru import ConvGRUCell
from .cells.conv_lstm import ConvLSTMCell
from .errors import InputError
from .layers import InitOptions, check_init_options


class _ConvLayer(InitOptions):
    def initial_state(self, batch_size: int, spatial_size: Optional[Sequence[int]] = None, *, device=None,
                      dtype=None):
        """Zero state (num_layers·D, B, Hc, *spatial_size) per state tensor (spatial_size: the input's)."""
        if spatial_size is None or len(tuple(spatial_size)) != self.dims:
            raise InputError(f"{type(self).__name__}.initial_state needs spatial_size ({self.dims} ints, the "
                             f"input's spatial shape); got {spatial_size!r}")
        parts = tuple(torch.zeros(self.num_layers * self.num_directions, batch_size, s, *spatial_size,
                                  device=device if device is not None else self._param_device(),
                                  dtype=dtype if dtype is not None else self._param_dtype())
                      for s in self.state_sizes)
        return parts if len(parts) > 1 else parts[0]


class ConvLSTM(_ConvLayer):
    """Stacked convolutional LSTM (see ConvLSTMCell for the equations).

    Args:
        input_channels, hidden_channels: C and Hc; layer l > 0 reads D·Hc channels.
        kernel_size: odd int or tuple (every layer).
        num_layers, batch_first, bidirectional: as torch.nn.LSTM.
        peephole: Hadamard peepholes W_c· ⊙ C; peephole_size makes them full spatial maps.
        dims: spatial axes (1, 2 or 3).
        bias, dilation, groups: of both convolutions of every cell.
        forget_bias: the forget gate f starts at σ(forget_bias) (see rnnkit.LSTM).
        recurrent_init: "orthogonal" for torch.nn.init.orthogonal_ on each gate's recurrent kernel
            (flattened to Hc rows), or "uniform" (the default: the cells' own).
        **options: rnnkit.Recurrent's keywords (dropout, recurrent_dropout, zoneout_*, backend, ...).
    """

    def __init__(self, input_channels: int, hidden_channels: int, kernel_size: IntOrTuple = 3, num_layers: int = 1,
                 batch_first: bool = False, bidirectional: bool = False, peephole: bool = False, dims: int = 2, *,
                 bias: bool = True, dilation: IntOrTuple = 1, groups: int = 1,
                 peephole_size: Optional[Sequence[int]] = None, forget_bias: Optional[float] = None,
                 recurrent_init: str = "uniform", device=None, dtype=None, **options: Any) -> None:
        check_init_options(type(self).__name__, forget_bias, recurrent_init)

        def make(size: int) -> ConvLSTMCell:
            return ConvLSTMCell(size, hidden_channels, kernel_size, dims=dims, bias=bias, dilation=dilation,
                                groups=groups, peephole=peephole, peephole_size=peephole_size, device=device,
                                dtype=dtype)

        super().__init__(make, num_layers, bidirectional=bidirectional, batch_first=batch_first,
                         input_size=input_channels, **options)
        self.dims, self.peephole = dims, peephole
        self.apply_init_options(forget_bias, recurrent_init)


class ConvGRU(_ConvLayer):
    """Stacked convolutional GRU (see ConvGRUCell for the equations); arguments as ConvLSTM, no peepholes;
    forget_bias starts the update gate z (z = 1 keeps the old state) at σ(forget_bias), as rnnkit.GRU."""

    def __init__(self, input_channels: int, hidden_channels: int, kernel_size: IntOrTuple = 3, num_layers: int = 1,
                 batch_first: bool = False, bidirectional: bool = False, dims: int = 2, *, bias: bool = True,
                 dilation: IntOrTuple = 1, groups: int = 1, forget_bias: Optional[float] = None,
                 recurrent_init: str = "uniform", device=None, dtype=None, **options: Any) -> None:
        check_init_options(type(self).__name__, forget_bias, recurrent_init)

        def make(size: int) -> ConvGRUCell:
            return ConvGRUCell(size, hidden_channels, kernel_size, dims=dims, bias=bias, dilation=dilation,
                               groups=groups, device=device, dtype=dtype)

        super().__init__(make, num_layers, bidirectional=bidirectional, batch_first=batch_first,
                         input_size=input_channels, **options)
        self.dims = dims
        self.apply_init_options(forget_bias, recurrent_init)
