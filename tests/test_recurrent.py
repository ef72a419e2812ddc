"""Recurrent: any cell over a sequence — stacking, directions, lengths, module plumbing.

Numbers against torch.nn are in test_parity_torch.py, gradchecks and dropout in
test_regularisation.py; here: the layer against its cells stepped by hand, for
every layer class, and what a module must survive (deepcopy, dtype moves,
state_dict round trips, nesting, user-defined cells, factories).
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor, nn

import rnnkit
from helpers import (ALL_MODES, LayerConfig, as_state, assert_close, assert_results_close, forward_and_grads,
                     make_batch, run_by_hand, state_parts)

F64 = torch.float64


@pytest.mark.parametrize("mode", ALL_MODES)
@pytest.mark.parametrize("with_state", [False, True], ids=["zeros", "h0"])
def test_every_layer_equals_its_cells_stepped_by_hand(mode: str, with_state: bool) -> None:
    """Stacking (layer l reads both directions of l−1), reverse direction per row, lengths, initial state."""
    cfg = LayerConfig(mode, num_layers=2, bidirectional=True)
    layer = cfg.build()
    data = make_batch(cfg, 5, 3, lengths=[5, 2, 4], with_state=with_state, seed=1)
    out, final = layer(data.x, as_state(data.state), lengths=data.lengths)
    out_ref, final_ref = run_by_hand(layer, data.x, data.state, [5, 2, 4])
    assert_close(out, out_ref, f"{mode} outputs")
    for k, (a, b) in enumerate(zip(state_parts(final), final_ref)):
        assert_close(a, b, f"{mode} final state {k}")
    # and without lengths (every row full)
    data = make_batch(cfg, 4, 2, with_state=with_state, seed=2)
    out, final = layer(data.x, as_state(data.state))
    assert_close(out, run_by_hand(layer, data.x, data.state)[0], f"{mode} full outputs")


@pytest.mark.parametrize("mode", ALL_MODES)
def test_shapes_like_torch(mode: str) -> None:
    """(T, B, D·O) outputs, (L·D, B, S) states, batch_first and unbatched layouts."""
    cfg = LayerConfig(mode, input_size=3, hidden_size=4, num_layers=3, bidirectional=True)
    layer = cfg.build()
    LD = 6
    out, final = layer(torch.randn(7, 2, 3, dtype=F64))
    parts = state_parts(final)
    assert out.shape == (7, 2, 2 * cfg.output_size)
    assert [tuple(p.shape) for p in parts] == [(LD, 2, s) for s in cfg.state_sizes]
    out_u, final_u = layer(torch.randn(7, 3, dtype=F64))
    assert out_u.shape == (7, 2 * cfg.output_size)
    assert [tuple(p.shape) for p in state_parts(final_u)] == \
        [(LD, s) for s in cfg.state_sizes]
    bf = LayerConfig(mode, num_layers=3, bidirectional=True, batch_first=True).build()
    bf.load_state_dict(layer.state_dict())
    x = torch.randn(7, 2, 3, dtype=F64)
    out_bf, final_bf = bf(x.transpose(0, 1))
    assert torch.equal(out_bf.transpose(0, 1), layer(x)[0])
    assert all(torch.equal(a, b) for a, b in zip(state_parts(final_bf), state_parts(layer(x)[1])))
    assert layer.last_backend == "reference"


def expected_parameter_count(mode: str, I: int, H: int, bias: bool = True) -> int:
    """Parameters of one cell, from the shapes its docstring lists."""
    b = 1 if bias else 0
    if mode in ("RNN_TANH", "RNN_RELU"):
        return H * I + H * H + b * 2 * H
    if mode in ("LSTM", "PeepholeLSTM"):
        return 4 * H * I + 4 * H * H + b * 8 * H + (3 * H if mode == "PeepholeLSTM" else 0)
    if mode in ("GRU", "GRU_BEFORE"):
        return 3 * H * I + 3 * H * H + b * 6 * H
    if mode == "SRU":
        return (3 if I == H else 4) * H * I + 2 * H + b * 2 * H
    if mode == "LayerNormLSTM":
        return 4 * H * I + 4 * H * H + b * 4 * H + 4 * H + 4 * H + H + H
    if mode == "LayerNormGRU":
        return 3 * H * I + 3 * H * H + b * 6 * H + 3 * H + 3 * H
    if mode == "MinGRU":
        return 2 * H * I + b * 2 * H
    if mode == "QRNN":  # the default window 2, fo-pooling: Z, F, O from a width-2 convolution
        return 3 * H * I * 2 + b * 3 * H
    raise KeyError(mode)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("mode", ALL_MODES)
def test_parameter_count(mode: str, bias: bool) -> None:
    """Layer 0 reads I features, layer 1 reads D·H; each direction has its own cell."""
    layer = LayerConfig(mode, input_size=3, hidden_size=4, num_layers=2, bidirectional=True, bias=bias).build()
    expected = 2 * expected_parameter_count(mode, 3, 4, bias) + 2 * expected_parameter_count(mode, 8, 4, bias)
    assert sum(p.numel() for p in layer.parameters()) == expected


@pytest.mark.parametrize("mode", ALL_MODES)
def test_a_few_training_steps_reduce_the_loss(mode: str) -> None:
    """Every layer learns: Adam on a tiny regression (predict the running mean of the input) lowers the loss."""
    cfg = LayerConfig(mode, input_size=2, hidden_size=8, num_layers=2, batch_first=True)
    layer = cfg.build()
    head = torch.nn.Linear(8, 2, dtype=F64)
    x = torch.randn(16, 6, 2, dtype=F64)
    target = x.cumsum(1) / torch.arange(1, 7, dtype=F64)[None, :, None]
    opt = torch.optim.Adam(list(layer.parameters()) + list(head.parameters()), lr=0.03)
    losses = []
    for _ in range(25):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(head(layer(x)[0]), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


@pytest.mark.parametrize("mode", ALL_MODES)
def test_unbatched_equals_batch_of_one(mode: str) -> None:
    cfg = LayerConfig(mode, num_layers=2, bidirectional=True)
    layer = cfg.build()
    data = make_batch(cfg, 4, 1, with_state=True, seed=3)
    out, final = layer(data.x, as_state(data.state))
    out_u, final_u = layer(data.x[:, 0], as_state(tuple(s[:, 0] for s in data.state)))
    assert torch.equal(out_u, out[:, 0])
    for a, b in zip(state_parts(final_u), state_parts(final)):
        assert torch.equal(a, b[:, 0])


@pytest.mark.parametrize("mode", ALL_MODES)
def test_lengths_full_equals_no_lengths_and_tensor_or_list(mode: str) -> None:
    cfg = LayerConfig(mode, num_layers=2, bidirectional=True)
    layer = cfg.build()
    x = torch.randn(4, 3, 3, dtype=F64)
    assert torch.equal(layer(x, lengths=[4, 4, 4])[0], layer(x)[0])
    assert torch.equal(layer(x, lengths=[4, 2, 3])[0], layer(x, lengths=torch.tensor([4, 2, 3]))[0])
    assert torch.equal(layer(x, lengths=[4, 2, 3])[0], layer(x, lengths=torch.tensor([4, 2, 3], dtype=torch.int32))[0])
    # a row computed alone equals the row in the batch: rows never mix
    out = layer(x, lengths=[4, 2, 3])[0]
    assert_close(out[:2, 1], layer(x[:2, 1:2])[0][:, 0], "row 1 alone")


@pytest.mark.parametrize("mode", ALL_MODES)
def test_state_dict_round_trip_every_layer(mode: str) -> None:
    cfg = LayerConfig(mode, num_layers=2, bidirectional=True)
    a, b = cfg.build(seed=1), cfg.build(seed=2)
    x = torch.randn(4, 2, 3, dtype=F64)
    assert not torch.equal(a(x)[0], b(x)[0])
    sd = a.state_dict()
    assert all(k.endswith(("_l0", "_l1", "_l0_reverse", "_l1_reverse")) for k in sd), list(sd)
    assert not any(k.startswith("cells.") for k in sd)
    result = b.load_state_dict(sd)
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.equal(a(x)[0], b(x)[0])
    assert list(b.state_dict()) == list(sd)
    # the parameters are the cells' own, reachable by torch's names
    assert a.weight_ih_l1_reverse is a.cell_at(1, 1).weight_ih


@pytest.mark.parametrize("mode", ALL_MODES)
def test_deepcopy_to_double_and_back(mode: str) -> None:
    cfg = LayerConfig(mode, num_layers=2, bidirectional=True, dtype=torch.float32)
    layer = cfg.build()
    x32 = torch.randn(4, 2, 3)
    clone = copy.deepcopy(layer)
    assert torch.equal(clone(x32)[0], layer(x32)[0])
    with torch.no_grad():
        next(clone.parameters()).add_(1.0)  # the copy owns its parameters
    assert not torch.equal(clone(x32)[0], layer(x32)[0])
    assert list(clone.state_dict()) == list(layer.state_dict())  # hooks survive deepcopy

    as64 = copy.deepcopy(layer).to(F64)
    out64, _ = as64(x32.double())
    assert out64.dtype == F64
    assert_close(out64.float(), layer(x32)[0], "float32 vs float64 run", tol=1e-5)
    dbl = copy.deepcopy(layer).double()
    assert torch.equal(dbl(x32.double())[0], out64)
    init = dbl.initial_state(2)
    assert all(p.dtype == F64 for p in state_parts(init))
    back = dbl.float()
    assert back(x32)[0].dtype == torch.float32


def test_pickle_round_trip() -> None:
    """torch.save of a whole module (not rnnkit's checkpoint format, but users do it)."""
    import io

    layer = LayerConfig("LSTM", num_layers=2, bidirectional=True).build()
    buf = io.BytesIO()
    torch.save(layer, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    x = torch.randn(4, 2, 3, dtype=F64)
    assert torch.equal(loaded(x)[0], layer(x)[0])
    assert list(loaded.state_dict()) == list(layer.state_dict())


@pytest.mark.parametrize("mode", ["LSTM", "GRU", "SRU", "LayerNormLSTM"])
@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_every_row_shorter_than_the_input(mode: str, padding_side: str) -> None:
    """max(lengths) < T: the trailing all-padding steps are zero and change nothing."""
    cfg = LayerConfig(mode, num_layers=2, bidirectional=True, batch_first=True)
    layer = cfg.build()
    T, lengths = 6, [3, 1, 2]
    short = torch.randn(3, 3, 3, dtype=F64)
    x = torch.randn(3, T, 3, dtype=F64) * 100  # garbage everywhere but the valid steps
    for b, n in enumerate(lengths):
        if padding_side == "right":
            x[b, :n] = short[b, :n]
        else:
            x[b, T - n:] = short[b, :n]
    out, final = layer(x, lengths=lengths, padding_side=padding_side)
    ref, ref_final = layer(short, lengths=lengths)
    for b, n in enumerate(lengths):
        valid = out[b, :n] if padding_side == "right" else out[b, T - n:]
        assert_close(valid, ref[b, :n], f"row {b}")
        assert int((out[b] != 0).any(-1).sum()) == n
    for a, e in zip(state_parts(final), state_parts(ref_final)):
        assert_close(a, e, "final state")


def test_nested_module_state_dict_and_recurrent_api() -> None:
    """A model holding layers: prefixed torch names, round trip, load into a torch.nn twin."""

    class Model(nn.Module):
        def __init__(self, lib) -> None:
            super().__init__()
            self.embed = nn.Linear(3, 3, dtype=F64)
            self.rnn = lib.LSTM(3, 4, num_layers=2, bidirectional=True, dtype=F64)

    ours, theirs = Model(rnnkit), Model(nn)
    keys = list(ours.state_dict())
    assert "rnn.weight_hh_l1_reverse" in keys and not any("cells" in k for k in keys)
    assert keys == list(theirs.state_dict())
    theirs.load_state_dict(ours.state_dict())
    fresh = Model(rnnkit)
    fresh.load_state_dict(theirs.state_dict())
    x = torch.randn(5, 2, 3, dtype=F64)
    assert_close(fresh.rnn(fresh.embed(x))[0], theirs.rnn(theirs.embed(x))[0], "nested")


def test_cell_and_factory_give_the_same_layer() -> None:
    torch.manual_seed(5)
    by_cell = rnnkit.Recurrent(rnnkit.GRUCell(3, 4, dtype=F64), num_layers=1, bidirectional=True)
    by_factory = rnnkit.Recurrent(lambda size: rnnkit.GRUCell(size, 4, dtype=F64), num_layers=1,
                                  bidirectional=True, input_size=3)
    by_factory.load_state_dict(by_cell.state_dict())
    x = torch.randn(5, 2, 3, dtype=F64)
    assert torch.equal(by_cell(x)[0], by_factory(x)[0])
    # a factory builds layer l > 0 with D·O inputs
    stacked = rnnkit.Recurrent(lambda size: rnnkit.LSTMCell(size, 4, proj_size=2, dtype=F64), num_layers=3,
                               bidirectional=True, input_size=3)
    assert [c.input_size for c in stacked.cells] == [3, 3, 4, 4, 4, 4]
    assert stacked(x)[0].shape == (5, 2, 4)
    # a cell is reused for layer 0 only; other layers and directions get fresh parameters
    cell = rnnkit.ElmanCell(4, 4, dtype=F64)
    deep = rnnkit.Recurrent(cell, num_layers=2)
    assert deep.cells[0] is cell and deep.cells[1] is not cell
    assert not torch.equal(deep.cells[1].weight_hh, cell.weight_hh)


class ForwardOnlyCell(rnnkit.RecurrentCell):
    """A user cell that only writes forward(x, state) (STYLE.md's protocol): h' = tanh(W x + U h) ⊙ s."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.input_size, self.hidden_size, self.output_size = input_size, hidden_size, hidden_size
        self.state_sizes = (hidden_size,)
        self.W = nn.Parameter(torch.randn(hidden_size, input_size, dtype=F64) * 0.5)
        self.U = nn.Parameter(torch.randn(hidden_size, hidden_size, dtype=F64) * 0.5)
        self.scale = nn.Parameter(torch.ones(hidden_size, dtype=F64))

    def forward(self, x: Tensor, state=None):
        if state is None:
            state = self.initial_state(x.shape[0], dtype=x.dtype)
        h = torch.tanh(x @ self.W.t() + state @ self.U.t()) * self.scale
        return h, h


class ProjectStepCell(ForwardOnlyCell):
    """The same math split as project/step, step without the optional mask argument."""

    def project(self, x: Tensor) -> Tensor:
        return x @ self.W.t()

    def step(self, u: Tensor, state: Tensor):
        h = torch.tanh(u + state @ self.U.t()) * self.scale
        return h, h

    forward = rnnkit.RecurrentCell.forward


@pytest.mark.parametrize("cell_class", [ForwardOnlyCell, ProjectStepCell])
def test_user_defined_cell(cell_class) -> None:
    torch.manual_seed(7)
    cell = cell_class(3, 4)
    layer = rnnkit.Recurrent(cell, num_layers=1, bidirectional=True)
    x = torch.randn(5, 2, 3, dtype=F64)
    out, h = layer(x, lengths=[5, 3])
    out_ref, (h_ref,) = run_by_hand(layer, x, None, [5, 3])
    assert_close(out, out_ref, "user cell outputs")
    assert_close(h, h_ref, "user cell state")
    assert {"W_l0", "U_l0", "scale_l0", "W_l0_reverse"} <= set(layer.state_dict())
    # stacked through a factory, with gradients reaching the user's parameters
    deep = rnnkit.Recurrent(lambda size: cell_class(size, 4), num_layers=2, input_size=3)
    deep(x)[0].sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in deep.parameters())
    assert deep.last_backend == "reference"


def test_user_cell_must_subclass_recurrent_cell() -> None:
    class Plain(nn.Module):
        def forward(self, x, state):
            return x, x

    with pytest.raises(TypeError, match="RecurrentCell"):
        rnnkit.Recurrent(Plain())
    with pytest.raises(TypeError, match="factory must return a RecurrentCell"):
        rnnkit.Recurrent(lambda size: nn.Linear(size, 4), input_size=3)


def test_initial_state_and_repr() -> None:
    layer = rnnkit.LSTM(3, 5, num_layers=2, bidirectional=True, proj_size=2, dtype=F64)
    h, c = layer.initial_state(4)
    assert h.shape == (4, 4, 2) and c.shape == (4, 4, 5) and h.dtype == F64 and not h.any()
    text = repr(rnnkit.GRU(3, 4, num_layers=2, dropout=0.2, zoneout_hidden=0.1))
    assert "num_layers=2" in text and "zoneout_hidden=0.1" in text


def test_zero_initial_state_equals_none() -> None:
    for mode in ALL_MODES:
        cfg = LayerConfig(mode, num_layers=2, bidirectional=True)
        layer = cfg.build()
        x = torch.randn(3, 4, 3, dtype=F64)
        assert torch.equal(layer(x, layer.initial_state(4))[0], layer(x)[0]), mode


@pytest.mark.parametrize("mode", ALL_MODES)
def test_gradients_reach_every_parameter(mode: str) -> None:
    cfg = LayerConfig(mode, num_layers=2, bidirectional=True)
    result = forward_and_grads(cfg.build(), make_batch(cfg, 4, 3, lengths=[4, 1, 3], with_state=True))
    for key, g in result.items():
        if key.startswith("grad.") and key != "grad.input":
            assert g.abs().sum() > 0, f"{mode}: no gradient reaches {key}"
    # padded input positions get no gradient
    assert not result["grad.input"][1:, 1].any()


def test_explicit_reference_backend_equals_auto() -> None:
    for mode in ALL_MODES:
        cfg = LayerConfig(mode, num_layers=2, bidirectional=True)
        data = make_batch(cfg, 4, 3, lengths=[4, 2, 3], with_state=True)
        auto = forward_and_grads(cfg.build("auto"), data)
        ref = forward_and_grads(cfg.build("reference"), data)
        assert_results_close(auto, ref, f"{mode} auto vs reference")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("mode", ["LSTM", "GRU", "SRU", "LayerNormLSTM"])
def test_cuda_matches_cpu(mode: str) -> None:
    """The reference loop on a GPU: same numbers and gradients as on the CPU (float64)."""
    cfg = LayerConfig(mode, num_layers=2, bidirectional=True)
    cpu = cfg.build()
    gpu = cfg.build().cuda()
    gpu.load_state_dict(cpu.state_dict())
    data = make_batch(cfg, 5, 3, lengths=[5, 2, 4], with_state=True)
    results = []
    for layer, device in ((cpu, "cpu"), (gpu, "cuda")):
        x = data.x.to(device).requires_grad_(True)
        state = tuple(s.to(device).requires_grad_(True) for s in data.state)
        out, final = layer(x, as_state(state), lengths=data.lengths)  # lengths may stay on the CPU
        (out.square().sum() + sum(f.sum() for f in state_parts(final))).backward()
        results.append([out, *state_parts(final), x.grad, *[s.grad for s in state],
                        *[p.grad for p in layer.parameters()]])
    for k, (a, b) in enumerate(zip(*results)):
        assert_close(b.detach().cpu(), a.detach(), f"entry {k}")


@pytest.mark.parametrize("mode", ALL_MODES)
def test_loop_backends_give_autocast_dtypes(mode: str) -> None:
    """Under CPU autocast the reference loop (and the scan) return outputs and states in bfloat16, as torch's
    RNN modules and the fused kernels do, so a model's dtypes do not depend on the backend chosen; the state
    carries into the next call, and float64 layers are left alone."""
    x = torch.randn(5, 2, 3)
    backends = ["reference"] + (["scan"] if mode in ("MinGRU", "QRNN") else [])
    for backend in backends:
        layer = LayerConfig(mode, num_layers=2, dtype=torch.float32).build(backend)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, state = layer(x)
            assert out.dtype == torch.bfloat16 and {s.dtype for s in state_parts(state)} == {torch.bfloat16}
            again, _ = layer(x, state)
        again.float().sum().backward()
        assert all(p.grad.dtype == torch.float32 for p in layer.parameters())
    wide = LayerConfig(mode, num_layers=2).build("reference")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert wide(x.double())[0].dtype == torch.float64
