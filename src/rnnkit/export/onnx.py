"""ONNX export of rnnkit layers and language models, built from the module's weights.

The graph is written with `onnx.helper`, not traced, so every configuration has
dynamic batch and time axes. By default it takes what `model(x)` takes, so
`session.run(None, {"input": x})` runs it; lengths and the initial state are
graph inputs only on request (`lengths=True`, `initial_state=True`):

    inputs:  input (T, B, I) — (B, T, I) with batch_first; for a RecurrentLM,
             tokens (T, B) int64 —, then lengths (B,) int64 (lengths=True), then
             the initial state h0[, c0] (L·D, B, S_k) (initial_state=True)
    outputs: output (T, B, D·O) — logits (T, B, V) for a RecurrentLM —, then the
             final state h_n[, c_n] (L·D, B, S_k)

Application models export whole: SequenceClassifier / SequenceTagger take tokens
(B, T) int64 and lengths (B,) and give logits as their forward does (the pooling
in the graph); a Forecaster takes input (B, L, F) and future (B, H, K) and gives
theta (B, H, C, P), its rollouts unrolled over the fixed horizon; the video
EncoderForecaster takes frames (k, B, C, S, S) and gives the logits of the next n
frames. Models whose forward the exporter cannot write (Seq2Seq, CaptionModel)
raise ExportError naming the blocking feature and the alternative.

Each layer is one ONNX operator where the configuration is exactly the
operator's (same equations, nothing added):

    LSTMCell (no proj_size)      ONNX LSTM, gate order i, o, f, c (torch: i, f, g, o)
    PeepholeLSTMCell (no proj)   ONNX LSTM with P = [p_i, p_o, p_f]
    GRUCell reset="after"        ONNX GRU linear_before_reset=1, gates z, r, h (torch: r, z, n)
    GRUCell reset="before"       ONNX GRU linear_before_reset=0
    ElmanCell                    ONNX RNN (Tanh or Relu)

Everything else — proj_size, SRU, the layer-norm cells, minGRU, ConvLSTM and
ConvGRU (1-D, 2-D, 3-D, peepholes, dilation, groups), zoneout (its eval-mode
expectation) — runs as an ONNX `Scan` whose body is the cell's step written in
ONNX operators, after the input projection for all steps (one MatMul, or one
Conv over the T·B frames, hoisted out of the loop as in the fused backend).
The convolutional layers take (T, B, C, *S) with dynamic spatial axes too. With lengths, the Scan body
holds each row's state after its last valid step and zeroes its padded outputs,
and the reverse direction reverses each row's valid prefix (`ReverseSequence`),
exactly as `Recurrent` does. The graph computes in float32; inference only
(dropout off, zoneout as its expectation).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

from .._optional import require
from ..cells import (ConvGRUCell, ConvLSTMCell, ElmanCell, GRUCell, LayerNormGRUCell, LayerNormLSTMCell, LSTMCell,
                     MinGRUCell, PeepholeLSTMCell, RecurrentCell, SRUCell)
from ..cells.layernorm_lstm import EPS as LN_EPS
from ..recurrent import Recurrent
from ..errors import InputError

OPSET = 17  # LayerNormalization needs 17
FLOAT = 1   # onnx.TensorProto.FLOAT
INT64 = 7   # onnx.TensorProto.INT64
BOOL = 9    # onnx.TensorProto.BOOL


class ExportError(InputError):
    """A model or configuration the exporter cannot represent; the message names the feature and the way out."""


def _onnx():
    onnx = require("onnx", extra="deploy", purpose="ONNX export")
    return onnx, onnx.helper


# --------------------------------------------------------------- graph builder
class _Graph:
    """Nodes and initializers of one ONNX graph; a Scan body shares its parent's names and constants."""

    def __init__(self, parent: Optional["_Graph"] = None) -> None:
        self.parent = parent
        self.nodes: list = []
        self.initializers: list = []
        self._counter = parent._counter if parent is not None else itertools.count()

    def fresh(self, hint: str) -> str:
        return f"{hint}_{next(self._counter)}"

    def const(self, value, hint: str = "c") -> str:
        """An initializer (float32 unless integer) in the outermost graph; subgraphs read it by name."""
        if self.parent is not None:
            return self.parent.const(value, hint)
        _, helper = _onnx()
        numpy_helper = require("onnx.numpy_helper", extra="deploy", purpose="ONNX export")

        if isinstance(value, Tensor):
            value = value.detach().cpu().numpy()
        array = np.asarray(value)
        array = array.astype(np.int64 if array.dtype.kind in "iu" else np.float32)
        name = self.fresh(hint)
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def op(self, op_type: str, inputs: Sequence[str], outputs: int = 1, hint: Optional[str] = None,
           **attrs) -> Union[str, List[str]]:
        _, helper = _onnx()
        names = [self.fresh(hint or op_type.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names, **attrs))
        return names[0] if outputs == 1 else names

    # small helpers, named after what they compute
    def matmul_t(self, x: str, weight: Tensor, bias: Optional[Tensor] = None, hint: str = "w") -> str:
        """x @ weight.T (+ bias): weight (G, K) as torch stores it."""
        y = self.op("MatMul", [x, self.const(weight.t(), hint)])
        return self.op("Add", [y, self.const(bias, hint + "_b")]) if bias is not None else y

    def split(self, x: str, sizes: Sequence[int], axis: int = -1) -> List[str]:
        return self.op("Split", [x, self.const(np.array(sizes, dtype=np.int64), "split")], outputs=len(sizes),
                       axis=axis)

    def slice_shape(self, x: str, start: int, end: Optional[int] = None) -> str:
        """Shape(x)[start:end] as a 1-D int64 tensor."""
        attrs = {"start": start} if end is None else {"start": start, "end": end}
        return self.op("Shape", [x], **attrs)

    def sigmoid(self, x: str) -> str:
        return self.op("Sigmoid", [x])

    def tanh(self, x: str) -> str:
        return self.op("Tanh", [x])

    def add(self, a: str, b: str) -> str:
        return self.op("Add", [a, b])

    def mul(self, a: str, b: str) -> str:
        return self.op("Mul", [a, b])

    def sub(self, a: str, b: str) -> str:
        return self.op("Sub", [a, b])

    def one_minus(self, x: str) -> str:
        return self.sub(self.const(np.float32(1.0), "one"), x)

    def layer_norm(self, x: str, scale: Tensor, bias: Optional[Tensor], size: int) -> str:
        b = bias if bias is not None else torch.zeros(size)
        return self.op("LayerNormalization", [x, self.const(scale, "ln_g"), self.const(b, "ln_b")], axis=-1,
                       epsilon=LN_EPS)


def _f32(t: Optional[Tensor]) -> Optional[Tensor]:
    return None if t is None else t.detach().to(torch.float32).cpu()


# ------------------------------------------------------------- native operators
def _lstm_reorder(w: Tensor) -> Tensor:
    """torch gate blocks i, f, g, o -> ONNX i, o, f, c (first axis)."""
    i, f, g, o = w.chunk(4, dim=0)
    return torch.cat([i, o, f, g])


def _gru_reorder(w: Tensor) -> Tensor:
    """torch gate blocks r, z, n -> ONNX z, r, h (first axis)."""
    r, z, n = w.chunk(3, dim=0)
    return torch.cat([z, r, n])


def _native_reason(cell: RecurrentCell, zoneout: bool) -> Optional[str]:
    """None if one ONNX LSTM/GRU/RNN operator computes this cell exactly, else why not."""
    if zoneout:
        return "zoneout (its eval-mode expectation is not part of the ONNX RNN operators)"
    if type(cell) in (LSTMCell, PeepholeLSTMCell):
        return "proj_size (ONNX LSTM has no output projection)" if cell.proj_size else None
    if type(cell) in (GRUCell, ElmanCell):
        return None
    return f"{type(cell).__name__} has no ONNX operator"


def _native_layer(g: _Graph, cells: Sequence[RecurrentCell], x: str, init: Sequence[Optional[str]],
                  seq_lens: Optional[str]) -> Tuple[str, List[str]]:
    """One ONNX LSTM/GRU/RNN node for a layer (both directions). -> (y (T, B, D·H), finals (D, B, S_k))."""
    cell = cells[0]
    D, H = len(cells), cell.hidden_size
    direction = "bidirectional" if D == 2 else "forward"
    attrs: Dict[str, object] = {"hidden_size": H, "direction": direction}
    if type(cell) in (LSTMCell, PeepholeLSTMCell):
        op, reorder, n_states = "LSTM", _lstm_reorder, 2
    elif type(cell) is GRUCell:
        op, reorder, n_states = "GRU", _gru_reorder, 1
        attrs["linear_before_reset"] = 1 if cell.reset == "after" else 0
    else:
        op, reorder, n_states = "RNN", (lambda w: w), 1
        attrs["activations"] = ["Relu" if cell.nonlinearity == "relu" else "Tanh"] * D
    W = torch.stack([reorder(_f32(c.weight_ih)) for c in cells])  # (D, G·H, I)
    R = torch.stack([reorder(_f32(c.weight_hh)) for c in cells])  # (D, G·H, H)
    inputs = [x, g.const(W, "W"), g.const(R, "R")]
    if cell.bias_ih is not None:
        B = torch.stack([torch.cat([reorder(_f32(c.bias_ih)), reorder(_f32(c.bias_hh))]) for c in cells])
        inputs.append(g.const(B, "B"))
    else:
        inputs.append("")
    inputs.append(seq_lens or "")
    inputs += [s or "" for s in init]
    if type(cell) is PeepholeLSTMCell:
        P = torch.stack([torch.cat([p[0], p[2], p[1]]) for p in (_f32(c.weight_peephole).chunk(3) for c in cells)])
        inputs.append(g.const(P, "P"))  # ONNX P = [p_i, p_o, p_f]
    while inputs and inputs[-1] == "":
        inputs.pop()
    outs = g.op(op, inputs, outputs=1 + n_states, hint=op.lower(), **attrs)
    y = g.op("Transpose", [outs[0]], perm=[0, 2, 1, 3])  # (T, D, B, H) -> (T, B, D, H)
    y = g.op("Reshape", [y, g.const(np.array([0, 0, -1], dtype=np.int64), "shape")])
    return y, list(outs[1:])


# ------------------------------------------------------------------ Scan bodies
#: per family: (projection in the outer graph, step in the body). The step gets the body graph,
#: the cell, u_t (B, K) and the state names, and returns (y_t, new state names).
Project = Callable[[_Graph, RecurrentCell, str], str]
Step = Callable[[_Graph, RecurrentCell, str, List[str]], Tuple[str, List[str]]]


def _bias_sum(a: Optional[Tensor], b: Optional[Tensor]) -> Optional[Tensor]:
    if a is None:
        return b
    return a if b is None else a + b


def _lstm_project(g: _Graph, cell: LSTMCell, x: str) -> str:
    return g.matmul_t(x, _f32(cell.weight_ih), _bias_sum(_f32(cell.bias_ih), _f32(cell.bias_hh)), "w_ih")


def _lstm_gate_math(g: _Graph, gates: List[str], c: str, peep) -> Tuple[str, str]:
    """h_t, c_t from the pre-activations i, f, g, o (peepholes p_i, p_f on c_{t-1}, p_o on c_t)."""
    i, f, gg, o = gates
    if peep is not None:
        i = g.add(i, g.mul(g.const(peep[0], "p_i"), c))
        f = g.add(f, g.mul(g.const(peep[1], "p_f"), c))
    c_new = g.add(g.mul(g.sigmoid(f), c), g.mul(g.sigmoid(i), g.tanh(gg)))
    if peep is not None:
        o = g.add(o, g.mul(g.const(peep[2], "p_o"), c_new))
    return g.mul(g.sigmoid(o), g.tanh(c_new)), c_new


def _lstm_step(g: _Graph, cell: LSTMCell, u: str, state: List[str]) -> Tuple[str, List[str]]:
    h, c = state
    H = cell.hidden_size
    gates = g.split(g.add(u, g.matmul_t(h, _f32(cell.weight_hh), None, "w_hh")), [H] * 4)
    peep = _f32(cell.weight_peephole).chunk(3) if isinstance(cell, PeepholeLSTMCell) else None
    h_new, c_new = _lstm_gate_math(g, gates, c, peep)
    if cell.weight_hr is not None:
        h_new = g.matmul_t(h_new, _f32(cell.weight_hr), None, "w_hr")
    return h_new, [h_new, c_new]


def _gru_project(g: _Graph, cell: GRUCell, x: str) -> str:
    return g.matmul_t(x, _f32(cell.weight_ih), _f32(cell.bias_ih), "w_ih")


def _gru_step(g: _Graph, cell: GRUCell, u: str, state: List[str]) -> Tuple[str, List[str]]:
    (h,) = state
    H = cell.hidden_size
    u_r, u_z, u_n = g.split(u, [H] * 3)
    w_hh, b_hh = _f32(cell.weight_hh), _f32(cell.bias_hh)
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


def _elman_project(g: _Graph, cell: ElmanCell, x: str) -> str:
    return g.matmul_t(x, _f32(cell.weight_ih), _f32(cell.bias_ih), "w_ih")


def _elman_step(g: _Graph, cell: ElmanCell, u: str, state: List[str]) -> Tuple[str, List[str]]:
    pre = g.add(u, g.matmul_t(state[0], _f32(cell.weight_hh), _f32(cell.bias_hh), "w_hh"))
    h = g.op("Relu" if cell.nonlinearity == "relu" else "Tanh", [pre])
    return h, [h]


def _sru_project(g: _Graph, cell: SRUCell, x: str) -> str:
    H = cell.hidden_size
    wx = g.op("MatMul", [x, g.const(_f32(cell.weight_ih).t(), "w_ih")])
    if cell.bias is not None:
        zeros = torch.zeros(H)
        bias = torch.cat([zeros, _f32(cell.bias)] + ([zeros] if cell.highway_projection else []))
        wx = g.add(wx, g.const(bias, "b"))
    return wx if cell.highway_projection else g.op("Concat", [wx, x], axis=-1)


def _sru_step(g: _Graph, cell: SRUCell, u: str, state: List[str]) -> Tuple[str, List[str]]:
    (c,) = state
    H = cell.hidden_size
    x_tilde, u_f, u_r, highway = g.split(u, [H] * 4)
    v_f, v_r = _f32(cell.weight_c).chunk(2)
    f = g.sigmoid(g.add(u_f, g.mul(g.const(v_f, "v_f"), c)))
    r = g.sigmoid(g.add(u_r, g.mul(g.const(v_r, "v_r"), c)))
    c_new = g.add(g.mul(f, c), g.mul(g.one_minus(f), x_tilde))
    h = g.add(g.mul(r, c_new), g.mul(g.one_minus(r), highway))
    return h, [c_new]


def _lnlstm_project(g: _Graph, cell: LayerNormLSTMCell, x: str) -> str:
    wx = g.op("MatMul", [x, g.const(_f32(cell.weight_ih).t(), "w_ih")])
    return g.layer_norm(wx, _f32(cell.ln_ih_weight), _f32(cell.bias), 4 * cell.hidden_size)


def _lnlstm_step(g: _Graph, cell: LayerNormLSTMCell, u: str, state: List[str]) -> Tuple[str, List[str]]:
    h, c = state
    H = cell.hidden_size
    rec = g.layer_norm(g.op("MatMul", [h, g.const(_f32(cell.weight_hh).t(), "w_hh")]), _f32(cell.ln_hh_weight),
                       None, 4 * H)
    i, f, gg, o = g.split(g.add(u, rec), [H] * 4)
    c_new = g.add(g.mul(g.sigmoid(f), c), g.mul(g.sigmoid(i), g.tanh(gg)))
    c_norm = g.layer_norm(c_new, _f32(cell.ln_cell_weight), _f32(cell.ln_cell_bias), H)
    h_new = g.mul(g.sigmoid(o), g.tanh(c_norm))
    return h_new, [h_new, c_new]


def _lngru_project(g: _Graph, cell: LayerNormGRUCell, x: str) -> str:
    wx = g.op("MatMul", [x, g.const(_f32(cell.weight_ih).t(), "w_ih")])
    return g.layer_norm(wx, _f32(cell.ln_ih_weight), _f32(cell.bias_ih), 3 * cell.hidden_size)


def _lngru_step(g: _Graph, cell: LayerNormGRUCell, u: str, state: List[str]) -> Tuple[str, List[str]]:
    (h,) = state
    H = cell.hidden_size
    e = g.layer_norm(g.op("MatMul", [h, g.const(_f32(cell.weight_hh).t(), "w_hh")]), _f32(cell.ln_hh_weight),
                     _f32(cell.bias_hh), 3 * H)
    a_r, a_z, a_n = g.split(u, [H] * 3)
    e_r, e_z, e_n = g.split(e, [H] * 3)
    r, z = g.sigmoid(g.add(a_r, e_r)), g.sigmoid(g.add(a_z, e_z))
    n = g.tanh(g.add(a_n, g.mul(r, e_n)))
    h_new = g.add(g.mul(g.one_minus(z), n), g.mul(z, h))
    return h_new, [h_new]


def _mingru_project(g: _Graph, cell: MinGRUCell, x: str) -> str:
    return g.matmul_t(x, _f32(cell.weight_ih), _f32(cell.bias_ih), "w_ih")


def _mingru_step(g: _Graph, cell: MinGRUCell, u: str, state: List[str]) -> Tuple[str, List[str]]:
    (h,) = state
    u_z, h_tilde = g.split(u, [cell.hidden_size] * 2)
    z = g.sigmoid(u_z)
    h_new = g.add(g.mul(g.one_minus(z), h), g.mul(z, h_tilde))
    return h_new, [h_new]


def _dense_conv_weight(weight: Tensor, gates: int, groups: int) -> Tensor:
    """A grouped convolution's weight (G·Hc, C/groups, *k) as the plain convolution's (G·Hc, C, *k).

    Hidden channel j of every gate reads input group j // (Hc/groups) (see cells.conv_base), so the
    dense weight is block diagonal; the convolution's output channels stay gate-major.
    """
    weight = _f32(weight)
    if groups == 1:
        return weight
    rows, c_per, k = weight.shape[0], weight.shape[1], weight.shape[2:]
    Hc = rows // gates
    dense = torch.zeros(rows, c_per * groups, *k)
    for row in range(rows):
        q = (row % Hc) // (Hc // groups)
        dense[row, q * c_per:(q + 1) * c_per] = weight[row]
    return dense


def _conv(g: _Graph, cell, x: str, weight: Tensor, bias: Optional[Tensor], gates: int) -> str:
    """The cell's "same" convolution (N, C, *S) -> (N, gates·Hc, *S), channels gate-major."""
    inputs = [x, g.const(_dense_conv_weight(weight, gates, cell.groups), "conv_w")]
    if bias is not None:
        inputs.append(g.const(_f32(bias), "conv_b"))
    return g.op("Conv", inputs, kernel_shape=list(cell.kernel_size), dilations=list(cell.dilation),
                pads=list(cell.padding) * 2, strides=[1] * cell.dims)


def _conv_project(g: _Graph, cell, x: str) -> str:
    """x (T, B, C, *S) -> (T, B, G·Hc, *S): one Conv over the T·B frames."""
    frames = g.op("Reshape", [x, g.op("Concat", [g.const(np.array([-1]), "minus1"), g.slice_shape(x, 2)], axis=0)])
    u = _conv(g, cell, frames, cell.weight_ih, cell.bias_ih, cell.num_gates)
    return g.op("Reshape", [u, g.op("Concat", [g.slice_shape(x, 0, 2), g.slice_shape(u, 1)], axis=0)])


def _conv_lstm_step(g: _Graph, cell: ConvLSTMCell, u: str, state: List[str]) -> Tuple[str, List[str]]:
    h, c = state
    H = cell.hidden_size
    gates = g.split(g.add(u, _conv(g, cell, h, cell.weight_hh, cell.bias_hh, 4)), [H] * 4, axis=1)
    # peepholes (Hc, *P): one weight per channel or a full spatial map, broadcast over the batch
    peep = _f32(cell.weight_peephole).chunk(3) if cell.weight_peephole is not None else None
    h_new, c_new = _lstm_gate_math(g, gates, c, peep)
    return h_new, [h_new, c_new]


def _conv_gru_step(g: _Graph, cell: ConvGRUCell, u: str, state: List[str]) -> Tuple[str, List[str]]:
    (h,) = state
    H = cell.hidden_size
    w_hh, b_hh = _f32(cell.weight_hh), _f32(cell.bias_hh)
    u_rz, u_n = g.split(u, [2 * H, H], axis=1)
    rz = g.add(u_rz, _conv(g, cell, h, w_hh[:2 * H], None if b_hh is None else b_hh[:2 * H], 2))
    r, z = g.split(g.sigmoid(rz), [H, H], axis=1)
    n = g.tanh(g.add(u_n, _conv(g, cell, g.mul(r, h), w_hh[2 * H:], None if b_hh is None else b_hh[2 * H:], 1)))
    h_new = g.add(g.mul(g.one_minus(z), n), g.mul(z, h))
    return h_new, [h_new]


#: exact cell class -> (project, step). Subclasses are refused: they may change the math.
FAMILIES: Dict[type, Tuple[Project, Step]] = {
    LSTMCell: (_lstm_project, _lstm_step),
    PeepholeLSTMCell: (_lstm_project, _lstm_step),
    GRUCell: (_gru_project, _gru_step),
    ElmanCell: (_elman_project, _elman_step),
    SRUCell: (_sru_project, _sru_step),
    LayerNormLSTMCell: (_lnlstm_project, _lnlstm_step),
    LayerNormGRUCell: (_lngru_project, _lngru_step),
    MinGRUCell: (_mingru_project, _mingru_step),
    ConvLSTMCell: (_conv_project, _conv_lstm_step),
    ConvGRUCell: (_conv_project, _conv_gru_step),
}


def _scan_direction(g: _Graph, cell: RecurrentCell, x: str, init: List[str], mask: Optional[str],
                    zoneout: Dict[str, float]) -> Tuple[str, List[str]]:
    """One layer direction as a Scan over time. x (T, B, I) -> (y (T, B, O), finals (B, S_k)).

    Convolutional cells: x (T, B, C, *S) -> (y (T, B, Hc, *S), finals (B, Hc, *S))."""
    _, helper = _onnx()
    project, step = FAMILIES[type(cell)]
    u = project(g, cell, x)  # (T, B, K): the input term of every step, one MatMul
    body = _Graph(parent=g)
    state_in = [body.fresh(f"{n}_prev") for n in cell.state_names]
    u_t = body.fresh("u_t")
    m_t = body.fresh("m_t") if mask is not None else None
    y, new = step(body, cell, u_t, list(state_in))
    if any(zoneout.get(n, 0.0) for n in cell.state_names):  # eval zoneout: s = p·s_{t-1} + (1−p)·s̃_t
        new = [body.add(n, body.mul(body.const(np.float32(zoneout[name]), "zoneout"), body.sub(o, n)))
               if zoneout.get(name, 0.0) else n for name, n, o in zip(cell.state_names, new, state_in)]
        if cell.outputs_state:
            y = new[0]
    if m_t is not None:  # padded steps keep the state and output zeros
        new = [body.op("Where", [m_t, n, o]) for n, o in zip(new, state_in)]
        y = body.op("Where", [m_t, y, body.const(np.float32(0.0), "zero")])
    # Identity nodes give the body outputs their own names (an output may not also be an input)
    outs = [body.op("Identity", [n], hint=f"{name}_next") for name, n in zip(cell.state_names, new)]
    y_out = body.op("Identity", [y], hint="y_t")
    inputs = [helper.make_tensor_value_info(n, FLOAT, None) for n in state_in]
    inputs.append(helper.make_tensor_value_info(u_t, FLOAT, None))
    if m_t is not None:
        inputs.append(helper.make_tensor_value_info(m_t, BOOL, None))
    outputs = [helper.make_tensor_value_info(n, FLOAT, None) for n in outs + [y_out]]
    graph = helper.make_graph(body.nodes, g.fresh("step"), inputs, outputs)
    scan_inputs = [u] + ([mask] if mask is not None else [])
    results = g.op("Scan", list(init) + scan_inputs, outputs=len(outs) + 1, hint="scan", body=graph,
                   num_scan_inputs=len(scan_inputs))
    return results[-1], results[:-1]


# --------------------------------------------------------------------- the layer
def _check_layer(layer: Recurrent) -> None:
    owner = type(layer).__name__
    for index, cell in enumerate(layer.cells):
        if type(cell) not in FAMILIES:
            raise ExportError(
                f"cannot export {owner}: cell {index} is a {type(cell).__name__}, and the ONNX exporter knows "
                f"only rnnkit's built-in cells ({', '.join(c.__name__ for c in FAMILIES)}), not subclasses or "
                f"user cells. Alternative: torch.onnx.export(model, ..., dynamo=True) traces a Python step loop "
                f"for a fixed sequence length.")
    dtypes = {p.dtype for p in layer.parameters()}
    if dtypes - {torch.float32}:
        raise ExportError(f"cannot export {owner}: the ONNX graph computes in float32 but the parameters are "
                          f"{sorted(str(d) for d in dtypes)}; call model.float() first")


def _recurrent_graph(g: _Graph, layer: Recurrent, x: str, lengths: Optional[str],
                     init: Optional[List[str]], native_ops: bool) -> Tuple[str, List[str]]:
    """x (T, B, I) time-major -> (y (T, B, D·O), finals (L·D, B, S_k) per state tensor)."""
    D, L = layer.num_directions, layer.num_layers
    n_states = len(layer.state_sizes)
    zoneout = {"h": layer.zoneout_hidden, "c": layer.zoneout_cell}
    has_zoneout = any(zoneout.values())
    shape = g.op("Shape", [x])
    T = g.op("Slice", [shape, g.const(np.array([0], dtype=np.int64), "i0"), g.const(np.array([1], dtype=np.int64),
                                                                                   "i1")])
    batch = g.op("Slice", [shape, g.const(np.array([1], dtype=np.int64), "i1"),
                           g.const(np.array([2], dtype=np.int64), "i2")])
    # every row's length (T when no lengths are given), for ReverseSequence and the Scan mask
    full = lengths if lengths is not None else g.op("Expand", [T, batch])
    fd = layer.cells[0].feature_dims  # 1, or 1 + spatial axes for the convolutional cells
    mask = None
    if lengths is not None:
        steps = g.op("Range", [g.const(np.int64(0), "zero_i"), g.op("Squeeze", [T, g.const(np.array([0]), "ax0")]),
                               g.const(np.int64(1), "one_i")])
        valid = g.op("Less", [g.op("Unsqueeze", [steps, g.const(np.array([1]), "ax1")]),
                              g.op("Unsqueeze", [lengths, g.const(np.array([0]), "ax0")])])  # (T, B)
        mask = g.op("Unsqueeze", [valid, g.const(np.arange(2, 2 + fd), "ax")])  # (T, B, 1[, 1...])
    seq_lens = g.op("Cast", [lengths], to=6) if lengths is not None else None  # int32 for the RNN operators

    finals: List[List[str]] = [[] for _ in range(n_states)]  # per state tensor: (D, B, S) or (1, B, S) pieces
    for l in range(L):
        cells = [layer.cells[l * D + d] for d in range(D)]
        reason = _native_reason(cells[0], has_zoneout)
        if native_ops and reason is None:
            init_l = [g.op("Slice", [s, g.const(np.array([l * D]), "st"), g.const(np.array([(l + 1) * D]), "en"),
                                     g.const(np.array([0]), "ax0")]) if s else None
                      for s in (init or [None] * n_states)]
            x, fin = _native_layer(g, cells, x, init_l, seq_lens)
            for k in range(n_states):
                finals[k].append(fin[k])
            continue
        ys = []
        for d, cell in enumerate(cells):
            index = l * D + d
            if init:
                start = [g.op("Gather", [s, g.const(np.int64(index), "idx")], axis=0) for s in init]
            else:
                spatial = [g.slice_shape(x, 3)] if fd > 1 else []  # the state keeps the input's spatial axes
                start = [g.op("ConstantOfShape", [g.op("Concat", [batch, g.const(np.array([size]), "size")] + spatial,
                                                       axis=0)])
                         for size in cell.state_sizes]
            inp = x if d == 0 else g.op("ReverseSequence", [x, full], batch_axis=1, time_axis=0)
            y, fin = _scan_direction(g, cell, inp, start, mask, zoneout)
            ys.append(y if d == 0 else g.op("ReverseSequence", [y, full], batch_axis=1, time_axis=0))
            for k in range(n_states):
                finals[k].append(g.op("Unsqueeze", [fin[k], g.const(np.array([0]), "ax0")]))
        x = ys[0] if D == 1 else g.op("Concat", ys, axis=2)  # features / channels
    return x, [p[0] if len(p) == 1 else g.op("Concat", p, axis=0) for p in finals]


# ------------------------------------------------------- application models
#: models whose forward the exporter cannot write as one graph: (the blocking feature, the way out)
_BLOCKED = {
    "Seq2Seq": ("its decoder feeds each predicted token back with attention over the source, and generate() "
                "loops until every sentence has emitted EOS (a data-dependent number of steps)",
                "export the encoder, export_onnx(model.encoder, ...), and run the decoder with model.step() in "
                "PyTorch; or torch.export.export(model, ...) for the teacher-forced forward"),
    "CaptionModel": ("its decoder is a cell stepped in Python with attention over CNN features, "
                     "generating until EOS", "torch.export.export for a fixed number of steps, or serve it in "
                                             "PyTorch with the step API"),
}


def _recurrent_children(model: nn.Module) -> List[str]:
    return [name for name, m in model.named_modules() if name and isinstance(m, Recurrent)]


def _refuse(model: nn.Module) -> ExportError:
    name = type(model).__name__
    supported = ("rnnkit.Recurrent layers (RNN, LSTM, GRU, SRU, ConvLSTM, ...), RecurrentLM, SequenceClassifier, "
                 "SequenceTagger, Forecaster and the video EncoderForecaster")
    if name in _BLOCKED:
        feature, alternative = _BLOCKED[name]
        return ExportError(f"cannot export {name} to ONNX: {feature}. export_onnx writes {supported}. "
                           f"Alternative: {alternative}.")
    inside = _recurrent_children(model)
    where = (f" (its recurrent layers: {', '.join(f'model.{n}' for n in inside)} can each be exported)"
             if inside else "")
    return ExportError(f"cannot export {name} to ONNX: export_onnx writes {supported}; got {name}{where}. "
                       f"Alternative: export_onnx(model.<layer>, ...) for a recurrent part, or "
                       f"torch.export.export(model, ...) for the whole PyTorch program.")


def _token_model_graph(g: _Graph, model: nn.Module, native_ops: bool) -> Tuple[list, list]:
    """SequenceClassifier / SequenceTagger: tokens (B, T) int64 and lengths (B,) -> logits.

    Tagger logits (B, T, K); classifier logits (B, K), (B,) with the sigmoid objective, after the
    model's pooling over each row's valid steps. Inference only (dropout off).
    """
    from ..models.classify import SequenceClassifier

    _, helper = _onnx()
    enc = model.encoder
    _check_layer(enc)
    inputs = [helper.make_tensor_value_info("tokens", INT64, ["batch", "time"]),
              helper.make_tensor_value_info("lengths", INT64, ["batch"])]
    x = g.op("Gather", [g.const(_f32(model.embedding.weight), "embedding"),
                        g.op("Transpose", ["tokens"], perm=[1, 0])], axis=0)  # (T, B, E)
    y, _ = _recurrent_graph(g, enc, x, "lengths", None, native_ops)  # (T, B, W), zero at padded steps
    head_w, head_b = _f32(model.head.weight), _f32(model.head.bias)
    if not isinstance(model, SequenceClassifier):  # tagger: one distribution per token
        z = g.op("Transpose", [g.matmul_t(y, head_w, head_b, "head")], perm=[1, 0, 2])
        return inputs, [("logits", z, ["batch", "time", head_w.shape[0]])]
    c = model.config
    W = enc.num_directions * enc.output_size
    axis0 = g.const(np.array([0]), "ax0")
    if c.pooling == "mean":  # padded outputs are zero, so the sum over all steps is the sum over valid ones
        lens = g.op("Unsqueeze", [g.op("Cast", ["lengths"], to=FLOAT), g.const(np.array([1]), "ax1")])
        v = g.op("Div", [g.op("ReduceSum", [y, axis0], keepdims=0), lens])
    elif c.pooling == "max":
        T = g.op("Squeeze", [g.slice_shape(y, 0, 1), axis0])
        steps = g.op("Range", [g.const(np.int64(0), "zero_i"), T, g.const(np.int64(1), "one_i")])
        valid = g.op("Less", [g.op("Unsqueeze", [steps, g.const(np.array([1]), "ax1")]),
                              g.op("Unsqueeze", ["lengths", axis0])])  # (T, B)
        valid = g.op("Unsqueeze", [valid, g.const(np.array([2]), "ax2")])
        v = g.op("ReduceMax", [g.op("Where", [valid, y, g.const(np.float32(-np.inf), "minus_inf")])], axes=[0],
                 keepdims=0)
    else:  # last: the forward half at each row's last valid step, the backward half at step 0
        H = W // enc.num_directions
        last = g.op("Unsqueeze", [g.sub("lengths", g.const(np.int64(1), "one_i")), g.const(np.array([1]), "ax1")])
        v = g.op("GatherND", [g.op("Transpose", [y], perm=[1, 0, 2]), last], batch_dims=1)  # (B, W)
        if enc.num_directions == 2:
            first = g.op("Gather", [y, g.const(np.int64(0), "idx")], axis=0)
            v = g.op("Concat", [g.split(v, [H, H])[0], g.split(first, [H, H])[1]], axis=-1)
    z = g.matmul_t(v, head_w, head_b, "head")
    if c.objective == "sigmoid":
        z = g.op("Squeeze", [z, g.const(np.array([-1]), "ax_last")])
        return inputs, [("logits", z, ["batch"])]
    return inputs, [("logits", z, ["batch", head_w.shape[0]])]


def _forecaster_graph(g: _Graph, model: nn.Module, native_ops: bool) -> Tuple[list, list]:
    """Forecaster (eval): input x (B, L, F) and future (B, H, K) -> theta (B, H, C, P).

    direct: one pass and the head. autoregressive / seq2seq: the rollout of `Forecaster._rollout` without
    teacher forcing, unrolled over the fixed horizon H: each step runs the stack on one time step from
    the previous step's state, fed the previous step's point forecast.
    """
    _, helper = _onnx()
    c = model.config
    C, P, K, H = c.num_series, c.params_per_value, c.num_calendar, c.horizon
    for layer in (model.encoder, model.decoder):
        if layer is not None:
            _check_layer(layer)
    inputs = [helper.make_tensor_value_info("input", FLOAT, ["batch", "time", c.num_features]),
              helper.make_tensor_value_info("future", FLOAT, ["batch", H, K])]
    head_w, head_b = _f32(model.head.weight), _f32(model.head.bias)
    axis0 = g.const(np.array([0]), "ax0")

    def last_step(y: str) -> str:  # y (T, B, W) -> (B, W) at t = T − 1
        end = g.const(np.array([np.iinfo(np.int64).max]), "end")
        return g.op("Squeeze", [g.op("Slice", [y, g.const(np.array([-1]), "minus1"), end, axis0]), axis0])

    def params(h: str, shape: Sequence[int]) -> str:  # the head, reshaped as Forecaster._params
        return g.op("Reshape", [g.matmul_t(h, head_w, head_b, "head"), g.const(np.array(shape), "shape")])

    def point(theta: str) -> str:  # (B, C, P) -> (B, C): the mean, or the 0.5 quantile
        index = c.quantiles.index(0.5) if c.head == "quantile" else 0
        return g.op("Gather", [theta, g.const(np.int64(index), "idx")], axis=-1)

    def future_at(k: int) -> str:  # future[:, k] (B, K)
        return g.op("Gather", ["future", g.const(np.int64(k), "idx")], axis=1)

    def one_step(layer: Recurrent, u: str, state: List[str]) -> Tuple[str, List[str]]:  # u (B, F)
        y, finals = _recurrent_graph(g, layer, g.op("Unsqueeze", [u, axis0]), None, state, native_ops)
        return g.op("Squeeze", [y, axis0]), finals

    x = g.op("Transpose", ["input"], perm=[1, 0, 2])  # (L, B, F)
    y, state = _recurrent_graph(g, model.encoder, x, None, None, native_ops)
    if c.mode == "direct":
        return inputs, [("theta", params(last_step(y), [0, H, C, P]), ["batch", H, C, P])]
    thetas, axis1 = [], g.const(np.array([1]), "ax1")
    if c.mode == "autoregressive":
        thetas.append(params(last_step(y), [0, C, P]))
        for k in range(H - 1):
            pred = point(thetas[-1])
            parts = [pred] + ([g.op("Expand", [g.const(np.float32(1.0), "one"), g.op("Shape", [pred])])]
                              if c.masked else []) + [future_at(k)]
            h, state = one_step(model.encoder, g.op("Concat", parts, axis=-1), state)
            thetas.append(params(h, [0, C, P]))
    else:  # seq2seq: the decoder starts from the encoder's state and the last observed value
        prev = g.op("Slice", [g.op("Gather", ["input", g.const(np.int64(-1), "idx")], axis=1),
                              g.const(np.array([0]), "i0"), g.const(np.array([C]), "C"), axis1])
        for k in range(H):
            h, state = one_step(model.decoder, g.op("Concat", [prev, future_at(k)], axis=-1), state)
            thetas.append(params(h, [0, C, P]))
            prev = point(thetas[-1])
    theta = g.op("Concat", [g.op("Unsqueeze", [t, axis1]) for t in thetas], axis=1)
    return inputs, [("theta", theta, ["batch", H, C, P])]


def _video_graph(g: _Graph, model: nn.Module, native_ops: bool) -> Tuple[list, list]:
    """EncoderForecaster (eval): frames (k, B, C, S, S) -> logits (n, B, C, S, S) of the next n frames.

    Frames are cut into p×p patches (pixel_unshuffle) and back (pixel_shuffle) by Reshape/Transpose;
    forecaster_input "none" with the pixel head runs the forecaster once over n zero inputs from the
    encoder's state; otherwise it rolls out one step at a time on its own previous frame (fed, or moved
    by the advection head: Pad, the K² shifted Slices, Einsum with the kernels, Softmax masks),
    unrolled over the fixed n.
    """
    from ..models.video import LOGIT_EPS

    _, helper = _onnx()
    c = model.config
    C, S, p, n = c.channels, c.frame_size, c.patch_size, c.output_frames
    s, P2C = S // p, model.patch_channels
    for layer in (model.encoder, model.forecaster):
        _check_layer(layer)
    if c.head == "advect" and s % model.advect.POOL:
        raise ExportError(f"cannot export EncoderForecaster with head 'advect': its kernels average-pool the "
                          f"{s}x{s} patch grid to {model.advect.POOL}x{model.advect.POOL}, which ONNX AveragePool "
                          f"does only when {s} is a multiple of {model.advect.POOL}")
    inputs = [helper.make_tensor_value_info("frames", FLOAT, ["time", "batch", C, S, S])]
    shape = lambda dims: g.const(np.array(dims, dtype=np.int64), "shape")  # noqa: E731
    lead = lambda x: g.slice_shape(x, 0, 2)  # noqa: E731  (T, B) of a sequence

    def patch(x: str) -> str:  # (T, B, C, S, S) -> (T, B, C·p², s, s), as F.pixel_unshuffle
        y = g.op("Reshape", [x, shape([-1, C, s, p, s, p])])
        y = g.op("Transpose", [y], perm=[0, 1, 3, 5, 2, 4])
        return g.op("Reshape", [y, g.op("Concat", [lead(x), shape([P2C, s, s])], axis=0)])

    def unpatch(y: str, channels: int) -> str:  # (N, channels·p², s, s) -> (N, channels, S, S), as F.pixel_shuffle
        y = g.op("Transpose", [g.op("Reshape", [y, shape([-1, channels, p, p, s, s])])], perm=[0, 1, 4, 2, 5, 3])
        return g.op("Reshape", [y, shape([-1, channels, S, S])])

    def conv1x1(x: str, conv: nn.Conv2d, hint: str) -> str:
        return g.op("Conv", [x, g.const(_f32(conv.weight), hint + "_w"), g.const(_f32(conv.bias), hint + "_b")],
                    kernel_shape=[1, 1])

    def advect(h: str, prev: str) -> str:  # h (N, Hc, s, s), prev (N, C, S, S) -> next frame (N, C, S, S)
        a = model.advect
        M, K, r = a.kernels, a.size, a.size // 2
        pooled = g.op("AveragePool", [h], kernel_shape=[s // a.POOL] * 2, strides=[s // a.POOL] * 2)
        flat = g.op("Reshape", [pooled, shape([-1, c.hidden_channels * a.POOL ** 2])])
        logits = g.matmul_t(flat, _f32(a.kernel_logits.weight), _f32(a.kernel_logits.bias), "kernels")
        kernels = g.op("Softmax", [g.op("Reshape", [logits, shape([-1, M, K * K])])], axis=-1)
        padded = g.op("Pad", [prev, shape([0, 0, r, r, 0, 0, r, r])])
        axes = shape([2, 3])
        shifted = g.op("Concat", [g.op("Unsqueeze", [g.op("Slice", [padded, shape([dy, dx]), shape([dy + S, dx + S]),
                                                                    axes]), shape([1])])
                                  for dy in range(K) for dx in range(K)], axis=1)  # (N, K², C, S, S)
        moved = g.op("Einsum", [kernels, shifted], equation="bmq,bqcyx->bmcyx")
        masks = g.op("Softmax", [unpatch(conv1x1(h, a.mask_logits, "masks"), M + 1)], axis=1)
        kept = g.op("Unsqueeze", [g.op("Slice", [masks, shape([0]), shape([M]), shape([1])]), shape([2])])
        probs = g.op("ReduceSum", [g.mul(kept, moved), shape([1])], keepdims=0)
        squeezed = g.add(g.mul(probs, g.const(np.float32(1 - 2 * LOGIT_EPS), "scale")),
                         g.const(np.float32(LOGIT_EPS), "eps"))  # as models.video._logit
        return g.sub(g.op("Log", [squeezed]), g.op("Log", [g.one_minus(squeezed)]))

    def logits(h: str, prev: str) -> str:  # (T, B, Hc, s, s), frames before them (T, B, C, S, S) -> (T, B, C, S, S)
        frames_h = g.op("Reshape", [h, shape([-1, c.hidden_channels, s, s])])
        if c.head == "pixels":
            y = unpatch(conv1x1(frames_h, model.head, "head"), C)
        else:
            y = advect(frames_h, g.op("Reshape", [prev, shape([-1, C, S, S])]))
        return g.op("Reshape", [y, g.op("Concat", [lead(h), shape([C, S, S])], axis=0)])

    _, state = _recurrent_graph(g, model.encoder, patch("frames"), None, None, native_ops)
    batch = g.slice_shape("frames", 1, 2)
    zeros = lambda steps: g.op("ConstantOfShape", [g.op("Concat", [shape([steps]), batch, shape([P2C, s, s])],  # noqa: E731
                                                        axis=0)])
    end = g.const(np.array([np.iinfo(np.int64).max]), "end")
    last = g.op("Slice", ["frames", g.const(np.array([-1]), "minus1"), end, g.const(np.array([0]), "ax0")])
    if c.forecaster_input == "none" and c.head == "pixels":
        h, _ = _recurrent_graph(g, model.forecaster, zeros(n), None, state, native_ops)
        out = logits(h, last)
    else:  # each step reads or moves the previous frame: σ of the previous logits, first the last observed one
        prev, outs = last, []
        for _ in range(n):
            step = patch(prev) if c.forecaster_input == "frames" else zeros(1)
            h, state = _recurrent_graph(g, model.forecaster, step, None, state, native_ops)
            outs.append(logits(h, prev))  # (1, B, C, S, S)
            prev = g.sigmoid(outs[-1])
        out = g.op("Concat", outs, axis=0)
    return inputs, [("logits", out, [n, "batch", C, S, S])]


# ------------------------------------------------------------------- public API
def build_onnx(model: nn.Module, *, lengths: bool = False, initial_state: bool = False, native_ops: bool = True,
               opset: int = OPSET):
    """The ONNX ModelProto of a `Recurrent` layer or a `RecurrentLM` (see the module docstring for its I/O),
    or of a `SequenceClassifier` / `SequenceTagger` (inputs tokens (B, T) int64 and lengths (B,), both
    required; output logits as the model's forward returns them).

    lengths, initial_state: add the `lengths` / `h0[, c0]` graph inputs (layers and LMs); without them the
        graph runs every row over all T steps from a zero state, as `model(x)` does.
    native_ops: use ONNX LSTM/GRU/RNN where the configuration is exactly theirs
        (False: every layer as a Scan, e.g. to compare the two).
    """
    onnx, helper = _onnx()
    from ..models.char_lm import RecurrentLM
    from ..models.classify import SequenceClassifier
    from ..models.forecast import Forecaster
    from ..models.tagger import SequenceTagger
    from ..models.video import EncoderForecaster

    if isinstance(model, (SequenceClassifier, SequenceTagger, Forecaster, EncoderForecaster)):
        if any(p.dtype != torch.float32 for p in model.parameters()):
            raise ExportError(f"cannot export {type(model).__name__}: the ONNX graph computes in float32; "
                              f"call model.float() first")
        g = _Graph()
        build = (_forecaster_graph if isinstance(model, Forecaster) else
                 _video_graph if isinstance(model, EncoderForecaster) else _token_model_graph)
        graph_inputs, outs = build(g, model, native_ops)
        graph_outputs = []
        for name, value, dims in outs:
            g.nodes.append(helper.make_node("Identity", [value], [name]))
            graph_outputs.append(helper.make_tensor_value_info(name, FLOAT, dims))
        return _finish(onnx, helper, g, type(model).__name__, graph_inputs, graph_outputs, opset)
    lm = isinstance(model, RecurrentLM)
    layer = model.rnn if lm else model
    if not isinstance(layer, Recurrent):
        raise _refuse(model)
    _check_layer(layer)
    if lm and any(p.dtype != torch.float32 for p in model.parameters()):
        raise ExportError("cannot export RecurrentLM: the ONNX graph computes in float32; call model.float() first")
    g = _Graph()
    graph_inputs, graph_outputs = [], []
    LD = layer.num_layers * layer.num_directions
    # convolutional layers: dynamic spatial axes after the channels, in the input, output and states alike
    spatial = [f"spatial_{k}" for k in range(layer.cells[0].feature_dims - 1)]
    swap = [1, 0] + list(range(2, 3 + len(spatial)))  # batch_first <-> time-major
    if lm:
        graph_inputs.append(helper.make_tensor_value_info("tokens", INT64, ["time", "batch"]))
        if model.embedding is not None:
            x = g.op("Gather", [g.const(_f32(model.embedding.weight), "embedding"), "tokens"], axis=0)
        else:
            x = g.op("OneHot", ["tokens", g.const(np.int64(model.config.vocab_size), "depth"),
                                g.const(np.array([0.0, 1.0]), "onehot")], axis=-1)
    else:
        I = layer.input_size
        dims = (["batch", "time", I] if layer.batch_first else ["time", "batch", I]) + spatial
        graph_inputs.append(helper.make_tensor_value_info("input", FLOAT, dims))
        x = g.op("Transpose", ["input"], perm=swap) if layer.batch_first else "input"
    if lengths:
        graph_inputs.append(helper.make_tensor_value_info("lengths", INT64, ["batch"]))
    init = None
    if initial_state:
        init = [f"{n}0" for n in layer.cells[0].state_names]
        graph_inputs += [helper.make_tensor_value_info(n, FLOAT, [LD, "batch", s] + spatial)
                         for n, s in zip(init, layer.state_sizes)]
    y, finals = _recurrent_graph(g, layer, x, "lengths" if lengths else None, init, native_ops)
    if lm:
        y = g.op("Add", [g.op("MatMul", [y, g.const(_f32(model.head.weight).t(), "head")]),
                         g.const(_f32(model.head.bias), "head_b")])
        out_name, out_dims = "logits", ["time", "batch", model.config.vocab_size]
    else:
        if layer.batch_first:
            y = g.op("Transpose", [y], perm=swap)
        out_name = "output"
        D_O = layer.num_directions * layer.output_size
        out_dims = (["batch", "time", D_O] if layer.batch_first else ["time", "batch", D_O]) + spatial
    g.nodes.append(helper.make_node("Identity", [y], [out_name]))
    graph_outputs.append(helper.make_tensor_value_info(out_name, FLOAT, out_dims))
    for name, size, fin in zip(layer.cells[0].state_names, layer.state_sizes, finals):
        g.nodes.append(helper.make_node("Identity", [fin], [f"{name}_n"]))
        graph_outputs.append(helper.make_tensor_value_info(f"{name}_n", FLOAT, [LD, "batch", size] + spatial))
    return _finish(onnx, helper, g, type(model).__name__, graph_inputs, graph_outputs, opset)


def _finish(onnx, helper, g: _Graph, name: str, graph_inputs: list, graph_outputs: list, opset: int):
    graph = helper.make_graph(g.nodes, name, graph_inputs, graph_outputs, g.initializers)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="rnnkit")
    proto.ir_version = min(proto.ir_version, 9)  # readable by older runtimes too
    onnx.checker.check_model(proto)
    return proto


def export_onnx(model: nn.Module, path: Union[str, Path], sample_input: Optional[Tensor] = None, *,
                lengths: bool = False, initial_state: bool = False, native_ops: bool = True,
                atol: float = 1e-4) -> Path:
    """Write `model` as an ONNX file with dynamic batch and time axes (see `build_onnx` for what it takes).

    Graph inputs: input (T, B, I) (tokens (T, B) for a RecurrentLM) — what `model(x)` takes, so
    `session.run(None, {"input": x})` runs the file —, then lengths (B,) int64 with `lengths=True` and
    h0[, c0] (L·D, B, S) with `initial_state=True`; outputs: output (logits), then h_n[, c_n].
    SequenceClassifier / SequenceTagger: tokens (B, T) and lengths (B,) -> logits.
    If `sample_input` is given, the file is run in onnxruntime on it and compared with the model
    (eval mode); a difference above `atol` raises. Returns the path.
    """
    path = Path(path)
    proto = build_onnx(model, lengths=lengths, initial_state=initial_state, native_ops=native_ops)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(proto.SerializeToString())
    tmp.replace(path)  # atomic: a reader never sees half a file
    if sample_input is not None:
        diff = check_onnx(model, path, sample_input)
        if diff > atol:
            raise RuntimeError(f"the exported graph differs from the model by {diff:.3g} (> atol {atol}) on the "
                               f"sample input; please report this configuration")
    return path


def run_onnx(path: Union[str, Path], input: Tensor, lengths: Optional[Tensor] = None,
             state=None, future: Optional[Tensor] = None) -> List[np.ndarray]:
    """Run an exported file in onnxruntime (CPU). -> [output, final state tensors...] as numpy arrays.

    Inputs the file has but the call omits are filled like the model does: lengths = T for every row,
    zero initial state. Lengths or a state the file has no input for are an error (not dropped).
    """
    ort = require("onnxruntime", extra="deploy", purpose="running an ONNX file")

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    feeds: Dict[str, np.ndarray] = {names[0]: input.detach().cpu().numpy()}
    batch_axis = 0 if session.get_inputs()[0].shape[0] == "batch" else 1
    B, T = input.shape[batch_axis], input.shape[1 - batch_axis]
    states = [] if state is None else list(state if isinstance(state, (tuple, list)) else (state,))
    state_inputs = [n for n in names[1:] if n not in ("lengths", "future")]
    for given, has, flag in ((lengths is not None, "lengths" in names, "lengths"),
                             (bool(states), bool(state_inputs), "initial_state")):
        if given and not has:
            raise InputError(f"{path} has no {flag.replace('initial_', 'initial ')} input (its inputs: "
                             f"{', '.join(names)}); export it with {flag}=True (rnnkit export "
                             f"--{flag.replace('_', '-')}) to pass one")
    for meta in session.get_inputs()[1:]:
        if meta.name == "future":  # a Forecaster's calendar of the target steps (B, H, K)
            feeds["future"] = future.detach().cpu().to(torch.float32).numpy()
        elif meta.name == "lengths":
            feeds["lengths"] = (lengths if lengths is not None else torch.full((B,), T)).to(torch.int64).numpy()
        elif states:
            feeds[meta.name] = states.pop(0).detach().cpu().to(torch.float32).numpy()
        else:
            spatial = tuple(input.shape[3:])  # convolutional layers: the state has the input's spatial axes
            feeds[meta.name] = np.zeros((meta.shape[0], B, meta.shape[2]) + spatial, dtype=np.float32)
    return session.run(None, feeds)


@torch.no_grad()
def check_onnx(model: nn.Module, path: Union[str, Path], input: Tensor, lengths: Optional[Tensor] = None,
               state=None, future: Optional[Tensor] = None) -> float:
    """Largest absolute difference between the model (eval) and the exported file on these inputs
    (`future`: a Forecaster's second input)."""
    from ..models.char_lm import RecurrentLM
    from ..models.classify import SequenceClassifier
    from ..models.forecast import Forecaster
    from ..models.tagger import SequenceTagger
    from ..models.video import EncoderForecaster

    was_training = model.training
    model.eval()
    try:
        if isinstance(model, Forecaster):
            outputs, final = model(input, future), ()
        elif isinstance(model, EncoderForecaster):  # frames (k, B, C, S, S) -> logits of the next frames
            outputs, final = model(input), ()
        elif isinstance(model, (SequenceClassifier, SequenceTagger)):  # tokens (B, T); lengths required
            full = torch.full((input.shape[0],), input.shape[1], dtype=torch.int64)
            outputs, final = model(input, lengths if lengths is not None else full), ()
        elif isinstance(model, RecurrentLM):  # its forward takes no lengths: run its parts
            y, final = model.rnn(model.embed(input), state, lengths=lengths)
            outputs = model.head(y)
        else:
            outputs, final = model(input, state, lengths=lengths)
    finally:
        model.train(was_training)
    expected_list = [outputs] + list(final if isinstance(final, tuple) else (final,))
    got = run_onnx(path, input, lengths, state, future)
    return max(float(np.abs(g - e.numpy()).max()) for g, e in zip(got, expected_list))
