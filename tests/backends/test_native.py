"""The native backend (torch's own kernels) against the reference backend, and what `auto` picks."""

from __future__ import annotations

import pytest
import torch

import rnnkit
from helpers import LayerConfig, compare_backends, make_batch

MODES = ["LSTM", "GRU", "RNN_TANH", "RNN_RELU"]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("mode", MODES)
def test_matches_reference(mode: str, dtype: torch.dtype) -> None:
    relu = mode == "RNN_RELU"
    cfg = LayerConfig(mode=mode, input_size=3, hidden_size=5, num_layers=2, bidirectional=True, dtype=dtype)
    compare_backends(cfg, "native", seq_len=6, batch=3, with_state=True, require_signal=not relu)
    compare_backends(cfg, "native", seq_len=6, batch=3, lengths=[6, 2, 4], with_state=True, require_signal=not relu)
    compare_backends(cfg, "native", seq_len=5, batch=None, require_signal=not relu)


def test_proj_size_and_dropconnect() -> None:
    cfg = LayerConfig(mode="LSTM", input_size=3, hidden_size=5, proj_size=2, num_layers=2, bidirectional=True)
    compare_backends(cfg, "native", seq_len=6, batch=3, lengths=[3, 6, 1], with_state=True)
    dropped = LayerConfig(mode="LSTM", input_size=3, hidden_size=5, options=(("weight_dropout", 0.3),))
    compare_backends(dropped, "native", seq_len=6, batch=3, train=True)


@pytest.mark.parametrize("cell, reason", [
    (lambda: rnnkit.PeepholeLSTM(3, 4), "no kernel for PeepholeLSTMCell"),
    (lambda: rnnkit.GRU(3, 4, reset="before"), "reset-after"),
    (lambda: rnnkit.LSTM(3, 4, zoneout_cell=0.2), "zoneout"),
    (lambda: rnnkit.GRU(3, 4, recurrent_dropout=0.2), "recurrent dropout"),
])
def test_refuses_what_torch_lacks(cell, reason: str) -> None:
    layer = cell()
    layer.backend = "native"
    with pytest.raises(ValueError, match=reason):
        layer(torch.randn(4, 2, 3))


def test_auto_prefers_native_only_for_plain_float32_lstm() -> None:
    from rnnkit.backends import extension

    fused_ok = extension.load() is None
    x = torch.randn(5, 2, 3)
    lstm = rnnkit.LSTM(3, 4)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        lstm(x)
        assert lstm.last_backend == "native"
        torch.set_num_threads(2)  # a step this small: the fused loop splits the batch between the threads
        lstm(x)
        assert lstm.last_backend == ("fused" if fused_ok else "native")
        big = rnnkit.LSTM(3, 256)
        big(torch.randn(2, 32, 3))  # 32 x 1024 x 256: BLAS threads the step itself, oneDNN's LSTM wins
        assert big.last_backend == "native"
    finally:
        torch.set_num_threads(threads)
    gru = rnnkit.GRU(3, 4)
    gru(x)
    assert gru.last_backend == ("fused" if fused_ok else "native")
    lstm(x, lengths=torch.tensor([5, 3]))
    assert lstm.last_backend == ("fused" if fused_ok else "native")
    proj = rnnkit.LSTM(3, 4, proj_size=2)
    proj(x)
    assert proj.last_backend == ("fused" if fused_ok else "native")
