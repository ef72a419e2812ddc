"""RecurrentCell.init_recurrent_radius and the rnn-relu cell name: what --init-scale and --cells rnn-relu build."""

from __future__ import annotations

import pytest
import torch

from rnnkit.cells import ElmanCell, GRUCell, LSTMCell, SRUCell, make_cell
from rnnkit.cells.base import spectral_radius
from rnnkit.errors import InputError
from rnnkit.models.regressor import SequenceRegressor


@pytest.mark.parametrize("make", [lambda: ElmanCell(3, 6), lambda: LSTMCell(3, 6), lambda: GRUCell(3, 6)])
def test_every_gate_block_gets_the_radius_and_keeps_its_direction(make):
    cell = make()
    before = cell.weight_hh.detach().clone()
    cell.init_recurrent_radius(1.7)
    for old, new in zip(before.split(6), cell.weight_hh.detach().split(6)):
        assert float(spectral_radius(new)) == pytest.approx(1.7, rel=1e-5)
        ratio = new / old
        torch.testing.assert_close(ratio, torch.full_like(ratio, float(ratio[0, 0])))  # a rescale, nothing else
    assert cell.weight_ih.grad is None and cell.weight_hh.requires_grad


def test_cells_without_a_recurrent_matrix_and_bad_radii_are_refused():
    with pytest.raises(InputError, match="SRUCell has no recurrent matrix weight_hh"):
        SRUCell(3, 3).init_recurrent_radius(1.5)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(InputError, match="spectral radius must be a positive number"):
            ElmanCell(3, 4).init_recurrent_radius(bad)
    cell = ElmanCell(3, 4)
    with torch.no_grad():
        cell.weight_hh.zero_()
    with pytest.raises(InputError, match="spectral radius 0"):
        cell.init_recurrent_radius(1.5)


def test_rnn_relu_is_the_elman_cell_with_relu_and_the_regressor_scales_every_layer():
    x = torch.randn(3, 4)
    cell = make_cell("rnn-relu", 4, 5)
    assert isinstance(cell, ElmanCell) and cell.nonlinearity == "relu"
    h, _ = cell(x)
    assert (h >= 0).all() and (h == 0).any()  # ReLU, not tanh
    model = SequenceRegressor("rnn-relu", 2, 5, num_layers=2, init_scale=2.5)
    for layer in model.rnn.cells:
        assert float(spectral_radius(layer.weight_hh)) == pytest.approx(2.5, rel=1e-5)
