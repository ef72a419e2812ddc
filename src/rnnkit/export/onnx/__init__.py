"""ONNX export of rnnkit layers and models, built from the module's weights.

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
raise ExportError naming the blocking feature and the alternative. Another model
class becomes exportable by registering its graph:

    @register_graph(MyModel, reference=lambda model, sample: [model(sample.input)])
    def my_graph(g: Graph, model: MyModel, options: ExportOptions) -> None:
        x = g.input("input", ["time", "batch", 8])
        y, _ = recurrent_graph(g, model.rnn, x, None, None, options.native_ops)
        g.output("output", g.matmul_t(y, model.head.weight, model.head.bias), ["time", "batch", 2])

The package: `graph.py` the builder (`Graph`), `steps.py` each cell's step body
(`STEPS`, keyed by cell class), `native.py` the ONNX RNN operators, `layer.py`
the Recurrent layer, `registry.py` which builder writes which model class,
`apps.py` and `video.py` the application graphs.

Each layer is one ONNX LSTM/GRU/RNN operator where the configuration is exactly
the operator's (same equations, nothing added; the table is in `native.py`).

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

from pathlib import Path
from typing import Dict, List, Optional, Union

import numpy as np
import torch
from torch import Tensor, nn

from ..._optional import require
from ...errors import InputError
from .graph import OPSET, ExportError, Graph
from .layer import recurrent_graph
from .registry import ExportOptions, SampleInputs, graph_for, register_graph

__all__ = ["ExportError", "ExportOptions", "Graph", "OPSET", "SampleInputs", "build_onnx", "check_onnx",
           "export_onnx", "recurrent_graph", "register_graph", "run_onnx"]


def build_onnx(model: nn.Module, *, lengths: bool = False, initial_state: bool = False, native_ops: bool = True,
               opset: int = OPSET):
    """The ONNX ModelProto of a `Recurrent` layer or a registered model (see the module docstring for
    their I/O), e.g. a `SequenceClassifier` / `SequenceTagger` (inputs tokens (B, T) int64 and
    lengths (B,), both required; output logits as the model's forward returns them).

    lengths, initial_state: add the `lengths` / `h0[, c0]` graph inputs (layers and LMs); without them the
        graph runs every row over all T steps from a zero state, as `model(x)` does.
    native_ops: use ONNX LSTM/GRU/RNN where the configuration is exactly theirs
        (False: every layer as a Scan, e.g. to compare the two).
    """
    build = graph_for(model).build
    dtypes = {p.dtype for p in model.parameters()}
    if dtypes - {torch.float32}:
        raise ExportError(f"cannot export {type(model).__name__}: the ONNX graph computes in float32 but the "
                          f"parameters are {sorted(str(d) for d in dtypes)}; call model.float() first")
    g = Graph()
    build(g, model, ExportOptions(lengths=lengths, initial_state=initial_state, native_ops=native_ops))
    return g.to_model(type(model).__name__, opset)


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
    reference = graph_for(model).reference
    was_training = model.training
    model.eval()
    try:
        expected = reference(model, SampleInputs(input, lengths, state, future))
    finally:
        model.train(was_training)
    got = run_onnx(path, input, lengths, state, future)
    return max(float(np.abs(g - e.numpy()).max()) for g, e in zip(got, expected))
