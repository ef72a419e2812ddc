"""The graph builder: nodes, initializers, graph inputs and outputs of one ONNX graph, by name.

Every part of the exporter (the cell step bodies, the layer, the application graphs) writes
through a `Graph`; a Scan body is a `Graph` whose parent holds the constants.
"""

from __future__ import annotations

import itertools
from typing import List, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from ..._optional import require
from ...cells.layernorm_lstm import EPS as LN_EPS
from ...errors import InputError

OPSET = 17  # LayerNormalization needs 17
FLOAT = 1   # onnx.TensorProto.FLOAT
INT64 = 7   # onnx.TensorProto.INT64
BOOL = 9    # onnx.TensorProto.BOOL

Dims = Sequence[Union[int, str]]  # a graph input's or output's shape: sizes, or names of dynamic axes


class ExportError(InputError):
    """A model or configuration the exporter cannot represent; the message names the feature and the way out."""


def onnx_modules():
    """(onnx, onnx.helper), or MissingExtraError naming the `deploy` extra."""
    onnx = require("onnx", extra="deploy", purpose="ONNX export")
    return onnx, onnx.helper


def f32(t: Optional[Tensor]) -> Optional[Tensor]:
    """A parameter as the float32 CPU tensor the graph stores (None stays None)."""
    return None if t is None else t.detach().to(torch.float32).cpu()


class Graph:
    """Nodes and initializers of one ONNX graph; a Scan body shares its parent's names and constants.

    Builders declare the graph's inputs with `input` and its outputs with `output`, add nodes with
    `op` (or the small helpers named after what they compute) and `to_model` checks and returns the
    ModelProto.
    """

    def __init__(self, parent: Optional["Graph"] = None) -> None:
        self.parent = parent
        self.nodes: list = []
        self.initializers: list = []
        self.inputs: list = []   # graph inputs (ValueInfoProto), in order
        self.outputs: list = []  # graph outputs (ValueInfoProto), in order
        self._counter = parent._counter if parent is not None else itertools.count()

    def fresh(self, hint: str) -> str:
        return f"{hint}_{next(self._counter)}"

    def input(self, name: str, dims: Dims, elem_type: int = FLOAT) -> str:
        """Declare a graph input (FLOAT unless `elem_type`); -> its name."""
        _, helper = onnx_modules()
        self.inputs.append(helper.make_tensor_value_info(name, elem_type, list(dims)))
        return name

    def output(self, name: str, value: str, dims: Dims) -> None:
        """Make `value` the float32 graph output `name`."""
        _, helper = onnx_modules()
        self.nodes.append(helper.make_node("Identity", [value], [name]))
        self.outputs.append(helper.make_tensor_value_info(name, FLOAT, list(dims)))

    def const(self, value, hint: str = "c") -> str:
        """An initializer (float32 unless integer) in the outermost graph; subgraphs read it by name."""
        if self.parent is not None:
            return self.parent.const(value, hint)
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
        _, helper = onnx_modules()
        names = [self.fresh(hint or op_type.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names, **attrs))
        return names[0] if outputs == 1 else names

    def to_model(self, name: str, opset: int = OPSET):
        """The checked ModelProto of this (outermost) graph."""
        onnx, helper = onnx_modules()
        graph = helper.make_graph(self.nodes, name, self.inputs, self.outputs, self.initializers)
        proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="rnnkit")
        proto.ir_version = min(proto.ir_version, 9)  # readable by older runtimes too
        onnx.checker.check_model(proto)
        return proto

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

    def last_along(self, x: str, axis: int) -> str:
        """x[-1:] along `axis` (the axis kept, of size 1)."""
        end = self.const(np.array([np.iinfo(np.int64).max]), "end")
        return self.op("Slice", [x, self.const(np.array([-1]), "minus1"), end, self.const(np.array([axis]), "ax")])

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
