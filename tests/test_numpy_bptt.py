"""Back-propagation through time by hand, in plain NumPy (min-char-rnn style), against autograd.

A character-level model: the recurrent layer (rnnkit.RNN or rnnkit.LSTM), then
logits y_t = W_hy h_t + b_y and a softmax cross-entropy against target ids, plus
a term on the final state so that its gradient path is checked as well:

    loss = Σ_t Σ_b −log softmax(y_t[b])[target_t[b]] + Σ v ⊙ h_T (+ Σ w ⊙ c_T)

The forward pass and the BPTT below are written from the equations only; the
loss and every gradient (weights, biases, W_hy, b_y, h_0, c_0, inputs) must equal
what autograd computes through the rnnkit modules, in float64, to 1e-10.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import rnnkit

T, B, I, H, V = 6, 3, 4, 5, 7  # steps, batch, input features, hidden units, vocabulary


def sigmoid(v: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-v))


def softmax_xent(logits: np.ndarray, targets: np.ndarray):
    """(loss summed over the batch, d loss / d logits), logits (B, V)."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(shifted)
    p /= p.sum(axis=1, keepdims=True)
    loss = -np.log(p[np.arange(len(targets)), targets]).sum()
    dlogits = p.copy()
    dlogits[np.arange(len(targets)), targets] -= 1.0
    return loss, dlogits


# ------------------------------------------------------------------ Elman RNN
def elman_numpy(x, h0, W_ih, W_hh, b_ih, b_hh, W_hy, b_y, targets, v):
    """Forward and hand-written BPTT of a tanh Elman RNN; returns (loss, grads dict)."""
    hs = {-1: h0}
    loss = 0.0
    dys = {}
    for t in range(T):
        hs[t] = np.tanh(x[t] @ W_ih.T + b_ih + hs[t - 1] @ W_hh.T + b_hh)  # (B, H)
        step_loss, dys[t] = softmax_xent(hs[t] @ W_hy.T + b_y, targets[t])
        loss += step_loss
    loss += (v * hs[T - 1]).sum()

    g = {k: np.zeros_like(a) for k, a in dict(W_ih=W_ih, W_hh=W_hh, b_ih=b_ih, b_hh=b_hh, W_hy=W_hy,
                                                 b_y=b_y).items()}
    dx = np.zeros_like(x)
    dh_next = v.copy()  # d loss / d h_T from the final-state term
    for t in reversed(range(T)):
        g["W_hy"] += dys[t].T @ hs[t]
        g["b_y"] += dys[t].sum(axis=0)
        dh = dys[t] @ W_hy + dh_next  # (B, H)
        da = (1.0 - hs[t] ** 2) * dh  # through tanh
        g["W_ih"] += da.T @ x[t]
        g["W_hh"] += da.T @ hs[t - 1]
        g["b_ih"] += da.sum(axis=0)
        g["b_hh"] += da.sum(axis=0)
        dx[t] = da @ W_ih
        dh_next = da @ W_hh
    g["h0"], g["x"] = dh_next, dx
    return loss, g


# ------------------------------------------------------------------------ LSTM
def lstm_numpy(x, h0, c0, W_ih, W_hh, b_ih, b_hh, W_hy, b_y, targets, v, w):
    """Forward and hand-written BPTT of an LSTM (gate order i, f, g, o); returns (loss, grads dict)."""
    hs, cs, gates = {-1: h0}, {-1: c0}, {}
    loss = 0.0
    dys = {}
    for t in range(T):
        z = x[t] @ W_ih.T + b_ih + hs[t - 1] @ W_hh.T + b_hh  # (B, 4H)
        i, f, g, o = sigmoid(z[:, :H]), sigmoid(z[:, H:2 * H]), np.tanh(z[:, 2 * H:3 * H]), sigmoid(z[:, 3 * H:])
        cs[t] = f * cs[t - 1] + i * g
        hs[t] = o * np.tanh(cs[t])
        gates[t] = (i, f, g, o)
        step_loss, dys[t] = softmax_xent(hs[t] @ W_hy.T + b_y, targets[t])
        loss += step_loss
    loss += (v * hs[T - 1]).sum() + (w * cs[T - 1]).sum()

    gr = {k: np.zeros_like(a) for k, a in dict(W_ih=W_ih, W_hh=W_hh, b_ih=b_ih, b_hh=b_hh, W_hy=W_hy,
                                                  b_y=b_y).items()}
    dx = np.zeros_like(x)
    dh_next, dc_next = v.copy(), w.copy()
    for t in reversed(range(T)):
        i, f, g, o = gates[t]
        gr["W_hy"] += dys[t].T @ hs[t]
        gr["b_y"] += dys[t].sum(axis=0)
        dh = dys[t] @ W_hy + dh_next
        tc = np.tanh(cs[t])
        do = dh * tc
        dc = dh * o * (1.0 - tc ** 2) + dc_next
        di, dg, df = dc * g, dc * i, dc * cs[t - 1]
        dc_next = dc * f
        dz = np.concatenate([di * i * (1 - i), df * f * (1 - f), dg * (1 - g ** 2), do * o * (1 - o)], axis=1)
        gr["W_ih"] += dz.T @ x[t]
        gr["W_hh"] += dz.T @ hs[t - 1]
        gr["b_ih"] += dz.sum(axis=0)
        gr["b_hh"] += dz.sum(axis=0)
        dx[t] = dz @ W_ih
        dh_next = dz @ W_hh
    gr["h0"], gr["c0"], gr["x"] = dh_next, dc_next, dx
    return loss, gr


# --------------------------------------------------------------------- autograd
def autograd_loss(layer, x, state, W_hy, b_y, targets, v, w=None):
    out, final = layer(x, state)
    logits = out @ W_hy.T + b_y  # (T, B, V)
    loss = torch.nn.functional.cross_entropy(logits.reshape(T * B, V), targets.reshape(T * B), reduction="sum")
    h_T = final[0][0] if isinstance(final, tuple) else final[0]
    loss = loss + (v * h_T).sum()
    if w is not None:
        loss = loss + (w * final[1][0]).sum()
    return loss


def check(name: str, autograd: torch.Tensor, by_hand: np.ndarray) -> None:
    err = np.abs(autograd.detach().numpy() - by_hand).max()
    assert autograd.shape == by_hand.shape, name
    assert err <= 1e-10, f"{name}: max |autograd − BPTT| = {err:.3g}"
    assert np.abs(by_hand).max() > 1e-6, f"{name}: gradient is zero, the check proves nothing"


def _tensors(seed: int, state_count: int):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, B, I))
    states = [rng.standard_normal((B, H)) * 0.5 for _ in range(state_count)]
    W_hy, b_y = rng.standard_normal((V, H)) * 0.5, rng.standard_normal(V) * 0.1
    targets = rng.integers(0, V, size=(T, B))
    v, w = rng.standard_normal((B, H)), rng.standard_normal((B, H))
    return x, states, W_hy, b_y, targets, v, w


def _leaf(a: np.ndarray) -> torch.Tensor:
    return torch.tensor(a, dtype=torch.float64, requires_grad=True)


@pytest.mark.parametrize("seed", [0, 1])
def test_elman_bptt_by_hand_equals_autograd(seed: int) -> None:
    x, (h0,), W_hy, b_y, targets, v, _ = _tensors(seed, 1)
    torch.manual_seed(seed)
    layer = rnnkit.RNN(I, H, dtype=torch.float64, backend="reference")
    p = {k: getattr(layer, f"{k}_l0").detach().numpy().copy() for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
    loss_np, g = elman_numpy(x, h0, p["weight_ih"], p["weight_hh"], p["bias_ih"], p["bias_hh"], W_hy, b_y,
                             targets, v)

    xt, h0t, W_hyt, b_yt = _leaf(x), _leaf(h0[None]), _leaf(W_hy), _leaf(b_y)
    loss = autograd_loss(layer, xt, h0t, W_hyt, b_yt, torch.tensor(targets), torch.tensor(v))
    loss.backward()
    assert abs(loss.item() - loss_np) <= 1e-10 * max(1.0, abs(loss_np))
    check("weight_ih_l0", layer.weight_ih_l0.grad, g["W_ih"])
    check("weight_hh_l0", layer.weight_hh_l0.grad, g["W_hh"])
    check("bias_ih_l0", layer.bias_ih_l0.grad, g["b_ih"])
    check("bias_hh_l0", layer.bias_hh_l0.grad, g["b_hh"])
    check("W_hy", W_hyt.grad, g["W_hy"])
    check("b_y", b_yt.grad, g["b_y"])
    check("h0", h0t.grad[0], g["h0"])
    check("inputs", xt.grad, g["x"])


@pytest.mark.parametrize("seed", [0, 1])
def test_lstm_bptt_by_hand_equals_autograd(seed: int) -> None:
    x, (h0, c0), W_hy, b_y, targets, v, w = _tensors(seed, 2)
    torch.manual_seed(seed)
    layer = rnnkit.LSTM(I, H, dtype=torch.float64, backend="reference")
    p = {k: getattr(layer, f"{k}_l0").detach().numpy().copy() for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
    loss_np, g = lstm_numpy(x, h0, c0, p["weight_ih"], p["weight_hh"], p["bias_ih"], p["bias_hh"], W_hy, b_y,
                            targets, v, w)

    xt, h0t, c0t, W_hyt, b_yt = _leaf(x), _leaf(h0[None]), _leaf(c0[None]), _leaf(W_hy), _leaf(b_y)
    loss = autograd_loss(layer, xt, (h0t, c0t), W_hyt, b_yt, torch.tensor(targets), torch.tensor(v),
                         torch.tensor(w))
    loss.backward()
    assert abs(loss.item() - loss_np) <= 1e-10 * max(1.0, abs(loss_np))
    check("weight_ih_l0", layer.weight_ih_l0.grad, g["W_ih"])
    check("weight_hh_l0", layer.weight_hh_l0.grad, g["W_hh"])
    check("bias_ih_l0", layer.bias_ih_l0.grad, g["b_ih"])
    check("bias_hh_l0", layer.bias_hh_l0.grad, g["b_hh"])
    check("W_hy", W_hyt.grad, g["W_hy"])
    check("b_y", b_yt.grad, g["b_y"])
    check("h0", h0t.grad[0], g["h0"])
    check("c0", c0t.grad[0], g["c0"])
    check("inputs", xt.grad, g["x"])


def test_bptt_by_hand_would_catch_a_wrong_gradient() -> None:
    """The comparison is sharp: perturbing one hand-computed gradient entry by 1e-8 fails it."""
    x, (h0,), W_hy, b_y, targets, v, _ = _tensors(0, 1)
    layer = rnnkit.RNN(I, H, dtype=torch.float64, backend="reference")
    p = [getattr(layer, f"{k}_l0").detach().numpy() for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    _, g = elman_numpy(x, h0, *p, W_hy, b_y, targets, v)
    autograd_loss(layer, _leaf(x), _leaf(h0[None]), _leaf(W_hy), _leaf(b_y), torch.tensor(targets),
                  torch.tensor(v)).backward()
    wrong = g["W_hh"].copy()
    wrong[1, 2] += 1e-8
    with pytest.raises(AssertionError):
        check("weight_hh_l0", layer.weight_hh_l0.grad, wrong)
