"""Sequence layers with torch.nn's constructor arguments.

`RNN`, `LSTM` and `GRU` are drop-ins for torch.nn.RNN/LSTM/GRU: the same
positional and keyword arguments, shapes, state tuples, parameter names and gate
order, so `layer.load_state_dict(torch_module.state_dict())` gives the same
numbers. The other layers run rnnkit's extra cells with the same features.
All of them also take rnnkit's regularisation keywords (`input_dropout`,
`output_dropout`, `recurrent_dropout`, `zoneout_hidden`, `zoneout_cell`,
`weight_dropout`) and `backend=`; see `rnnkit.Recurrent`.
"""

from __future__ import annotations

from typing import Any

from .cells import (ElmanCell, GRUCell, LayerNormGRUCell, LayerNormLSTMCell, LSTMCell, MinGRUCell,
                    PeepholeLSTMCell, SRUCell)
from .recurrent import Recurrent
from .errors import InputTypeError


class _TorchStyle(Recurrent):
    """Shared constructor: torch.nn.RNNBase's arguments around a cell factory."""

    mode = ""
    proj_size = 0  # torch.nn.RNNBase has it on every layer; LSTM overrides it

    def _setup(self, make_cell, input_size: int, hidden_size: int, num_layers: int, bias: bool,
               batch_first: bool, dropout: float, bidirectional: bool, **options: Any) -> None:
        if not isinstance(bias, bool):
            raise InputTypeError(f"{type(self).__name__}: bias must be a bool; got {bias!r}")
        super().__init__(make_cell, num_layers, bidirectional=bidirectional, batch_first=batch_first,
                         dropout=dropout, input_size=input_size, **options)
        self.bias = bias
        self.hidden_size = hidden_size


class RNN(_TorchStyle):
    """Elman RNN layer, a drop-in for torch.nn.RNN (see ElmanCell for the equations)."""

    mode = "RNN_TANH"

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh",
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device=None, dtype=None, **options: Any) -> None:
        self._setup(lambda size: ElmanCell(size, hidden_size, bias, nonlinearity, device=device, dtype=dtype),
                    input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, **options)
        self.nonlinearity = nonlinearity
        self.mode = "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU"


class LSTM(_TorchStyle):
    """LSTM layer, a drop-in for torch.nn.LSTM, proj_size included (see LSTMCell)."""

    mode = "LSTM"

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, proj_size: int = 0,
                 device=None, dtype=None, **options: Any) -> None:
        self._setup(lambda size: self.cell_class(size, hidden_size, bias, proj_size, device=device, dtype=dtype),
                    input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, **options)
        self.proj_size = proj_size

    cell_class = LSTMCell


class PeepholeLSTM(LSTM):
    """Peephole LSTM layer (Gers & Schmidhuber 2000) with torch.nn.LSTM's arguments.

    Adds `weight_peephole_l{k}` (3H,) per layer and direction; see PeepholeLSTMCell.
    """

    cell_class = PeepholeLSTMCell


class GRU(_TorchStyle):
    """GRU layer, a drop-in for torch.nn.GRU (reset="after", torch's form).

    reset="before" runs the textbook form of seed 004 with the same parameters;
    see GRUCell.
    """

    mode = "GRU"

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device=None, dtype=None, *, reset: str = "after", **options: Any) -> None:
        self._setup(lambda size: GRUCell(size, hidden_size, bias, reset, device=device, dtype=dtype),
                    input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, **options)
        self.reset = reset


def _simple_layer(name: str, cell_class, doc: str):
    """A layer class with torch.nn.GRU's arguments around `cell_class(input, hidden, bias)`."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device=None, dtype=None, **options: Any) -> None:
        self._setup(lambda size: cell_class(size, hidden_size, bias, device=device, dtype=dtype),
                    input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, **options)

    return type(name, (_TorchStyle,), {"__init__": __init__, "__doc__": doc, "mode": name,
                                       "__module__": __name__})


SRU = _simple_layer("SRU", SRUCell, "SRU layer (Lei et al. 2018); state c. See SRUCell.")
LayerNormLSTM = _simple_layer("LayerNormLSTM", LayerNormLSTMCell,
                              "Layer-normalised LSTM layer; state (h, c). See LayerNormLSTMCell.")
LayerNormGRU = _simple_layer("LayerNormGRU", LayerNormGRUCell,
                             "Layer-normalised GRU layer. See LayerNormGRUCell.")
MinGRU = _simple_layer("MinGRU", MinGRUCell, "minGRU layer (Feng et al. 2024). See MinGRUCell.")
