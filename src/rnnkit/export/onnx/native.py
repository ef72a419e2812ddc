"""ONNX's own LSTM / GRU / RNN operators, for the layers whose configuration is exactly theirs.

    LSTMCell (no proj_size)      ONNX LSTM, gate order i, o, f, c (torch: i, f, g, o)
    PeepholeLSTMCell (no proj)   ONNX LSTM with P = [p_i, p_o, p_f]
    GRUCell reset="after"        ONNX GRU linear_before_reset=1, gates z, r, h (torch: r, z, n)
    GRUCell reset="before"       ONNX GRU linear_before_reset=0
    ElmanCell                    ONNX RNN (Tanh or Relu)
"""

from __future__ import annotations

from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from ...cells import ElmanCell, GRUCell, LSTMCell, PeepholeLSTMCell, RecurrentCell
from .graph import Graph, f32


def _lstm_reorder(w: Tensor) -> Tensor:
    """torch gate blocks i, f, g, o -> ONNX i, o, f, c (first axis)."""
    i, f, g, o = w.chunk(4, dim=0)
    return torch.cat([i, o, f, g])


def _gru_reorder(w: Tensor) -> Tensor:
    """torch gate blocks r, z, n -> ONNX z, r, h (first axis)."""
    r, z, n = w.chunk(3, dim=0)
    return torch.cat([z, r, n])


class NativeOp(NamedTuple):
    op: str                                           # the ONNX operator
    reorder: Callable[[Tensor], Tensor]               # torch's gate blocks -> the operator's
    num_states: int                                   # its final-state outputs
    attrs: Callable[[RecurrentCell, int], Dict[str, object]]  # (cell, directions) -> extra attributes


#: exact cell class -> its ONNX operator (subclasses may change the math, so they run as a Scan)
NATIVE: Dict[type, NativeOp] = {
    LSTMCell: NativeOp("LSTM", _lstm_reorder, 2, lambda cell, D: {}),
    PeepholeLSTMCell: NativeOp("LSTM", _lstm_reorder, 2, lambda cell, D: {}),
    GRUCell: NativeOp("GRU", _gru_reorder, 1,
                      lambda cell, D: {"linear_before_reset": 1 if cell.reset == "after" else 0}),
    ElmanCell: NativeOp("RNN", lambda w: w, 1,
                        lambda cell, D: {"activations": ["Relu" if cell.nonlinearity == "relu" else "Tanh"] * D}),
}


def native_reason(cell: RecurrentCell, zoneout: bool) -> Optional[str]:
    """None if one ONNX LSTM/GRU/RNN operator computes this cell exactly, else why not."""
    if zoneout:
        return "zoneout (its eval-mode expectation is not part of the ONNX RNN operators)"
    if type(cell) not in NATIVE:
        return f"{type(cell).__name__} has no ONNX operator"
    if getattr(cell, "proj_size", 0):
        return "proj_size (ONNX LSTM has no output projection)"
    return None


def native_layer(g: Graph, cells: Sequence[RecurrentCell], x: str, init: Sequence[Optional[str]],
                 seq_lens: Optional[str]) -> Tuple[str, List[str]]:
    """One ONNX LSTM/GRU/RNN node for a layer (both directions). -> (y (T, B, D·H), finals (D, B, S_k))."""
    cell = cells[0]
    D, H = len(cells), cell.hidden_size
    native = NATIVE[type(cell)]
    attrs = {"hidden_size": H, "direction": "bidirectional" if D == 2 else "forward", **native.attrs(cell, D)}
    W = torch.stack([native.reorder(f32(c.weight_ih)) for c in cells])  # (D, G·H, I)
    R = torch.stack([native.reorder(f32(c.weight_hh)) for c in cells])  # (D, G·H, H)
    inputs = [x, g.const(W, "W"), g.const(R, "R")]
    if cell.bias_ih is not None:
        B = torch.stack([torch.cat([native.reorder(f32(c.bias_ih)), native.reorder(f32(c.bias_hh))])
                         for c in cells])
        inputs.append(g.const(B, "B"))
    else:
        inputs.append("")
    inputs.append(seq_lens or "")
    inputs += [s or "" for s in init]
    if type(cell) is PeepholeLSTMCell:
        P = torch.stack([torch.cat([p[0], p[2], p[1]]) for p in (f32(c.weight_peephole).chunk(3) for c in cells)])
        inputs.append(g.const(P, "P"))  # ONNX P = [p_i, p_o, p_f]
    while inputs and inputs[-1] == "":
        inputs.pop()
    outs = g.op(native.op, inputs, outputs=1 + native.num_states, hint=native.op.lower(), **attrs)
    y = g.op("Transpose", [outs[0]], perm=[0, 2, 1, 3])  # (T, D, B, H) -> (T, B, D, H)
    y = g.op("Reshape", [y, g.const(np.array([0, 0, -1], dtype=np.int64), "shape")])
    return y, list(outs[1:])
