"""The fused convolutional backend: ConvLSTM and ConvGRU with the input convolution hoisted
and a hand-derived BPTT.

    u  = W_x ∗ x_t + b_x + b_h for all steps     one batched convolution over T·B images
                                                 (autograd handles its backward)
    forward loop: per step one recurrent convolution + the pointwise gate math
    backward loop: per step one transposed convolution (∂L/∂h_{t-1}) + pointwise
    ∂L/∂W_h: one convolution-weight gradient over all T·B steps at once, not T small ones

Runs any device and floating dtype (it is plain PyTorch ops without autograd
inside the loops). Lengths, an initial state, recurrent dropout masks and
DropConnect on weight_hh run here; zoneout is refused (the reference backend runs it).
Registered below the reference backend (see the note at the end): `backend="conv"` selects it.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor
from torch.nn import grad as nn_grad
from torch.nn import functional as F

from ..cells.conv_base import gate_major, group_major, to_group_major
from ..cells.conv_gru import ConvGRUCell
from ..cells.conv_lstm import ConvLSTMCell
from .base import RunSpec, cell_type, unsupported_weights
from .registry import register

Result = Tuple[Tensor, Tuple[Tensor, ...]]
_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_INPUT = {1: nn_grad.conv1d_input, 2: nn_grad.conv2d_input, 3: nn_grad.conv3d_input}
_CONV_WEIGHT = {1: nn_grad.conv1d_weight, 2: nn_grad.conv2d_weight, 3: nn_grad.conv3d_weight}


class _Geometry:
    """The convolution's settings, shared by forward and backward."""

    def __init__(self, cell) -> None:
        self.dims, self.padding, self.dilation, self.groups = cell.dims, cell.padding, cell.dilation, cell.groups
        self.hidden = cell.hidden_size

    def conv(self, h: Tensor, w: Tensor) -> Tensor:
        return _CONV[self.dims](h, w, None, padding=self.padding, dilation=self.dilation, groups=self.groups)

    def conv_input(self, shape, w: Tensor, grad: Tensor) -> Tensor:
        return _CONV_INPUT[self.dims](shape, w, grad, padding=self.padding, dilation=self.dilation,
                                      groups=self.groups)

    def conv_weight(self, x: Tensor, w: Tensor, grad: Tensor) -> Tensor:
        return _CONV_WEIGHT[self.dims](x, w.shape, grad, padding=self.padding, dilation=self.dilation,
                                       groups=self.groups)


def _sum_to(t: Tensor, shape) -> Tensor:
    """Sum a (Hc, *S) gradient down to a broadcast parameter's shape (Hc, *P)."""
    dims = [d for d, (a, b) in enumerate(zip(t.shape, shape)) if b == 1 and a != 1]
    return t.sum(dims, keepdim=True) if dims else t


class _ConvLSTMLoop(torch.autograd.Function):
    """(u (T, B, 4Hc, *S), W_h group-major, peepholes (3Hc, *P) | None, h0, c0, valid (T, B, 1..) | None,
    mask (B, Hc, *S) | None, geometry) -> (y (T, B, Hc, *S), h_n, c_n)."""

    @staticmethod
    def forward(ctx, u, w, peep, h0, c0, valid, mask, geo: _Geometry):
        T, G, Hc = u.shape[0], geo.groups, geo.hidden
        h, c = h0, c0
        if peep is not None:
            p_i, p_f, p_o = peep.chunk(3)
        # what backward reads, written in place step by step (no per-step concatenation, no final stack)
        gates_all = torch.empty_like(u)  # activated i, f, g, o
        shape = (T, *h0.shape)
        ys, hm_all, cp_all, cr_all = (h0.new_empty(shape) for _ in range(4))
        for t in range(T):
            hm = h if mask is None else torch.mul(h, mask, out=hm_all[t])
            if mask is None:
                hm_all[t].copy_(h)
            cp_all[t].copy_(c)
            a = u[t] + gate_major(geo.conv(hm, w), 4, G)  # (B, 4Hc, *S)
            ai, af, ag, ao = a.chunk(4, dim=1)
            if peep is not None:
                ai, af = ai + p_i * c, af + p_f * c
            gt = gates_all[t]
            i, f, g, o = (gt[:, k * Hc:(k + 1) * Hc] for k in range(4))
            torch.sigmoid(ai, out=i)
            torch.sigmoid(af, out=f)
            torch.tanh(ag, out=g)
            cr = torch.addcmul(f * c, i, g, out=cr_all[t])
            if peep is not None:
                ao = ao + p_o * cr
            torch.sigmoid(ao, out=o)
            hr = torch.mul(o, torch.tanh(cr), out=ys[t])
            if valid is not None:
                v = valid[t]
                h, c = torch.where(v, hr, h), torch.where(v, cr, c)
                ys[t].mul_(v)
            else:
                h, c = hr, cr
        ctx.geo = geo
        ctx.has_peep = peep is not None
        ctx.save_for_backward(w, peep if peep is not None else w.new_zeros(0), valid if valid is not None else
                              w.new_zeros(0, dtype=torch.bool), mask if mask is not None else w.new_zeros(0),
                              hm_all, cp_all, gates_all, cr_all)
        return ys, h.clone() if valid is None else h, c.clone() if valid is None else c

    @staticmethod
    def backward(ctx, dy, dh, dc):
        w, peep, valid, mask, hm_all, cp_all, gates_all, cr_all = ctx.saved_tensors
        geo: _Geometry = ctx.geo
        G, Hc = geo.groups, geo.hidden
        T, B = hm_all.shape[:2]
        valid = valid if valid.numel() else None
        mask = mask if mask.numel() else None
        dh = torch.zeros_like(hm_all[0]) if dh is None else dh
        dc = torch.zeros_like(cp_all[0]) if dc is None else dc
        dy = torch.zeros_like(cr_all) if dy is None else dy
        if ctx.has_peep:
            p_i, p_f, p_o = peep.chunk(3)
        da_all = torch.empty_like(gates_all)
        shape = hm_all.shape[1:]
        for t in range(T - 1, -1, -1):
            i, f, g, o = gates_all[t].chunk(4, dim=1)
            cr, cp = cr_all[t], cp_all[t]
            if valid is not None:
                v = valid[t].to(dh.dtype)
                dhr, dcr = v * (dh + dy[t]), v * dc
                carry_h, carry_c = dh - v * dh, dc - v * dc
            else:
                dhr, dcr = dh + dy[t], dc
                carry_h = carry_c = None
            tc = torch.tanh(cr)
            dao = dhr * tc * o * (1 - o)
            dcr = dcr + dhr * o * (1 - tc * tc)
            if ctx.has_peep:
                dcr = dcr + dao * p_o
            dai = dcr * g * i * (1 - i)
            daf = dcr * cp * f * (1 - f)
            dag = dcr * i * (1 - g * g)
            dcp = dcr * f
            if ctx.has_peep:
                dcp = dcp + dai * p_i + daf * p_f
            da = da_all[t]
            for k, part in enumerate((dai, daf, dag, dao)):
                da[:, k * Hc:(k + 1) * Hc] = part
            dhm = geo.conv_input(shape, w, to_group_major(da, 4, G))
            dh = dhm if mask is None else dhm * mask
            dc = dcp
            if carry_h is not None:
                dh, dc = dh + carry_h, dc + carry_c
        flat = da_all.flatten(0, 1)
        dw = geo.conv_weight(hm_all.flatten(0, 1), w, to_group_major(flat, 4, G))  # one call for all steps
        dpeep = None
        if ctx.has_peep:
            dai_all, daf_all, _, dao_all = da_all.chunk(4, dim=2)
            P = p_i.shape
            dpeep = torch.cat([_sum_to((dai_all * cp_all).sum((0, 1)), P), _sum_to((daf_all * cp_all).sum((0, 1)), P),
                               _sum_to((dao_all * cr_all).sum((0, 1)), P)])
        return da_all, dw, dpeep, dh, dc, None, None, None


class _ConvGRULoop(torch.autograd.Function):
    """(u (T, B, 3Hc, *S) with both biases, W_hr|W_hz group-major, W_hn group-major, h0, valid, mask, geometry)
    -> (y (T, B, Hc, *S), h_n)."""

    @staticmethod
    def forward(ctx, u, w_rz, w_n, h0, valid, mask, geo: _Geometry):
        T, G, Hc = u.shape[0], geo.groups, geo.hidden
        h = h0
        ys, hm_all, qm_all, hp_all, gates_all = [], [], [], [], []
        for t in range(T):
            hm = h if mask is None else h * mask
            a_rz = u[t, :, :2 * Hc] + gate_major(geo.conv(hm, w_rz), 2, G)
            r, z = torch.sigmoid(a_rz).chunk(2, dim=1)
            q = r * h
            qm = q if mask is None else q * mask
            n = torch.tanh(u[t, :, 2 * Hc:] + geo.conv(qm, w_n))
            hr = (1 - z) * n + z * h
            hm_all.append(hm)
            qm_all.append(qm)
            hp_all.append(h)
            gates_all.append(torch.cat([r, z, n], dim=1))
            if valid is not None:
                v = valid[t]
                ys.append(hr * v)
                h = torch.where(v, hr, h)
            else:
                ys.append(hr)
                h = hr
        ctx.geo = geo
        ctx.save_for_backward(w_rz, w_n, valid if valid is not None else w_n.new_zeros(0, dtype=torch.bool),
                              mask if mask is not None else w_n.new_zeros(0), torch.stack(hm_all),
                              torch.stack(qm_all), torch.stack(hp_all), torch.stack(gates_all))
        return torch.stack(ys), h

    @staticmethod
    def backward(ctx, dy, dh):
        w_rz, w_n, valid, mask, hm_all, qm_all, hp_all, gates_all = ctx.saved_tensors
        geo: _Geometry = ctx.geo
        G = geo.groups
        T = hm_all.shape[0]
        valid = valid if valid.numel() else None
        mask = mask if mask.numel() else None
        dh = torch.zeros_like(hp_all[0]) if dh is None else dh
        dy = torch.zeros_like(hp_all) if dy is None else dy
        da_all = torch.empty_like(gates_all)
        shape = hm_all.shape[1:]
        for t in range(T - 1, -1, -1):
            r, z, n = gates_all[t].chunk(3, dim=1)
            hp = hp_all[t]
            if valid is not None:
                v = valid[t].to(dh.dtype)
                dhr, carry = v * (dh + dy[t]), dh - v * dh
            else:
                dhr, carry = dh + dy[t], None
            dz = dhr * (hp - n)
            dan = dhr * (1 - z) * (1 - n * n)
            dhp = dhr * z
            dq = geo.conv_input(shape, w_n, dan)
            if mask is not None:
                dq = dq * mask
            dar = dq * hp * r * (1 - r)
            dhp = dhp + dq * r
            daz = dz * z * (1 - z)
            da_rz = torch.cat([dar, daz], dim=1)
            dhm = geo.conv_input(shape, w_rz, to_group_major(da_rz, 2, G))
            dh = dhp + (dhm if mask is None else dhm * mask)
            if carry is not None:
                dh = dh + carry
            da_all[t] = torch.cat([da_rz, dan], dim=1)
        Hc = geo.hidden
        flat = da_all.flatten(0, 1)
        dw_rz = geo.conv_weight(hm_all.flatten(0, 1), w_rz, to_group_major(flat[:, :2 * Hc], 2, G))
        dw_n = geo.conv_weight(qm_all.flatten(0, 1), w_n, flat[:, 2 * Hc:])
        return da_all, dw_rz, dw_n, dh, None, None, None


def _valid(spec: RunSpec) -> Optional[Tensor]:
    if spec.lengths is None:
        return None
    T, x = spec.inputs.shape[0], spec.inputs
    valid = torch.arange(T, device=x.device)[:, None] < spec.lengths[None, :]  # (T, B)
    return valid.view(T, -1, *([1] * (x.dim() - 2)))


def _with_hidden_bias(cell, u: Tensor) -> Tensor:
    """u + b_h: every hidden-side bias adds outside the recurrent conv (GRU: b_hn is not under r)."""
    if cell.bias_hh is None:
        return u
    return u + cell.bias_hh.view(-1, *([1] * cell.dims))


def _run_conv_lstm(spec: RunSpec) -> Result:
    cell: ConvLSTMCell = spec.cell
    u = _with_hidden_bias(cell, cell.project(spec.inputs))  # (T, B, 4Hc, *S), one batched conv
    w = group_major(spec.weights.get("weight_hh", cell.weight_hh), 4, cell.groups)
    h0, c0 = spec.state
    y, h, c = _ConvLSTMLoop.apply(u, w, cell.weight_peephole, h0, c0, _valid(spec), spec.recurrent_mask,
                                  _Geometry(cell))
    return y, (h, c)


def _run_conv_gru(spec: RunSpec) -> Result:
    cell: ConvGRUCell = spec.cell
    Hc = cell.hidden_size
    u = _with_hidden_bias(cell, cell.project(spec.inputs))  # (T, B, 3Hc, *S)
    w = spec.weights.get("weight_hh", cell.weight_hh)
    w_rz, w_n = group_major(w[:2 * Hc], 2, cell.groups), w[2 * Hc:]
    y, h = _ConvGRULoop.apply(u, w_rz, w_n, spec.state[0], _valid(spec), spec.recurrent_mask, _Geometry(cell))
    return y, (h,)


_FAMILIES = {ConvLSTMCell: _run_conv_lstm, ConvGRUCell: _run_conv_gru}


class ConvBackend:
    """Hoisted input convolution + hand-derived BPTT for ConvLSTMCell and ConvGRUCell (any device)."""

    name = "conv"

    def accepts(self, spec: RunSpec) -> Optional[str]:
        cell = spec.cell
        if cell_type(cell) not in _FAMILIES:
            return f"the conv backend runs ConvLSTMCell and ConvGRUCell only; got {cell_type(cell).__name__}"
        if not spec.inputs.is_floating_point():
            return f"the conv backend needs floating-point input; got {spec.inputs.dtype}"
        if spec.has_zoneout:
            return "zoneout on convolutional cells runs on the reference backend"
        return unsupported_weights(spec, {"weight_hh"})

    def run(self, spec: RunSpec) -> Result:
        return _FAMILIES[cell_type(spec.cell)](spec)


# Below the reference backend, so `auto` does not pick it: measured on CPU (benchmarks/bench_conv.py) it
# is 0.74-0.89x the reference loop's speed. Splitting each step's convolution backward into an input
# gradient per step plus one weight gradient over all steps costs more than oneDNN's combined per-step
# backward (input + weight in one pass), and its pointwise BPTT is not fused. Ask for it by name
# (backend="conv") until a faster kernel earns it a place above the reference.
register(ConvBackend(), priority=-10)
