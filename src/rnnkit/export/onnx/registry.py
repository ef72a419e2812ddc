"""Which graph writes which model: builders registered per model class, looked up along the class's MRO.

A builder writes the whole graph of one kind of model: it declares the graph inputs, writes the nodes
and declares the outputs on the `Graph` it is given. Its `reference` runs the PyTorch model on the same
inputs, for `check_onnx`. The built-in registrations (the `Recurrent` layer in `layer.py`, the
application models in `apps.py` and `video.py`) are loaded on first use, so importing rnnkit imports no model.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence

from torch import Tensor, nn

from .graph import ExportError, Graph


@dataclass(frozen=True)
class ExportOptions:
    """What `build_onnx` was asked for; a builder honours those that apply to its model."""

    lengths: bool = False        # a `lengths` (B,) int64 graph input
    initial_state: bool = False  # `h0[, c0]` graph inputs
    native_ops: bool = True      # ONNX LSTM/GRU/RNN where the configuration is exactly theirs


class SampleInputs(NamedTuple):
    """The inputs `check_onnx` was given, for a model's reference run."""

    input: Tensor
    lengths: Optional[Tensor] = None
    state: object = None               # a tensor or a tuple of tensors (L·D, B, S)
    future: Optional[Tensor] = None    # a Forecaster's calendar of the target steps (B, H, K)


Build = Callable[[Graph, nn.Module, ExportOptions], None]
Reference = Callable[[nn.Module, SampleInputs], Sequence[Tensor]]


def call_on_input(model: nn.Module, sample: SampleInputs) -> List[Tensor]:
    """The default reference: the graph's one output is `model(input)`."""
    return [model(sample.input)]


@dataclass(frozen=True)
class ModelGraph:
    build: Build
    reference: Reference


_GRAPHS: Dict[type, ModelGraph] = {}
_BUILTINS = (".layer", ".apps", ".video")  # modules whose import registers rnnkit's own models
_builtins_loaded = False


def _load_builtins() -> None:
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True  # first: the modules below call register_graph while they load
        for module in _BUILTINS:
            importlib.import_module(module, __package__)


def register_graph(model_class: type, *, reference: Reference = call_on_input) -> Callable[[Build], Build]:
    """Decorator: `build(g, model, options)` writes the ONNX graph of `model_class` and its subclasses.

    `reference(model, sample)` returns what the graph's outputs should equal, in order (default:
    `[model(sample.input)]`); `check_onnx` compares the two. A later registration for the same class
    replaces the earlier one.
    """
    _load_builtins()

    def decorate(build: Build) -> Build:
        _GRAPHS[model_class] = ModelGraph(build, reference)
        return build

    return decorate


def graph_for(model: nn.Module) -> ModelGraph:
    """The registration for `model`'s class or its nearest registered base; ExportError if none."""
    _load_builtins()
    for cls in type(model).__mro__:
        if cls in _GRAPHS:
            return _GRAPHS[cls]
    raise _refusal(model)


#: models whose forward the exporter cannot write as one graph: (the blocking feature, the way out)
_BLOCKED = {
    "Seq2Seq": ("its decoder feeds each predicted token back with attention over the source, and generate() "
                "loops until every sentence has emitted EOS (a data-dependent number of steps)",
                "export the encoder, export_onnx(model.encoder, ...), and run the decoder with model.step() in "
                "PyTorch; or torch.export.export(model, ...) for the teacher-forced forward"),
    "CaptionModel": ("its decoder is a cell stepped in Python with attention over CNN features, "
                     "generating until EOS", "torch.export.export for a fixed number of steps, or serve it in "
                                             "PyTorch with the step API"),
    "ClassifierEnsemble": ("its members' probabilities are averaged, and the graph holds one classifier",
                           "export each member, export_onnx(model.members[i], ...), and average their "
                           "probabilities"),
}


def _refusal(model: nn.Module) -> ExportError:
    from ...recurrent import Recurrent

    name = type(model).__name__
    models = [cls.__name__ for cls in _GRAPHS if cls is not Recurrent]
    supported = (f"rnnkit.Recurrent layers (RNN, LSTM, GRU, SRU, ConvLSTM, ...) and the models registered with "
                 f"register_graph ({', '.join(models)})")
    if name in _BLOCKED:
        feature, alternative = _BLOCKED[name]
        return ExportError(f"cannot export {name} to ONNX: {feature}. export_onnx writes {supported}. "
                           f"Alternative: {alternative}.")
    inside = [child for child, m in model.named_modules() if child and isinstance(m, Recurrent)]
    where = (f" (its recurrent layers: {', '.join(f'model.{n}' for n in inside)} can each be exported)"
             if inside else "")
    return ExportError(f"cannot export {name} to ONNX: export_onnx writes {supported}; got {name}{where}. "
                       f"Alternative: export_onnx(model.<layer>, ...) for a recurrent part, "
                       f"register_graph(type(model)) to write its graph, or torch.export.export(model, ...) "
                       f"for the whole PyTorch program.")
