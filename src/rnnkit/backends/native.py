"""The native backend: torch's own fused RNN kernels (oneDNN on CPU, cuDNN on GPU).

It takes a configuration only where it is exactly torch's: a plain LSTMCell
(proj_size included), a reset-after GRUCell or an ElmanCell, without
recurrent dropout or zoneout (DropConnect is fine: the dropped weight_hh is
simply passed in, as are the weights a torch-named layer read for this call).
Each call runs one layer and direction through `torch._VF.lstm/gru/rnn_tanh/rnn_relu`
with num_layers=1; variable lengths go through torch's packed-sequence kernels.

`auto` prefers this backend only where it was measured to win (see
`auto_priority` and benchmarks/RESULTS.md): on GPU always, on CPU for the plain
fixed-length float32 LSTM, where oneDNN's LSTM beats rnnkit's fused loop (not where the fused
loop splits the batch between threads: there it wins).
"""

from __future__ import annotations

import functools
from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..cells import ElmanCell, GRUCell, LSTMCell
from .base import RunSpec, cell_type
from .registry import register

Result = Tuple[Tensor, Tuple[Tensor, ...]]

#: priority `auto` gives this backend where it wins; fused is registered at 10
PREFERRED, NOT_PREFERRED = 20, 5


def _fused_splits(spec: RunSpec) -> bool:
    """Whether the fused LSTM would run this float32 batch on several threads (its rows split between them:
    one step's product too small for BLAS, e.g. T=1000, B=8, H=64 on 2 threads), where it beats oneDNN's LSTM,
    which keeps to one core there (benchmarks/RESULTS.md, bench_threads: 0.81x nn.LSTM on a Xeon)."""
    from . import extension

    if torch.is_autocast_enabled("cpu"):
        return False  # bfloat16 step products are not split, and oneDNN's bfloat16 LSTM is the fast one
    B, H = spec.inputs.shape[1], spec.cell.hidden_size
    blocks = extension.recurrence_blocks(B, B * 4 * H * H)
    return blocks is not None and blocks > 1


def _params(spec: RunSpec) -> Tuple[List[Tensor], bool]:
    """Weights in torch's flat order: w_ih, w_hh[, b_ih, b_hh][, w_hr]."""
    params = [spec.weight("weight_ih"), spec.weight("weight_hh")]
    has_bias = spec.weight("bias_ih") is not None
    if has_bias:
        params += [spec.weight("bias_ih"), spec.weight("bias_hh")]
    if isinstance(spec.cell, LSTMCell) and spec.weight("weight_hr") is not None:
        params.append(spec.weight("weight_hr"))
    return params, has_bias


def _function(cell):
    if cell_type(cell) is LSTMCell:
        return torch._VF.lstm
    if cell_type(cell) is GRUCell:
        return torch._VF.gru
    return torch._VF.rnn_tanh if cell.nonlinearity == "tanh" else torch._VF.rnn_relu


@functools.lru_cache(maxsize=None)
def runs_under_cpu_autocast(cell_name: str) -> bool:
    """Whether torch's own CPU kernel of the family ("LSTMCell", "GRUCell", "ElmanCell") runs under bfloat16
    autocast here: below AVX-512 (or under an ONEDNN_MAX_CPU_ISA limit) oneDNN has no bfloat16 RNN primitive
    and torch raises. Tried once per process on a 2-unit layer."""
    module = {"LSTMCell": nn.LSTM, "GRUCell": nn.GRU, "ElmanCell": nn.RNN}[cell_name](2, 2)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
            module(torch.zeros(1, 1, 2))
        return True
    except RuntimeError:
        return False


class NativeBackend:
    """torch's own kernels for the configurations torch.nn itself has."""

    name = "native"

    def accepts(self, spec: RunSpec) -> Optional[str]:
        cell = spec.cell
        kind = cell_type(cell)
        if kind not in (LSTMCell, GRUCell, ElmanCell):
            return f"torch has no kernel for {kind.__name__} (only LSTMCell, GRUCell, ElmanCell)"
        if kind is GRUCell and cell.reset != "after":
            return "torch's GRU is the reset-after form; reset='before' is rnnkit's own"
        if spec.recurrent_mask is not None:
            return "recurrent dropout is not part of torch's kernels"
        if spec.has_zoneout:
            return "zoneout is not part of torch's kernels"
        if not spec.inputs.is_floating_point():
            return f"floating-point input needed; got {spec.inputs.dtype}"
        if spec.inputs.device.type == "cpu" and torch.is_autocast_enabled("cpu") and \
                torch.get_autocast_dtype("cpu") == torch.bfloat16 and not runs_under_cpu_autocast(kind.__name__):
            return (f"torch's own {kind.__name__[:-4]} kernel has no bfloat16 form on this CPU (oneDNN's bfloat16 "
                    f"RNN needs AVX-512); the fused backend runs it")
        if spec.lengths is not None and torch.compiler.is_compiling():
            # torch's kernels take lengths as a PackedSequence, which torch.compile cannot trace
            return "lengths under torch.compile (packing reads lengths on the host: a graph break)"
        return None

    def auto_priority(self, spec: RunSpec, registered: int) -> int:
        """Where `auto` ranks this backend for `spec` (measured in benchmarks/RESULTS.md)."""
        if torch.compiler.is_compiling():
            # under torch.compile AOTAutograd decomposes aten.lstm/gru/rnn into one set of ops per time step
            # (T=20: ~500 forward and ~950 backward nodes, recompiled for every T); the fused custom ops
            # stay one node per layer and direction, with dynamic T
            return NOT_PREFERRED
        if spec.inputs.device.type != "cpu":
            return PREFERRED  # cuDNN; the fused kernels are CPU-only
        cell = spec.cell
        plain_lstm = (cell_type(cell) is LSTMCell and spec.weight("weight_hr") is None and spec.lengths is None
                      and spec.inputs.dtype == torch.float32)
        return PREFERRED if plain_lstm and not _fused_splits(spec) else NOT_PREFERRED

    def run(self, spec: RunSpec) -> Result:
        cell = spec.cell
        fn = _function(cell)
        params, has_bias = _params(spec)
        is_lstm = cell_type(cell) is LSTMCell
        hx = tuple(s.unsqueeze(0) for s in spec.state)  # (1, B, S) per state tensor
        hx_arg = hx if is_lstm else hx[0]
        train = torch.is_grad_enabled()
        if spec.lengths is None:
            result = fn(spec.inputs, hx_arg, params, has_bias, 1, 0.0, train, False, False)
            out, finals = result[0], result[1:]
        else:
            T = spec.inputs.shape[0]
            packed = pack_padded_sequence(spec.inputs, spec.lengths.cpu(), enforce_sorted=False)
            order, unorder = packed.sorted_indices, packed.unsorted_indices
            hx_sorted = tuple(h.index_select(1, order) for h in hx)
            result = fn(packed.data, packed.batch_sizes, hx_sorted if is_lstm else hx_sorted[0], params, has_bias, 1,
                        0.0, train, False)
            out_packed = type(packed)(result[0], packed.batch_sizes, order, unorder)
            out, _ = pad_packed_sequence(out_packed, total_length=T)
            finals = tuple(f.index_select(1, unorder) for f in result[1:])
        return out, tuple(f.squeeze(0) for f in finals)


register(NativeBackend(), priority=NOT_PREFERRED)
