"""Keras-style initialisation options of the layers: forget_bias and recurrent_init="orthogonal".

The defaults must leave every layer's parameters exactly as before (golden values from seed 0,
and torch.nn's own initialisation for the drop-ins); each option must set what layers.py documents
and nothing else.
"""

from __future__ import annotations

from typing import Dict

import pytest
import torch
from torch import nn

import rnnkit
from rnnkit.errors import InputError, InputTypeError

F64 = torch.float64
H = 4
LAYERS = ("RNN", "LSTM", "GRU", "PeepholeLSTM", "SRU", "LayerNormLSTM", "LayerNormGRU", "MinGRU")
#: Σ_k (k+1)·p_k over every state_dict entry at seed 0 (3 → 4, 2 layers, bidirectional), from the
#: layers as they were before these options existed (commit c2d7d2d)
GOLDEN = {
    "RNN": -1.8684715650903287,
    "LSTM": -88.80990219155474,
    "GRU": -11.974498370422863,
    "PeepholeLSTM": 74.48752844806621,
    "SRU": 12.300985802841861,
    "LayerNormLSTM": 1188.1663943041867,
    "LayerNormGRU": 903.4326258722092,
    "MinGRU": 44.056257746827576,
}
#: the keep gate's bias rows as documented: layer -> (bias entries, block, sign); the first entry
#: gets sign·forget_bias, the others 0, in the rows of the block
KEEP_GATE = {
    "LSTM": (("bias_ih", "bias_hh"), 1, 1),          # f of i, f, g, o
    "PeepholeLSTM": (("bias_ih", "bias_hh"), 1, 1),
    "GRU": (("bias_ih", "bias_hh"), 1, 1),           # z of r, z, n
    "LayerNormGRU": (("bias_ih", "bias_hh"), 1, 1),
    "LayerNormLSTM": (("bias",), 1, 1),
    "SRU": (("bias",), 0, 1),                        # b_f of b_f, b_r
    "MinGRU": (("bias_ih",), 0, -1),                 # keep = 1 − σ(b_z)
}
WITH_WEIGHT_HH = ("RNN", "LSTM", "GRU", "PeepholeLSTM", "LayerNormLSTM", "LayerNormGRU")


def build(name: str, seed: int = 0, **kw) -> rnnkit.Recurrent:
    torch.manual_seed(seed)
    return getattr(rnnkit, name)(3, H, num_layers=2, bidirectional=True, dtype=F64, **kw)


def weighted_sum(state: Dict[str, torch.Tensor]) -> float:
    return sum(float((v.flatten() * torch.arange(1, v.numel() + 1, dtype=F64)).sum()) for v in state.values())


@pytest.mark.parametrize("name", LAYERS)
def test_defaults_leave_parameters_as_before(name: str) -> None:
    assert weighted_sum(build(name).state_dict()) == pytest.approx(GOLDEN[name], abs=1e-9)


@pytest.mark.parametrize("name", ["RNN", "LSTM", "GRU"])
def test_drop_in_defaults_are_torchs_initialisation(name: str) -> None:
    ours = build(name)
    torch.manual_seed(0)
    reference = getattr(nn, name)(3, H, num_layers=2, bidirectional=True, dtype=F64)
    for (key, want), (got_key, got) in zip(reference.state_dict().items(), ours.state_dict().items()):
        assert got_key == key and torch.equal(got, want), key
    torch.manual_seed(1)
    ours.reset_parameters()
    torch.manual_seed(1)
    reference.reset_parameters()
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), reference.state_dict().values()))


def _cell_params(layer: rnnkit.Recurrent, index: int) -> Dict[str, torch.Tensor]:
    """Cell `index`'s parameters by the cell's names, wherever they are held."""
    cell = layer.cells[index]
    names = [n for n, _ in cell.named_parameters(recurse=False)] + list(cell.held_weights())
    return {n: getattr(cell, n) for n in names}


@pytest.mark.parametrize("name", list(KEEP_GATE))
def test_forget_bias_sets_the_keep_gate_and_nothing_else(name: str) -> None:
    default, layer = build(name), build(name, forget_bias=1.5)
    names, block, sign = KEEP_GATE[name]
    rows = slice(block * H, (block + 1) * H)
    for index in range(len(layer.cells)):
        got, want = _cell_params(layer, index), _cell_params(default, index)
        assert torch.equal(got[names[0]][rows], torch.full((H,), sign * 1.5, dtype=F64))
        for other in names[1:]:
            assert torch.equal(got[other][rows], torch.zeros(H, dtype=F64))
        for key in want:  # every other entry keeps the default initialisation
            keep = torch.ones_like(want[key], dtype=torch.bool)
            if key in names:
                keep[rows] = False
            assert torch.equal(got[key][keep], want[key][keep]), f"{name} cell {index} {key}"


def test_forget_bias_opens_the_lstm_forget_gate() -> None:
    """Zero input and state: f = σ(forget_bias) in every layer and direction (Jozefowicz et al. 2015)."""
    layer = build("LSTM", forget_bias=1.0)
    for cell in layer.cells:
        u = cell.project(torch.zeros(1, cell.input_size, dtype=F64))
        f = cell.gates(u, torch.zeros(1, cell.output_size, dtype=F64), None, None)[1]
        sigma_1 = 1.0 / (1.0 + torch.exp(torch.tensor(-1.0, dtype=F64)))
        torch.testing.assert_close(torch.sigmoid(f), sigma_1.expand(1, H), rtol=0, atol=1e-15)


@pytest.mark.parametrize("name,kw", [(n, {}) for n in WITH_WEIGHT_HH] + [("LSTM", {"proj_size": 2})],
                         ids=list(WITH_WEIGHT_HH) + ["LSTM-proj"])
def test_orthogonal_recurrent_init(name: str, kw: dict) -> None:
    default, layer = build(name, **kw), build(name, recurrent_init="orthogonal", **kw)
    for index in range(len(layer.cells)):
        got, want = _cell_params(layer, index), _cell_params(default, index)
        w = got["weight_hh"]
        for block in w.split(H):  # (H, H), or (H, P) with a projection: orthonormal columns
            torch.testing.assert_close(block.T @ block, torch.eye(block.shape[1], dtype=F64), rtol=0, atol=1e-12)
        assert not torch.equal(w, want["weight_hh"])
        for key in want.keys() - {"weight_hh"}:  # drawn before it: unchanged
            assert torch.equal(got[key], want[key]), f"{name} cell {index} {key}"


def test_reset_parameters_applies_the_options_again() -> None:
    layer = build("GRU", forget_bias=1.0, recurrent_init="orthogonal")
    with torch.no_grad():
        for p in layer.parameters():
            p.fill_(3.0)
    layer.reset_parameters()
    assert torch.equal(layer.bias_ih_l1_reverse[H:2 * H], torch.ones(H, dtype=F64))
    block = layer.weight_hh_l0[2 * H:]
    torch.testing.assert_close(block.T @ block, torch.eye(H, dtype=F64), rtol=0, atol=1e-12)
    assert "forget_bias=1.0" in repr(layer) and "recurrent_init='orthogonal'" in repr(layer)


@pytest.mark.parametrize("call,error,match", [
    (lambda: rnnkit.RNN(3, 4, forget_bias=1.0), InputError, "RNN: ElmanCell has no gate"),
    (lambda: rnnkit.SRU(3, 4, recurrent_init="orthogonal"), InputError, "SRU: SRUCell has no recurrent matrix"),
    (lambda: rnnkit.MinGRU(3, 4, recurrent_init="orthogonal"), InputError, "no recurrent matrix"),
    (lambda: rnnkit.LSTM(3, 4, bias=False, forget_bias=1.0), InputError, "bias=False"),
    (lambda: rnnkit.GRU(3, 4, recurrent_init="glorot"), InputError, "recurrent_init must be one of"),
    (lambda: rnnkit.LSTM(3, 4, forget_bias="1"), InputTypeError, "forget_bias must be a number"),
    (lambda: rnnkit.LSTM(3, 4, forget_bias=True), InputTypeError, "forget_bias must be a number"),
])
def test_options_that_do_not_apply_are_errors(call, error, match: str) -> None:
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("layer_class,gates", [(rnnkit.ConvLSTM, 4), (rnnkit.ConvGRU, 3)])
def test_conv_layers_take_the_init_options(layer_class, gates):
    """ConvLSTM/ConvGRU are gated cells too: forget_bias sets the keep gate's block (f, or GRU's z),
    recurrent_init="orthogonal" makes each gate's recurrent kernel, flattened to Hc rows, orthonormal."""
    torch.manual_seed(0)
    plain = layer_class(2, 4, 3, num_layers=2)
    torch.manual_seed(0)
    layer = layer_class(2, 4, 3, num_layers=2, forget_bias=1.5, recurrent_init="orthogonal")
    for cell, before in zip(layer.cells, plain.cells):
        assert cell.bias_ih[4:8].tolist() == [1.5] * 4 and cell.bias_hh[4:8].tolist() == [0.0] * 4
        keep = torch.ones(gates * 4, dtype=torch.bool)
        keep[4:8] = False
        assert torch.equal(cell.bias_ih[keep], before.bias_ih[keep])  # every other entry as initialised
        for block in cell.weight_hh.split(4):
            rows = block.reshape(4, -1)
            assert torch.allclose(rows @ rows.T, torch.eye(4), atol=1e-5)
    assert "forget_bias=1.5" in repr(layer)
    with pytest.raises(ValueError, match="recurrent_init must be one of"):
        layer_class(2, 4, recurrent_init="xavier")
