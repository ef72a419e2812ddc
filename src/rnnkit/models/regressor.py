"""Sequence regressor: a recurrent layer read out at its last step (the adding problem)."""

from __future__ import annotations

from typing import Optional, Tuple

from torch import Tensor, nn

from ..cells import LayerNormLSTMCell, LSTMCell, SRUCell
from ..recurrent import Recurrent
from ..cells.registry import make_cell


class SequenceRegressor(nn.Module):
    """x (T, B, I) -> prediction (B, O) = W y_T + b, with y_T the last layer's output at the last step.

    forget_bias: see `set_forget_bias`; init_scale: the spectral radius every H×H block of each layer's
    initial weight_hh is scaled to (`RecurrentCell.init_recurrent_radius`); None keeps the cell's own.
    """

    def __init__(self, cell: str, input_size: int, hidden_size: int, output_size: int = 1,
                 num_layers: int = 1, forget_bias: Optional[float] = None, init_scale: Optional[float] = None) -> None:
        super().__init__()
        self.cell_name = cell
        self.rnn = Recurrent(lambda size: make_cell(cell, size, hidden_size), num_layers, input_size=input_size)
        self.head = nn.Linear(self.rnn.output_size, output_size)
        if forget_bias is not None:
            for c in self.rnn.cells:
                set_forget_bias(c, forget_bias)
        if init_scale is not None:
            for c in self.rnn.cells:
                c.init_recurrent_radius(init_scale)

    def forward(self, x: Tensor) -> Tensor:
        y, _ = self.rnn(x)  # (T, B, H)
        return self.head(y[-1])  # (B, O)


def set_forget_bias(cell: nn.Module, value: float) -> bool:
    """Start the forget gate at σ(value) (Gers et al. 2000; Keras's unit_forget_bias=True is 1.0).

    LSTM family and SRU (the cells with a forget gate proper; see RecurrentCell.init_forget_bias);
    other cells, and cells without biases, are left alone (returns False).
    """
    if not isinstance(cell, (LSTMCell, LayerNormLSTMCell, SRUCell)) or getattr(cell, cell.keep_gate[0][0]) is None:
        return False
    cell.init_forget_bias(value)
    return True


class RegressionTask:
    """Mean squared error of the prediction against y (B, O); full BPTT over each sequence."""

    def loss(self, model: nn.Module, batch: Tuple[Tensor, Tensor], state=None):
        from ..training.trainer import LossResult
        x, y = batch
        return LossResult(((model(x) - y) ** 2).sum(), y.numel(), y.shape[0])

    def eval_metrics(self, loss: float) -> dict:
        return {"mse": loss}
