"""rnnkit: recurrent neural networks for PyTorch — cells, drop-in layers, fast backends, training, applications.

The applications (`rnnkit.apps`) train from Python as from the command line, and a run directory
loads back ready for inference: ``run = rnnkit.load("runs/charlm")``.
"""

from typing import Any

from .cells import (ConvGRUCell, ConvLSTMCell, ElmanCell, GRUCell, LayerNormGRUCell, LayerNormLSTMCell, LSTMCell,
                    MinGRUCell, PeepholeLSTMCell, QRNNCell, RecurrentCell, SRUCell)
from .layers import GRU, LSTM, QRNN, RNN, SRU, LayerNormGRU, LayerNormLSTM, MinGRU, PeepholeLSTM
from .layers_conv import ConvGRU, ConvLSTM
from .recurrent import Recurrent
from .export import export_onnx  # imports onnx only when called

__version__ = "0.1.0"

__all__ = [
    "RecurrentCell", "ElmanCell", "LSTMCell", "PeepholeLSTMCell", "GRUCell", "SRUCell", "LayerNormLSTMCell",
    "LayerNormGRUCell", "MinGRUCell", "QRNNCell", "Recurrent", "RNN", "LSTM", "GRU", "PeepholeLSTM", "SRU",
    "LayerNormLSTM", "LayerNormGRU", "MinGRU", "QRNN", "export_onnx", "ConvLSTMCell", "ConvGRUCell", "ConvLSTM", "ConvGRU",
    "apps", "load",
]


def load(path: str, device: str = "cpu") -> Any:
    """The trained application in a run directory (or checkpoint), ready for inference: an
    `rnnkit.apps.Run` whose `app` names the module of `rnnkit.apps` with its inference functions."""
    from .apps import load as load_run
    return load_run(path, device)


def __getattr__(name: str) -> Any:
    if name == "apps":  # imported on first use: the applications pull in their data and model modules
        import importlib
        return importlib.import_module(".apps", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
