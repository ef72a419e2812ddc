"""Application graphs, registered per model class: the language model, the token classifier and
tagger, and the forecaster (the video model is in `video.py`).

Each builder writes the model's eval-mode forward from the model's public parts (its layers, heads
and config), and its reference runs the model on the same inputs for `check_onnx`.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from ...models.char_lm import RecurrentLM
from ...models.classify import SequenceClassifier
from ...models.forecast import Forecaster
from ...models.tagger import SequenceTagger
from ...recurrent import Recurrent
from .graph import FLOAT, INT64, ExportError, Graph, f32
from .layer import check_layer, declare_final_states, recurrent_graph, run_with_options
from .registry import ExportOptions, SampleInputs, register_graph


# ------------------------------------------------------------------ language model
def _lm_reference(model: RecurrentLM, sample: SampleInputs) -> List[Tensor]:
    y, final = model.rnn(model.embed(sample.input), sample.state, lengths=sample.lengths)  # forward takes no lengths
    return [model.head(y)] + list(final if isinstance(final, tuple) else (final,))


@register_graph(RecurrentLM, reference=_lm_reference)
def _lm_graph(g: Graph, model: RecurrentLM, options: ExportOptions) -> None:
    """tokens (T, B) int64 [, lengths][, h0[, c0]] -> logits (T, B, V), h_n[, c_n]."""
    g.input("tokens", ["time", "batch"], INT64)
    if model.embedding is not None:
        x = g.op("Gather", [g.const(f32(model.embedding.weight), "embedding"), "tokens"], axis=0)
    else:
        x = g.op("OneHot", ["tokens", g.const(np.int64(model.config.vocab_size), "depth"),
                            g.const(np.array([0.0, 1.0]), "onehot")], axis=-1)
    y, finals = run_with_options(g, model.rnn, x, options)
    g.output("logits", g.matmul_t(y, f32(model.head.weight), f32(model.head.bias), "head"),
             ["time", "batch", model.config.vocab_size])
    declare_final_states(g, model.rnn, finals)


# ------------------------------------------------------------ classifier and tagger
def _token_reference(model, sample: SampleInputs) -> List[Tensor]:
    """tokens (B, T); lengths required by the model, all T when not given."""
    tokens = sample.input
    full = torch.full((tokens.shape[0],), tokens.shape[1], dtype=torch.int64)
    return [model(tokens, sample.lengths if sample.lengths is not None else full)]


def _encode_tokens(g: Graph, model, options: ExportOptions) -> str:
    """Graph inputs tokens (B, T) int64 and lengths (B,) -> the encoder's outputs (T, B, W), zero at padding."""
    check_layer(model.encoder)
    if getattr(model, "chars", None) is not None:
        raise ExportError(f"a tagger with {model.config.char_features} character features reads each word's "
                          f"characters; the ONNX graph takes word ids only (train with char_features none to export)")
    if getattr(model, "attention", None) is not None:
        raise ExportError("attention pooling is not in the ONNX graph yet (export a last, mean or max pooling model)")
    g.input("tokens", ["batch", "time"], INT64)
    g.input("lengths", ["batch"], INT64)
    x = g.op("Gather", [g.const(f32(model.embedding.weight), "embedding"),
                        g.op("Transpose", ["tokens"], perm=[1, 0])], axis=0)  # (T, B, E)
    y, _ = recurrent_graph(g, model.encoder, x, "lengths", None, options.native_ops)
    return y


@register_graph(SequenceTagger, reference=_token_reference)
def _tagger_graph(g: Graph, model: SequenceTagger, options: ExportOptions) -> None:
    """tokens (B, T), lengths (B,) -> logits (B, T, K): one distribution per token."""
    y = _encode_tokens(g, model, options)
    head_w = f32(model.head.weight)
    z = g.op("Transpose", [g.matmul_t(y, head_w, f32(model.head.bias), "head")], perm=[1, 0, 2])
    g.output("logits", z, ["batch", "time", head_w.shape[0]])


def _pool(g: Graph, y: str, encoder: Recurrent, pooling: str) -> str:
    """y (T, B, W), zero at padded steps -> (B, W) as the classifier pools each row's valid steps."""
    axis0 = g.const(np.array([0]), "ax0")
    if pooling == "max+mean":
        return g.op("Concat", [_pool(g, y, encoder, "max"), _pool(g, y, encoder, "mean")], axis=-1)
    if pooling == "mean":  # padded outputs are zero, so the sum over all steps is the sum over valid ones
        lens = g.op("Unsqueeze", [g.op("Cast", ["lengths"], to=FLOAT), g.const(np.array([1]), "ax1")])
        return g.op("Div", [g.op("ReduceSum", [y, axis0], keepdims=0), lens])
    if pooling == "max":
        T = g.op("Squeeze", [g.slice_shape(y, 0, 1), axis0])
        steps = g.op("Range", [g.const(np.int64(0), "zero_i"), T, g.const(np.int64(1), "one_i")])
        valid = g.op("Less", [g.op("Unsqueeze", [steps, g.const(np.array([1]), "ax1")]),
                              g.op("Unsqueeze", ["lengths", axis0])])  # (T, B)
        valid = g.op("Unsqueeze", [valid, g.const(np.array([2]), "ax2")])
        return g.op("ReduceMax", [g.op("Where", [valid, y, g.const(np.float32(-np.inf), "minus_inf")])], axes=[0],
                    keepdims=0)
    # last: the forward half at each row's last valid step, the backward half at step 0
    last = g.op("Unsqueeze", [g.sub("lengths", g.const(np.int64(1), "one_i")), g.const(np.array([1]), "ax1")])
    v = g.op("GatherND", [g.op("Transpose", [y], perm=[1, 0, 2]), last], batch_dims=1)  # (B, W)
    if encoder.num_directions == 2:
        H = encoder.output_size
        first = g.op("Gather", [y, g.const(np.int64(0), "idx")], axis=0)
        v = g.op("Concat", [g.split(v, [H, H])[0], g.split(first, [H, H])[1]], axis=-1)
    return v


@register_graph(SequenceClassifier, reference=_token_reference)
def _classifier_graph(g: Graph, model: SequenceClassifier, options: ExportOptions) -> None:
    """tokens (B, T), lengths (B,) -> logits (B, K), or (B,) with the sigmoid objective."""
    y = _encode_tokens(g, model, options)
    head_w = f32(model.head.weight)
    z = g.matmul_t(_pool(g, y, model.encoder, model.config.pooling), head_w, f32(model.head.bias), "head")
    if model.config.objective == "sigmoid":
        g.output("logits", g.op("Squeeze", [z, g.const(np.array([-1]), "ax_last")]), ["batch"])
    else:
        g.output("logits", z, ["batch", head_w.shape[0]])


# ---------------------------------------------------------------------- forecaster
def _forecast_reference(model: Forecaster, sample: SampleInputs) -> List[Tensor]:
    return [model(sample.input, sample.future)]


def _theta(g: Graph, model: Forecaster, h: str, shape: Sequence[int]) -> str:
    """The head on h (B, W), reshaped as Forecaster._params."""
    return g.op("Reshape", [g.matmul_t(h, f32(model.head.weight), f32(model.head.bias), "head"),
                            g.const(np.array(shape), "shape")])


def _one_step(g: Graph, layer: Recurrent, u: str, state: List[str], native_ops: bool) -> Tuple[str, List[str]]:
    """The stack on one time step u (B, F) from `state` -> (h (B, W), its final state)."""
    axis0 = g.const(np.array([0]), "ax0")
    y, finals = recurrent_graph(g, layer, g.op("Unsqueeze", [u, axis0]), None, state, native_ops)
    return g.op("Squeeze", [y, axis0]), finals


def _rollout(g: Graph, model: Forecaster, last_h: str, state: List[str], native_ops: bool) -> List[str]:
    """The rollout of `Forecaster._rollout` without teacher forcing: θ (B, C, P) per target step."""
    c = model.config
    C, P = c.num_series, c.params_per_value
    point = lambda theta: g.op("Gather", [theta, g.const(np.int64(model.point_index), "idx")], axis=-1)  # noqa: E731
    future_at = lambda k: g.op("Gather", ["future", g.const(np.int64(k), "idx")], axis=1)  # noqa: E731  (B, K)
    thetas: List[str] = []
    if c.mode == "autoregressive":
        thetas.append(_theta(g, model, last_h, [0, C, P]))
        for k in range(c.horizon - 1):
            pred = point(thetas[-1])
            flags = [g.op("Expand", [g.const(np.float32(1.0), "one"), g.op("Shape", [pred])])] if c.masked else []
            h, state = _one_step(g, model.encoder, g.op("Concat", [pred] + flags + [future_at(k)], axis=-1), state,
                                 native_ops)
            thetas.append(_theta(g, model, h, [0, C, P]))
        return thetas
    # seq2seq: the decoder starts from the encoder's state and the last observed value
    prev = g.op("Slice", [g.op("Gather", ["input", g.const(np.int64(-1), "idx")], axis=1),
                          g.const(np.array([0]), "i0"), g.const(np.array([C]), "C"), g.const(np.array([1]), "ax1")])
    for k in range(c.horizon):
        h, state = _one_step(g, model.decoder, g.op("Concat", [prev, future_at(k)], axis=-1), state, native_ops)
        thetas.append(_theta(g, model, h, [0, C, P]))
        prev = point(thetas[-1])
    return thetas


@register_graph(Forecaster, reference=_forecast_reference)
def _forecaster_graph(g: Graph, model: Forecaster, options: ExportOptions) -> None:
    """input x (B, L, F) and future (B, H, K) -> theta (B, H, C, P), as the model in eval mode.

    direct: one pass and the head. autoregressive / seq2seq: the rollout unrolled over the fixed
    horizon H: each step runs the stack on one time step from the previous step's state, fed the
    previous step's point forecast.
    """
    c = model.config
    C, P, H = c.num_series, c.params_per_value, c.horizon
    for layer in (model.encoder, model.decoder):
        if layer is not None:
            check_layer(layer)
    g.input("input", ["batch", "time", c.num_features])
    g.input("future", ["batch", H, c.num_calendar])
    x = g.op("Transpose", ["input"], perm=[1, 0, 2])  # (L, B, F)
    y, state = recurrent_graph(g, model.encoder, x, None, None, options.native_ops)
    axis0 = g.const(np.array([0]), "ax0")
    last_h = g.op("Squeeze", [g.last_along(y, 0), axis0])  # (B, W) at t = L − 1
    if c.mode == "direct":
        g.output("theta", _theta(g, model, last_h, [0, H, C, P]), ["batch", H, C, P])
        return
    thetas = _rollout(g, model, last_h, state, options.native_ops)
    axis1 = g.const(np.array([1]), "ax1")
    g.output("theta", g.op("Concat", [g.op("Unsqueeze", [t, axis1]) for t in thetas], axis=1), ["batch", H, C, P])
