"""rnnkit.RNN/LSTM/GRU against torch.nn.RNN/LSTM/GRU: same weights, same numbers.

Every comparison covers outputs, final states, every parameter gradient and the
input (and initial state) gradients: float64 to 1e-10, float32 to 1e-5.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from helpers import (LayerConfig, as_state, assert_close, assert_results_close, compare_with_torch, forward_and_grads,
                     make_batch, run_by_hand, state_parts)

MODES = ["RNN_TANH", "RNN_RELU", "LSTM", "GRU"]
F64, F32 = torch.float64, torch.float32


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("num_layers,bidirectional,batch_first",
                         [(n, d, bf) for n, d, bf in itertools.product([1, 2, 3], [False, True], [False, True])])
def test_layers_directions_layouts(mode: str, num_layers: int, bidirectional: bool, batch_first: bool) -> None:
    cfg = LayerConfig(mode, num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first)
    compare_with_torch(cfg, with_state=num_layers != 2)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_bias_and_dtype(mode: str, dtype: torch.dtype, bias: bool) -> None:
    cfg = LayerConfig(mode, num_layers=2, bidirectional=True, bias=bias, dtype=dtype)
    reference, ours = compare_with_torch(cfg, with_state=True)
    assert {n for n, _ in ours.state_dict().items()} == set(reference.state_dict())


@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])
def test_lstm_proj_size(num_layers: int, bidirectional: bool, dtype: torch.dtype) -> None:
    cfg = LayerConfig("LSTM", hidden_size=5, proj_size=2, num_layers=num_layers, bidirectional=bidirectional,
                      dtype=dtype)
    _, ours = compare_with_torch(cfg, with_state=True)
    compare_with_torch(cfg, lengths=[5, 1, 3])
    out, (h, c) = ours(torch.randn(4, 3, 3, dtype=dtype))
    D = 2 if bidirectional else 1
    assert out.shape == (4, 3, D * 2) and h.shape == (num_layers * D, 3, 2) and c.shape == (num_layers * D, 3, 5)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("with_state", [False, True], ids=["no_h0", "h0"])
def test_unbatched(mode: str, with_state: bool) -> None:
    cfg = LayerConfig(mode, num_layers=2, bidirectional=True, batch_first=True)  # batch_first is ignored
    compare_with_torch(cfg, batch=None, with_state=with_state)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", ["sorted_enforced", "sorted", "unsorted"])
@pytest.mark.parametrize("with_state", [False, True], ids=["no_h0", "h0"])
def test_packed_sequence(mode: str, case: str, with_state: bool) -> None:
    lengths = [5, 4, 2, 2] if case.startswith("sorted") else [2, 5, 1, 4]
    for cfg in (LayerConfig(mode, num_layers=2, bidirectional=True),
                LayerConfig(mode, num_layers=1, batch_first=True, dtype=F32)):
        compare_with_torch(cfg, batch=4, lengths=lengths, packed=True, enforce_sorted=case == "sorted_enforced",
                           with_state=with_state)


def test_packed_lstm_proj_batch_first() -> None:
    cfg = LayerConfig("LSTM", hidden_size=5, proj_size=3, num_layers=2, bidirectional=True, batch_first=True)
    compare_with_torch(cfg, batch=4, lengths=[2, 5, 1, 4], packed=True, with_state=True)


def test_packed_output_is_packed_like_torch() -> None:
    reference, ours = LayerConfig("GRU", num_layers=2, bidirectional=True).build_pair()
    x = torch.randn(5, 3, 3, dtype=F64)
    packed = pack_padded_sequence(x, torch.tensor([3, 5, 2]), enforce_sorted=False)
    out, h = ours(packed)
    ref, ref_h = reference(packed)
    assert torch.equal(out.batch_sizes, ref.batch_sizes)
    assert torch.equal(out.sorted_indices, ref.sorted_indices)
    assert torch.equal(out.unsorted_indices, ref.unsorted_indices)
    assert_close(out.data, ref.data, "packed data")
    assert_close(h, ref_h, "h_n")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("num_layers,bidirectional,batch_first", [(1, False, False), (2, True, False),
                                                                  (3, True, True), (2, False, True)])
def test_lengths_against_torch_packed(mode: str, num_layers: int, bidirectional: bool, batch_first: bool) -> None:
    """lengths= on padded input (garbage in the padding) == torch on a PackedSequence of the same data."""
    cfg = LayerConfig(mode, num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first)
    compare_with_torch(cfg, batch=4, lengths=[2, 5, 1, 4])
    compare_with_torch(cfg, batch=4, lengths=[2, 5, 1, 4], with_state=True)


@pytest.mark.parametrize("mode", MODES)
def test_left_padding_and_mask_against_torch(mode: str) -> None:
    """Left padding (valid steps last) and mask= give torch's packed results, shifted to the right end."""
    cfg = LayerConfig(mode, num_layers=2, bidirectional=True, batch_first=True)
    reference, ours = cfg.build_pair()
    T, lengths = 5, torch.tensor([2, 5, 1, 4])
    right = make_batch(cfg, T, 4, lengths=lengths.tolist(), with_state=True, seed=3)
    left = make_batch(cfg, T, 4, lengths=lengths.tolist(), with_state=True, seed=3, padding_side="left")
    # the same valid data, moved to the right end of each row
    x_right = right.x.clone()
    x_left = left.x.clone()
    for b, n in enumerate(lengths.tolist()):
        x_left[b, T - n:] = x_right[b, :n]
    h0 = as_state(right.state)
    packed = pack_padded_sequence(x_right, lengths, batch_first=True, enforce_sorted=False)
    ref_out, ref_state = reference(packed, h0)
    ref_out, _ = pad_packed_sequence(ref_out, batch_first=True, total_length=T)
    out, state = ours(x_left, h0, lengths=lengths, padding_side="left")
    mask = torch.arange(T)[None, :] >= (T - lengths)[:, None]
    out_m, state_m = ours(x_left, h0, mask=mask, padding_side="left")
    for b, n in enumerate(lengths.tolist()):
        assert_close(out[b, T - n:], ref_out[b, :n], f"row {b} valid outputs")
        assert not out[b, : T - n].any(), "left padding outputs must be zero"
    assert torch.equal(out, out_m)
    for a, e, m in zip(state_parts(state), state_parts(ref_state), state_parts(state_m)):
        assert_close(a, e, "final state")
        assert torch.equal(a, m)
    # right-padding mask == lengths
    mask_r = torch.arange(T)[None, :] < lengths[:, None]
    assert torch.equal(ours(right.x, mask=mask_r)[0], ours(right.x, lengths=lengths)[0])


@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN_TANH"])
def test_left_padding_gradients(mode: str) -> None:
    """Gradients with padding_side='left' equal those of the same data right-padded."""
    cfg = LayerConfig(mode, num_layers=2, bidirectional=True)
    layer = cfg.build()
    T, lengths = 5, [2, 5, 3]
    data = make_batch(cfg, T, 3, lengths=lengths, with_state=True, seed=4)
    x_left = torch.randn_like(data.x) * 100  # garbage padding on the left
    for b, n in enumerate(lengths):
        x_left[T - n:, b] = data.x[:n, b]
    w_out = torch.randn(T, 3, 2 * cfg.output_size, dtype=F64)
    results = []
    for side, x in (("right", data.x), ("left", x_left)):
        x = x.clone().requires_grad_(True)
        state = tuple(s.clone().requires_grad_(True) for s in data.state)
        layer.zero_grad()
        out, final = layer(x, as_state(state), lengths=torch.tensor(lengths), padding_side=side)
        if side == "left":  # the valid outputs are the last n of each row: move them to the front
            out = torch.stack([torch.cat([out[T - n:, b], out[: T - n, b]]) for b, n in enumerate(lengths)], 1)
        loss = (out * w_out).sum() + sum((f * f).sum() for f in state_parts(final))
        loss.backward()
        grad_x = torch.stack([torch.cat([x.grad[T - n:, b], x.grad[: T - n, b]]) if side == "left"
                              else x.grad[:, b] for b, n in enumerate(lengths)], 1)
        results.append([out.detach(), grad_x] + [s.grad for s in state] + [p.grad.clone() for p in layer.parameters()])
    for k, (r, lres) in enumerate(zip(*results)):
        assert_close(lres, r, f"entry {k}")


@pytest.mark.parametrize("mode", MODES + ["PeepholeLSTM", "SRU", "LayerNormLSTM", "LayerNormGRU", "MinGRU"])
def test_padded_outputs_are_exactly_zero(mode: str) -> None:
    cfg = LayerConfig(mode, num_layers=2, bidirectional=True, batch_first=True)
    layer = cfg.build()
    data = make_batch(cfg, 6, 3, lengths=[6, 2, 4], seed=5)
    out, _ = layer(data.x, lengths=data.lengths)
    assert out.shape == (3, 6, 2 * cfg.output_size)
    assert not out[1, 2:].any() and not out[2, 4:].any()
    assert (out[1, :2] != 0).any(-1).all() and (out[0] != 0).any(-1).all()  # every valid step has output


@pytest.mark.parametrize("mode", MODES + ["SRU", "MinGRU"])
def test_reverse_direction_starts_at_each_rows_last_valid_step(mode: str) -> None:
    cfg = LayerConfig(mode, bidirectional=True)
    layer = cfg.build()
    data = make_batch(cfg, 6, 3, lengths=[6, 2, 4], seed=6)
    out, _ = layer(data.x, lengths=data.lengths)
    O = cfg.output_size
    reverse_cell = layer.cell_at(0, 1)
    for b, n in enumerate([6, 2, 4]):
        # the reverse direction's first step reads x[n-1] from a zero state ...
        y_first, _ = reverse_cell(data.x[n - 1, b: b + 1])
        assert_close(out[n - 1, b: b + 1, O:], y_first, f"row {b} reverse at its last valid step")
        # ... and its last step (output at t = 0) has seen the whole valid prefix, not the garbage
        s = None
        for t in reversed(range(n)):
            y, s = reverse_cell(data.x[t, b: b + 1], s)
        assert_close(out[0, b: b + 1, O:], y, f"row {b} reverse at t=0")
    full_out, full_state = run_by_hand(layer, data.x, None, [6, 2, 4])
    assert_close(out, full_out, "bidirectional by hand")


@pytest.mark.parametrize("mode", MODES)
def test_rnnkit_state_dict_loads_into_torch(mode: str) -> None:
    for cfg in (LayerConfig(mode, num_layers=3, bidirectional=True),
                LayerConfig(mode, num_layers=2, bias=False, proj_size=2 if mode == "LSTM" else 0)):
        ours = cfg.build(seed=11)
        reference = cfg.build_torch(seed=12)
        result = reference.load_state_dict(ours.state_dict())
        assert not result.missing_keys and not result.unexpected_keys
        assert list(ours.state_dict()) == list(reference.state_dict())  # same names, same order
        data = make_batch(cfg, 4, 2, with_state=True, seed=7)
        assert_results_close(forward_and_grads(ours, data), forward_and_grads(reference, data), f"{cfg}")


@pytest.mark.parametrize("mode", MODES)
def test_eval_inter_layer_dropout_and_flat_attributes(mode: str) -> None:
    cfg = LayerConfig(mode, num_layers=3, bidirectional=True, dropout=0.4)
    reference, ours = cfg.build_pair()
    data = make_batch(cfg, 4, 2, with_state=True, seed=8)
    assert_results_close(forward_and_grads(ours, data, train=False),
                         forward_and_grads(reference, data, train=False), "eval with dropout")
    # torch-style attribute access and all_weights
    assert torch.equal(ours.weight_hh_l2_reverse, reference.weight_hh_l2_reverse)
    assert [[tuple(p.shape) for p in w] for w in ours.all_weights] == \
        [[tuple(p.shape) for p in w] for w in reference.all_weights]
    ours.flatten_parameters()
    assert ours.mode == reference.mode
    assert (ours.input_size, ours.hidden_size, ours.num_layers) == (reference.input_size, reference.hidden_size,
                                                                    reference.num_layers)


@pytest.mark.parametrize("mode", MODES)
def test_torch_layer_attributes_and_reset_parameters(mode: str) -> None:
    """The public attributes and methods of torch.nn.RNNBase that user code reaches for."""
    cfg = LayerConfig(mode, num_layers=2, bidirectional=True, batch_first=True, dropout=0.25)
    reference, ours = cfg.build_pair()
    for name in ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout", "bidirectional",
                 "proj_size", "mode"):
        assert getattr(ours, name) == getattr(reference, name), name
    before = {k: v.clone() for k, v in ours.state_dict().items()}
    ours.reset_parameters()
    after = ours.state_dict()
    bound = 1 / cfg.hidden_size ** 0.5
    for k in before:
        assert not torch.equal(before[k], after[k]), f"{k} was not re-drawn"
        assert float(after[k].abs().max()) <= bound


def test_build_on_meta_then_load_torch_weights_with_assign() -> None:
    reference = torch.nn.LSTM(3, 4, num_layers=2, dtype=F64)
    with torch.device("meta"):
        ours = LayerConfig("LSTM", num_layers=2).build()
    assert ours.weight_hh_l1.is_meta
    result = ours.load_state_dict(reference.state_dict(), assign=True)
    assert not result.missing_keys and not result.unexpected_keys
    x = torch.randn(5, 2, 3, dtype=F64)
    assert_close(ours(x)[0], reference(x)[0], "outputs after assign")


def test_same_init_distribution_and_shapes_as_torch() -> None:
    """Parameter shapes match torch's, and the default init is U(-1/sqrt(H), 1/sqrt(H)) like torch's."""
    for mode in MODES:
        cfg = LayerConfig(mode, input_size=7, hidden_size=16, num_layers=2, bidirectional=True)
        ours, ref = cfg.build(), cfg.build_torch()
        shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
        assert shapes == {k: tuple(v.shape) for k, v in ref.state_dict().items()}
        bound = 1 / 16 ** 0.5
        for v in ours.state_dict().values():
            assert float(v.abs().max()) <= bound and float(v.std()) > bound / 4


def test_torch_modules_agree_on_a_training_step() -> None:
    """One SGD step on the same data leaves the same weights in both (gradients agree end to end)."""
    cfg = LayerConfig("LSTM", num_layers=2, bidirectional=True, batch_first=True)
    reference, ours = cfg.build_pair()
    x = torch.randn(3, 5, 3, dtype=F64)
    for module in (reference, ours):
        opt = torch.optim.SGD(module.parameters(), lr=0.5)
        out, (h, c) = module(x)
        (out.pow(2).mean() + h.sum()).backward()
        opt.step()
    for (k, a), (k2, b) in zip(ours.state_dict().items(), reference.state_dict().items()):
        assert k == k2
        assert_close(a, b, k)
