"""Two threads on one recurrence (common.h: split_batch): the LSTM, GRU and Elman kernels split the batch rows
between torch's intra-op threads, each carrying its rows through the whole time loop. Forced on, every result
must match the reference backend exactly as the single-thread kernels do; "auto" must split only where it pays.
"""

from __future__ import annotations

from typing import Iterator

import pytest
import torch

from helpers import LayerConfig, assert_close, compare_backends
import rnnkit
from rnnkit.backends import extension
from rnnkit.errors import InputError

#: the families whose kernels split the batch (layer-norm, SRU, minGRU keep one thread)
SPLIT_MODES = ["LSTM", "PeepholeLSTM", "GRU", "GRU_BEFORE", "RNN_TANH", "RNN_RELU"]
#: float64 to 1e-10, float32 to 1e-5 (the brief's bounds; the split changes no summation order)
TOLERANCES = {torch.float64: 1e-10, torch.float32: 1e-5}


@pytest.fixture(scope="module", autouse=True)
def kernels() -> None:
    reason = extension.load()
    if reason is not None:
        pytest.skip(f"fused kernels unavailable: {reason}")


@pytest.fixture
def split() -> Iterator:
    """set_recurrence_threads for one test, with torch's pool at two threads; both restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield rnnkit.backends.set_recurrence_threads
    rnnkit.backends.set_recurrence_threads("auto")
    torch.set_num_threads(threads)


def _check(mode: str, dtype: torch.dtype, **kw) -> None:
    layer = {k: kw.pop(k) for k in ("num_layers", "bidirectional", "proj_size", "options", "batch_first") if k in kw}
    cfg = LayerConfig(mode=mode, input_size=3, hidden_size=kw.pop("hidden_size", 7), dtype=dtype, **layer)
    compare_backends(cfg, "fused", tol=TOLERANCES[dtype], require_signal=mode != "RNN_RELU", **kw)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("mode", SPLIT_MODES)
def test_split_batch_matches_reference(mode: str, dtype: torch.dtype, split) -> None:
    split(2)
    _check(mode, dtype, seq_len=6, batch=5, with_state=True)  # odd batch: blocks of 2 and 3 rows, odd H
    _check(mode, dtype, seq_len=6, batch=5, lengths=[6, 2, 4, 1, 5], with_state=True)  # unsorted lengths
    _check(mode, dtype, seq_len=6, batch=5, lengths=[6, 5, 3, 3, 1], packed=True)  # sorted: prefix GEMMs per block
    _check(mode, dtype, seq_len=5, batch=1)  # one row: one block
    _check(mode, dtype, seq_len=5, batch=4, lengths=[5, 2, 4, 3], with_state=True, num_layers=2, bidirectional=True,
           batch_first=True)


@pytest.mark.parametrize("mode", ["LSTM", "PeepholeLSTM", "GRU", "GRU_BEFORE", "RNN_TANH"])
def test_split_batch_with_regularisers_and_projection(mode: str, split) -> None:
    split(2)
    zoneouts = ("zoneout_cell", "zoneout_hidden") if "LSTM" in mode else ("zoneout_hidden",)
    options = tuple(sorted([(z, 0.3) for z in zoneouts] + [("recurrent_dropout", 0.25)]))
    _check(mode, torch.float64, seq_len=6, batch=5, lengths=[6, 3, 4, 1, 6], train=True, options=options)
    if "LSTM" in mode:
        _check(mode, torch.float64, seq_len=5, batch=4, lengths=[5, 1, 3, 4], with_state=True, proj_size=3,
               hidden_size=6)


@pytest.mark.parametrize("torch_threads", [1, 2])
def test_more_blocks_than_threads_run_in_turn(torch_threads: int, split) -> None:
    """Three blocks on two threads, and two blocks with torch at one thread (num_threads=1): still exact."""
    torch.set_num_threads(torch_threads)
    split(3)
    for mode in ("LSTM", "GRU"):
        _check(mode, torch.float64, seq_len=6, batch=7, lengths=[6, 2, 4, 1, 5, 6, 3], with_state=True)


def test_auto_splits_only_small_products_with_threads_to_spare(split) -> None:
    lstm_b8_h64 = 8 * 256 * 64  # rows x 4H x H: too small for BLAS to split
    assert extension.recurrence_blocks(8, lstm_b8_h64) == 2
    assert extension.recurrence_blocks(1, 256 * 64) == 1  # one row
    assert extension.recurrence_blocks(64, 64 * 1024 * 256) == 1  # large: BLAS/oneDNN threads the step itself
    torch.set_num_threads(1)
    assert extension.recurrence_blocks(8, lstm_b8_h64) == 1  # nobody to share with
    split(2)
    assert extension.recurrence_blocks(8, lstm_b8_h64) == 2  # forced
    split(1)
    torch.set_num_threads(2)
    assert extension.recurrence_blocks(8, lstm_b8_h64) == 1  # forced off


def test_auto_split_at_the_target_shape_matches_single_thread(split) -> None:
    """B=8, H=64 float32 under auto (split on two threads) equals the forced single-thread run to float32
    rounding (not bit for bit: BLAS may sum a 4-row block's product in another order than the 8-row one's,
    as MKL does on AVX2 and SSE4.2)."""
    torch.manual_seed(0)
    layer = rnnkit.LSTM(16, 64, backend="fused")
    x = torch.randn(30, 8, 16)
    assert extension.recurrence_blocks(8, 8 * 256 * 64) == 2
    auto, _ = layer(x)
    split(1)
    single, _ = layer(x)
    assert_close(auto, single, "split vs one block", tol=1e-5)


@pytest.mark.parametrize("bad", [0, -1, "two", True, 1.5])
def test_set_recurrence_threads_rejects_bad_values(bad) -> None:
    with pytest.raises(InputError, match="set_recurrence_threads"):
        rnnkit.backends.set_recurrence_threads(bad)


@pytest.mark.parametrize("mode", ["LSTM", "GRU", "GRU_BEFORE"])
def test_forced_split_under_autocast_matches_one_block(mode: str, split) -> None:
    """Mixed precision (bfloat16 projection and, where the CPU has bfloat16 units, a bfloat16 step GEMM per
    thread): the split gives every row the numbers one block gives it."""
    torch.manual_seed(0)
    layer = LayerConfig(mode=mode, input_size=6, hidden_size=9, dtype=torch.float32).build("fused", 0)
    x = torch.randn(7, 5, 6)

    def run(threads: int):
        split(threads)
        layer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = layer(x)[0]
        y.float().sum().backward()
        return [y.float()] + [p.grad.clone() for p in layer.parameters()]

    for a, b in zip(run(2), run(1)):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
