"""Dynamic int8 quantisation of an exported ONNX model, for CPU serving.

`quantize_onnx` runs onnxruntime's dynamic quantisation: weights of the linear
parts (MatMul, the ONNX LSTM operator's W and R, and the MatMuls inside Scan
bodies) are stored as int8 with one scale per tensor; activations are quantised
on the fly per call. State updates and the non-linearities stay float32, so the
recurrence does not accumulate int8 rounding in its state.

`bits_per_token` measures what that costs on a language model: the same token
stream through the float32 file and the int8 file.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch

from ..errors import InputError
from .._optional import require

PathLike = Union[str, Path]


def quantize_onnx(source: PathLike, target: PathLike, *, per_channel: bool = False) -> Path:
    """Write an int8 (dynamic) copy of the ONNX file `source` to `target`; returns `target`."""
    quantization = require("onnxruntime.quantization", extra="deploy", purpose="int8 quantisation")
    QuantType, quantize_dynamic = quantization.QuantType, quantization.quantize_dynamic

    target = Path(target)
    # onnxruntime advises shape-inference pre-processing on the root logger; our graphs are typed already
    advice = _DropMessage("Please consider to run pre-processing")
    logging.getLogger().addFilter(advice)
    try:
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=per_channel,
                         extra_options={"EnableSubgraph": True})  # also the MatMuls of Scan bodies
    finally:
        logging.getLogger().removeFilter(advice)
    return target


class _DropMessage(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def bits_per_token(path: PathLike, tokens: torch.Tensor, *, window: int = 128, batch: int = 8) -> float:
    """Next-token cross-entropy in bits of an exported language model (inputs tokens[, lengths], states).

    tokens: 1-D int64 stream, cut into `batch` parallel streams read in windows of `window`
    steps, the state carried between windows (as the trainer evaluates).
    """
    ort = require("onnxruntime", extra="deploy", purpose="running an ONNX file")

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = session.get_inputs()
    names = [i.name for i in inputs]
    state_inputs = [i for i in inputs if i.name not in ("tokens", "lengths")]
    n = (tokens.numel() - 1) // batch
    if n < 2:
        raise InputError(f"bits_per_token needs at least {2 * batch + 1} tokens; got {tokens.numel()}")
    stream = tokens[: n * batch + 1].numpy().astype(np.int64)
    xs = stream[:-1].reshape(batch, n).T  # (n, batch)
    ys = stream[1:].reshape(batch, n).T
    if not state_inputs and n > window:
        raise InputError(f"bits_per_token carries the state between windows, but {path} has no initial-state "
                         f"input; export it with initial_state=True (rnnkit export --initial-state)")
    states = [np.zeros((i.shape[0], batch, i.shape[2]), dtype=np.float32) for i in state_inputs]
    total, count = 0.0, 0
    for start in range(0, n, window):
        x = xs[start:start + window]
        feeds = {"tokens": x}
        if "lengths" in names:
            feeds["lengths"] = np.full((batch,), x.shape[0], dtype=np.int64)
        feeds.update({i.name: s for i, s in zip(state_inputs, states)})
        logits, *states = session.run(None, feeds)
        logits = logits - logits.max(-1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        y = ys[start:start + window]
        total -= float(np.take_along_axis(logp, y[..., None], -1).sum())
        count += y.size
    return total / count / math.log(2)


def size_bytes(paths: Sequence[PathLike]) -> int:
    return sum(Path(p).stat().st_size for p in paths)
