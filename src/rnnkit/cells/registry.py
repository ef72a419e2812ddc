"""The cells the models and the command line know by name."""

from __future__ import annotations

from functools import partial
from typing import Callable, Dict

from ..errors import InputError
from .base import RecurrentCell
from .elman import ElmanCell
from .gru import GRUCell
from .layernorm_gru import LayerNormGRUCell
from .layernorm_lstm import LayerNormLSTMCell
from .lstm import LSTMCell
from .mingru import MinGRUCell
from .peephole_lstm import PeepholeLSTMCell
from .qrnn import QRNNCell
from .sru import SRUCell

#: cell names accepted by the models and the CLI.
CELLS: Dict[str, Callable[[int, int], RecurrentCell]] = {
    "rnn": ElmanCell,
    "lstm": LSTMCell,
    "peephole": PeepholeLSTMCell,
    "gru": GRUCell,
    "sru": SRUCell,
    "lnlstm": LayerNormLSTMCell,
    "lngru": LayerNormGRUCell,
    "mingru": MinGRUCell,
    "qrnn": QRNNCell,
    "rnn-relu": partial(ElmanCell, nonlinearity="relu"),  # torch.nn.RNN(nonlinearity="relu")
}


def check_cell(name: object, *, setting: str = "cell", owner: str = "") -> None:
    """Raise InputError unless `name` is a key of CELLS; `setting` and `owner` name where it came from.

    >>> check_cell("gru")
    >>> check_cell("lstmm", owner="LMConfig")
    Traceback (most recent call last):
    ...
    rnnkit.errors.InputError: LMConfig: unknown cell 'lstmm'; expected one of rnn, lstm, peephole, gru, sru, lnlstm, lngru, mingru, qrnn, rnn-relu
    """
    if name not in CELLS:
        where = f"{owner}: " if owner else ""
        raise InputError(f"{where}unknown {setting} {name!r}; expected one of {', '.join(CELLS)}")


def make_cell(name: str, input_size: int, hidden_size: int) -> RecurrentCell:
    """A cell by name (see CELLS).

    >>> make_cell("gru", 3, 4)
    GRUCell(3, 4, reset='after')
    >>> make_cell("rnn-relu", 3, 4)
    ElmanCell(3, 4, nonlinearity='relu')
    """
    check_cell(name)
    return CELLS[name](input_size, hidden_size)
