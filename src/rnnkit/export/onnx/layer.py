"""The `Recurrent` layer in ONNX: stacking, directions, lengths and initial state, and its export.

Each layer is one ONNX LSTM/GRU/RNN operator where the configuration is exactly the operator's
(`native.py`); everything else runs as an ONNX `Scan` whose body is the cell's step (`steps.py`),
after the input projection for all steps. With lengths, the Scan body holds each row's state after
its last valid step and zeroes its padded outputs, and the reverse direction reverses each row's
valid prefix (`ReverseSequence`), exactly as `Recurrent` does.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np

from ...cells import RecurrentCell
from ...recurrent import Recurrent
from .graph import BOOL, FLOAT, INT64, ExportError, Graph, onnx_modules
from .native import native_layer, native_reason
from .registry import ExportOptions, SampleInputs, register_graph
from .steps import STEPS


def check_layer(layer: Recurrent) -> None:
    """ExportError naming the first cell the exporter has no step body for."""
    owner = type(layer).__name__
    for index, cell in enumerate(layer.cells):
        if type(cell) not in STEPS:
            raise ExportError(
                f"cannot export {owner}: cell {index} is a {type(cell).__name__}, and the ONNX exporter knows "
                f"only rnnkit's built-in cells ({', '.join(c.__name__ for c in STEPS)}), not subclasses or "
                f"user cells. Alternative: torch.onnx.export(model, ..., dynamo=True) traces a Python step loop "
                f"for a fixed sequence length.")


def _scan_direction(g: Graph, cell: RecurrentCell, x: str, init: List[str], mask: Optional[str],
                    zoneout: Dict[str, float]) -> Tuple[str, List[str]]:
    """One layer direction as a Scan over time. x (T, B, I) -> (y (T, B, O), finals (B, S_k)).

    Convolutional cells: x (T, B, C, *S) -> (y (T, B, Hc, *S), finals (B, Hc, *S))."""
    _, helper = onnx_modules()
    project, step = STEPS[type(cell)]
    u = project(g, cell, x)  # (T, B, K): the input term of every step, one MatMul
    body = Graph(parent=g)
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


def _valid_steps(g: Graph, T: str, lengths: str, feature_dims: int) -> str:
    """(T, B, 1[, 1...]) bool: step t of row b is before lengths[b]."""
    steps = g.op("Range", [g.const(np.int64(0), "zero_i"), g.op("Squeeze", [T, g.const(np.array([0]), "ax0")]),
                           g.const(np.int64(1), "one_i")])
    valid = g.op("Less", [g.op("Unsqueeze", [steps, g.const(np.array([1]), "ax1")]),
                          g.op("Unsqueeze", [lengths, g.const(np.array([0]), "ax0")])])  # (T, B)
    return g.op("Unsqueeze", [valid, g.const(np.arange(2, 2 + feature_dims), "ax")])


def _scan_layer(g: Graph, layer: Recurrent, l: int, x: str, init: Optional[List[str]], full: str,
                mask: Optional[str]) -> Tuple[str, List[str]]:
    """Layer l, every direction as a Scan. -> (y (T, B, D·O), finals per state tensor (D, B, S_k))."""
    D, fd = layer.num_directions, layer.cells[0].feature_dims
    zoneout = {"h": layer.zoneout_hidden, "c": layer.zoneout_cell}
    batch = g.slice_shape(x, 1, 2)
    ys, finals = [], []
    for d in range(D):
        cell = layer.cells[l * D + d]
        if init:
            start = [g.op("Gather", [s, g.const(np.int64(l * D + d), "idx")], axis=0) for s in init]
        else:
            spatial = [g.slice_shape(x, 3)] if fd > 1 else []  # the state keeps the input's spatial axes
            start = [g.op("ConstantOfShape", [g.op("Concat", [batch, g.const(np.array([size]), "size")] + spatial,
                                                   axis=0)])
                     for size in cell.state_sizes]
        inp = x if d == 0 else g.op("ReverseSequence", [x, full], batch_axis=1, time_axis=0)
        y, fin = _scan_direction(g, cell, inp, start, mask, zoneout)
        ys.append(y if d == 0 else g.op("ReverseSequence", [y, full], batch_axis=1, time_axis=0))
        finals.append([g.op("Unsqueeze", [f, g.const(np.array([0]), "ax0")]) for f in fin])
    y = ys[0] if D == 1 else g.op("Concat", ys, axis=2)  # features / channels
    return y, [f[0] if D == 1 else g.op("Concat", list(f), axis=0) for f in zip(*finals)]


def recurrent_graph(g: Graph, layer: Recurrent, x: str, lengths: Optional[str], init: Optional[List[str]],
                    native_ops: bool) -> Tuple[str, List[str]]:
    """x (T, B, I) time-major -> (y (T, B, D·O), finals (L·D, B, S_k) per state tensor).

    lengths: the name of a (B,) int64 value or None (every row runs all T steps); init: the names of
    the initial states (L·D, B, S_k) or None (zeros)."""
    D, n_states = layer.num_directions, len(layer.state_sizes)
    has_zoneout = bool(layer.zoneout_hidden or layer.zoneout_cell)
    T = g.slice_shape(x, 0, 1)
    # every row's length (T when no lengths are given), for ReverseSequence and the Scan mask
    full = lengths if lengths is not None else g.op("Expand", [T, g.slice_shape(x, 1, 2)])
    mask = _valid_steps(g, T, lengths, layer.cells[0].feature_dims) if lengths is not None else None
    seq_lens = g.op("Cast", [lengths], to=6) if lengths is not None else None  # int32 for the RNN operators
    finals: List[List[str]] = [[] for _ in range(n_states)]  # per state tensor: its (D, B, S) pieces
    for l in range(layer.num_layers):
        cells = layer.cells[l * D:(l + 1) * D]
        if native_ops and native_reason(cells[0], has_zoneout) is None:
            init_l = [g.op("Slice", [s, g.const(np.array([l * D]), "st"), g.const(np.array([(l + 1) * D]), "en"),
                                     g.const(np.array([0]), "ax0")]) if s else None
                      for s in (init or [None] * n_states)]
            x, fin = native_layer(g, cells, x, init_l, seq_lens)
        else:
            x, fin = _scan_layer(g, layer, l, x, init, full, mask)
        for k in range(n_states):
            finals[k].append(fin[k])
    return x, [p[0] if len(p) == 1 else g.op("Concat", p, axis=0) for p in finals]


# ----------------------------------------------------- a layer's graph inputs and outputs
def spatial_axes(layer: Recurrent) -> List[str]:
    """Names of the dynamic spatial axes after the channels (convolutional layers; none otherwise)."""
    return [f"spatial_{k}" for k in range(layer.cells[0].feature_dims - 1)]


def run_with_options(g: Graph, layer: Recurrent, x: str, options: ExportOptions) -> Tuple[str, List[str]]:
    """The stack over x (T, B, I) with the opt-in graph inputs: lengths (B,), then h0[, c0] (L·D, B, S_k).

    Call after declaring the graph's first input. -> (y (T, B, D·O), finals (L·D, B, S_k))."""
    check_layer(layer)
    if options.lengths:
        g.input("lengths", ["batch"], INT64)
    init = None
    if options.initial_state:
        LD = layer.num_layers * layer.num_directions
        init = [g.input(f"{n}0", [LD, "batch", s] + spatial_axes(layer))
                for n, s in zip(layer.cells[0].state_names, layer.state_sizes)]
    return recurrent_graph(g, layer, x, "lengths" if options.lengths else None, init, options.native_ops)


def declare_final_states(g: Graph, layer: Recurrent, finals: List[str]) -> None:
    """Graph outputs h_n[, c_n] (L·D, B, S_k), after the main output."""
    LD = layer.num_layers * layer.num_directions
    for name, size, fin in zip(layer.cells[0].state_names, layer.state_sizes, finals):
        g.output(f"{name}_n", fin, [LD, "batch", size] + spatial_axes(layer))


def _layer_reference(layer: Recurrent, sample: SampleInputs) -> List:
    outputs, final = layer(sample.input, sample.state, lengths=sample.lengths)
    return [outputs] + list(final if isinstance(final, tuple) else (final,))


@register_graph(Recurrent, reference=_layer_reference)
def layer_graph(g: Graph, layer: Recurrent, options: ExportOptions) -> None:
    """input (T, B, I) — (B, T, I) with batch_first; (T, B, C, *S) for the convolutional layers —
    [, lengths][, h0[, c0]] -> output (T, B, D·O), h_n[, c_n]."""
    spatial = spatial_axes(layer)
    swap = [1, 0] + list(range(2, 3 + len(spatial)))  # batch_first <-> time-major
    I = layer.input_size
    g.input("input", (["batch", "time", I] if layer.batch_first else ["time", "batch", I]) + spatial)
    x = g.op("Transpose", ["input"], perm=swap) if layer.batch_first else "input"
    y, finals = run_with_options(g, layer, x, options)
    if layer.batch_first:
        y = g.op("Transpose", [y], perm=swap)
    D_O = layer.num_directions * layer.output_size
    g.output("output", y, (["batch", "time", D_O] if layer.batch_first else ["time", "batch", D_O]) + spatial)
    declare_final_states(g, layer, finals)
