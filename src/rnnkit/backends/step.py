"""One time step for streaming (Recurrent.step): the cells torch.nn also has, in one compiled call.

Where a cell is exactly torch's (a plain LSTMCell, a reset-after GRUCell, an ElmanCell), its step is

  - with nothing needing a gradient (torch.no_grad, or no tensor requiring one), float32/float64 on CPU, the
    kernels loaded: rnnkit's own one-step kernel (`rnnkit::lstm_cell_step` / `gru_cell_step`, csrc/step.cpp:
    two BLAS products into one buffer and one vectorised pointwise pass) for LSTM and GRU;
  - otherwise torch's one-step kernel (`torch._VF.lstm_cell` / `gru_cell` / `rnn_tanh_cell` / `rnn_relu_cell`,
    what nn.LSTMCell / GRUCell / RNNCell run), which autograd differentiates.

Both compute the cell's own equations; at one step of a small batch the per-operator and per-line
Python cost, not the arithmetic, is most of the time, which is why the cell's Python step is not used.
"""

from __future__ import annotations

from typing import Callable, List, Optional, Tuple

import torch
from torch import Tensor

from ..cells import ElmanCell, GRUCell, LSTMCell
from . import extension
from .base import cell_type

StepResult = Tuple[Tensor, Tuple[Tensor, ...]]
#: (cell, x (B, I), state tuple) -> (y (B, H), new state tuple)
StepKernel = Callable[[object, Tensor, Tuple[Tensor, ...]], StepResult]
_CELL_WEIGHTS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
_COMPILED_DTYPES = (torch.float32, torch.float64)


def _cell_weights(cell) -> List[Optional[Tensor]]:
    """w_ih, w_hh, b_ih, b_hh as this call reads them (an owner's parametrization applied once)."""
    held = cell.held_weights()
    return [held[n] if n in held else getattr(cell, n) for n in _CELL_WEIGHTS]


def _compiled(x: Tensor, tensors) -> bool:
    """Whether rnnkit's own step kernel may run: nothing needs a gradient (it has no backward), float32 or
    float64 on CPU, and the kernels load."""
    if x.dtype not in _COMPILED_DTYPES or x.device.type != "cpu":
        return False
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        return False
    return extension.load() is None


def _lstm_step(cell, x: Tensor, state: Tuple[Tensor, ...]) -> StepResult:
    weights = _cell_weights(cell)
    if _compiled(x, (x, *state, *weights)):
        _, h, c = torch.ops.rnnkit.lstm_cell_step.default(x, *state, *weights)  # (the overload: no lookup)
    else:
        h, c = torch._VF.lstm_cell(x, state, *weights)
    return h, (h, c)


def _gru_step(cell, x: Tensor, state: Tuple[Tensor, ...]) -> StepResult:
    weights = _cell_weights(cell)
    if _compiled(x, (x, *state, *weights)):
        _, h = torch.ops.rnnkit.gru_cell_step.default(x, state[0], *weights)
    else:
        h = torch._VF.gru_cell(x, state[0], *weights)
    return h, (h,)


def _rnn_tanh_step(cell, x: Tensor, state: Tuple[Tensor, ...]) -> StepResult:
    h = torch._VF.rnn_tanh_cell(x, state[0], *_cell_weights(cell))
    return h, (h,)


def _rnn_relu_step(cell, x: Tensor, state: Tuple[Tensor, ...]) -> StepResult:
    h = torch._VF.rnn_relu_cell(x, state[0], *_cell_weights(cell))
    return h, (h,)


def step_kernel(cell) -> Optional[StepKernel]:
    """The one-step kernel for `cell` where it is exactly torch's cell (a plain LSTMCell without projection,
    a reset-after GRUCell, an ElmanCell), else None (the cell's own step runs)."""
    kind = cell_type(cell)
    if kind is LSTMCell:
        return _lstm_step if cell.weight_hr is None else None
    if kind is GRUCell:
        return _gru_step if cell.reset == "after" else None
    if kind is ElmanCell:
        return _rnn_tanh_step if cell.nonlinearity == "tanh" else _rnn_relu_step
    return None


def inference_step(cells, x: Tensor, state) -> Optional[Tuple[Tensor, Tuple[Tensor, ...]]]:
    """Every layer's step through rnnkit's compiled LSTM/GRU step kernels without Python checks, for inference:
    (y (B, H), one (L, B, H) tensor per state), or None where it does not apply (autograd on, no state given,
    a cell without a compiled step, the kernels unavailable) or an operand does not fit: the kernels check
    sizes and dtypes themselves, and the caller's own checks then name the mismatch. Zoneout is the
    caller's to rule out."""
    if state is None or torch.is_grad_enabled() or extension.load() is not None:
        return None
    parts = state if isinstance(state, tuple) else (state,)
    try:
        if any(part.dim() != 3 for part in parts):  # (L, B, S) each; the kernels check the rest
            return None
        # one layer: the (1, B, S) state tensors as they are (the kernels take and return that shape)
        layers = (parts,) if len(cells) == 1 else tuple(zip(*(part.unbind(0) for part in parts)))
        if len(layers) != len(cells):
            return None
        finals = []
        for cell, old in zip(cells, layers):
            kernel = step_kernel(cell)
            if kernel is _lstm_step:
                x, *new = torch.ops.rnnkit.lstm_cell_step.default(x, *old, *_cell_weights(cell))
            elif kernel is _gru_step:
                x, *new = torch.ops.rnnkit.gru_cell_step.default(x, *old, *_cell_weights(cell))
            else:
                return None
            finals.append(new)
    except (RuntimeError, TypeError, AttributeError):  # a mismatch the kernels caught, or not tensors
        return None
    return x, tuple(finals[0]) if len(cells) == 1 else stack_layers(finals)


def stack_layers(finals) -> Tuple[Tensor, ...]:
    """Per-layer state tuples [(B, S_k), ...] -> one (L, B, S_k) tensor per state (one layer: views, no copy)."""
    if len(finals) == 1:
        return tuple(f.unsqueeze(0) for f in finals[0])
    return tuple(torch.stack(parts) for parts in zip(*finals))
