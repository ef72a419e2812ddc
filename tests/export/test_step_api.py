"""Recurrent.step: streaming one step at a time equals forward() over the whole sequence."""

from __future__ import annotations

import pytest
import torch

import rnnkit
from helpers import ALL_MODES, LayerConfig, assert_close
from rnnkit.models.char_lm import LMConfig, RecurrentLM


def _stream(layer: rnnkit.Recurrent, x: torch.Tensor, state=None):
    """Feed x (T, B, I) through layer.step; (outputs (T, B, O), final state)."""
    if state is None:
        state = layer.initial_state(x.shape[1])
    ys = []
    for x_t in x.unbind(0):
        y, state = layer.step(x_t, state)
        ys.append(y)
    return torch.stack(ys), state


def _as_tuple(state):
    return state if isinstance(state, tuple) else (state,)


@pytest.mark.parametrize("mode", ALL_MODES)
@pytest.mark.parametrize("num_layers", [1, 2])
def test_step_equals_forward(mode: str, num_layers: int) -> None:
    cfg = LayerConfig(mode=mode, input_size=3, hidden_size=4, num_layers=num_layers)
    layer = cfg.build("reference").eval()
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    start = tuple(0.5 * torch.randn(num_layers, 2, s, dtype=torch.float64) for s in cfg.state_sizes)
    start = start if len(start) > 1 else start[0]
    y_ref, s_ref = layer(x, start)
    y, s = _stream(layer, x, start)
    assert_close(y, y_ref, torch.float64)
    for a, b in zip(_as_tuple(s), _as_tuple(s_ref)):
        assert_close(a, b, torch.float64)


def test_step_with_proj_size_and_fused_backend() -> None:
    layer = rnnkit.LSTM(3, 5, num_layers=2, proj_size=2).eval()  # auto backend for forward
    x = torch.randn(7, 3, 3)
    y_ref, (h_ref, c_ref) = layer(x)
    y, (h, c) = _stream(layer, x)
    assert y.shape == (7, 3, 2) and h.shape == (2, 3, 2) and c.shape == (2, 3, 5)
    assert_close(y, y_ref, torch.float32)
    assert_close(h, h_ref, torch.float32)
    assert_close(c, c_ref, torch.float32)


def test_step_zoneout_in_eval_uses_the_expectation() -> None:
    layer = rnnkit.LSTM(3, 4, num_layers=2, zoneout_hidden=0.3, zoneout_cell=0.2, dropout=0.5,
                        dtype=torch.float64).eval()
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    y_ref, s_ref = layer(x)
    y, s = _stream(layer, x)
    assert_close(y, y_ref, torch.float64)
    for a, b in zip(s, s_ref):
        assert_close(a, b, torch.float64)


def test_step_gradients_match_forward_in_train_mode_without_dropout() -> None:
    layer = rnnkit.GRU(3, 4, num_layers=2, dtype=torch.float64)  # train(), nothing stochastic
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    y_ref, _ = layer(x)
    g_ref = torch.autograd.grad(y_ref.square().sum(), list(layer.parameters()))
    y, _ = _stream(layer, x)
    g = torch.autograd.grad(y.square().sum(), list(layer.parameters()))
    for a, b in zip(g, g_ref):
        assert_close(a, b, torch.float64)


def test_char_lm_generation_by_step_equals_full_forward() -> None:
    """The generator's loop: embed one token, step the recurrent stack, apply the head."""
    model = RecurrentLM(LMConfig(vocab_size=11, cell="lstm", hidden_size=8, num_layers=2, embedding_size=5)).eval()
    tokens = torch.randint(0, 11, (9, 2))
    logits_ref, _ = model(tokens)
    state = model.rnn.initial_state(2)
    for t in range(9):
        y, state = model.rnn.step(model.embed(tokens[t]), state)
        assert_close(model.head(y), logits_ref[t], torch.float32)


def test_step_rejects_bidirectional() -> None:
    layer = rnnkit.LSTM(3, 4, bidirectional=True)
    with pytest.raises(ValueError, match="unidirectional"):
        layer.step(torch.randn(2, 3), None)


def test_step_rejects_dropout_in_training() -> None:
    layer = rnnkit.GRU(3, 4, num_layers=2, dropout=0.2)
    with pytest.raises(ValueError, match=r"dropout.*\.eval\(\)"):
        layer.step(torch.randn(2, 3))
    layer.eval().step(torch.randn(2, 3))  # fine at inference


def test_step_bad_shapes_name_what_was_expected() -> None:
    layer = rnnkit.LSTM(3, 4, num_layers=2)
    with pytest.raises(ValueError, match=r"shape \(batch, 3\).*got \(5, 2, 3\)"):
        layer.step(torch.randn(5, 2, 3))
    with pytest.raises(ValueError, match=r"initial state h must have shape \(2, 2, 4\)"):
        layer.step(torch.randn(2, 3), (torch.zeros(1, 2, 4), torch.zeros(1, 2, 4)))
    with pytest.raises(TypeError, match="dtype"):
        layer.step(torch.randn(2, 3, dtype=torch.float64))


def test_step_on_a_batch_first_stack_as_the_forecaster_decodes() -> None:
    """Forecaster-style decoding: a batch_first stack fed one step at a time from an encoder's state."""
    encoder = rnnkit.GRU(3, 6, num_layers=2, batch_first=True).eval()
    decoder = rnnkit.GRU(3, 6, num_layers=2, batch_first=True).eval()
    history, future = torch.randn(4, 10, 3), torch.randn(4, 5, 3)
    _, state = encoder(history)
    y_ref, s_ref = decoder(future, state)  # (B, T, H)
    ys = []
    for t in range(future.shape[1]):
        y, state = decoder.step(future[:, t], state)
        ys.append(y)
    assert_close(torch.stack(ys, 1), y_ref, torch.float32)
    assert_close(state, s_ref, torch.float32)


def _op_names(fn) -> set:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return {event.name for event in prof.events()}


@pytest.mark.parametrize("mode,op", [("LSTM", "rnnkit::lstm_cell_step"), ("GRU", "rnnkit::gru_cell_step")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_inference_step_runs_compiled_kernel_and_equals_forward(mode: str, op: str, dtype: torch.dtype) -> None:
    """Under torch.no_grad a torch-shaped LSTM/GRU stack steps through rnnkit's one-step kernel (one call per
    layer, csrc/step.cpp) and still gives forward()'s numbers, two layers, a batch of 3, a given start state."""
    from rnnkit.backends import extension

    if extension.load() is not None:
        pytest.skip("fused kernels unavailable")
    cfg = LayerConfig(mode=mode, input_size=3, hidden_size=5, num_layers=2, dtype=dtype)
    layer = cfg.build("reference").eval()
    x = torch.randn(6, 3, 3, dtype=dtype)
    start = tuple(0.5 * torch.randn(2, 3, 5, dtype=dtype) for _ in cfg.state_sizes)
    start = start if len(start) > 1 else start[0]
    with torch.no_grad():
        y_ref, s_ref = layer(x, start)
        y, s = _stream(layer, x, start)
        assert op in _op_names(lambda: layer.step(x[0], start))
    assert_close(y, y_ref, dtype)
    for a, b in zip(_as_tuple(s), _as_tuple(s_ref)):
        assert_close(a, b, dtype)


def test_inference_step_mismatches_are_named_by_the_checks() -> None:
    """The unchecked inference path hands every operand mismatch to step's own checks (no RuntimeError from
    the kernel reaches the user): wrong width, dtype, state shape, a state that is not a tuple."""
    layer = rnnkit.LSTM(3, 4, num_layers=2).eval()
    state = layer.initial_state(2)
    with torch.no_grad():
        with pytest.raises(ValueError, match=r"shape \(batch, 3\)"):
            layer.step(torch.randn(2, 5), state)
        with pytest.raises(TypeError, match="dtype"):
            layer.step(torch.randn(2, 3, dtype=torch.float64), state)
        with pytest.raises(ValueError, match=r"initial state h must have shape \(2, 2, 4\)"):
            layer.step(torch.randn(2, 3), (torch.zeros(2, 3, 4), torch.zeros(2, 3, 4)))
        with pytest.raises(TypeError, match="tuple of 2"):
            layer.step(torch.randn(2, 3), state[0])


def test_lm_step_and_greedy_sampling_equal_full_forward() -> None:
    """RecurrentLM.step (what `sample` runs per token) gives forward()'s logits, and greedy sampling (top_k=1)
    picks the argmax of a full forward over everything so far at every token."""
    from rnnkit.models.char_lm import sample

    torch.manual_seed(3)
    model = RecurrentLM(LMConfig(vocab_size=11, cell="gru", hidden_size=8, num_layers=2, embedding_size=5)).eval()
    tokens = torch.randint(0, 11, (7, 2))
    with torch.no_grad():
        logits_ref, _ = model(tokens)
        state = None
        for t in range(7):
            logits, state = model.step(tokens[t], state)
            assert_close(logits, logits_ref[t], torch.float32)
    prime = [1, 2, 3]
    got = list(sample(model, prime, 6, top_k=1))
    with torch.no_grad():
        for i, token in enumerate(got):
            full, _ = model(torch.tensor(prime + got[:i]).view(-1, 1))
            assert token == int(full[-1, 0].argmax())
