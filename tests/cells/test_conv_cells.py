"""ConvLSTMCell / ConvGRUCell and the ConvLSTM / ConvGRU layers: the cell's equations against a
hand-written convolution, gradcheck in float64, the backend choice, the layer against the cell stepped
by hand, and every bad input."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

import rnnkit
from rnnkit import ConvGRU, ConvGRUCell, ConvLSTM, ConvLSTMCell, Recurrent

SPATIAL = {1: (7,), 2: (5, 6), 3: (3, 4, 3)}


def _randomise(module: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial values everywhere (peepholes included), so every term of the equations counts."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.rand(p.shape, generator=g, dtype=torch.float64).to(p.dtype) - 0.5)


# ------------------------------------------------------------------ the math
def test_conv_lstm_cell_matches_equations_written_out():
    torch.manual_seed(0)
    cell = ConvLSTMCell(2, 3, 3, peephole=True, dtype=torch.float64)
    _randomise(cell)
    x, h, c = torch.randn(2, 2, 5, 4, dtype=torch.float64), torch.randn(2, 3, 5, 4, dtype=torch.float64), \
        torch.randn(2, 3, 5, 4, dtype=torch.float64)
    Wx, Wh = cell.weight_ih.chunk(4), cell.weight_hh.chunk(4)
    bx, bh = cell.bias_ih.chunk(4), cell.bias_hh.chunk(4)
    p_i, p_f, p_o = cell.weight_peephole.chunk(3)

    def term(k):
        return F.conv2d(x, Wx[k], bx[k], padding=1) + F.conv2d(h, Wh[k], bh[k], padding=1)

    i = torch.sigmoid(term(0) + p_i * c)
    f = torch.sigmoid(term(1) + p_f * c)
    g = torch.tanh(term(2))
    c_new = f * c + i * g
    o = torch.sigmoid(term(3) + p_o * c_new)
    h_new = o * torch.tanh(c_new)
    y, (h2, c2) = cell(x, (h, c))
    torch.testing.assert_close(c2, c_new, atol=1e-12, rtol=0)
    torch.testing.assert_close(h2, h_new, atol=1e-12, rtol=0)
    torch.testing.assert_close(y, h_new, atol=1e-12, rtol=0)


def test_conv_gru_cell_matches_equations_written_out():
    cell = ConvGRUCell(2, 3, 3, dims=1, dtype=torch.float64)
    _randomise(cell)
    x, h = torch.randn(2, 2, 6, dtype=torch.float64), torch.randn(2, 3, 6, dtype=torch.float64)
    Wx, Wh = cell.weight_ih.chunk(3), cell.weight_hh.chunk(3)
    bx, bh = cell.bias_ih.chunk(3), cell.bias_hh.chunk(3)
    r = torch.sigmoid(F.conv1d(x, Wx[0], bx[0], padding=1) + F.conv1d(h, Wh[0], bh[0], padding=1))
    z = torch.sigmoid(F.conv1d(x, Wx[1], bx[1], padding=1) + F.conv1d(h, Wh[1], bh[1], padding=1))
    n = torch.tanh(F.conv1d(x, Wx[2], bx[2], padding=1) + F.conv1d(r * h, Wh[2], bh[2], padding=1))
    expected = (1 - z) * n + z * h
    y, h2 = cell(x, h)
    torch.testing.assert_close(h2, expected, atol=1e-12, rtol=0)


def test_groups_mean_each_hidden_channel_reads_its_own_input_group():
    """groups=2: zeroing input group 1 must not change hidden channels of group 0 (in every gate)."""
    cell = ConvLSTMCell(4, 4, 3, groups=2, dtype=torch.float64)
    _randomise(cell)
    x = torch.randn(1, 4, 5, 5, dtype=torch.float64)
    x2 = x.clone()
    x2[:, 2:] = 0
    u1, u2 = cell.project(x), cell.project(x2)
    for gate in range(4):
        lo = gate * 4
        torch.testing.assert_close(u1[:, lo:lo + 2], u2[:, lo:lo + 2])  # group 0 channels of this gate
        assert not torch.allclose(u1[:, lo + 2:lo + 4], u2[:, lo + 2:lo + 4])


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_cell_gradcheck_float64(kind, dims):
    kw = dict(dims=dims, dtype=torch.float64)
    cell = ConvLSTMCell(2, 2, 3, peephole=True, **kw) if kind == "lstm" else ConvGRUCell(2, 2, 3, **kw)
    _randomise(cell)
    S = SPATIAL[dims][:dims]
    S = tuple(min(s, 4) for s in S)
    x = torch.randn(2, 2, *S, dtype=torch.float64, requires_grad=True)
    h = torch.randn(2, 2, *S, dtype=torch.float64, requires_grad=True)
    params = list(cell.parameters())
    if kind == "lstm":
        c = torch.randn(2, 2, *S, dtype=torch.float64, requires_grad=True)
        fn = lambda x, h, c, *ps: torch.func.functional_call(  # noqa: E731
            cell, dict(zip([n for n, _ in cell.named_parameters()], ps)), (x, (h, c)))[1]
        assert torch.autograd.gradcheck(fn, (x, h, c, *params))
    else:
        fn = lambda x, h, *ps: torch.func.functional_call(  # noqa: E731
            cell, dict(zip([n for n, _ in cell.named_parameters()], ps)), (x, h))[1]
        assert torch.autograd.gradcheck(fn, (x, h, *params))


def test_auto_runs_the_reference_loop_and_conv_is_no_backend():
    """Convolutional layers run the reference loop (input convolution hoisted), zoneout included; the
    `conv` backend was removed (docs/DESIGN.md), so naming it is a one-line error listing the backends."""
    for layer in (ConvLSTM(2, 3, 3), ConvGRU(2, 3, 3), ConvLSTM(2, 3, 3, zoneout_cell=0.2)):
        layer(torch.randn(2, 1, 2, 4, 4))
        assert layer.last_backend == "reference"
    with pytest.raises(ValueError, match="backend must be 'auto' or one of"):
        ConvLSTM(2, 3, 3, backend="conv")(torch.randn(2, 1, 2, 4, 4))


# --------------------------------------------------- layer vs cell by hand
@pytest.mark.parametrize("cls", [ConvLSTM, ConvGRU])
def test_layer_equals_cell_stepped_by_hand_with_lengths(cls):
    layer = cls(2, 3, 3, dtype=torch.float64)
    _randomise(layer)
    cell = layer.cell_at(0)
    x = torch.randn(4, 2, 2, 5, 5, dtype=torch.float64)
    lengths = torch.tensor([4, 2])
    y, final = layer(x, lengths=lengths)
    final = final if isinstance(final, tuple) else (final,)
    for b in range(2):
        state = None
        for t in range(int(lengths[b])):
            out, state = cell(x[t, b:b + 1], state)
            torch.testing.assert_close(y[t, b:b + 1], out, atol=1e-12, rtol=0)
        assert float(y.detach()[int(lengths[b]):, b].abs().max() if lengths[b] < 4 else 0) == 0.0
        for f, s in zip(final, cell.unpack_state(state)):
            torch.testing.assert_close(f[0, b:b + 1], s, atol=1e-12, rtol=0)


def test_layer_shapes_and_flat_state_dict_names():
    layer = ConvLSTM(3, 4, 3, num_layers=2, bidirectional=True, batch_first=True)
    y, (h, c) = layer(torch.randn(2, 5, 3, 6, 7))
    assert y.shape == (2, 5, 8, 6, 7) and h.shape == c.shape == (4, 2, 4, 6, 7)
    keys = set(layer.state_dict())
    assert {"weight_ih_l0", "weight_hh_l1_reverse", "bias_ih_l1"} <= keys
    assert layer.weight_ih_l1.shape == (16, 8, 3, 3)  # layer 1 reads both directions
    layer2 = ConvLSTM(3, 4, 3, num_layers=2, bidirectional=True, batch_first=True)
    layer2.load_state_dict(layer.state_dict())
    x = torch.randn(2, 5, 3, 6, 7)
    torch.testing.assert_close(layer(x)[0], layer2(x)[0])
    y1, h1 = ConvGRU(2, 3, 3, dims=1)(torch.randn(5, 2, 2, 9))
    assert y1.shape == (5, 2, 3, 9) and h1.shape == (1, 2, 3, 9)


def test_layer_initial_state_needs_the_spatial_size():
    layer = ConvLSTM(2, 3, 3, num_layers=2)
    h, c = layer.initial_state(4, (5, 6))
    assert h.shape == c.shape == (2, 4, 3, 5, 6)
    y, _ = layer(torch.randn(3, 4, 2, 5, 6), (h, c))
    assert y.shape == (3, 4, 3, 5, 6)
    with pytest.raises(ValueError, match="spatial_size"):
        layer.initial_state(4)


def test_unbatched_input_and_streaming_step():
    layer = ConvGRU(2, 3, 3, dtype=torch.float64)
    x = torch.randn(4, 2, 5, 5, dtype=torch.float64)
    y, h = layer(x)  # unbatched (T, C, H, W)
    assert y.shape == (4, 3, 5, 5) and h.shape == (1, 3, 5, 5)
    state = None
    for t in range(4):
        out, state = layer.step(x[t:t + 1], state)
    torch.testing.assert_close(out[0], y[-1])


# ------------------------------------------------------------- bad input
def test_even_kernel_size_is_rejected():
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        ConvLSTMCell(2, 3, 4)
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        ConvGRU(2, 3, (3, 2))


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="dims must be 1, 2 or 3"):
        ConvLSTMCell(2, 3, 3, dims=4)
    with pytest.raises(ValueError, match="divisible by groups"):
        ConvLSTMCell(3, 4, 3, groups=2)
    with pytest.raises(TypeError, match="kernel_size must be an int or a tuple of 2"):
        ConvGRUCell(2, 3, (3, 3, 3))
    with pytest.raises(ValueError, match="peephole_size needs peephole=True"):
        ConvLSTMCell(2, 3, 3, peephole_size=(4, 4))


def test_wrong_rank_and_channels_name_the_shape():
    layer = ConvLSTM(3, 4, 3)
    with pytest.raises(ValueError, match=r"rank 5 .*got shape \(3, 8, 8\)"):
        layer(torch.randn(3, 8, 8))  # one frame without time and batch axes
    with pytest.raises(ValueError, match=r"3 channels in dimension 2 .*got shape \(2, 1, 5, 8, 8\)"):
        layer(torch.randn(2, 1, 5, 8, 8))
    with pytest.raises(ValueError, match=r"expects x of shape \(batch, 3, height, width\)"):
        layer.cell_at(0)(torch.randn(1, 3, 8))


def test_state_spatial_mismatch_is_an_error():
    layer = ConvGRU(2, 4, 3)
    x = torch.randn(3, 2, 2, 8, 8)
    with pytest.raises(ValueError, match=r"initial state h must have shape \(1, 2, 4, 8, 8\).*got \(1, 2, 4, 7, 8\)"):
        layer(x, torch.zeros(1, 2, 4, 7, 8))
    cell = ConvLSTMCell(2, 4, 3)
    with pytest.raises(ValueError, match=r"state h must have shape \(2, 4, 8, 8\)"):
        cell(x[0], (torch.zeros(2, 4, 6, 6), torch.zeros(2, 4, 6, 6)))


def test_spatial_peepholes_check_the_input_size():
    layer = ConvLSTM(2, 3, 3, peephole=True, peephole_size=(6, 6))
    layer(torch.randn(2, 1, 2, 6, 6))
    with pytest.raises(ValueError, match=r"spatial peepholes were built for spatial size \(6, 6\)"):
        layer(torch.randn(2, 1, 2, 8, 8))


def test_recurrent_with_a_conv_cell_factory():
    layer = Recurrent(lambda size: ConvGRUCell(size, 3, 5, dims=1), num_layers=2, input_size=2)
    y, h = layer(torch.randn(4, 2, 2, 10))
    assert y.shape == (4, 2, 3, 10) and h.shape == (2, 2, 3, 10)
    assert rnnkit.ConvLSTM is ConvLSTM
