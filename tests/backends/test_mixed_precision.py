"""bfloat16 on the fused backend: under `torch.autocast("cpu", dtype=torch.bfloat16)` and with bfloat16
parameters and inputs, every family runs its fused kernels (no crash, no fall back to the reference loop).

What runs in bfloat16 is the input projection's GEMM (float32 accumulation) and, for the families with a
recurrent matrix (LSTM, GRU, Elman, layer-norm LSTM/GRU) under bfloat16, the per-step recurrent GEMMs (W_hh,
W_hr, forward and backward); cell state, gate math and layer-norm statistics stay float32, and results come
back in bfloat16 as autocast expects.

The bound is derived from bfloat16 rounding, not tuned: a float64 reference run on the GEMMs'
operands perturbed as bfloat16 perturbs them (rounded to bfloat16 under autocast; nudged by one bfloat16
half-ulp where they are bfloat16 values already) measures what one such rounding does to this computation
(layer norm over a few units amplifies it, a long sum damps it); the fused result may add the rounding of
the projection's output and of the results themselves:

    error(fused, truth) <= 3 * error(perturbed-operand reference, truth) + 2 ** -7

errors relative to max(1, the largest |truth| of each entry).
"""

from __future__ import annotations

import pytest
import torch

from helpers import ALL_MODES, LayerConfig, forward_and_grads, make_batch
import rnnkit
from rnnkit.backends import extension

pytestmark = pytest.mark.usefixtures("kernels")

BF16_ULP = 2.0 ** -7  # two bfloat16 roundings of a value of magnitude <= 1 (8 significant bits)


@pytest.fixture(scope="module")
def kernels() -> None:
    reason = extension.load()
    if reason is not None:
        pytest.skip(f"fused kernels unavailable: {reason}")


def _error(actual: torch.Tensor, truth: torch.Tensor) -> float:
    return float((actual.double() - truth).abs().max() / truth.abs().max().clamp(min=1.0))


#: families whose time loop runs the recurrent GEMMs in bfloat16 (their recurrent weights are rounded too)
BF16_RECURRENT = ("LSTM", "PeepholeLSTM", "GRU", "GRU_BEFORE", "RNN_TANH", "RNN_RELU", "LayerNormLSTM",
                  "LayerNormGRU")


def _rounded_operands(cfg: LayerConfig) -> tuple:
    """Parameter names the bfloat16 GEMMs read (the ones rounded to bfloat16 on the mixed path)."""
    projection = ("weight_ih", "bias_ih", "bias_hh") if cfg.mode not in ("LayerNormLSTM", "LayerNormGRU", "SRU",
                                                                          "MinGRU") else ("weight_ih", "bias")
    return projection + (("weight_hh", "weight_hr") if cfg.mode in BF16_RECURRENT else ())


def _rounded(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to(torch.bfloat16).double()


def _nudged(tensor: torch.Tensor, half_ulps: int = 1) -> torch.Tensor:
    """Each entry moved by `half_ulps` bfloat16 half-ulps (relative 2^-9 each), up or down at random (seeded)."""
    g = torch.Generator().manual_seed(tensor.numel())
    sign = torch.randint(0, 2, tensor.shape, generator=g).double() * 2 - 1
    return tensor.double() * (1 + sign * half_ulps * 2.0 ** -9)


def _nudged_twice(tensor: torch.Tensor) -> torch.Tensor:
    """A recurrent weight of bfloat16 values: its per-step products also round the float32 state to bfloat16,
    so each product term a_k w_k carries two roundings, (1 + δa)(1 + δw) ≈ 1 + δa + δw: two half-ulps."""
    return _nudged(tensor, 2)


def _check(actual: dict, truth: dict, perturbed: dict, context: str) -> None:
    assert set(actual) == set(truth), context
    for key in truth:
        bound = 3 * _error(perturbed[key], truth[key]) + BF16_ULP
        error = _error(actual[key], truth[key])
        assert error <= bound, f"{context} {key}: error {error:.3g} > bound {bound:.3g}"


def _truths(cfg: LayerConfig, layer, data, perturb, perturb_recurrent=None) -> tuple:
    """(float64 reference on the same values, float64 reference on the bfloat16 GEMMs' operands perturbed;
    the recurrent weights by `perturb_recurrent` where given)."""
    operands = _rounded_operands(cfg)
    recurrent = [n for n in ("weight_hh", "weight_hr") if n in operands]
    cfg64 = LayerConfig(**{**cfg.__dict__, "dtype": torch.float64})
    results = []
    for rounded in (False, True):
        ref = cfg64.build("reference")
        state = {k: v.double() for k, v in layer.state_dict().items()}
        if rounded:
            def named(k: str, names) -> bool:
                return any(k.startswith(n) or f".{n}" in k for n in names)

            state = {k: (perturb_recurrent or perturb)(v) if named(k, recurrent) else perturb(v) if named(k, operands)
                     else v for k, v in state.items()}
        ref.load_state_dict(state)
        batch = make_batch(cfg64, 6, 3, lengths=[6, 3, 4], with_state=True)
        batch.x = perturb(data.x) if rounded else data.x.double()
        batch.state = tuple(s.double() for s in data.state)
        results.append(forward_and_grads(ref, batch))
    return tuple(results)


@pytest.mark.parametrize("mode", ALL_MODES)
def test_autocast_runs_fused_with_bf16_projection(mode: str) -> None:
    cfg = LayerConfig(mode, input_size=5, hidden_size=6, num_layers=2, bidirectional=True, dtype=torch.float32)
    layer = cfg.build("fused")
    data = make_batch(cfg, 6, 3, lengths=[6, 3, 4], with_state=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        actual = forward_and_grads(layer, data)  # backward inside autocast too: users do that
    assert layer.last_backend == "fused"
    assert actual["output"].dtype == torch.bfloat16 and actual["state.0"].dtype == torch.bfloat16
    assert all(p.grad.dtype == torch.float32 for p in layer.parameters())  # float32 master weights
    truth, perturbed = _truths(cfg, layer, data, _rounded)
    _check(actual, truth, perturbed, f"{mode} autocast")


@pytest.mark.parametrize("mode", ALL_MODES)
def test_bf16_parameters_run_fused(mode: str) -> None:
    cfg = LayerConfig(mode, input_size=5, hidden_size=6, num_layers=2, dtype=torch.float32)
    layer = cfg.build("fused").to(torch.bfloat16)
    data = make_batch(cfg, 6, 3, lengths=[6, 3, 4], with_state=True)
    data.x, data.state = data.x.bfloat16(), tuple(s.bfloat16() for s in data.state)
    actual = forward_and_grads(layer, data)
    assert layer.last_backend == "fused"
    assert actual["output"].dtype == torch.bfloat16
    assert all(p.grad.dtype == torch.bfloat16 for p in layer.parameters())
    # parameters and inputs are bfloat16 values already: the float64 run on them is the truth itself
    truth, perturbed = _truths(cfg, layer, data, _nudged, _nudged_twice)
    _check(actual, truth, perturbed, f"{mode} bf16 parameters")


def test_autocast_float16_and_eval_mode() -> None:
    cfg = LayerConfig("LSTM", input_size=5, hidden_size=6, dtype=torch.float32)
    layer = cfg.build("fused").eval()
    x = torch.randn(4, 2, 5)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16):
        y, (h, c) = layer(x)
    assert layer.last_backend == "fused" and y.dtype == h.dtype == c.dtype == torch.float16
    with torch.no_grad():
        reference = cfg.build("reference")
        reference.load_state_dict(layer.state_dict())
        expected, _ = reference(x)
    assert float((y.float() - expected).abs().max()) <= 2.0 ** -8  # float16 keeps 11 significant bits


def _lstm_step(w_hh: torch.Tensor, u, h0, c0):
    """One LSTM step through the kernel: (activated gates (B, 4H), ∂L/∂h0 (B, P) for dh_n = 0, dc_n = 1)."""
    from rnnkit.backends.fused_ops import ops

    _, h_n, c_n, gates, cs, ct = ops.lstm_forward(u, w_hh, None, None, h0, c0, None, None, None, None, True)
    dg, dh0, *_ = ops.lstm_backward(torch.zeros(1, *h0.shape), torch.zeros_like(h0), torch.ones_like(c0), gates,
                                    cs, ct, w_hh, None, None, None, None, None, None)
    return gates[0], dg[0], dh0


@pytest.mark.parametrize("hidden", [37, 64])  # odd K (VNNI pads it) and a 4H with a partial 64-column block
def test_bf16_step_gemm_within_rounding_bound(hidden: int) -> None:
    """A bfloat16 W_hh with float32 state: both per-step products (h W_hh^T forward, dg W_hh backward) are
    within what rounding both operands to bfloat16 allows, |err| <= (2^-8 + K 2^-23) Σ_k |a_k||w_k| + 2^-20
    (a gate's activation has slope <= 1), against the float64 product with the float32 weight."""
    g = torch.Generator().manual_seed(hidden)
    B, H = 16, hidden
    u, h0, c0 = torch.randn(1, B, 4 * H, generator=g), torch.randn(B, H, generator=g), torch.randn(B, H, generator=g)
    w = torch.randn(4 * H, H, generator=g) / H ** 0.5
    gates, dg, dh0 = _lstm_step(w.bfloat16(), u, h0, c0)
    a = u[0].double() + h0.double() @ w.double().t()
    truth = torch.cat([a[:, :2 * H].sigmoid(), a[:, 2 * H:3 * H].tanh(), a[:, 3 * H:].sigmoid()], 1)
    scale = 2.0 ** -8 + H * 2.0 ** -23
    assert ((gates.double() - truth).abs() <= scale * (h0.double().abs() @ w.double().abs().t()) + 2.0 ** -20).all()
    # backward: the kernel's own float32 dg is the product's A operand
    K = 4 * H
    bound = (2.0 ** -8 + K * 2.0 ** -23) * (dg.double().abs() @ w.double().abs()) + 2.0 ** -20
    assert ((dh0.double() - dg.double() @ w.double()).abs() <= bound).all()
    if extension.bf16_step_gemm():  # bfloat16 units: the products really ran in bfloat16 (A rounded too)
        widened = _lstm_step(w.bfloat16().float(), u, h0, c0)
        assert not torch.equal(gates, widened[0]) and not torch.equal(dh0, widened[2])


def _gru_elman_steps(w_hh: torch.Tensor, u: torch.Tensor, h0: torch.Tensor) -> list:
    """Forward and backward outputs of the GRU kernels (both reset forms) and Elman's, over u (T, B, 3H)."""
    from rnnkit.backends.fused_ops import ops

    H = h0.shape[1]
    out = []
    for after in (True, False):
        y, h_n, gates = ops.gru_forward(u, w_hh, None, h0, None, None, None, after, True)
        out += [y, *ops.gru_backward(torch.ones_like(y), torch.zeros_like(h0), gates, y, h0, w_hh, None, None,
                                     None, after)]
    y, h_n, ht = ops.elman_forward(u[..., :H].contiguous(), w_hh[:H].contiguous(), h0, None, None, None, False, True)
    return out + [y, *ops.elman_backward(torch.ones_like(y), torch.zeros_like(h0), ht, w_hh[:H].contiguous(), None,
                                         None, None, False)]


def _layernorm_steps(w_hh: torch.Tensor, u: torch.Tensor, h0: torch.Tensor) -> list:
    """Forward and backward outputs of the layer-norm LSTM kernels (W_hh (4H, H), u (T, B, 4H)) and the
    layer-norm GRU's (its first 3H rows of W_hh and of u), gains 1 and cell bias 0."""
    from rnnkit.backends.fused_ops import ops

    H = h0.shape[1]
    ones, zeros = torch.ones(4 * H), torch.zeros(H)
    y, h_n, c_n, gates, rn, cs, chat, rstd = ops.ln_lstm_forward(u, w_hh, ones, ones[:H], zeros, h0, h0, None,
                                                                 None, None, None)
    out = [y, c_n, *ops.ln_lstm_backward(torch.ones_like(y), torch.zeros_like(h0), torch.zeros_like(h0), gates, rn,
                                         cs, chat, rstd, w_hh, ones, ones[:H], zeros, None, None, None, None)]
    u3, w3 = u[..., :3 * H].contiguous(), w_hh[:3 * H].contiguous()
    y, h_n, gates, en, rstd = ops.ln_gru_forward(u3, w3, ones[:3 * H], None, h0, None, None, None)
    return out + [y, *ops.ln_gru_backward(torch.ones_like(y), torch.zeros_like(h0), gates, en, rstd, y, h0, w3,
                                          ones[:3 * H], None, None, None)]


def test_forced_route_widens_bf16_weight() -> None:
    """Where a float32 route is forced (as where the CPU lacks bfloat16 units), a bfloat16 W_hh runs as its
    exact float32 widening: the same bits as the float32 kernel on that weight (LSTM, GRU, Elman)."""
    from rnnkit.backends import set_recurrence_threads, set_step_gemm

    g = torch.Generator().manual_seed(0)
    u, h0, c0 = torch.randn(3, 8, 96, generator=g), torch.randn(8, 24, generator=g), torch.randn(8, 24, generator=g)
    w = torch.randn(96, 24, generator=g).bfloat16()
    # one row block for both weights: "auto" splits the batch for a float32 weight only, and BLAS may sum a
    # 4-row product in another order than an 8-row one (MKL on AVX2 does)
    set_recurrence_threads(1)
    try:
        for route in ("blas", "small"):
            set_step_gemm(route)
            got = [*_lstm_step(w, u[:1], h0, c0), *_gru_elman_steps(w[:72], u[..., :72], h0)]
            expected = [*_lstm_step(w.float(), u[:1], h0, c0), *_gru_elman_steps(w[:72].float(), u[..., :72], h0)]
            for i, (a, b) in enumerate(zip(got, expected)):
                assert torch.equal(a, b), (route, i)
    finally:
        set_step_gemm("auto")
        set_recurrence_threads("auto")


def test_bf16_gru_elman_weight_runs_close_to_widened() -> None:
    """The GRU (both forms, whose W_hh is read in blocks) and Elman kernels take a bfloat16 W_hh on the auto
    route and stay near the float32 kernels on the widened weight: a smoke check that each block reads the
    right rows (a wrong block is off by O(1)); the derived bound is checked on the layers above."""
    g = torch.Generator().manual_seed(1)
    u, h0 = torch.randn(4, 8, 72, generator=g), torch.randn(8, 24, generator=g)
    w = (torch.randn(72, 24, generator=g) / 24 ** 0.5).bfloat16()
    for i, (a, b) in enumerate(zip(_gru_elman_steps(w, u, h0), _gru_elman_steps(w.float(), u, h0))):
        assert a.shape == b.shape, i
        if b.numel():
            assert float((a - b).abs().max()) <= 2.0 ** -5 * max(1.0, float(b.abs().max())), i


def test_autocast_lstm_with_projection() -> None:
    """proj_size: W_hr also runs in bfloat16 and its float32 master gets a float32 gradient, within the bound."""
    cfg = LayerConfig("LSTM", input_size=5, hidden_size=6, proj_size=4, num_layers=2, dtype=torch.float32)
    layer = cfg.build("fused")
    data = make_batch(cfg, 6, 3, lengths=[6, 3, 4], with_state=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        actual = forward_and_grads(layer, data)
    assert layer.last_backend == "fused"
    assert all(p.grad.dtype == torch.float32 for p in layer.parameters())
    truth, perturbed = _truths(cfg, layer, data, _rounded)
    _check(actual, truth, perturbed, "LSTM proj autocast")


def test_layernorm_kernels_take_bf16_weight() -> None:
    """The layer-norm LSTM and GRU kernels take a bfloat16 W_hh (they crashed on one): on a forced float32
    route as its exact float32 widening (same bits); on the auto route within a bfloat16 rounding of it
    (layer norm rescales the product to unit spread, so the bound is relative to 1: both operands rounded,
    2^-8 each, summed over H = 24 terms of size ~1/sqrt(H), through slopes <= 1, gives well under 2^-4;
    a wrong row block is off by O(1)), and really in bfloat16 where the CPU has bfloat16 units."""
    from rnnkit.backends import set_step_gemm

    g = torch.Generator().manual_seed(2)
    u, h0 = torch.randn(4, 8, 96, generator=g), torch.randn(8, 24, generator=g)
    w = (torch.randn(96, 24, generator=g) / 24 ** 0.5).bfloat16()
    try:
        set_step_gemm("blas")
        for i, (a, b) in enumerate(zip(_layernorm_steps(w, u, h0), _layernorm_steps(w.float(), u, h0))):
            assert torch.equal(a, b), i
    finally:
        set_step_gemm("auto")
    got, expected = _layernorm_steps(w, u, h0), _layernorm_steps(w.float(), u, h0)
    for i, (a, b) in enumerate(zip(got, expected)):
        assert float((a - b).abs().max()) <= 2.0 ** -4 * max(1.0, float(b.abs().max())), i
    if extension.bf16_step_gemm():
        assert not torch.equal(got[0], expected[0])


@pytest.mark.parametrize("backend", ["auto", "reference", "fused", "native"])
def test_a_bfloat16_state_carried_out_of_autocast_is_taken_back_under_autocast(backend):
    """Truncated BPTT under autocast hands the next chunk the previous chunk's bfloat16 state while the
    embedding's output (the next input) is float32: that pair is accepted under autocast, and only there.
    (`auto` must pick a backend that runs here: torch's own LSTM has no bfloat16 kernel below AVX-512.)"""
    from rnnkit.backends.native import runs_under_cpu_autocast
    if backend == "native" and not runs_under_cpu_autocast("LSTMCell"):
        pytest.skip("torch's own LSTM has no bfloat16 kernel on this CPU (or under its ISA limit)")
    torch.manual_seed(0)
    layer = rnnkit.LSTM(4, 8, backend=backend)
    x = torch.randn(5, 2, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, state = layer(x)
        state = tuple(s.detach().to(torch.bfloat16) for s in state)
        out, _ = layer(x, state)
    assert out.shape == (5, 2, 8)
    with pytest.raises(TypeError, match="must have dtype torch.float32 like the input"):
        layer(x, state)
