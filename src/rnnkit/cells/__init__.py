"""Recurrent cells: one file each, one time step each."""

from .base import RecurrentCell, State
from .conv_gru import ConvGRUCell
from .conv_lstm import ConvLSTMCell
from .elman import ElmanCell
from .gru import GRUCell
from .layernorm_gru import LayerNormGRUCell
from .layernorm_lstm import LayerNormLSTMCell
from .lstm import LSTMCell
from .mingru import MinGRUCell
from .peephole_lstm import PeepholeLSTMCell
from .qrnn import QRNNCell
from .registry import CELLS, check_cell, make_cell
from .sru import SRUCell

__all__ = [
    "RecurrentCell", "State", "ElmanCell", "LSTMCell", "PeepholeLSTMCell", "GRUCell", "SRUCell",
    "LayerNormLSTMCell", "LayerNormGRUCell", "MinGRUCell", "QRNNCell", "ConvLSTMCell", "ConvGRUCell",
    "CELLS", "check_cell", "make_cell",
]
