"""Sequence regressor: a recurrent layer read out at its last step (the adding problem)."""

from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor, nn

from ..recurrent import Recurrent
from .char_lm import make_cell


class SequenceRegressor(nn.Module):
    """x (T, B, I) -> prediction (B, O) = W y_T + b, with y_T the last layer's output at the last step."""

    def __init__(self, cell: str, input_size: int, hidden_size: int, output_size: int = 1,
                 num_layers: int = 1) -> None:
        super().__init__()
        self.cell_name = cell
        self.rnn = Recurrent(lambda size: make_cell(cell, size, hidden_size), num_layers, input_size=input_size)
        self.head = nn.Linear(self.rnn.output_size, output_size)

    def forward(self, x: Tensor) -> Tensor:
        y, _ = self.rnn(x)  # (T, B, H)
        return self.head(y[-1])  # (B, O)


class RegressionTask:
    """Mean squared error of the prediction against y (B, O); full BPTT over each sequence."""

    def loss(self, model: nn.Module, batch: Tuple[Tensor, Tensor], state=None):
        from ..training.trainer import LossResult
        x, y = batch
        return LossResult(((model(x) - y) ** 2).sum(), y.numel(), y.shape[0])

    def eval_metrics(self, loss: float) -> dict:
        return {"mse": loss}
