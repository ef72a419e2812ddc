"""Per-cell step bodies: each built-in cell's input projection and one time step, in ONNX operators.

`STEPS` maps the exact cell class to (project, step), as `backends.fused._FAMILIES` maps it to its
kernel: `project` writes the input term of every step in the outer graph (one MatMul, or one Conv
over the T·B frames, hoisted out of the loop as in the fused backend), `step` writes one step of the
recurrence in a Scan body (`layer.py`). A new cell is exportable once it has an entry here.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from ...cells import (ConvGRUCell, ConvLSTMCell, ElmanCell, GRUCell, LayerNormGRUCell, LayerNormLSTMCell, LSTMCell,
                      MinGRUCell, PeepholeLSTMCell, QRNNCell, RecurrentCell, SRUCell)
from ...cells.base import bias_sum
from .graph import Graph, f32

#: per family: (projection in the outer graph, step in the body). The step gets the body graph,
#: the cell, u_t (B, K) and the state names, and returns (y_t, new state names).
Project = Callable[[Graph, RecurrentCell, str], str]
Step = Callable[[Graph, RecurrentCell, str, List[str]], Tuple[str, List[str]]]


def _lstm_project(g: Graph, cell: LSTMCell, x: str) -> str:
    return g.matmul_t(x, f32(cell.weight_ih), bias_sum(f32(cell.bias_ih), f32(cell.bias_hh)), "w_ih")


def _lstm_gate_math(g: Graph, gates: List[str], c: str, peep) -> Tuple[str, str]:
    """h_t, c_t from the pre-activations i, f, g, o (peepholes p_i, p_f on c_{t-1}, p_o on c_t)."""
    i, f, gg, o = gates
    if peep is not None:
        i = g.add(i, g.mul(g.const(peep[0], "p_i"), c))
        f = g.add(f, g.mul(g.const(peep[1], "p_f"), c))
    c_new = g.add(g.mul(g.sigmoid(f), c), g.mul(g.sigmoid(i), g.tanh(gg)))
    if peep is not None:
        o = g.add(o, g.mul(g.const(peep[2], "p_o"), c_new))
    return g.mul(g.sigmoid(o), g.tanh(c_new)), c_new


def _lstm_step(g: Graph, cell: LSTMCell, u: str, state: List[str]) -> Tuple[str, List[str]]:
    h, c = state
    H = cell.hidden_size
    gates = g.split(g.add(u, g.matmul_t(h, f32(cell.weight_hh), None, "w_hh")), [H] * 4)
    peep = f32(cell.weight_peephole).chunk(3) if isinstance(cell, PeepholeLSTMCell) else None
    h_new, c_new = _lstm_gate_math(g, gates, c, peep)
    if cell.weight_hr is not None:
        h_new = g.matmul_t(h_new, f32(cell.weight_hr), None, "w_hr")
    return h_new, [h_new, c_new]


def _gru_project(g: Graph, cell: GRUCell, x: str) -> str:
    return g.matmul_t(x, f32(cell.weight_ih), f32(cell.bias_ih), "w_ih")


def _gru_step(g: Graph, cell: GRUCell, u: str, state: List[str]) -> Tuple[str, List[str]]:
    (h,) = state
    H = cell.hidden_size
    u_r, u_z, u_n = g.split(u, [H] * 3)
    w_hh, b_hh = f32(cell.weight_hh), f32(cell.bias_hh)
    if cell.reset == "after":
        w_r, w_z, w_n = g.split(g.matmul_t(h, w_hh, b_hh, "w_hh"), [H] * 3)
        r, z = g.sigmoid(g.add(u_r, w_r)), g.sigmoid(g.add(u_z, w_z))
        n = g.tanh(g.add(u_n, g.mul(r, w_n)))
    else:
        w_r, w_z = g.split(g.matmul_t(h, w_hh[:2 * H], None if b_hh is None else b_hh[:2 * H], "w_hrz"), [H] * 2)
        r, z = g.sigmoid(g.add(u_r, w_r)), g.sigmoid(g.add(u_z, w_z))
        n = g.tanh(g.add(u_n, g.matmul_t(g.mul(r, h), w_hh[2 * H:], None if b_hh is None else b_hh[2 * H:],
                                         "w_hn")))
    h_new = g.add(g.mul(g.one_minus(z), n), g.mul(z, h))
    return h_new, [h_new]


def _elman_project(g: Graph, cell: ElmanCell, x: str) -> str:
    return g.matmul_t(x, f32(cell.weight_ih), f32(cell.bias_ih), "w_ih")


def _elman_step(g: Graph, cell: ElmanCell, u: str, state: List[str]) -> Tuple[str, List[str]]:
    pre = g.add(u, g.matmul_t(state[0], f32(cell.weight_hh), f32(cell.bias_hh), "w_hh"))
    h = g.op("Relu" if cell.nonlinearity == "relu" else "Tanh", [pre])
    return h, [h]


def _sru_project(g: Graph, cell: SRUCell, x: str) -> str:
    H = cell.hidden_size
    wx = g.op("MatMul", [x, g.const(f32(cell.weight_ih).t(), "w_ih")])
    if cell.bias is not None:
        zeros = torch.zeros(H)
        bias = torch.cat([zeros, f32(cell.bias)] + ([zeros] if cell.highway_projection else []))
        wx = g.add(wx, g.const(bias, "b"))
    return wx if cell.highway_projection else g.op("Concat", [wx, x], axis=-1)


def _sru_step(g: Graph, cell: SRUCell, u: str, state: List[str]) -> Tuple[str, List[str]]:
    (c,) = state
    H = cell.hidden_size
    x_tilde, u_f, u_r, highway = g.split(u, [H] * 4)
    v_f, v_r = f32(cell.weight_c).chunk(2)
    f = g.sigmoid(g.add(u_f, g.mul(g.const(v_f, "v_f"), c)))
    r = g.sigmoid(g.add(u_r, g.mul(g.const(v_r, "v_r"), c)))
    c_new = g.add(g.mul(f, c), g.mul(g.one_minus(f), x_tilde))
    h = g.add(g.mul(r, c_new), g.mul(g.one_minus(r), highway))
    return h, [c_new]


def _lnlstm_project(g: Graph, cell: LayerNormLSTMCell, x: str) -> str:
    wx = g.op("MatMul", [x, g.const(f32(cell.weight_ih).t(), "w_ih")])
    return g.layer_norm(wx, f32(cell.ln_ih_weight), f32(cell.bias), 4 * cell.hidden_size)


def _lnlstm_step(g: Graph, cell: LayerNormLSTMCell, u: str, state: List[str]) -> Tuple[str, List[str]]:
    h, c = state
    H = cell.hidden_size
    rec = g.layer_norm(g.op("MatMul", [h, g.const(f32(cell.weight_hh).t(), "w_hh")]), f32(cell.ln_hh_weight),
                       None, 4 * H)
    i, f, gg, o = g.split(g.add(u, rec), [H] * 4)
    c_new = g.add(g.mul(g.sigmoid(f), c), g.mul(g.sigmoid(i), g.tanh(gg)))
    c_norm = g.layer_norm(c_new, f32(cell.ln_cell_weight), f32(cell.ln_cell_bias), H)
    h_new = g.mul(g.sigmoid(o), g.tanh(c_norm))
    return h_new, [h_new, c_new]


def _lngru_project(g: Graph, cell: LayerNormGRUCell, x: str) -> str:
    wx = g.op("MatMul", [x, g.const(f32(cell.weight_ih).t(), "w_ih")])
    return g.layer_norm(wx, f32(cell.ln_ih_weight), f32(cell.bias_ih), 3 * cell.hidden_size)


def _lngru_step(g: Graph, cell: LayerNormGRUCell, u: str, state: List[str]) -> Tuple[str, List[str]]:
    (h,) = state
    H = cell.hidden_size
    e = g.layer_norm(g.op("MatMul", [h, g.const(f32(cell.weight_hh).t(), "w_hh")]), f32(cell.ln_hh_weight),
                     f32(cell.bias_hh), 3 * H)
    a_r, a_z, a_n = g.split(u, [H] * 3)
    e_r, e_z, e_n = g.split(e, [H] * 3)
    r, z = g.sigmoid(g.add(a_r, e_r)), g.sigmoid(g.add(a_z, e_z))
    n = g.tanh(g.add(a_n, g.mul(r, e_n)))
    h_new = g.add(g.mul(g.one_minus(z), n), g.mul(z, h))
    return h_new, [h_new]


def _mingru_project(g: Graph, cell: MinGRUCell, x: str) -> str:
    return g.matmul_t(x, f32(cell.weight_ih), f32(cell.bias_ih), "w_ih")


def _mingru_step(g: Graph, cell: MinGRUCell, u: str, state: List[str]) -> Tuple[str, List[str]]:
    (h,) = state
    u_z, h_tilde = g.split(u, [cell.hidden_size] * 2)
    z = g.sigmoid(u_z)
    h_new = g.add(g.mul(g.one_minus(z), h), g.mul(z, h_tilde))
    return h_new, [h_new]


def _qrnn_project(g: Graph, cell: QRNNCell, x: str) -> str:
    weight, bias = cell.taps()
    return g.matmul_t(x, f32(weight), f32(bias), "w_taps")


def _qrnn_step(g: Graph, cell: QRNNCell, u: str, state: List[str]) -> Tuple[str, List[str]]:
    H, k = cell.hidden_size, cell.window
    G_H = cell.num_gates * H
    if k == 1:
        (c,), a, pending = state, u, []
    else:  # as QRNNCell.step: this input's tap j plus what earlier inputs left for step t+j
        c, window = state
        u_now, u_later = g.split(u, [G_H, (k - 1) * G_H])
        left = g.split(window, [G_H, (k - 2) * G_H]) if k > 2 else [window]
        a = g.add(u_now, left[0])
        shifted = [g.op("Pad", [left[1], g.const(np.array([0, 0, 0, G_H]), "pads")])] if k > 2 else []
        pending = [g.add(u_later, shifted[0])] if shifted else [u_later]
    blocks = g.split(a, [H] * cell.num_gates)
    z, f = g.tanh(blocks[0]), g.sigmoid(blocks[1])
    written = g.sigmoid(blocks[3]) if cell.num_gates == 4 else g.one_minus(f)
    c_new = g.add(g.mul(f, c), g.mul(written, z))
    h = c_new if cell.num_gates == 2 else g.mul(g.sigmoid(blocks[2]), c_new)
    return h, [c_new] + pending


def _dense_conv_weight(weight: Tensor, gates: int, groups: int) -> Tensor:
    """A grouped convolution's weight (G·Hc, C/groups, *k) as the plain convolution's (G·Hc, C, *k).

    Hidden channel j of every gate reads input group j // (Hc/groups) (see cells.conv_base), so the
    dense weight is block diagonal; the convolution's output channels stay gate-major.
    """
    weight = f32(weight)
    if groups == 1:
        return weight
    rows, c_per, k = weight.shape[0], weight.shape[1], weight.shape[2:]
    Hc = rows // gates
    dense = torch.zeros(rows, c_per * groups, *k)
    for row in range(rows):
        q = (row % Hc) // (Hc // groups)
        dense[row, q * c_per:(q + 1) * c_per] = weight[row]
    return dense


def _conv(g: Graph, cell, x: str, weight: Tensor, bias: Optional[Tensor], gates: int) -> str:
    """The cell's "same" convolution (N, C, *S) -> (N, gates·Hc, *S), channels gate-major."""
    inputs = [x, g.const(_dense_conv_weight(weight, gates, cell.groups), "conv_w")]
    if bias is not None:
        inputs.append(g.const(f32(bias), "conv_b"))
    return g.op("Conv", inputs, kernel_shape=list(cell.kernel_size), dilations=list(cell.dilation),
                pads=list(cell.padding) * 2, strides=[1] * cell.dims)


def _conv_project(g: Graph, cell, x: str) -> str:
    """x (T, B, C, *S) -> (T, B, G·Hc, *S): one Conv over the T·B frames."""
    frames = g.op("Reshape", [x, g.op("Concat", [g.const(np.array([-1]), "minus1"), g.slice_shape(x, 2)], axis=0)])
    u = _conv(g, cell, frames, cell.weight_ih, cell.bias_ih, cell.num_gates)
    return g.op("Reshape", [u, g.op("Concat", [g.slice_shape(x, 0, 2), g.slice_shape(u, 1)], axis=0)])


def _conv_lstm_step(g: Graph, cell: ConvLSTMCell, u: str, state: List[str]) -> Tuple[str, List[str]]:
    h, c = state
    H = cell.hidden_size
    gates = g.split(g.add(u, _conv(g, cell, h, cell.weight_hh, cell.bias_hh, 4)), [H] * 4, axis=1)
    # peepholes (Hc, *P): one weight per channel or a full spatial map, broadcast over the batch
    peep = f32(cell.weight_peephole).chunk(3) if cell.weight_peephole is not None else None
    h_new, c_new = _lstm_gate_math(g, gates, c, peep)
    return h_new, [h_new, c_new]


def _conv_gru_step(g: Graph, cell: ConvGRUCell, u: str, state: List[str]) -> Tuple[str, List[str]]:
    (h,) = state
    H = cell.hidden_size
    w_hh, b_hh = f32(cell.weight_hh), f32(cell.bias_hh)
    u_rz, u_n = g.split(u, [2 * H, H], axis=1)
    rz = g.add(u_rz, _conv(g, cell, h, w_hh[:2 * H], None if b_hh is None else b_hh[:2 * H], 2))
    r, z = g.split(g.sigmoid(rz), [H, H], axis=1)
    n = g.tanh(g.add(u_n, _conv(g, cell, g.mul(r, h), w_hh[2 * H:], None if b_hh is None else b_hh[2 * H:], 1)))
    h_new = g.add(g.mul(g.one_minus(z), n), g.mul(z, h))
    return h_new, [h_new]


#: exact cell class -> (project, step). Subclasses are refused: they may change the math.
STEPS: Dict[type, Tuple[Project, Step]] = {
    LSTMCell: (_lstm_project, _lstm_step),
    PeepholeLSTMCell: (_lstm_project, _lstm_step),
    GRUCell: (_gru_project, _gru_step),
    ElmanCell: (_elman_project, _elman_step),
    SRUCell: (_sru_project, _sru_step),
    LayerNormLSTMCell: (_lnlstm_project, _lnlstm_step),
    LayerNormGRUCell: (_lngru_project, _lngru_step),
    MinGRUCell: (_mingru_project, _mingru_step),
    QRNNCell: (_qrnn_project, _qrnn_step),
    ConvLSTMCell: (_conv_project, _conv_lstm_step),
    ConvGRUCell: (_conv_project, _conv_gru_step),
}
