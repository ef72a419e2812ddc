"""The fused CPU backend: one compiled forward and one hand-derived BPTT per cell family.

For every built-in cell the sequence runs as

    u = cell's input term for all steps          one GEMM (autograd handles its backward)
    y, state, saved = rnnkit::<family>_forward   the time loop in C++: per step one
                                                 recurrent GEMM + one fused pointwise pass
    backward: rnnkit::<family>_backward          the BPTT loop in C++, then the weight
                                                 gradients as one GEMM over all steps

Lengths, initial state, recurrent dropout masks, zoneout (train masks and
eval expectation) and DropConnect on weight_hh run on this path. The kernels
are compiled on first use (see `extension`); without a compiler `accepts`
names the missing piece and `auto` falls back.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, Optional, Tuple, Type

import torch
from torch import Tensor

from ..cells import (ElmanCell, GRUCell, LayerNormGRUCell, LayerNormLSTMCell, LSTMCell, MinGRUCell,
                     PeepholeLSTMCell, QRNNCell, RecurrentCell, SRUCell)
from ..cells.base import bias_sum
from . import extension
from .base import RunSpec, cell_type, unsupported_weights
from .registry import register

Result = Tuple[Tensor, Tuple[Tensor, ...]]


def _common(spec: RunSpec):
    T, B = spec.inputs.shape[:2]
    lengths = spec.lengths.contiguous() if spec.lengths is not None else None
    rmask = spec.recurrent_mask.contiguous() if spec.recurrent_mask is not None else None
    return T, B, lengths, rmask


def _needs_grad(*tensors: Optional[Tensor]) -> bool:
    """Whether autograd will ask for a backward: if not, the forward kernels keep no buffers for it."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _keeps(spec: RunSpec, T: int, B: int) -> Tuple[Optional[Tensor], ...]:
    from .fused_ops import zoneout_keep

    zs = spec.zoneout or (None,) * len(spec.cell.state_sizes)
    return tuple(zoneout_keep(z, T, B, S, spec.inputs) for z, S in zip(zs, spec.cell.state_sizes))


def _project(spec: RunSpec, weight: Tensor, bias: Optional[Tensor], widen: bool = True) -> Tensor:
    """x W^T + b for all steps, one GEMM (rnnkit::input_projection); in spec.projection_dtype where set
    (bfloat16 inputs and weights, float32 accumulation inside the GEMM), returned as float32 (or, with
    widen=False for a kernel that reads a bfloat16 u itself, as it is)."""
    from .fused_ops import input_projection

    low = spec.projection_dtype
    if low is None:
        return input_projection(spec.inputs, weight, bias)
    u = input_projection(spec.inputs.to(low), weight.to(low), None if bias is None else bias.to(low))
    return u if not widen and low == torch.bfloat16 else u.float()


def _cell_projection(spec: RunSpec) -> Tensor:
    """cell.project(x) for all steps; under spec.projection_dtype its GEMMs run in that dtype (autocast:
    layer norm stays float32), returned as float32."""
    if spec.projection_dtype is None:
        return spec.cell.project(spec.inputs)
    with torch.autocast("cpu", dtype=spec.projection_dtype):
        return spec.cell.project(spec.inputs).float()


def _recurrent(spec: RunSpec, weight: Optional[Tensor]) -> Optional[Tensor]:
    """A recurrent weight as the time loop takes it: bfloat16 under a bfloat16 projection (the kernels run
    the per-step GEMM in bfloat16 with float32 accumulation; a differentiable cast, so the float32 master
    gets its gradient), else as it is. Where the CPU has no bfloat16 units the kernels would only widen it
    again: it stays float32 (no rounding for no speed)."""
    if weight is None or spec.projection_dtype != torch.bfloat16 or not extension.bf16_step_gemm():
        return weight
    return weight.to(torch.bfloat16)


def _run_lstm(spec: RunSpec) -> Result:
    from .fused_ops import ops

    cell = spec.cell
    T, B, lengths, rmask = _common(spec)
    # (T, B, 4H); bfloat16 under a bfloat16 projection: the kernel widens it in its gate loop (GRU too)
    bias = bias_sum(spec.weight("bias_ih"), spec.weight("bias_hh"))
    u = _project(spec, spec.weight("weight_ih"), bias, widen=False)
    zh, zc = _keeps(spec, T, B)
    h0, c0 = spec.state
    peep = spec.weight("weight_peephole") if isinstance(cell, PeepholeLSTMCell) else None
    w_hh, w_hr = _recurrent(spec, spec.weight("weight_hh")), _recurrent(spec, spec.weight("weight_hr"))
    save = _needs_grad(u, w_hh, w_hr, peep, h0, c0)
    y, h_n, c_n, *_ = ops.lstm_forward(u, w_hh, w_hr, peep, h0, c0, lengths, rmask, zh, zc, save)
    return y, (h_n, c_n)


def _run_gru(spec: RunSpec) -> Result:
    from .fused_ops import ops

    cell = spec.cell
    T, B, lengths, rmask = _common(spec)
    u = _project(spec, spec.weight("weight_ih"), spec.weight("bias_ih"), widen=False)  # (T, B, 3H)
    (zh,) = _keeps(spec, T, B)
    w_hh, b_hh = _recurrent(spec, spec.weight("weight_hh")), spec.weight("bias_hh")
    save = _needs_grad(u, w_hh, b_hh, spec.state[0])
    y, h_n, _ = ops.gru_forward(u, w_hh, b_hh, spec.state[0], lengths, rmask, zh, cell.reset == "after", save)
    return y, (h_n,)


def _run_elman(spec: RunSpec) -> Result:
    from .fused_ops import ops

    cell = spec.cell
    T, B, lengths, rmask = _common(spec)
    u = _project(spec, spec.weight("weight_ih"), bias_sum(spec.weight("bias_ih"), spec.weight("bias_hh")))  # (T,B,H)
    (zh,) = _keeps(spec, T, B)
    w_hh = _recurrent(spec, spec.weight("weight_hh"))
    save = _needs_grad(u, w_hh, spec.state[0])
    y, h_n, _ = ops.elman_forward(u, w_hh, spec.state[0], lengths, rmask, zh, cell.nonlinearity == "relu", save)
    return y, (h_n,)


def _run_ln_lstm(spec: RunSpec) -> Result:
    from .fused_ops import ops

    cell = spec.cell
    T, B, lengths, rmask = _common(spec)
    u = _cell_projection(spec)  # LN(W_ih x; γ_ih) + b, (T, B, 4H)
    zh, zc = _keeps(spec, T, B)
    h0, c0 = spec.state
    y, h_n, c_n, *_ = ops.ln_lstm_forward(u, _recurrent(spec, spec.weight("weight_hh")), cell.ln_hh_weight, cell.ln_cell_weight,
                                          cell.ln_cell_bias, h0, c0, lengths, rmask, zh, zc)
    return y, (h_n, c_n)


def _run_ln_gru(spec: RunSpec) -> Result:
    from .fused_ops import ops

    cell = spec.cell
    T, B, lengths, rmask = _common(spec)
    u = _cell_projection(spec)  # LN(W_ih x; γ_ih) + b_ih, (T, B, 3H)
    (zh,) = _keeps(spec, T, B)
    y, h_n, *_ = ops.ln_gru_forward(u, _recurrent(spec, spec.weight("weight_hh")), cell.ln_hh_weight, cell.bias_hh, spec.state[0],
                                    lengths, rmask, zh)
    return y, (h_n,)


def _run_sru(spec: RunSpec) -> Result:
    from .fused_ops import ops

    cell = spec.cell
    T, B, lengths, _ = _common(spec)
    # cell.project's blocks (x~, W_f x + b_f, W_r x + b_r, highway) without its concatenations: one GEMM,
    # and the highway read straight from the input when it is x itself
    H, bias = cell.hidden_size, cell.bias
    if bias is not None:
        rows = cell.weight_ih.shape[0]
        bias = torch.cat([bias.new_zeros(H), bias, bias.new_zeros(rows - 3 * H)])
    u = _project(spec, cell.weight_ih, bias)  # (T, B, 3H), or 4H with a highway projection
    highway = None if cell.highway_projection else spec.inputs
    (zc,) = _keeps(spec, T, B)
    y, c_n, _ = ops.sru_forward(u, highway, cell.weight_c, spec.state[0], lengths, zc)
    return y, (c_n,)


def _run_mingru(spec: RunSpec) -> Result:
    from .fused_ops import ops

    T, B, lengths, _ = _common(spec)
    u = _cell_projection(spec)  # W_z x + b_z, W_h x + b_h: (T, B, 2H)
    (zh,) = _keeps(spec, T, B)
    y, h_n = ops.mingru_forward(u, spec.state[0], lengths, zh)
    return y, (h_n,)


def _run_qrnn(spec: RunSpec) -> Result:
    """f- and fo-pooling on minGRU's loop: h_t = (1 − σ(u_z)) h_{t-1} + σ(u_z) ĥ_t is c_t = f_t c_{t-1} +
    (1 − f_t) z_t with u_z = −a_f (σ(−a) = 1 − σ(a)) and ĥ = z_t; the convolution before it and o_t ⊙ c̃_t
    after it are element-wise work over all steps under autograd."""
    from .fused_ops import ops
    from .scan import valid_steps, zero_padded

    cell = spec.cell
    T, B, lengths, _ = _common(spec)
    a, window_n = cell.convolve(spec.inputs, spec.state[1] if cell.window > 1 else None, spec.lengths)
    blocks = a.chunk(cell.num_gates, dim=-1)  # one autograd node: its backward is one cat, not a copy per slice
    zc = _keeps(spec, T, B)[0]
    c, c_n = ops.mingru_forward(torch.cat([-blocks[1], torch.tanh(blocks[0])], -1), spec.state[0], lengths, zc)
    if cell.pooling == "f":
        h = c
    elif zc is None:
        h = torch.sigmoid(blocks[2]) * c
    else:  # zoneout keeps part of c_{t-1} in the state, not in h_t = o_t ⊙ (f_t ⊙ c_{t-1} + (1 − f_t) ⊙ z_t)
        z, f, o = torch.tanh(blocks[0]), torch.sigmoid(blocks[1]), torch.sigmoid(blocks[2])
        c_prev = torch.cat([spec.state[0][None], c[:-1]])
        h = zero_padded(o * (f * c_prev + (1 - f) * z), valid_steps(spec))
    return h, ((c_n,) if window_n is None else (c_n, window_n))


def _length_order(spec: RunSpec) -> Optional[Tensor]:
    """Row order by decreasing length, or None when lengths are absent or already sorted."""
    lengths = spec.lengths
    # is_compiling() first: under torch.compile a pack's row count may be symbolic, and `numel() < 2`
    # would then be a guard the compiler cannot decide (a graph break)
    if torch.compiler.is_compiling() or lengths is None or lengths.numel() < 2:
        return None
    if bool((lengths[:-1] >= lengths[1:]).all()):
        return None
    return torch.argsort(lengths, descending=True, stable=True)


def _permute_rows(spec: RunSpec, order: Tensor) -> RunSpec:
    """The same run with batch rows in `order` (inputs, state, lengths, masks)."""
    zoneout = tuple(z.index_select(1, order) if isinstance(z, Tensor) else z for z in spec.zoneout)
    return dataclasses.replace(
        spec, inputs=spec.inputs.index_select(1, order), state=tuple(s.index_select(0, order) for s in spec.state),
        lengths=spec.lengths.index_select(0, order),
        recurrent_mask=None if spec.recurrent_mask is None else spec.recurrent_mask.index_select(0, order),
        zoneout=zoneout)


#: exact cell class -> runner. Subclasses are not matched: they may change the math.
_FAMILIES: Dict[Type[RecurrentCell], Callable[[RunSpec], Result]] = {
    LSTMCell: _run_lstm,
    PeepholeLSTMCell: _run_lstm,
    GRUCell: _run_gru,
    ElmanCell: _run_elman,
    LayerNormLSTMCell: _run_ln_lstm,
    LayerNormGRUCell: _run_ln_gru,
    SRUCell: _run_sru,
    MinGRUCell: _run_mingru,
    QRNNCell: _run_qrnn,
}
#: runners that read every parameter through spec.weight (so a RunSpec may replace any of them); the
#: others read the cell's own through cell.project and take only DropConnect's weight_hh
_READS_EVERY_WEIGHT = {_run_lstm, _run_gru, _run_elman}


#: half-precision dtypes the fused kernels take by running in float32 around a half-precision projection
LOW_PRECISION = (torch.bfloat16, torch.float16)
#: input dtypes the fused backend runs
DTYPES = (torch.float32, torch.float64) + LOW_PRECISION


def _low_precision(spec: RunSpec) -> Optional[torch.dtype]:
    """The half-precision dtype this run's results take (half-precision inputs, or float32 inputs under
    CPU autocast), or None for a plain float32/float64 run."""
    dtype = spec.inputs.dtype
    if dtype in LOW_PRECISION:
        return dtype
    if dtype == torch.float32 and torch.is_autocast_enabled("cpu"):
        return torch.get_autocast_dtype("cpu")
    return None


def _float32_weights(spec: RunSpec) -> Dict[str, Tensor]:
    """Every parameter of the run's cell (overrides first), as float32 tensors (casts autograd follows)."""
    cell = spec.cell
    names = set(spec.weights) | {n for n, p in cell._parameters.items() if p is not None}
    names |= set(cell._modules.get("parametrizations") or {})
    return {name: spec.weight(name).float() for name in names if spec.weight(name) is not None}


def check_common(spec: RunSpec, name: str) -> Optional[str]:
    """Reasons of device, dtype and layout the kernels cannot take."""
    x = spec.inputs
    if x.device.type != "cpu":
        return f"the {name} backend runs on CPU only; got input on {x.device}"
    if x.dtype not in DTYPES:
        return f"the {name} backend supports {', '.join(str(d).replace('torch.', '') for d in DTYPES)}; got {x.dtype}"
    if spec.cell.feature_dims != 1:
        return f"the {name} backend handles vector inputs only (feature_dims=1)"
    return None


class FusedBackend:
    """Compiled time loops with hand-derived BPTT for every built-in cell (CPU)."""

    name = "fused"

    def accepts(self, spec: RunSpec) -> Optional[str]:
        cell = spec.cell
        if cell_type(cell) not in _FAMILIES:
            return f"no fused kernel for {cell_type(cell).__name__} (only rnnkit's built-in cells, not subclasses)"
        reason = check_common(spec, self.name)
        if reason is not None:
            return reason
        if isinstance(cell, QRNNCell) and cell.pooling == "ifo":
            return "ifo-pooling (c_t = f_t ⊙ c_{t-1} + i_t ⊙ z_t) has no fused loop; the scan backend runs it"
        if spec.recurrent_mask is not None and not cell.recurrent_input_size:
            return f"{cell_type(cell).__name__} has no recurrent matrix, so a recurrent mask is not defined for it"
        if _FAMILIES[cell_type(cell)] not in _READS_EVERY_WEIGHT:
            reason = unsupported_weights(spec, {"weight_hh"})
            if reason is not None:
                return reason
        return extension.load()

    def run(self, spec: RunSpec) -> Result:
        low = _low_precision(spec)
        if low is None:
            return self._run(spec)
        # Mixed precision (autocast, or half-precision parameters and inputs): the input projection's GEMM
        # in `low` with float32 accumulation; for the families with a recurrent matrix (LSTM, GRU, Elman,
        # layer-norm LSTM/GRU) under bfloat16 the per-step recurrent GEMMs too (_recurrent); the rest of the time loop, cell state and gate math
        # in float32 (the kernels' own), outputs and final state in `low` as autocast expects.
        with torch.autocast("cpu", enabled=False):
            weights = _float32_weights(spec)
            spec32 = dataclasses.replace(
                spec, inputs=spec.inputs.float(), state=tuple(s.float() for s in spec.state), weights=weights,
                recurrent_mask=None if spec.recurrent_mask is None else spec.recurrent_mask.float(),
                zoneout=tuple(z.float() if isinstance(z, Tensor) else z for z in spec.zoneout),
                projection_dtype=low)
            with spec.cell.using_weights(weights):  # cell.project reads the float32 copies
                y, final = self._run(spec32)
        return y.to(low), tuple(f.to(low) for f in final)

    def _run(self, spec: RunSpec) -> Result:
        runner = _FAMILIES[cell_type(spec.cell)]
        order = _length_order(spec)
        if order is None:
            return runner(spec)
        # Rows sorted by length (longest first) let every step's GEMM cover only the rows
        # still running, as a PackedSequence does; results go back to the caller's order.
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(order.numel(), device=order.device)
        y, final = runner(_permute_rows(spec, order))
        return y.index_select(1, inverse), tuple(f.index_select(0, inverse) for f in final)


register(FusedBackend(), priority=10)
