"""The fused time loops as `torch.library` operators (namespace `rnnkit`).

Each cell family has a forward operator (the whole time loop) and a backward
operator (the whole BPTT loop). Schemas, fake (meta) implementations and the
autograd formulas are defined here, in Python, at import; the CPU kernels come
from the C++ library (src/rnnkit/csrc) once `extension.load()` has run. So
torch.compile / torch.export can trace these operators without the compiled
library, and autograd sees one node per layer and direction.

What the operators take and return is documented in the header comment of each
C++ kernel file (buffer shapes per kernel). In short, for T steps, B rows:

    <family>_forward(u (T,B,K), recurrent weights, initial state, lengths?, rmask?, zoneout?)
        -> (y (T,B,O), final state..., saved buffers...)
    <family>_backward(output grads, saved buffers, weights, lengths?, rmask?, zoneout?)
        -> (∂L/∂u (T,B,K), ∂L/∂initial state, per-step buffers for the weight gradients)

The autograd formulas turn the per-step gradients into weight gradients with
one GEMM (or one reduction) over all steps.
"""

from __future__ import annotations

import functools
from typing import Optional

import torch
from torch import Tensor

#: the operators' home; it must live as long as the process (deleting it would drop them)
_LIB = torch.library.Library("rnnkit", "DEF")

_SCHEMAS = {
    "lstm_forward": "(Tensor u, Tensor w_hh, Tensor? w_hr, Tensor? w_peep, Tensor h0, Tensor c0, Tensor? lengths, "
                    "Tensor? rmask, Tensor? zh, Tensor? zc, bool save=True) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)",
    "lstm_backward": "(Tensor dy, Tensor dh_n, Tensor dc_n, Tensor gates, Tensor cs, Tensor ct, Tensor w_hh, "
                     "Tensor? w_hr, Tensor? w_peep, Tensor? lengths, Tensor? rmask, Tensor? zh, Tensor? zc) "
                     "-> (Tensor, Tensor, Tensor, Tensor, Tensor)",
    "gru_forward": "(Tensor u, Tensor w_hh, Tensor? b_hh, Tensor h0, Tensor? lengths, Tensor? rmask, Tensor? zh, "
                   "bool reset_after, bool save=True) -> (Tensor, Tensor, Tensor)",
    "gru_backward": "(Tensor dy, Tensor dh_n, Tensor gates, Tensor y, Tensor h0, Tensor w_hh, Tensor? lengths, "
                    "Tensor? rmask, Tensor? zh, bool reset_after) -> (Tensor, Tensor, Tensor)",
    "elman_forward": "(Tensor u, Tensor w_hh, Tensor h0, Tensor? lengths, Tensor? rmask, Tensor? zh, bool relu, "
                     "bool save=True) -> (Tensor, Tensor, Tensor)",
    "elman_backward": "(Tensor dy, Tensor dh_n, Tensor ht, Tensor w_hh, Tensor? lengths, Tensor? rmask, Tensor? zh, "
                      "bool relu) -> (Tensor, Tensor)",
    "ln_lstm_forward": "(Tensor u, Tensor w_hh, Tensor g_hh, Tensor g_c, Tensor b_c, Tensor h0, Tensor c0, "
                       "Tensor? lengths, Tensor? rmask, Tensor? zh, Tensor? zc) "
                       "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)",
    "ln_lstm_backward": "(Tensor dy, Tensor dh_n, Tensor dc_n, Tensor gates, Tensor rn, Tensor cs, Tensor chat, "
                        "Tensor rstd, Tensor w_hh, Tensor g_hh, Tensor g_c, Tensor b_c, Tensor? lengths, "
                        "Tensor? rmask, Tensor? zh, Tensor? zc) "
                        "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)",
    "ln_gru_forward": "(Tensor u, Tensor w_hh, Tensor g_hh, Tensor? b_hh, Tensor h0, Tensor? lengths, Tensor? rmask, "
                      "Tensor? zh) -> (Tensor, Tensor, Tensor, Tensor, Tensor)",
    "ln_gru_backward": "(Tensor dy, Tensor dh_n, Tensor gates, Tensor en, Tensor rstd, Tensor y, Tensor h0, "
                       "Tensor w_hh, Tensor g_hh, Tensor? lengths, Tensor? rmask, Tensor? zh) "
                       "-> (Tensor, Tensor, Tensor, Tensor, Tensor)",
    "sru_forward": "(Tensor u, Tensor? highway, Tensor v, Tensor c0, Tensor? lengths, Tensor? zc) "
                   "-> (Tensor, Tensor, Tensor)",
    "sru_backward": "(Tensor dy, Tensor dc_n, Tensor u, Tensor? highway, Tensor cs, Tensor v, Tensor? lengths, "
                    "Tensor? zc) -> (Tensor, Tensor, Tensor, Tensor)",
    "mingru_forward": "(Tensor u, Tensor h0, Tensor? lengths, Tensor? zh) -> (Tensor, Tensor)",
    "mingru_backward": "(Tensor dy, Tensor dh_n, Tensor u, Tensor y, Tensor h0, Tensor? lengths, Tensor? zh) "
                       "-> (Tensor, Tensor)",
    "input_projection": "(Tensor x, Tensor weight, Tensor? bias) -> Tensor",
    # one step of torch's LSTM / GRU cell for streaming inference (no autograd: see backends/step.py)
    "lstm_cell_step": "(Tensor x, Tensor h, Tensor c, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh) "
                      "-> (Tensor, Tensor, Tensor)",
    "gru_cell_step": "(Tensor x, Tensor h, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh) -> (Tensor, Tensor)",
}
for _name, _schema in _SCHEMAS.items():
    _LIB.define(_name + _schema)

ops = torch.ops.rnnkit


def _register_autograd(op: str, backward, setup_context) -> None:
    """torch.library.register_autograd, with the backward run outside autocast: its products are the
    kernels' own dtypes (a `loss.backward()` inside `torch.autocast` would otherwise cast half of them).
    Gradients of unused outputs arrive as None, not materialised zeros (the backwards take None): the saved
    buffers among the outputs would otherwise cost a (T, B, G) zero fill per call."""
    @functools.wraps(backward)
    def backward_without_autocast(ctx, *grads):
        with torch.autocast("cpu", enabled=False):
            return backward(ctx, *grads)

    @functools.wraps(setup_context)
    def setup_without_zeros(ctx, inputs, output):
        ctx.set_materialize_grads(False)
        return setup_context(ctx, inputs, output)

    torch.library.register_autograd(op, backward_without_autocast, setup_context=setup_without_zeros)


# ---------------------------------------------------------------- input projection
#: products of at least this many multiply-adds (rows·K·N) go to oneDNN; below, its per-call cost outweighs it
ONEDNN_MIN_MACS = 1 << 21


def _onednn_ok(x: Tensor, weight: Tensor) -> bool:
    return (x.dtype == torch.float32 and weight.dtype == torch.float32 and x.device.type == "cpu"
            and torch.backends.mkldnn.is_available() and x.numel() * weight.shape[0] >= ONEDNN_MIN_MACS)


def _linear_cpu(x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
    """x (..., K) @ weight (N, K)^T + bias: float32 through oneDNN (measured 10–25 % faster than MKL on the
    (T·B, I) x (I, 4H) projection and its input gradient at H ≥ 256, benchmarks/NOTES.md), else F.linear."""
    if not _onednn_ok(x, weight):
        return torch.nn.functional.linear(x, weight, bias)
    flat = x.reshape(-1, x.shape[-1]).contiguous()
    y = torch.ops.mkldnn._linear_pointwise(flat, weight.contiguous(), bias, "none", [None], "")
    return y.view(*x.shape[:-1], weight.shape[0])


_LIB.impl("input_projection", _linear_cpu, "CPU")


@torch.library.register_fake("rnnkit::input_projection")
def _input_projection_fake(x, weight, bias):
    return x.new_empty(*x.shape[:-1], weight.shape[0])


def _input_projection_setup(ctx, inputs, output):
    x, weight, bias = inputs
    ctx.save_for_backward(x, weight)
    ctx.has_bias = bias is not None


def _input_projection_backward(ctx, dy):
    x, weight = ctx.saved_tensors
    dx = dw = db = None
    if ctx.needs_input_grad[0]:
        dx = ops.input_projection(dy, weight.t().contiguous(), None)  # dy @ W, through the same route
    flat_dy = dy.reshape(-1, dy.shape[-1])
    if ctx.needs_input_grad[1]:  # MKL: oneDNN was slower on this product (benchmarks/NOTES.md)
        dw = flat_dy.t().mm(x.reshape(-1, x.shape[-1]))
    if ctx.has_bias and ctx.needs_input_grad[2]:
        db = flat_dy.sum(0)
    return dx, dw, db


_register_autograd("rnnkit::input_projection", _input_projection_backward,
                   setup_context=_input_projection_setup)


def input_projection(x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
    """F.linear(x, weight, bias) for the fused backends: oneDNN for large float32 CPU products (forward and
    input gradient), one `rnnkit::input_projection` node for autograd, compile and export."""
    if x.device.type != "cpu":
        return torch.nn.functional.linear(x, weight, bias)
    return ops.input_projection(x, weight, bias)


def _zeros_if_none(g: Optional[Tensor], like: Tensor) -> Tensor:
    return torch.zeros_like(like) if g is None else g.contiguous()


def _grad_w_hh(dg: Tensor, h0: Tensor, y: Tensor, rmask: Optional[Tensor]) -> Tensor:
    """Σ_t dg_t^T (h_{t-1} ⊙ rmask) as one GEMM: dg (T,B,G), h0 (B,P), y (T,B,P) -> (G,P).

    h_{t-1} is y_{t-1} (or h0) at every valid step; padded steps have dg = 0.
    """
    T, B, G = dg.shape
    P = h0.shape[-1]
    if rmask is None:
        dw = dg[0].t().mm(h0)
        if T > 1:
            dw.addmm_(dg[1:].reshape((T - 1) * B, G).t(), y[:-1].reshape((T - 1) * B, P))
        return dw
    hprev = torch.cat([h0[None], y[:-1]]) * rmask
    return dg.reshape(T * B, G).t().mm(hprev.reshape(T * B, P))


def _in_dtype(weight: Tensor, *tensors: Optional[Tensor]) -> tuple:
    """The operands of a weight-gradient GEMM in the weight's dtype: a bfloat16 recurrent weight (mixed
    precision) takes its gradient as a bfloat16 GEMM with float32 accumulation, like the forward's."""
    return tuple(t if t is None or t.dtype == weight.dtype else t.to(weight.dtype) for t in tensors)


# ---------------------------------------------------------------------- LSTM
@torch.library.register_fake("rnnkit::lstm_forward")
def _lstm_forward_fake(u, w_hh, w_hr, w_peep, h0, c0, lengths, rmask, zh, zc, save=True):
    T, B, G = u.shape
    H, P = G // 4, h0.shape[-1]
    Ts = T if save else 0  # the saved buffers are empty when nothing needs a gradient
    e = h0.new_empty  # the state's dtype (u may be bfloat16 under mixed precision)
    return (e(T, B, P), e(B, P), e(B, H), e(Ts, B, G), e(Ts + 1 if save else 0, B, H),
            e(Ts if zc is not None else 0, B, H))


@torch.library.register_fake("rnnkit::lstm_backward")
def _lstm_backward_fake(dy, dh_n, dc_n, gates, cs, ct, w_hh, w_hr, w_peep, lengths, rmask, zh, zc):
    T, B, G = gates.shape
    H, P = G // 4, dh_n.shape[-1]
    proj = w_hr is not None
    return (gates.new_empty(T, B, G), dh_n.new_empty(B, P), dc_n.new_empty(B, H),
            gates.new_empty(T if proj else 0, B, P), gates.new_empty(T if proj else 0, B, H))


def _lstm_setup(ctx, inputs, output):
    u, w_hh, w_hr, w_peep, h0, c0, lengths, rmask, zh, zc, *_ = inputs
    y, _, _, gates, cs, ct = output
    ctx.u_dtype = u.dtype
    ctx.save_for_backward(w_hh, w_hr, w_peep, h0, lengths, rmask, zh, zc, y, gates, cs, ct)
    ctx.mark_non_differentiable(gates, cs, ct)


def _lstm_backward(ctx, dy, dh_n, dc_n, *_unused):
    w_hh, w_hr, w_peep, h0, lengths, rmask, zh, zc, y, gates, cs, ct = ctx.saved_tensors
    T, B, G = gates.shape
    H = G // 4
    dy = _zeros_if_none(dy, y)
    dh_n = _zeros_if_none(dh_n, h0)
    dc_n = _zeros_if_none(dc_n, cs[0])
    dg, dh0, dc0, dhp, ms = ops.lstm_backward(dy, dh_n, dc_n, gates, cs, ct, w_hh, w_hr, w_peep, lengths, rmask,
                                              zh, zc)
    need = ctx.needs_input_grad
    du = dg.to(ctx.u_dtype)  # a bfloat16 u (mixed precision) takes its gradient narrowed once, here
    d_w_hh = _grad_w_hh(*_in_dtype(w_hh, du if du.dtype == w_hh.dtype else dg, h0, y, rmask)) if need[1] else None
    d_w_hr = None
    if w_hr is not None and need[2]:
        dhp, ms = _in_dtype(w_hr, dhp, ms)
        d_w_hr = dhp.reshape(T * B, -1).t().mm(ms.reshape(T * B, H))
    d_peep = None
    if w_peep is not None and need[3]:
        c_prev, c_new = cs[:-1], (ct if ct.numel() else cs[1:])
        d_peep = torch.cat([(dg[..., :H] * c_prev).sum((0, 1)), (dg[..., H:2 * H] * c_prev).sum((0, 1)),
                            (dg[..., 3 * H:] * c_new).sum((0, 1))])
    return du, d_w_hh, d_w_hr, d_peep, dh0, dc0, None, None, None, None, None


_register_autograd("rnnkit::lstm_forward", _lstm_backward, setup_context=_lstm_setup)


# ----------------------------------------------------------------------- GRU
@torch.library.register_fake("rnnkit::gru_forward")
def _gru_forward_fake(u, w_hh, b_hh, h0, lengths, rmask, zh, reset_after, save=True):
    T, B, G = u.shape
    H = G // 3
    e = h0.new_empty  # the state's dtype (u may be bfloat16 under mixed precision)
    return e(T, B, H), e(B, H), e(T if save else 0, B, (4 if reset_after else 3) * H)


@torch.library.register_fake("rnnkit::gru_backward")
def _gru_backward_fake(dy, dh_n, gates, y, h0, w_hh, lengths, rmask, zh, reset_after):
    T, B, _ = gates.shape
    H = h0.shape[-1]
    return (gates.new_empty(T, B, 3 * H), gates.new_empty(T if reset_after else 0, B, 3 * H),
            h0.new_empty(B, H))


def _gru_setup(ctx, inputs, output):
    u, w_hh, b_hh, h0, lengths, rmask, zh, reset_after, *_ = inputs
    y, _, gates = output
    ctx.reset_after = reset_after
    ctx.has_bias = b_hh is not None
    ctx.u_dtype = u.dtype
    ctx.save_for_backward(w_hh, h0, lengths, rmask, zh, y, gates)
    ctx.mark_non_differentiable(gates)


def _gru_backward(ctx, dy, dh_n, _unused):
    w_hh, h0, lengths, rmask, zh, y, gates = ctx.saved_tensors
    T, B, _ = gates.shape
    H = h0.shape[-1]
    dy = _zeros_if_none(dy, y)
    dh_n = _zeros_if_none(dh_n, h0)
    du32, dw, dh0 = ops.gru_backward(dy, dh_n, gates, y, h0, w_hh, lengths, rmask, zh, ctx.reset_after)
    du = du32.to(ctx.u_dtype)  # a bfloat16 u (mixed precision) takes its gradient narrowed once, here
    need = ctx.needs_input_grad
    d_w_hh = d_b_hh = None
    if ctx.reset_after:
        if need[1]:
            d_w_hh = _grad_w_hh(*_in_dtype(w_hh, dw, h0, y, rmask))
        if ctx.has_bias and need[2]:
            d_b_hh = dw.sum((0, 1))
    else:
        if need[1]:
            hprev = torch.cat([h0[None], y[:-1]])
            if rmask is not None:
                hprev = hprev * rmask
            hprev = hprev.reshape(T * B, H)
            q = gates[..., :H].reshape(T * B, H) * hprev  # r ⊙ hm
            du2, hprev, q = _in_dtype(w_hh, (du if du.dtype == w_hh.dtype else du32).reshape(T * B, 3 * H), hprev, q)
            d_w_hh = torch.cat([du2[:, :2 * H].t().mm(hprev), du2[:, 2 * H:].t().mm(q)])
        if ctx.has_bias and need[2]:
            d_b_hh = du32.sum((0, 1))
    return du, d_w_hh, d_b_hh, dh0, None, None, None, None, None


_register_autograd("rnnkit::gru_forward", _gru_backward, setup_context=_gru_setup)


# --------------------------------------------------------------------- Elman
@torch.library.register_fake("rnnkit::elman_forward")
def _elman_forward_fake(u, w_hh, h0, lengths, rmask, zh, relu, save=True):
    T, B, H = u.shape
    return u.new_empty(T, B, H), u.new_empty(B, H), u.new_empty(T if save else 0, B, H)


@torch.library.register_fake("rnnkit::elman_backward")
def _elman_backward_fake(dy, dh_n, ht, w_hh, lengths, rmask, zh, relu):
    return torch.empty_like(ht), torch.empty_like(dh_n)


def _elman_setup(ctx, inputs, output):
    u, w_hh, h0, lengths, rmask, zh, relu, *_ = inputs
    y, _, ht = output
    ctx.relu = relu
    ctx.save_for_backward(w_hh, h0, lengths, rmask, zh, y, ht)
    ctx.mark_non_differentiable(ht)


def _elman_backward(ctx, dy, dh_n, _unused):
    w_hh, h0, lengths, rmask, zh, y, ht = ctx.saved_tensors
    dy = _zeros_if_none(dy, y)
    dh_n = _zeros_if_none(dh_n, h0)
    du, dh0 = ops.elman_backward(dy, dh_n, ht, w_hh, lengths, rmask, zh, ctx.relu)
    d_w_hh = _grad_w_hh(*_in_dtype(w_hh, du, h0, y, rmask)) if ctx.needs_input_grad[1] else None
    return du, d_w_hh, dh0, None, None, None, None, None


_register_autograd("rnnkit::elman_forward", _elman_backward, setup_context=_elman_setup)


# ------------------------------------------------------------ layer-norm LSTM
@torch.library.register_fake("rnnkit::ln_lstm_forward")
def _ln_lstm_forward_fake(u, w_hh, g_hh, g_c, b_c, h0, c0, lengths, rmask, zh, zc):
    T, B, G = u.shape
    H = G // 4
    e = u.new_empty
    return (e(T, B, H), e(B, H), e(B, H), e(T, B, G), e(T, B, G), e(T + 1, B, H), e(T, B, H), e(T, B, 2))


@torch.library.register_fake("rnnkit::ln_lstm_backward")
def _ln_lstm_backward_fake(dy, dh_n, dc_n, gates, rn, cs, chat, rstd, w_hh, g_hh, g_c, b_c, lengths, rmask, zh, zc):
    T, B, G = gates.shape
    H = G // 4
    e = gates.new_empty
    return e(T, B, G), e(T, B, G), e(B, H), e(B, H), e(G), e(H), e(H)


def _ln_lstm_setup(ctx, inputs, output):
    u, w_hh, g_hh, g_c, b_c, h0, c0, lengths, rmask, zh, zc = inputs
    y, _, _, gates, rn, cs, chat, rstd = output
    ctx.save_for_backward(w_hh, g_hh, g_c, b_c, h0, lengths, rmask, zh, zc, y, gates, rn, cs, chat, rstd)
    ctx.mark_non_differentiable(gates, rn, cs, chat, rstd)


def _ln_lstm_backward(ctx, dy, dh_n, dc_n, *_unused):
    w_hh, g_hh, g_c, b_c, h0, lengths, rmask, zh, zc, y, gates, rn, cs, chat, rstd = ctx.saved_tensors
    dy, dh_n, dc_n = _zeros_if_none(dy, y), _zeros_if_none(dh_n, h0), _zeros_if_none(dc_n, cs[0])
    du, dr, dh0, dc0, dg_hh, dg_c, db_c = ops.ln_lstm_backward(dy, dh_n, dc_n, gates, rn, cs, chat, rstd, w_hh, g_hh,
                                                               g_c, b_c, lengths, rmask, zh, zc)
    d_w_hh = _grad_w_hh(*_in_dtype(w_hh, dr, h0, y, rmask)) if ctx.needs_input_grad[1] else None
    return du, d_w_hh, dg_hh, dg_c, db_c, dh0, dc0, None, None, None, None


_register_autograd("rnnkit::ln_lstm_forward", _ln_lstm_backward, setup_context=_ln_lstm_setup)


# ------------------------------------------------------------- layer-norm GRU
@torch.library.register_fake("rnnkit::ln_gru_forward")
def _ln_gru_forward_fake(u, w_hh, g_hh, b_hh, h0, lengths, rmask, zh):
    T, B, G = u.shape
    H = G // 3
    e = u.new_empty
    return e(T, B, H), e(B, H), e(T, B, 4 * H), e(T, B, G), e(T, B)


@torch.library.register_fake("rnnkit::ln_gru_backward")
def _ln_gru_backward_fake(dy, dh_n, gates, en, rstd, y, h0, w_hh, g_hh, lengths, rmask, zh):
    T, B, _ = gates.shape
    H = h0.shape[-1]
    e = gates.new_empty
    return e(T, B, 3 * H), e(T, B, 3 * H), e(B, H), e(3 * H), e(3 * H)


def _ln_gru_setup(ctx, inputs, output):
    u, w_hh, g_hh, b_hh, h0, lengths, rmask, zh = inputs
    y, _, gates, en, rstd = output
    ctx.has_bias = b_hh is not None
    ctx.save_for_backward(w_hh, g_hh, h0, lengths, rmask, zh, y, gates, en, rstd)
    ctx.mark_non_differentiable(gates, en, rstd)


def _ln_gru_backward(ctx, dy, dh_n, *_unused):
    w_hh, g_hh, h0, lengths, rmask, zh, y, gates, en, rstd = ctx.saved_tensors
    dy, dh_n = _zeros_if_none(dy, y), _zeros_if_none(dh_n, h0)
    du, dq, dh0, dg_hh, db_hh = ops.ln_gru_backward(dy, dh_n, gates, en, rstd, y, h0, w_hh, g_hh, lengths, rmask, zh)
    d_w_hh = _grad_w_hh(*_in_dtype(w_hh, dq, h0, y, rmask)) if ctx.needs_input_grad[1] else None
    return du, d_w_hh, dg_hh, (db_hh if ctx.has_bias else None), dh0, None, None, None


_register_autograd("rnnkit::ln_gru_forward", _ln_gru_backward, setup_context=_ln_gru_setup)


# ----------------------------------------------------------------------- SRU
@torch.library.register_fake("rnnkit::sru_forward")
def _sru_forward_fake(u, highway, v, c0, lengths, zc):
    T, B, _ = u.shape
    H = v.shape[0] // 2
    return u.new_empty(T, B, H), u.new_empty(B, H), u.new_empty(T + 1, B, H)


@torch.library.register_fake("rnnkit::sru_backward")
def _sru_backward_fake(dy, dc_n, u, highway, cs, v, lengths, zc):
    T, B, _ = u.shape
    H = v.shape[0] // 2
    return (torch.empty_like(u), u.new_empty(T if highway is not None else 0, B, H), torch.empty_like(dc_n),
            torch.empty_like(v))


def _sru_setup(ctx, inputs, output):
    u, highway, v, c0, lengths, zc = inputs
    ctx.save_for_backward(u, highway, v, lengths, zc, output[2])
    ctx.mark_non_differentiable(output[2])


def _sru_backward(ctx, dy, dc_n, _unused):
    u, highway, v, lengths, zc, cs = ctx.saved_tensors
    dy, dc_n = _zeros_if_none(dy, cs[1:]), _zeros_if_none(dc_n, cs[0])
    du, dhw, dc0, dv = ops.sru_backward(dy, dc_n, u, highway, cs, v, lengths, zc)
    return du, (dhw if highway is not None else None), dv, dc0, None, None


_register_autograd("rnnkit::sru_forward", _sru_backward, setup_context=_sru_setup)


# -------------------------------------------------------------------- minGRU
@torch.library.register_fake("rnnkit::mingru_forward")
def _mingru_forward_fake(u, h0, lengths, zh):
    T, B, K = u.shape
    return u.new_empty(T, B, K // 2), u.new_empty(B, K // 2)


@torch.library.register_fake("rnnkit::mingru_backward")
def _mingru_backward_fake(dy, dh_n, u, y, h0, lengths, zh):
    return torch.empty_like(u), torch.empty_like(dh_n)


def _mingru_setup(ctx, inputs, output):
    u, h0, lengths, zh = inputs
    ctx.save_for_backward(u, h0, lengths, zh, output[0])


def _mingru_backward(ctx, dy, dh_n):
    u, h0, lengths, zh, y = ctx.saved_tensors
    dy, dh_n = _zeros_if_none(dy, y), _zeros_if_none(dh_n, h0)
    du, dh0 = ops.mingru_backward(dy, dh_n, u, y, h0, lengths, zh)
    return du, dh0, None, None


_register_autograd("rnnkit::mingru_forward", _mingru_backward, setup_context=_mingru_setup)


# -------------------------------------------------------- one inference step
@torch.library.register_fake("rnnkit::lstm_cell_step")
def _lstm_cell_step_fake(x, h, c, w_ih, w_hh, b_ih, b_hh):
    return x.new_empty(x.shape[0], h.shape[-1]), torch.empty_like(h), torch.empty_like(c)


@torch.library.register_fake("rnnkit::gru_cell_step")
def _gru_cell_step_fake(x, h, w_ih, w_hh, b_ih, b_hh):
    return x.new_empty(x.shape[0], h.shape[-1]), torch.empty_like(h)


def zoneout_keep(z, T: int, B: int, S: int, like: Tensor) -> Optional[Tensor]:
    """A RunSpec zoneout entry as the kernels read it: None, or a (T, B, S) keep tensor
    (a float p from eval mode becomes a broadcast view with zero strides)."""
    if z is None:
        return None
    if isinstance(z, Tensor):
        return z.to(like.dtype).contiguous()
    return torch.full((1, 1, S), float(z), dtype=like.dtype, device=like.device).expand(T, B, S)

