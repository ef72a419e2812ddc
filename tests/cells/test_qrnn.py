"""QRNN (Bradbury et al. 2017): the convolution is Conv1d's, a second call continues the first exactly, the
fast backends (scan: f/fo/ifo; fused: f/fo) equal the reference, and the layer is chosen by name."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import rnnkit
from helpers import LayerConfig, compare_backends
from rnnkit.backends import extension
from rnnkit.errors import InputError

F64 = torch.float64


@pytest.mark.parametrize("pooling", ["f", "fo", "ifo"])
@pytest.mark.parametrize("window", [1, 2, 4])
def test_convolution_is_a_causal_conv1d(pooling: str, window: int) -> None:
    """a_t over a whole sequence (convolve) is torch's Conv1d on the input padded with k−1 zeros
    in front, with the cell's weight_ih in Conv1d's layout."""
    torch.manual_seed(0)
    cell = rnnkit.QRNNCell(3, 4, window=window, pooling=pooling, dtype=F64)
    x = torch.randn(6, 2, 3, dtype=F64)
    zeros = cell.unpack_state(cell.initial_state(2))
    a, _ = cell.convolve(x, zeros[1] if window > 1 else None)
    conv = torch.nn.functional.conv1d(torch.nn.functional.pad(x.permute(1, 2, 0), (window - 1, 0)),
                                      cell.weight_ih, cell.bias_ih)
    torch.testing.assert_close(a, conv.permute(2, 0, 1), rtol=0, atol=1e-12)


@pytest.mark.parametrize("backend", ["reference", "scan", "fused"])
@pytest.mark.parametrize("pooling,window", [("f", 1), ("fo", 2), ("ifo", 3), ("fo", 5)])
def test_second_call_continues_the_first(backend: str, pooling: str, window: int) -> None:
    """out_a, s = m(x[:t]); out_b, _ = m(x[t:], s) equals m(x), for every split point, stacked and
    bidirectional-free (a reverse direction cannot continue), window longer than the pieces included."""
    if backend == "fused" and (pooling == "ifo" or extension.load() is not None):
        pytest.skip("the fused backend runs f- and fo-pooling where the kernels build")
    torch.manual_seed(1)
    m = rnnkit.QRNN(3, 4, num_layers=2, window=window, pooling=pooling, dtype=F64, backend=backend)
    x = torch.randn(7, 2, 3, dtype=F64)
    whole, final = m(x)
    for t in (1, 2, 6):
        out_a, s = m(x[:t])
        out_b, s_b = m(x[t:], s)
        torch.testing.assert_close(torch.cat([out_a, out_b]), whole, rtol=0, atol=1e-12)
        for got, expected in zip(m.cells[0].unpack_state(s_b), m.cells[0].unpack_state(final)):
            torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    assert m.last_backend == backend


def test_continuation_with_lengths_takes_each_rows_window() -> None:
    """With lengths, the state is each row's after its own last step: continuing row b's valid prefix
    equals running the row's whole sequence."""
    torch.manual_seed(2)
    m = rnnkit.QRNN(3, 4, window=3, pooling="ifo", dtype=F64, backend="reference")
    x = torch.randn(6, 2, 3, dtype=F64)
    _, s = m(x[:4], lengths=[4, 2])
    rest, _ = m(torch.stack([x[4:6, 0], x[2:4, 1]], dim=1), s)
    whole0, _ = m(x[:, :1])
    whole1, _ = m(x[:4, 1:])
    torch.testing.assert_close(rest[:, 0], whole0[4:6, 0], rtol=0, atol=1e-12)
    torch.testing.assert_close(rest[:, 1], whole1[2:4, 0], rtol=0, atol=1e-12)


CONFIGS = {
    "f_k1": LayerConfig(mode="QRNN", window=1, pooling="f"),
    "fo_k2_stacked_bidir": LayerConfig(mode="QRNN", window=2, pooling="fo", num_layers=2, bidirectional=True),
    "ifo_k3_nobias_batch_first": LayerConfig(mode="QRNN", window=3, pooling="ifo", bias=False, batch_first=True),
    "fo_k4_zoneout": LayerConfig(mode="QRNN", window=4, pooling="fo", options=(("zoneout_cell", 0.4),)),
    "f_k2_zoneout_dropout": LayerConfig(mode="QRNN", window=2, pooling="f", num_layers=2, dropout=0.3,
                                       options=(("zoneout_cell", 0.5), ("input_dropout", 0.2))),
}


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("backend", ["scan", "fused"])
def test_fast_backends_equal_the_reference(backend: str, name: str, train: bool) -> None:
    """Outputs, final (c, window) and every gradient, float64 to 1e-10 and float32 as accurate as the float32
    reference against a float64 truth; full rows, lengths (garbage past them), packed input."""
    cfg = CONFIGS[name]
    if backend == "fused" and (cfg.pooling == "ifo" or extension.load() is not None):
        pytest.skip("the fused backend runs f- and fo-pooling where the kernels build")
    compare_backends(cfg, backend, seq_len=7, batch=3, with_state=True, train=train)
    compare_backends(cfg, backend, seq_len=7, batch=3, lengths=[7, 2, 5], with_state=True, train=train)
    compare_backends(cfg, backend, seq_len=6, batch=3, lengths=[6, 1, 3], packed=True, train=train)
    f32 = dataclasses.replace(cfg, dtype=torch.float32)
    compare_backends(f32, backend, seq_len=9, batch=3, lengths=[9, 4, 6], with_state=True, train=train)


@pytest.mark.parametrize("backend", ["scan", "fused"])
@pytest.mark.parametrize("pooling", ["f", "fo", "ifo"])
def test_gradcheck_fast_backends(backend: str, pooling: str) -> None:
    """float64 gradcheck through the fast path: input, initial (c, window), every parameter, with lengths."""
    if backend == "fused" and (pooling == "ifo" or extension.load() is not None):
        pytest.skip("the fused backend runs f- and fo-pooling where the kernels build")
    torch.manual_seed(3)
    layer = rnnkit.QRNN(2, 3, window=3, pooling=pooling, dtype=F64, backend=backend, zoneout_cell=0.3).eval()
    names = [n for n, _ in layer.named_parameters()]
    params = [p.detach().clone().requires_grad_(True) for _, p in layer.named_parameters()]
    x = torch.randn(4, 2, 2, dtype=F64, requires_grad=True)
    state = [(torch.randn(1, 2, s, dtype=F64) * 0.5).requires_grad_(True) for s in layer.state_sizes]
    lengths = torch.tensor([4, 2])

    def run(x, c0, w0, *ps):
        out, (c, w) = torch.func.functional_call(layer, dict(zip(names, ps)), (x, (c0, w0)), {"lengths": lengths})
        return out, c, w

    assert torch.autograd.gradcheck(run, (x, *state, *params))
    assert layer.last_backend == backend


def test_auto_picks_fused_for_fo_and_scan_for_ifo() -> None:
    fo, ifo = rnnkit.QRNN(3, 4), rnnkit.QRNN(3, 4, pooling="ifo")
    fo(torch.randn(4, 2, 3))
    ifo(torch.randn(4, 2, 3))
    assert fo.last_backend == ("fused" if extension.load() is None else "scan")
    assert ifo.last_backend == "scan"
    assert "ifo-pooling" in ifo.last_skipped["fused"]
    with pytest.raises(InputError, match="ifo-pooling .* has no fused loop"):
        rnnkit.QRNN(3, 4, pooling="ifo", backend="fused")(torch.randn(4, 2, 3))


def test_by_name_and_bad_arguments() -> None:
    assert type(rnnkit.cells.make_cell("qrnn", 3, 4)) is rnnkit.QRNNCell
    with pytest.raises(InputError, match="pooling must be one of f, fo, ifo; got 'io'"):
        rnnkit.QRNNCell(3, 4, pooling="io")
    with pytest.raises(InputError, match="window must be positive; got 0"):
        rnnkit.QRNN(3, 4, window=0)
    with pytest.raises(InputError, match="zoneout_hidden needs a state named 'h'"):
        rnnkit.QRNN(3, 4, zoneout_hidden=0.1)
    with pytest.raises(InputError, match="recurrent_dropout needs a cell with a recurrent matrix"):
        rnnkit.QRNN(3, 4, recurrent_dropout=0.1)


def test_forget_bias_sets_f() -> None:
    layer = rnnkit.QRNN(3, 4, pooling="ifo", forget_bias=2.0)
    assert layer.cells[0].bias_ih[4:8].tolist() == [2.0] * 4
