"""The cell contract, for every cell: shapes, initial_state, one step against the
docstring's equations written out again here, Recurrent(cell) against stepping
the cell by hand, float64 gradcheck, and golden values from constant weights.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, List, Sequence, Tuple

import pytest
import torch
from torch import Tensor

import rnnkit
from rnnkit import (ElmanCell, GRUCell, LayerNormGRUCell, LayerNormLSTMCell, LSTMCell, MinGRUCell, PeepholeLSTMCell,
                    QRNNCell, SRUCell)
from helpers import assert_close, run_by_hand

F64 = torch.float64
I, H = 3, 4  # input and hidden size of the contract tests

#: id -> cell factory (input_size, hidden_size, dtype) -> cell. SRU "same" uses I = H.
CELLS: Dict[str, Callable[[int, int, torch.dtype], rnnkit.RecurrentCell]] = {
    "elman_tanh": lambda i, h, dt: ElmanCell(i, h, nonlinearity="tanh", dtype=dt),
    "elman_relu": lambda i, h, dt: ElmanCell(i, h, nonlinearity="relu", dtype=dt),
    "elman_nobias": lambda i, h, dt: ElmanCell(i, h, bias=False, dtype=dt),
    "lstm": lambda i, h, dt: LSTMCell(i, h, dtype=dt),
    "lstm_proj": lambda i, h, dt: LSTMCell(i, h, proj_size=2, dtype=dt),
    "lstm_nobias": lambda i, h, dt: LSTMCell(i, h, bias=False, dtype=dt),
    "peephole": lambda i, h, dt: PeepholeLSTMCell(i, h, dtype=dt),
    "peephole_proj": lambda i, h, dt: PeepholeLSTMCell(i, h, proj_size=2, dtype=dt),
    "gru_after": lambda i, h, dt: GRUCell(i, h, reset="after", dtype=dt),
    "gru_before": lambda i, h, dt: GRUCell(i, h, reset="before", dtype=dt),
    "gru_before_nobias": lambda i, h, dt: GRUCell(i, h, bias=False, reset="before", dtype=dt),
    "sru_same": lambda i, h, dt: SRUCell(h, h, dtype=dt),
    "sru_proj": lambda i, h, dt: SRUCell(i, h, dtype=dt),
    "sru_nobias": lambda i, h, dt: SRUCell(i, h, bias=False, dtype=dt),
    "layernorm_lstm": lambda i, h, dt: LayerNormLSTMCell(i, h, dtype=dt),
    "layernorm_lstm_nobias": lambda i, h, dt: LayerNormLSTMCell(i, h, bias=False, dtype=dt),
    "layernorm_gru": lambda i, h, dt: LayerNormGRUCell(i, h, dtype=dt),
    "mingru": lambda i, h, dt: MinGRUCell(i, h, dtype=dt),
    "mingru_nobias": lambda i, h, dt: MinGRUCell(i, h, bias=False, dtype=dt),
    "qrnn_f_k1": lambda i, h, dt: QRNNCell(i, h, window=1, pooling="f", dtype=dt),
    "qrnn_fo_k2": lambda i, h, dt: QRNNCell(i, h, window=2, pooling="fo", dtype=dt),
    "qrnn_ifo_k3_nobias": lambda i, h, dt: QRNNCell(i, h, window=3, pooling="ifo", bias=False, dtype=dt),
}
CELL_IDS = sorted(CELLS)


def make_cell(name: str, i: int = I, h: int = H, dtype: torch.dtype = F64, randomize: bool = True):
    cell = CELLS[name](i, h, dtype)
    if randomize:  # every parameter random, so peepholes, LN gains and biases all matter
        with torch.no_grad():
            for p in cell.parameters():
                p.copy_(torch.randn_like(p) * 0.6)
    return cell


def random_state(cell, batch: int) -> Tuple[Tensor, ...]:
    return tuple(torch.randn(batch, s, dtype=F64) * 0.7 for s in cell.state_sizes)


# ------------------------------------------------- the equations, written again
def sig(v: Tensor) -> Tensor:
    return 1.0 / (1.0 + torch.exp(-v))


def blocks(w: Tensor, n: int) -> List[Tensor]:
    size = w.shape[0] // n
    return [w[k * size:(k + 1) * size] for k in range(n)]


def bias_blocks(b, n: int, size: int, like: Tensor) -> List[Tensor]:
    return blocks(b, n) if b is not None else [like.new_zeros(size)] * n


def layer_norm(v: Tensor, gain: Tensor, shift=None, eps: float = 1e-5) -> Tensor:
    mean = v.mean(-1, keepdim=True)
    var = ((v - mean) ** 2).mean(-1, keepdim=True)  # biased variance, as in the docstring
    out = gain * (v - mean) / torch.sqrt(var + eps)
    return out if shift is None else out + shift


def mm(x: Tensor, w: Tensor) -> Tensor:
    """W x for a batch of row vectors x (B, n): (B, m)."""
    return x @ w.t()


def equations(cell, x: Tensor, state: Tuple[Tensor, ...], mask=None) -> Tuple[Tensor, Tuple[Tensor, ...]]:
    """One step of `cell` from its docstring, with plain tensor ops. Returns (y, state tuple).

    mask (recurrent dropout) multiplies h_{t-1} only where it enters W_hh; the carried state is not dropped.
    """
    Hs = cell.hidden_size
    hm = state[0] if mask is None else state[0] * mask
    if isinstance(cell, ElmanCell):
        (h,) = state
        act = torch.tanh if cell.nonlinearity == "tanh" else (lambda v: torch.clamp(v, min=0))
        b_ih, b_hh = (cell.bias_ih, cell.bias_hh) if cell.bias_ih is not None else (0.0, 0.0)
        h = act(mm(x, cell.weight_ih) + b_ih + mm(hm, cell.weight_hh) + b_hh)
        return h, (h,)
    if isinstance(cell, LSTMCell):  # PeepholeLSTMCell included
        h, c = state
        W_ii, W_if, W_ig, W_io = blocks(cell.weight_ih, 4)
        W_hi, W_hf, W_hg, W_ho = blocks(cell.weight_hh, 4)
        b_ii, b_if, b_ig, b_io = bias_blocks(cell.bias_ih, 4, Hs, x)
        b_hi, b_hf, b_hg, b_ho = bias_blocks(cell.bias_hh, 4, Hs, x)
        peep = isinstance(cell, PeepholeLSTMCell)
        p_i, p_f, p_o = blocks(cell.weight_peephole, 3) if peep else (0.0, 0.0, 0.0)
        i = sig(mm(x, W_ii) + b_ii + mm(hm, W_hi) + b_hi + p_i * c)
        f = sig(mm(x, W_if) + b_if + mm(hm, W_hf) + b_hf + p_f * c)
        g = torch.tanh(mm(x, W_ig) + b_ig + mm(hm, W_hg) + b_hg)
        c_new = f * c + i * g
        o = sig(mm(x, W_io) + b_io + mm(hm, W_ho) + b_ho + p_o * c_new)  # the peephole reads c_t
        h_new = o * torch.tanh(c_new)
        if cell.proj_size:
            h_new = mm(h_new, cell.weight_hr)
        return h_new, (h_new, c_new)
    if isinstance(cell, GRUCell):
        (h,) = state
        W_ir, W_iz, W_in = blocks(cell.weight_ih, 3)
        W_hr, W_hz, W_hn = blocks(cell.weight_hh, 3)
        b_ir, b_iz, b_in = bias_blocks(cell.bias_ih, 3, Hs, x)
        b_hr, b_hz, b_hn = bias_blocks(cell.bias_hh, 3, Hs, x)
        r = sig(mm(x, W_ir) + b_ir + mm(hm, W_hr) + b_hr)
        z = sig(mm(x, W_iz) + b_iz + mm(hm, W_hz) + b_hz)
        if cell.reset == "after":
            n = torch.tanh(mm(x, W_in) + b_in + r * (mm(hm, W_hn) + b_hn))
        else:  # textbook: h̃ = tanh(W·[r ⊙ h, x] + b), W = [W_hn | W_in]
            W = torch.cat([W_hn, W_in], dim=1)
            n = torch.tanh(mm(torch.cat([r * hm, x], dim=1), W) + b_in + b_hn)
        h = (1 - z) * n + z * h
        return h, (h,)
    if isinstance(cell, SRUCell):
        (c,) = state
        nb = 4 if cell.input_size != Hs else 3
        W = blocks(cell.weight_ih, nb)
        v_f, v_r = blocks(cell.weight_c, 2)
        b_f, b_r = bias_blocks(cell.bias, 2, Hs, x)
        x_tilde = mm(x, W[0])
        f = sig(mm(x, W[1]) + v_f * c + b_f)
        r = sig(mm(x, W[2]) + v_r * c + b_r)
        c = f * c + (1 - f) * x_tilde
        highway = x if nb == 3 else mm(x, W[3])
        h = r * c + (1 - r) * highway
        return h, (c,)
    if isinstance(cell, LayerNormLSTMCell):
        h, c = state
        b = cell.bias if cell.bias is not None else 0.0
        a = layer_norm(mm(x, cell.weight_ih), cell.ln_ih_weight) + layer_norm(mm(hm, cell.weight_hh),
                                                                             cell.ln_hh_weight) + b
        a_i, a_f, a_g, a_o = blocks(a.t(), 4)
        i, f, g, o = sig(a_i.t()), sig(a_f.t()), torch.tanh(a_g.t()), sig(a_o.t())
        c = f * c + i * g
        h = o * torch.tanh(layer_norm(c, cell.ln_cell_weight, cell.ln_cell_bias))
        return h, (h, c)
    if isinstance(cell, LayerNormGRUCell):
        (h,) = state
        a = layer_norm(mm(x, cell.weight_ih), cell.ln_ih_weight) + (cell.bias_ih if cell.bias_ih is not None else 0)
        e = layer_norm(mm(hm, cell.weight_hh), cell.ln_hh_weight) + (cell.bias_hh if cell.bias_hh is not None else 0)
        a_r, a_z, a_n = (blk.t() for blk in blocks(a.t(), 3))
        e_r, e_z, e_n = (blk.t() for blk in blocks(e.t(), 3))
        r, z = sig(a_r + e_r), sig(a_z + e_z)
        n = torch.tanh(a_n + r * e_n)
        h = (1 - z) * n + z * h
        return h, (h,)
    if isinstance(cell, MinGRUCell):
        (h,) = state
        W_z, W_h = blocks(cell.weight_ih, 2)
        b_z, b_h = bias_blocks(cell.bias_ih, 2, Hs, x)
        z = sig(mm(x, W_z) + b_z)
        h_tilde = mm(x, W_h) + b_h
        h = (1 - z) * h + z * h_tilde
        return h, (h,)
    if isinstance(cell, QRNNCell):  # a_t = W[:, :, k−1] x_t + b + what earlier inputs left for t (window block 0)
        k, G, W = cell.window, cell.num_gates, cell.weight_ih
        old = blocks(state[1].t(), k - 1) if k > 1 else []
        a = mm(x, W[:, :, k - 1]) + (cell.bias_ih if cell.bias_ih is not None else 0) + (old[0].t() if old else 0)
        # new block j−1: W[:, :, k−1−j] x_t plus what earlier inputs left for step t+j (old block j)
        window = [mm(x, W[:, :, k - 1 - j]) + (old[j].t() if j < k - 1 else 0) for j in range(1, k)]
        gates = [blk.t() for blk in blocks(a.t(), G)]
        z, f = torch.tanh(gates[0]), sig(gates[1])
        c = f * state[0] + (sig(gates[3]) if G == 4 else 1 - f) * z
        h = c if G == 2 else sig(gates[2]) * c
        return h, (c,) + ((torch.cat(window, dim=1),) if k > 1 else ())
    raise AssertionError(f"no equations for {type(cell).__name__}")


# ------------------------------------------------------------------ contract
@pytest.mark.parametrize("name", CELL_IDS)
def test_shapes_and_initial_state(name: str) -> None:
    cell = make_cell(name)
    B = 5
    sizes = cell.state_sizes
    assert len(sizes) == len(cell.state_names)
    init = cell.initial_state(B)
    parts = cell.unpack_state(init)
    assert isinstance(init, tuple) == (len(sizes) > 1)
    assert [tuple(p.shape) for p in parts] == [(B, s) for s in sizes]
    assert all(p.dtype == F64 and not p.any() for p in parts)
    assert all(p.dtype == torch.float32 for p in cell.unpack_state(cell.initial_state(2, dtype=torch.float32)))
    x = torch.randn(B, cell.input_size, dtype=F64)
    y, new = cell(x, init)
    assert tuple(y.shape) == (B, cell.output_size)
    assert [tuple(p.shape) for p in cell.unpack_state(new)] == [(B, s) for s in sizes]
    # no state means zeros
    y0, new0 = cell(x)
    assert torch.equal(y0, y)
    # project accepts a whole sequence: (T, B, I) -> (T, B, K), the same as step by step
    xs = torch.randn(3, B, cell.input_size, dtype=F64)
    u = cell.project(xs)
    assert u.shape[:2] == (3, B)
    for t in range(3):
        assert_close(u[t], cell.project(xs[t]), f"{name} project step {t}")
    # outputs_state: y_t is the first state tensor exactly when the flag says so
    if cell.outputs_state:
        assert torch.equal(y, cell.unpack_state(new)[0])


@pytest.mark.parametrize("name", CELL_IDS)
def test_step_matches_equations(name: str) -> None:
    cell = make_cell(name)
    x = torch.randn(4, cell.input_size, dtype=F64)
    state = random_state(cell, 4)
    y, new = cell(x, cell.pack_state(state))
    y_ref, new_ref = equations(cell, x, state)
    assert_close(y, y_ref, f"{name} y")
    for k, (a, b) in enumerate(zip(cell.unpack_state(new), new_ref)):
        assert_close(a, b, f"{name} state {cell.state_names[k]}")
    assert len(cell.unpack_state(new)) == len(new_ref)


@pytest.mark.parametrize("name", [n for n in CELL_IDS if not n.startswith(("sru", "mingru", "qrnn"))])
def test_recurrent_mask_drops_only_the_recurrent_input(name: str) -> None:
    """Recurrent dropout: the mask multiplies h_{t-1} inside W_hh·h; the carried state stays whole."""
    cell = make_cell(name)
    assert cell.recurrent_input_size == cell.state_sizes[0]
    x = torch.randn(4, cell.input_size, dtype=F64)
    state = random_state(cell, 4)
    mask = torch.bernoulli(torch.full((4, cell.recurrent_input_size), 0.5, dtype=F64)) * 2.0
    assert (mask == 0).any() and (mask != 0).any()
    y, new = cell.step(cell.project(x), cell.pack_state(state), mask)
    y_ref, new_ref = equations(cell, x, state, mask)
    assert_close(y, y_ref, f"{name} y with mask")
    for a, b in zip(cell.unpack_state(new), new_ref):
        assert_close(a, b, f"{name} state with mask")
    # a mask of ones is no mask
    y1, _ = cell.step(cell.project(x), cell.pack_state(state), torch.ones_like(mask))
    assert torch.equal(y1, cell(x, cell.pack_state(state))[0])


@pytest.mark.parametrize("name", ["sru_same", "mingru", "qrnn_fo_k2"])
def test_cells_without_recurrent_matrix_refuse_a_mask(name: str) -> None:
    cell = make_cell(name)
    assert cell.recurrent_input_size == 0
    with pytest.raises(ValueError, match="recurrent dropout"):
        cell.step(cell.project(torch.randn(2, cell.input_size, dtype=F64)), cell.initial_state(2),
                  torch.ones(2, cell.hidden_size, dtype=F64))


@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("name", CELL_IDS)
def test_recurrent_equals_stepping_by_hand(name: str, with_lengths: bool) -> None:
    cell = make_cell(name)
    layer = rnnkit.Recurrent(cell, backend="reference")
    assert layer.cells[0] is cell
    T, B = 5, 3
    x = torch.randn(T, B, cell.input_size, dtype=F64)
    lengths = [5, 2, 4] if with_lengths else None
    for state in (None, tuple(s.unsqueeze(0) for s in random_state(cell, B))):
        out, final = layer(x, None if state is None else cell.pack_state(state), lengths=lengths)
        out_ref, final_ref = run_by_hand(layer, x, state, lengths)
        assert_close(out, out_ref, f"{name} outputs")
        for a, b in zip(cell.unpack_state(final), final_ref):
            assert_close(a, b, f"{name} final state")
        # by hand, one cell call per step: the same numbers for a full row
        s = None if state is None else cell.pack_state([p[0, 2:3] for p in state])
        for t in range(4 if with_lengths else T):
            y, s = cell(x[t, 2:3], s)
            assert_close(out[t, 2:3], y, f"{name} row 2 step {t}")
        if with_lengths:
            assert not out[4:, 1:2].any() and not out[2:, 1].any(), "outputs past lengths must be zero"


def _gradcheck_inputs(cell, T: int, B: int):
    x = torch.randn(T, B, cell.input_size, dtype=F64, requires_grad=True)
    state = tuple((torch.randn(1, B, s, dtype=F64) * 0.5).requires_grad_(True) for s in cell.state_sizes)
    return x, state


@pytest.mark.parametrize("name", CELL_IDS)
def test_gradcheck_cell_and_layer(name: str) -> None:
    """float64 gradcheck of one step (x, state, every parameter) and of Recurrent(cell) with lengths."""
    cell = make_cell(name, i=2, h=3)
    names = [n for n, _ in cell.named_parameters()]
    params = [p.detach().clone().requires_grad_(True) for _, p in cell.named_parameters()]
    x = torch.randn(2, cell.input_size, dtype=F64, requires_grad=True)
    state = [(torch.randn(2, s, dtype=F64) * 0.5).requires_grad_(True) for s in cell.state_sizes]
    n_state = len(state)

    def one_step(x, *rest):
        st, ps = rest[:n_state], rest[n_state:]
        y, new = torch.func.functional_call(cell, dict(zip(names, ps)), (x, cell.pack_state(list(st))))
        return (y,) + cell.unpack_state(new)

    assert torch.autograd.gradcheck(one_step, (x, *state, *params))

    layer = rnnkit.Recurrent(cell, backend="reference")
    lnames = [n for n, _ in layer.named_parameters()]
    lparams = [p.detach().clone().requires_grad_(True) for _, p in layer.named_parameters()]
    xs, st = _gradcheck_inputs(cell, 3, 2)
    lengths = torch.tensor([3, 2])

    def sequence(xs, *rest):
        s, ps = rest[:n_state], rest[n_state:]
        out, final = torch.func.functional_call(layer, dict(zip(lnames, ps)), (xs, cell.pack_state(list(s))),
                                                {"lengths": lengths})
        return (out,) + cell.unpack_state(final)

    assert torch.autograd.gradcheck(sequence, (xs, *st, *lparams))


# --------------------------------------------------------------- golden values
def fill_blocks(param: Tensor, values: Sequence[float]) -> None:
    """Fill a parameter block-wise along dim 0 with constants (one per gate block)."""
    with torch.no_grad():
        for blk, v in zip(blocks(param, len(values)), values):
            blk.fill_(v)


def arange_input(T: int, B: int, n: int) -> Tensor:
    """x[t, b, i] = 0.1 (t + 1) − 0.15 b + 0.02 i: distinct, small, deterministic."""
    t = torch.arange(T, dtype=F64)[:, None, None]
    b = torch.arange(B, dtype=F64)[None, :, None]
    i = torch.arange(n, dtype=F64)[None, None, :]
    return 0.1 * (t + 1) - 0.15 * b + 0.02 * i


def s(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def ln_const_blocks(values: Sequence[float], gains: Sequence[float], n: int) -> List[float]:
    """LN over a vector made of len(values) blocks of n equal entries; returns the per-block result."""
    full = [v for v in values for _ in range(n)]
    mean = sum(full) / len(full)
    var = sum((v - mean) ** 2 for v in full) / len(full)
    return [g * (v - mean) / math.sqrt(var + 1e-5) for v, g in zip(values, gains)]


def golden_case(name: str):
    """(cell with constant block weights, scalar recursion giving the value of every unit of y_t)."""
    Iq, Hq = 3, 4
    if name in ("elman_tanh", "elman_relu"):
        act = math.tanh if name == "elman_tanh" else (lambda v: max(v, 0.0))
        cell = ElmanCell(Iq, Hq, nonlinearity=name.split("_")[1], dtype=F64)
        wi, wh, bi, bh = 0.3, -0.2, 0.05, -0.1
        consts = {"weight_ih": [wi], "weight_hh": [wh], "bias_ih": [bi], "bias_hh": [bh]}

        def rec(sx, st):
            (h,) = st
            h = act(wi * sx + bi + wh * Hq * h + bh)
            return h, (h,)
        return cell, consts, rec, (0.0,)
    if name in ("lstm", "peephole", "lstm_proj"):
        P = 2 if name == "lstm_proj" else 0
        cell = (PeepholeLSTMCell if name == "peephole" else LSTMCell)(Iq, Hq, proj_size=P, dtype=F64)
        wi, wh = [0.1, -0.2, 0.3, 0.25], [-0.15, 0.1, 0.2, -0.3]
        bi, bh = [0.05, 0.4, -0.1, 0.0], [0.02, 0.1, 0.0, -0.05]
        pp = [0.3, -0.2, 0.5]
        wr = 0.7
        consts = {"weight_ih": wi, "weight_hh": wh, "bias_ih": bi, "bias_hh": bh}
        if name == "peephole":
            consts["weight_peephole"] = pp
        if P:
            consts["weight_hr"] = [wr]
        R = P or Hq
        peep = pp if name == "peephole" else [0.0, 0.0, 0.0]

        def rec(sx, st):
            h, c = st
            pre = [wi[k] * sx + bi[k] + wh[k] * R * h + bh[k] for k in range(4)]
            i, f, g = s(pre[0] + peep[0] * c), s(pre[1] + peep[1] * c), math.tanh(pre[2])
            c = f * c + i * g
            h = s(pre[3] + peep[2] * c) * math.tanh(c)
            if P:
                h = wr * Hq * h
            return h, (h, c)
        return cell, consts, rec, (0.0, 0.0)
    if name in ("gru_after", "gru_before"):
        cell = GRUCell(Iq, Hq, reset=name.split("_")[1], dtype=F64)
        wi, wh, bi, bh = [0.2, -0.1, 0.3], [0.1, 0.25, -0.2], [0.0, 0.1, -0.05], [0.05, -0.1, 0.2]
        consts = {"weight_ih": wi, "weight_hh": wh, "bias_ih": bi, "bias_hh": bh}

        def rec(sx, st):
            (h,) = st
            r = s(wi[0] * sx + bi[0] + wh[0] * Hq * h + bh[0])
            z = s(wi[1] * sx + bi[1] + wh[1] * Hq * h + bh[1])
            if name == "gru_after":
                n = math.tanh(wi[2] * sx + bi[2] + r * (wh[2] * Hq * h + bh[2]))
            else:
                n = math.tanh(wi[2] * sx + bi[2] + wh[2] * Hq * (r * h) + bh[2])
            h = (1 - z) * n + z * h
            return h, (h,)
        return cell, consts, rec, (0.0,)
    if name == "sru_proj":
        cell = SRUCell(Iq, Hq, dtype=F64)
        w, vc, b = [0.3, -0.2, 0.1, 0.4], [0.5, -0.3], [0.1, -0.2]
        consts = {"weight_ih": w, "weight_c": vc, "bias": b}

        def rec(sx, st):
            (c,) = st
            f = s(w[1] * sx + vc[0] * c + b[0])
            r = s(w[2] * sx + vc[1] * c + b[1])
            c = f * c + (1 - f) * w[0] * sx
            return r * c + (1 - r) * w[3] * sx, (c,)
        return cell, consts, rec, (0.0,)
    if name == "mingru":
        cell = MinGRUCell(Iq, Hq, dtype=F64)
        w, b = [0.4, -0.3], [0.1, 0.2]
        consts = {"weight_ih": w, "bias_ih": b}

        def rec(sx, st):
            (h,) = st
            z = s(w[0] * sx + b[0])
            h = (1 - z) * h + z * (w[1] * sx + b[1])
            return h, (h,)
        return cell, consts, rec, (0.0,)
    if name == "layernorm_gru":
        cell = LayerNormGRUCell(Iq, Hq, dtype=F64)
        wi, wh, bi, bh = [0.2, -0.1, 0.3], [0.1, 0.25, -0.2], [0.0, 0.1, -0.05], [0.05, -0.1, 0.2]
        gi, gh = [1.0, 0.5, 2.0], [0.8, 1.2, 1.5]
        consts = {"weight_ih": wi, "weight_hh": wh, "bias_ih": bi, "bias_hh": bh, "ln_ih_weight": gi,
                  "ln_hh_weight": gh}

        def rec(sx, st):
            (h,) = st
            a = [v + bb for v, bb in zip(ln_const_blocks([w * sx for w in wi], gi, Hq), bi)]
            e = [v + bb for v, bb in zip(ln_const_blocks([w * Hq * h for w in wh], gh, Hq), bh)]
            r, z = s(a[0] + e[0]), s(a[1] + e[1])
            n = math.tanh(a[2] + r * e[2])
            h = (1 - z) * n + z * h
            return h, (h,)
        return cell, consts, rec, (0.0,)
    if name == "layernorm_lstm":
        cell = LayerNormLSTMCell(Iq, Hq, dtype=F64)
        wi, wh, b = [0.1, -0.2, 0.3, 0.25], [-0.15, 0.1, 0.2, -0.3], [0.05, 0.4, -0.1, 0.0]
        gi, gh, gc, bc = [1.0, 0.5, 2.0, 1.5], [0.8, 1.2, 1.5, 0.7], [1.3], [0.2]
        consts = {"weight_ih": wi, "weight_hh": wh, "bias": b, "ln_ih_weight": gi, "ln_hh_weight": gh,
                  "ln_cell_weight": gc, "ln_cell_bias": bc}

        def rec(sx, st):
            h, c = st
            a = [u + v + bb for u, v, bb in zip(ln_const_blocks([w * sx for w in wi], gi, Hq),
                                                ln_const_blocks([w * Hq * h for w in wh], gh, Hq), b)]
            c = s(a[1]) * c + s(a[0]) * math.tanh(a[2])
            # every unit of c_t is equal, so LN(c_t) = 0·γ + β = β
            h = s(a[3]) * math.tanh(bc[0])
            return h, (h, c)
        return cell, consts, rec, (0.0, 0.0)
    raise KeyError(name)


GOLDEN = ["elman_tanh", "elman_relu", "lstm", "lstm_proj", "peephole", "gru_after", "gru_before", "sru_proj",
          "mingru", "layernorm_gru", "layernorm_lstm"]


@pytest.mark.parametrize("name", GOLDEN)
def test_golden_values_constant_weights(name: str) -> None:
    """Constant weights per gate block and arange inputs make every unit equal: a scalar recursion
    computed with `math` gives each output value, and gate-order mistakes change it."""
    cell, consts, rec, state0 = golden_case(name)
    for pname, values in consts.items():
        fill_blocks(getattr(cell, pname), values)
    T, B = 4, 2
    x = arange_input(T, B, cell.input_size)
    out, _ = rnnkit.Recurrent(cell, backend="reference")(x)
    for b in range(B):
        st = state0
        for t in range(T):
            y, st = rec(float(x[t, b].sum()), st)
            assert torch.allclose(out[t, b], torch.full_like(out[t, b], y), rtol=0, atol=1e-12), \
                f"{name} t={t} b={b}: {out[t, b].tolist()} vs {y}"
    assert out.abs().max() > 0.01  # the recursion is not trivially zero


def test_golden_sru_same_size_highway_is_the_input() -> None:
    """SRU with input_size == hidden_size: h_t = r ⊙ c + (1 − r) ⊙ x_t, x_t itself (no projection)."""
    cell = SRUCell(4, 4, dtype=F64)
    assert cell.weight_ih.shape == (12, 4)
    fill_blocks(cell.weight_ih, [0.0, 0.0, -50.0])  # x̃ = 0, f = σ(0) = 1/2, r = σ(-50·Σx) ≈ 0 for Σx > 0
    fill_blocks(cell.weight_c, [0.0, 0.0])
    fill_blocks(cell.bias, [0.0, 0.0])
    x = arange_input(3, 1, 4) + 1.0
    out, c = rnnkit.Recurrent(cell, backend="reference")(x)
    assert_close(out, x, "highway output", tol=1e-12)
    assert not c.any()
