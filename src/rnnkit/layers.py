"""Sequence layers with torch.nn's constructor arguments.

`RNN`, `LSTM` and `GRU` are drop-ins for torch.nn.RNN/LSTM/GRU: the same
positional and keyword arguments (`forward(input, hx=None)`), shapes, state
tuples, gate order and parameters, registered on the layer under torch's names
(`weight_ih_l0`, `bias_hh_l1_reverse`, `weight_hr_l0`), so
`layer.load_state_dict(torch_module.state_dict())` gives the same numbers and
torch's utilities that take a parameter by name (prune, parametrize,
weight_norm, spectral_norm, setattr, init, optimizer groups by name) act as on
torch.nn; the fast backends still run. The other layers run rnnkit's extra cells
with the same features; their parameters stay in their cells
(`cells.0.weight_hh`), their state_dict uses the flat names.

All of them also take rnnkit's regularisation keywords (`input_dropout`,
`output_dropout`, `recurrent_dropout`, `zoneout_hidden`, `zoneout_cell`,
`weight_dropout`), `backend=` (see `rnnkit.Recurrent`) and two Keras-style
initialisation options, applied after torch's initialisation (and again by
`reset_parameters()`); the defaults leave torch's:

    forget_bias=1.0          the gate that keeps the previous state starts at σ(1.0)
                             (Jozefowicz et al. 2015; Keras's unit_forget_bias): LSTM's f,
                             GRU's update gate z (h_t = … + z ⊙ h_{t-1}; Keras has no GRU
                             analogue), SRU's f, minGRU's 1 − z; RNN has no gate (an error)
    recurrent_init="orthogonal"  torch.nn.init.orthogonal_ on each gate block of weight_hh
                             (Keras's recurrent_initializer); SRU and minGRU have no weight_hh

>>> lstm = LSTM(3, 8, forget_bias=1.0, recurrent_init="orthogonal")
>>> lstm.bias_ih_l0[8:16].tolist() == [1.0] * 8
True
"""

from __future__ import annotations

from numbers import Real
from typing import Any, Optional, Sequence, Union

from torch import Tensor
from torch.nn.utils.rnn import PackedSequence

from .cells import (ElmanCell, GRUCell, LayerNormGRUCell, LayerNormLSTMCell, LSTMCell, MinGRUCell,
                    PeepholeLSTMCell, QRNNCell, SRUCell)
from .recurrent import Recurrent
from .cells.base import State
from .errors import InputError, InputTypeError

RECURRENT_INITS = ("uniform", "orthogonal")


def check_init_options(owner: str, forget_bias: Optional[float], recurrent_init: str) -> None:
    if forget_bias is not None and (isinstance(forget_bias, bool) or not isinstance(forget_bias, Real)):
        raise InputTypeError(f"{owner}: forget_bias must be a number or None; got {forget_bias!r}")
    if recurrent_init not in RECURRENT_INITS:
        raise InputError(f"{owner}: recurrent_init must be one of {RECURRENT_INITS}; got {recurrent_init!r}")


class InitOptions(Recurrent):
    """A layer with the Keras-style initialisation options (forget_bias, recurrent_init) on every cell,
    applied after the cells' own initialisation and again by `reset_parameters()`."""

    forget_bias: Optional[float] = None
    recurrent_init: str = "uniform"

    def apply_init_options(self, forget_bias: Optional[float], recurrent_init: str) -> None:
        self.forget_bias = None if forget_bias is None else float(forget_bias)
        self.recurrent_init = recurrent_init
        self._init_options()

    def _init_options(self) -> None:
        """forget_bias and recurrent_init on every cell (nothing, and no random draw, at the defaults)."""
        for cell in self.cells:
            try:
                if self.recurrent_init == "orthogonal":
                    cell.init_recurrent_orthogonal()
                if self.forget_bias is not None:
                    cell.init_forget_bias(self.forget_bias)
            except InputError as err:
                raise InputError(f"{type(self).__name__}: {err}") from None

    def reset_parameters(self) -> None:
        """Draw every parameter afresh as at construction, forget_bias and recurrent_init included."""
        super().reset_parameters()
        self._init_options()

    def extra_repr(self) -> str:
        extra = [f"forget_bias={self.forget_bias}"] if self.forget_bias is not None else []
        extra += [f"recurrent_init={self.recurrent_init!r}"] if self.recurrent_init != "uniform" else []
        return ", ".join([super().extra_repr()] + extra)


class _TorchStyle(InitOptions):
    """Shared constructor: torch.nn.RNNBase's arguments around a cell factory, and torch's forward."""

    mode = ""
    proj_size = 0  # torch.nn.RNNBase has it on every layer; LSTM overrides it

    def _setup(self, make_cell, input_size: int, hidden_size: int, num_layers: int, bias: bool,
               batch_first: bool, dropout: float, bidirectional: bool, *, forget_bias: Optional[float] = None,
               recurrent_init: str = "uniform", **options: Any) -> None:
        if not isinstance(bias, bool):
            raise InputTypeError(f"{type(self).__name__}: bias must be a bool; got {bias!r}")
        check_init_options(type(self).__name__, forget_bias, recurrent_init)
        super().__init__(make_cell, num_layers, bidirectional=bidirectional, batch_first=batch_first,
                         dropout=dropout, input_size=input_size, **options)
        self.bias = bias
        self.hidden_size = hidden_size
        self.apply_init_options(forget_bias, recurrent_init)

    def forward(self, input: Union[Tensor, PackedSequence], hx: Optional[State] = None, *,
                lengths: Optional[Union[Tensor, Sequence[int]]] = None, mask: Optional[Tensor] = None,
                padding_side: str = "right"):
        """torch.nn's forward(input, hx=None), plus rnnkit's lengths=, mask=, padding_side= (see
        Recurrent.forward, where hx is called state)."""
        return super().forward(input, hx, lengths=lengths, mask=mask, padding_side=padding_side)



class RNN(_TorchStyle):
    """Elman RNN layer, a drop-in for torch.nn.RNN (see ElmanCell for the equations)."""

    mode = "RNN_TANH"
    torch_names = True

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
    torch_names = True

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
    Not a torch.nn layer, so its parameters stay in its cells (`cells.0.weight_peephole`).
    """

    cell_class = PeepholeLSTMCell
    torch_names = False


class GRU(_TorchStyle):
    """GRU layer, a drop-in for torch.nn.GRU (reset="after", torch's form).

    reset="before" runs the textbook form of seed 004 with the same parameters;
    see GRUCell.
    """

    mode = "GRU"
    torch_names = True

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


class QRNN(_TorchStyle):
    """Quasi-recurrent layer (Bradbury et al. 2017): a causal convolution of `window` steps, then f-, fo- or
    ifo-pooling; see QRNNCell. The state is (c, window) per layer and direction ((c,) alone for window=1),
    so a second call continues where the first stopped.

    >>> import torch
    >>> qrnn = QRNN(3, 8, num_layers=2, window=2, pooling="fo")
    >>> out, (c, window) = qrnn(torch.randn(5, 2, 3))
    >>> out.shape, c.shape, window.shape
    (torch.Size([5, 2, 8]), torch.Size([2, 2, 8]), torch.Size([2, 2, 24]))
    """

    mode = "QRNN"

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, window: int = 2, pooling: str = "fo",
                 bidirectional: bool = False, batch_first: bool = False, dropout: float = 0.0, *, bias: bool = True,
                 device=None, dtype=None, **options: Any) -> None:
        self._setup(lambda size: QRNNCell(size, hidden_size, window, pooling, bias, device=device, dtype=dtype),
                    input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, **options)
        self.window, self.pooling = window, pooling
