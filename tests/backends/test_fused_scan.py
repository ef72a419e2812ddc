"""The scan backend (log-depth parallel scan for minGRU) equals the reference on CPU."""

from __future__ import annotations

import pytest
import torch

import rnnkit
from helpers import LayerConfig, compare_backends
from rnnkit.backends.scan import linear_scan


@pytest.mark.parametrize("T", [1, 2, 3, 7, 16, 33])
def test_linear_scan_equals_sequential(T: int) -> None:
    g = torch.Generator().manual_seed(T)
    a, b = torch.rand(T, 3, 4, generator=g, dtype=torch.float64), torch.randn(T, 3, 4, generator=g, dtype=torch.float64)
    h0 = torch.randn(3, 4, generator=g, dtype=torch.float64)
    h, expected = h0, []
    for t in range(T):
        h = a[t] * h + b[t]
        expected.append(h)
    assert torch.allclose(linear_scan(a, b, h0), torch.stack(expected), atol=1e-12, rtol=0)


@pytest.mark.parametrize("train", [False, True])
def test_mingru_matches_reference(train: bool) -> None:
    for options in ((), (("zoneout_hidden", 0.3),), (("input_dropout", 0.2), ("zoneout_hidden", 0.5))):
        cfg = LayerConfig(mode="MinGRU", input_size=3, hidden_size=4, num_layers=2, bidirectional=True,
                          options=options)
        compare_backends(cfg, "scan", seq_len=9, batch=3, lengths=[9, 4, 1], with_state=True, train=train)
        compare_backends(cfg, "scan", seq_len=6, batch=2, train=train)
    f32 = LayerConfig(mode="MinGRU", input_size=3, hidden_size=4, dtype=torch.float32)
    compare_backends(f32, "scan", seq_len=20, batch=3, lengths=[20, 11, 3])


def test_scan_refuses_other_cells() -> None:
    layer = rnnkit.GRU(3, 4, backend="scan")
    with pytest.raises(ValueError, match="linear recurrence"):
        layer(torch.randn(4, 2, 3))


def test_auto_keeps_fused_for_mingru_on_cpu() -> None:
    from rnnkit.backends import extension

    layer = rnnkit.MinGRU(3, 4)
    layer(torch.randn(4, 2, 3))
    assert layer.last_backend == ("fused" if extension.load() is None else "scan")
