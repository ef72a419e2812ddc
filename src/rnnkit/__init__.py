"""rnnkit: recurrent neural networks for PyTorch — cells, drop-in layers, fast backends, training."""

from .cells import (ConvGRUCell, ConvLSTMCell, ElmanCell, GRUCell, LayerNormGRUCell, LayerNormLSTMCell, LSTMCell,
                    MinGRUCell, PeepholeLSTMCell, RecurrentCell, SRUCell)
from .layers import GRU, LSTM, RNN, SRU, LayerNormGRU, LayerNormLSTM, MinGRU, PeepholeLSTM
from .layers_conv import ConvGRU, ConvLSTM
from .recurrent import Recurrent
from .export import export_onnx  # imports onnx only when called

__version__ = "0.1.0"

__all__ = [
    "RecurrentCell", "ElmanCell", "LSTMCell", "PeepholeLSTMCell", "GRUCell", "SRUCell", "LayerNormLSTMCell",
    "LayerNormGRUCell", "MinGRUCell", "Recurrent", "RNN", "LSTM", "GRU", "PeepholeLSTM", "SRU",
    "LayerNormLSTM", "LayerNormGRU", "MinGRU", "export_onnx", "ConvLSTMCell", "ConvGRUCell", "ConvLSTM", "ConvGRU",
]
