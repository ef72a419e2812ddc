"""What every backend shares: the weight-override check names the cell and the parameters it cannot take."""

from __future__ import annotations

import pytest
import torch

from rnnkit.backends.base import RunSpec, unsupported_weights
from rnnkit.backends.fused import FusedBackend
from rnnkit.backends.scan import ScanBackend
from rnnkit.cells import GRUCell, MinGRUCell, SRUCell


def _spec(cell, inputs, **weights) -> RunSpec:
    return RunSpec(cell, inputs, (), weights=weights)  # accepts() never reads the state


def test_unsupported_weights_lists_the_extra_parameters():
    spec = _spec(GRUCell(3, 4), torch.zeros(2, 1, 3), weight_hh=torch.zeros(12, 4), bias_ih=torch.zeros(12))
    assert unsupported_weights(spec, {"weight_hh", "bias_ih"}) is None
    assert unsupported_weights(spec, {"weight_hh"}) == (
        "weight overrides for GRUCell are supported for weight_hh only; got ['bias_ih']")
    assert unsupported_weights(spec) == (
        "weight overrides for GRUCell are not supported; got ['bias_ih', 'weight_hh']")


@pytest.mark.parametrize("backend,cell,inputs,name", [
    (FusedBackend(), SRUCell(3, 3), torch.zeros(2, 1, 3), "weight_ih"),
    (ScanBackend(), MinGRUCell(3, 4), torch.zeros(2, 1, 3), "weight_ih"),
])
def test_backends_refuse_overrides_they_cannot_read_and_say_for_which_cell(backend, cell, inputs, name):
    spec = _spec(cell, inputs, **{name: getattr(cell, name)})
    reason = backend.accepts(spec)
    assert reason is not None and reason.startswith(f"weight overrides for {type(cell).__name__} are ")
    assert reason.endswith(f"got ['{name}']")
