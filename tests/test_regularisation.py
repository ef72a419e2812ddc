"""Gradchecks of every layer feature, and what each regulariser must (not) do.

Dropout masks are drawn from the global RNG inside `forward`; reseeding inside
the function given to gradcheck makes them repeat across its evaluations.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import pytest
import torch
from torch import Tensor
from torch.nn.utils.rnn import pack_padded_sequence

import rnnkit
from rnnkit.errors import InputError
from helpers import ALL_MODES, LayerConfig, as_state, assert_close, make_batch, state_parts

F64 = torch.float64
DROPOUTS = ("dropout", "input_dropout", "output_dropout", "recurrent_dropout", "weight_dropout")
NO_RECURRENT_MATRIX = ("SRU", "MinGRU", "QRNN")


def layer_gradcheck(layer: rnnkit.Recurrent, x: Tensor, state: Optional[Tuple[Tensor, ...]] = None, *,
                    lengths: Optional[List[int]] = None, packed: bool = False, train: bool = False,
                    seed: int = 0) -> None:
    """float64 gradcheck of outputs and final states w.r.t. input, initial state and every parameter."""
    names = [n for n, _ in layer.named_parameters()]
    params = [p.detach().clone().requires_grad_(True) for _, p in layer.named_parameters()]
    layer.train(train)
    n_state = 0 if state is None else len(state)
    lengths_t = None if lengths is None else torch.tensor(lengths)

    def fn(x, *rest):
        st, ps = rest[:n_state], rest[n_state:]
        torch.manual_seed(seed)  # the same dropout / zoneout masks in every evaluation
        kwargs = {}
        if packed:
            inp = pack_padded_sequence(x, lengths_t, batch_first=layer.batch_first, enforce_sorted=False)
        else:
            inp = x
            if lengths_t is not None:
                kwargs["lengths"] = lengths_t
        out, final = torch.func.functional_call(layer, dict(zip(names, ps)), (inp, as_state(st) if st else None),
                                                kwargs)
        out = out.data if packed else out
        return (out,) + state_parts(final)

    inputs = (x.detach().clone().requires_grad_(True),
              *[s.detach().clone().requires_grad_(True) for s in (state or ())], *params)
    assert torch.autograd.gradcheck(fn, inputs)


def small(mode: str, **kw) -> LayerConfig:
    """Tiny sizes: gradcheck perturbs every parameter entry; stacked layers get H = 2."""
    hidden = 2 if kw.get("num_layers", 1) > 1 else 3
    return LayerConfig(mode, input_size=2, hidden_size=hidden, **kw)


GRADCHECK_CASES: Dict[str, Tuple[LayerConfig, dict]] = {
    "lstm_lengths_h0": (small("LSTM"), dict(lengths=[3, 1], with_state=True)),
    "gru_bidirectional_stacked": (small("GRU", num_layers=2, bidirectional=True), dict(with_state=True)),
    "rnn_stacked_lengths": (small("RNN_TANH", num_layers=2, bidirectional=True), dict(lengths=[2, 3])),
    "lstm_proj": (small("LSTM", proj_size=2, bidirectional=True), dict(lengths=[3, 2], with_state=True)),
    "lstm_proj_zoneout_recurrent_dropout": (small("LSTM", proj_size=1, options=(("zoneout_hidden", 0.4),
                                                                                ("recurrent_dropout", 0.4))),
                                            dict(train=True, lengths=[3, 2], with_state=True)),
    "lstm_packed": (small("LSTM", num_layers=2, bidirectional=True), dict(lengths=[2, 3], packed=True)),
    "gru_packed_batch_first": (small("GRU", batch_first=True), dict(lengths=[1, 3], packed=True,
                                                                    with_state=True)),
    "lstm_zoneout_train": (small("LSTM", options=(("zoneout_hidden", 0.4), ("zoneout_cell", 0.3))),
                           dict(lengths=[3, 2], with_state=True, train=True)),
    "gru_zoneout_eval": (small("GRU", options=(("zoneout_hidden", 0.4),)), dict(with_state=True)),
    "sru_zoneout_train": (small("SRU", options=(("zoneout_cell", 0.5),)), dict(train=True, lengths=[3, 2])),
    "lstm_recurrent_dropout": (small("LSTM", bidirectional=True, options=(("recurrent_dropout", 0.5),)),
                               dict(train=True, with_state=True)),
    "gru_before_recurrent_dropout": (small("GRU_BEFORE", options=(("recurrent_dropout", 0.5),)),
                                     dict(train=True, lengths=[2, 3])),
    "lstm_dropconnect": (small("LSTM", num_layers=2, options=(("weight_dropout", 0.5),)),
                         dict(train=True, with_state=True)),
    "gru_dropconnect": (small("GRU", options=(("weight_dropout", 0.5),)), dict(train=True, lengths=[3, 1])),
    "rnn_variational_io": (small("RNN_TANH", bidirectional=True,
                                 options=(("input_dropout", 0.5), ("output_dropout", 0.5))), dict(train=True)),
    "lstm_inter_layer_dropout": (small("LSTM", num_layers=2, dropout=0.5), dict(train=True, with_state=True)),
    "peephole_all": (small("PeepholeLSTM", bidirectional=True,
                           options=(("recurrent_dropout", 0.3), ("zoneout_cell", 0.3), ("weight_dropout", 0.3))),
                     dict(train=True, lengths=[3, 2])),
    "layernorm_lstm_lengths": (small("LayerNormLSTM", bidirectional=True), dict(lengths=[3, 2], with_state=True)),
    "layernorm_gru_dropouts": (small("LayerNormGRU", options=(("recurrent_dropout", 0.4), ("input_dropout", 0.4))),
                               dict(train=True)),
    "mingru_packed": (small("MinGRU", num_layers=2, bidirectional=True), dict(lengths=[3, 1], packed=True)),
    "sru_same_size_stacked": (LayerConfig("SRU", input_size=3, hidden_size=3, num_layers=2), dict(with_state=True)),
}


@pytest.mark.parametrize("case", sorted(GRADCHECK_CASES))
def test_gradcheck_layer_features(case: str) -> None:
    cfg, opts = GRADCHECK_CASES[case]
    data = make_batch(cfg, 3, 2, lengths=opts.get("lengths"), with_state=opts.get("with_state", False),
                      seed=hash(case) % 1000)
    layer = cfg.build()
    layer_gradcheck(layer, data.x, data.state, lengths=opts.get("lengths"), packed=opts.get("packed", False),
                    train=opts.get("train", False), seed=3)


@pytest.mark.parametrize("mode", ["LSTM", "GRU_BEFORE", "LayerNormGRU", "SRU"])
def test_gradgradcheck(mode: str) -> None:
    """Second derivatives through the loop (gradient penalties, Hessian-vector products)."""
    layer = LayerConfig(mode, input_size=2, hidden_size=2, bidirectional=True).build()
    x = torch.randn(3, 2, 2, dtype=F64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda x: layer(x, lengths=[3, 2])[0], (x,))


# ------------------------------------------------------------------ semantics
def regularised(mode: str, p: float = 0.5, **kw) -> rnnkit.Recurrent:
    options = {name: p for name in DROPOUTS}
    if mode in NO_RECURRENT_MATRIX:
        del options["recurrent_dropout"], options["weight_dropout"]
    cfg = LayerConfig(mode, num_layers=2, bidirectional=True, dropout=options.pop("dropout"),
                      options=tuple(options.items()), **kw)
    return cfg.build()


@pytest.mark.parametrize("mode", ALL_MODES)
def test_every_dropout_is_off_in_eval(mode: str) -> None:
    layer = regularised(mode)
    plain = LayerConfig(mode, num_layers=2, bidirectional=True).build()
    plain.load_state_dict(layer.state_dict())
    layer.eval()
    x = torch.randn(5, 3, 3, dtype=F64)
    out, _ = layer(x, lengths=[5, 2, 4])
    assert torch.equal(out, plain(x, lengths=[5, 2, 4])[0])
    assert torch.equal(out, layer(x, lengths=[5, 2, 4])[0])
    layer.train()
    assert not torch.equal(layer(x, lengths=[5, 2, 4])[0], out)  # and on in training


@pytest.mark.parametrize("mode", ALL_MODES)
def test_seeded_training_runs_reproduce(mode: str) -> None:
    layer = regularised(mode, p=0.3)
    layer.train()
    x = torch.randn(5, 3, 3, dtype=F64)
    results = []
    for seed in (1, 1, 2):
        torch.manual_seed(seed)
        results.append(layer(x)[0])
    assert torch.equal(results[0], results[1])
    assert not torch.equal(results[0], results[2])


def test_input_dropout_mask_is_shared_over_time() -> None:
    """A dropped input feature of a sequence is dropped at every step; kept ones are scaled by 1/(1−p)."""
    p = 0.5
    cfg = LayerConfig("GRU", input_size=8, options=(("input_dropout", p),))
    layer, plain = cfg.build(), LayerConfig("GRU", input_size=8).build()
    plain.load_state_dict(layer.state_dict())
    layer.train()
    x = torch.randn(6, 4, 8, dtype=F64, requires_grad=True)
    torch.manual_seed(3)
    out, _ = layer(x)
    out.backward(torch.randn_like(out))
    dropped = x.grad == 0  # (T, B, I)
    assert dropped.any() and not dropped.all()
    per_feature = dropped.all(dim=0)
    assert torch.equal(dropped, per_feature.expand_as(dropped)), "the mask must not change over time"
    mask = (~per_feature).to(F64) / (1 - p)  # (B, I)
    assert_close(out, plain(x * mask)[0], "train output == plain layer on masked input")


def test_output_dropout_mask_is_shared_over_time() -> None:
    p = 0.5
    cfg = LayerConfig("LSTM", hidden_size=8, bidirectional=True, options=(("output_dropout", p),))
    layer = cfg.build()
    x = torch.randn(6, 4, 3, dtype=F64)
    clean = layer.eval()(x)[0]
    torch.manual_seed(4)
    out, (h, c) = layer.train()(x)
    zero = out == 0
    assert zero.any() and not zero.all()
    assert torch.equal(zero, zero[:1].expand_as(zero)), "the mask must not change over time"
    assert_close(out, torch.where(zero, torch.zeros_like(out), clean / (1 - p)), "kept outputs scaled")
    assert_close(h, layer.eval()(x)[1][0], "the final state is not dropped")


class StepSpy:
    """Wraps cell.step to record every recurrent mask it receives."""

    def __init__(self, cell) -> None:
        self.masks: List[Optional[Tensor]] = []
        original = cell.step

        def step(u, state, recurrent_mask=None):
            self.masks.append(recurrent_mask)
            return original(u, state, recurrent_mask)

        cell.step = step


@pytest.mark.parametrize("mode", ["RNN_TANH", "LSTM", "GRU", "GRU_BEFORE", "PeepholeLSTM", "LayerNormLSTM",
                                  "LayerNormGRU"])
def test_recurrent_dropout_mask_is_variational(mode: str) -> None:
    """One mask per sequence, the same at every step; values 0 or 1/(1−p); stepping by hand with it agrees."""
    p = 0.5
    cfg = LayerConfig(mode, hidden_size=8, options=(("recurrent_dropout", p),))
    layer = cfg.build().train()
    cell = layer.cells[0]
    spy = StepSpy(cell)
    x = torch.randn(5, 4, 3, dtype=F64)
    torch.manual_seed(5)
    out, _ = layer(x)
    masks = spy.masks
    assert len(masks) == 5 and all(m is not None for m in masks)
    assert all(torch.equal(m, masks[0]) for m in masks)
    assert set(masks[0].unique().tolist()) == {0.0, 1 / (1 - p)}
    del cell.step  # back to the class's step
    state = cell.initial_state(4)
    for t in range(5):
        y, state = cell.step(cell.project(x[t]), state, masks[0])
        assert_close(out[t], y, f"step {t}")
    spy_eval = StepSpy(cell)
    layer.eval()(x)
    assert all(m is None for m in spy_eval.masks)


@pytest.mark.parametrize("mode", ["LSTM", "GRU", "LayerNormGRU"])
def test_recurrent_dropout_does_not_drop_the_carried_state(mode: str) -> None:
    """Gates saturated to 'carry': the state must come through whole even with recurrent_dropout=0.9."""
    cfg = LayerConfig(mode, hidden_size=6, options=(("recurrent_dropout", 0.9),))
    layer = cfg.build().train()
    cell = layer.cells[0]
    H = 6
    with torch.no_grad():
        if mode == "LSTM":  # i ≈ 0, f ≈ 1: c_t = c_{t-1}
            cell.bias_ih[:H] = -60.0
            cell.bias_ih[H:2 * H] = 60.0
        else:  # z ≈ 1: h_t = h_{t-1}
            cell.bias_ih[H:2 * H] = 60.0
    state = tuple(torch.randn(1, 4, s, dtype=F64) for s in cfg.state_sizes)
    torch.manual_seed(6)
    _, final = layer(torch.randn(5, 4, 3, dtype=F64), as_state(state))
    carried = final[1] if mode == "LSTM" else final
    assert_close(carried, state[1] if mode == "LSTM" else state[0], "carried state", tol=1e-12)


@pytest.mark.parametrize("mode,names", [("LSTM", ("h", "c")), ("GRU", ("h",)), ("SRU", ("c",)),
                                        ("MinGRU", ("h",)), ("LayerNormLSTM", ("h", "c")),
                                        ("PeepholeLSTM", ("c",))])
def test_zoneout_training_keeps_previous_values_where_the_mask_says(mode: str, names: Tuple[str, ...]) -> None:
    options = tuple((f"zoneout_{'hidden' if n == 'h' else 'cell'}", 0.4) for n in names)
    cfg = LayerConfig(mode, hidden_size=6, options=options)
    layer = cfg.build().train()
    cell = layer.cells[0]
    drawn = []
    original = layer._zoneout

    def spy(c, x):
        masks = original(c, x)
        drawn.append(masks)
        return masks

    layer._zoneout = spy
    x = torch.randn(6, 3, 3, dtype=F64)
    torch.manual_seed(7)
    out, final = layer(x, lengths=[6, 2, 5])
    (masks,) = drawn
    for name, m in zip(cell.state_names, masks):
        if name in names:
            assert m.shape == (6, 3, cell.state_sizes[cell.state_names.index(name)])
            assert set(m.unique().tolist()) == {0.0, 1.0}
            assert not torch.equal(m[0], m[1]), "zoneout draws a new mask every step"
        else:
            assert m is None
    lengths = [6, 2, 5]
    state = cell.unpack_state(cell.initial_state(3))
    for t in range(6):
        y, new = cell.step(cell.project(x[t]), cell.pack_state(state))
        new = tuple(n if m is None else torch.where(m[t] == 1, s, n) for n, s, m in zip(cell.unpack_state(new),
                                                                                      state, masks))
        if cell.outputs_state:
            y = new[0]
        valid = (t < torch.tensor(lengths))[:, None]
        state = tuple(torch.where(valid, n, s) for n, s in zip(new, state))
        assert_close(out[t], torch.where(valid, y, torch.zeros_like(y)), f"output step {t}")
    for a, b in zip(state_parts(final), state):
        assert_close(a[0], b, "final state")


def test_zoneout_eval_uses_the_expectation() -> None:
    p_h, p_c = 0.3, 0.6
    cfg = LayerConfig("LSTM", options=(("zoneout_hidden", p_h), ("zoneout_cell", p_c)))
    layer = cfg.build().eval()
    cell = layer.cells[0]
    x = torch.randn(5, 2, 3, dtype=F64)
    out, (h_n, c_n) = layer(x)
    h, c = cell.initial_state(2)
    for t in range(5):
        _, (h_new, c_new) = cell(x[t], (h, c))
        h, c = p_h * h + (1 - p_h) * h_new, p_c * c + (1 - p_c) * c_new
        assert_close(out[t], h, f"step {t}")
    assert_close(c_n[0], c, "c_n")
    assert torch.equal(layer(x)[0], out)  # deterministic


@pytest.mark.parametrize("mode", ["RNN_TANH", "LSTM", "GRU", "GRU_BEFORE", "PeepholeLSTM", "LayerNormLSTM",
                                  "LayerNormGRU"])
def test_dropconnect_drops_weight_hh_once_per_forward(mode: str) -> None:
    p = 0.5
    cfg = LayerConfig(mode, hidden_size=5, options=(("weight_dropout", p),))
    layer = cfg.build().train()
    cell = layer.cells[0]
    drawn = []
    original = layer._dropped_weights

    def spy(c, held):
        weights = original(c, held)
        drawn.append(weights)
        return weights

    layer._dropped_weights = spy
    x = torch.randn(4, 2, 3, dtype=F64)
    torch.manual_seed(8)
    out, _ = layer(x)
    w = drawn[0]["weight_hh"]
    assert all(v is getattr(cell, k) for k, v in drawn[0].items() if k != "weight_hh"), "only weight_hh is dropped"
    kept = w != 0
    assert kept.any() and not kept.all()
    assert_close(w[kept], cell.weight_hh[kept] / (1 - p), "kept weights scaled")
    # the layer's name for it: weight_hh_l0 on the torch-named drop-ins, cells.0.weight_hh on the others
    (name,) = [n for n, q in layer.named_parameters() if q is cell.weight_hh]
    by_hand, _ = torch.func.functional_call(layer.eval(), {name: w}, (x,))
    assert_close(out, by_hand, "the dropped matrix is used at every step")
    assert cell.weight_hh.count_nonzero() == cell.weight_hh.numel(), "the parameter itself is untouched"


def test_inter_layer_dropout_only_between_layers() -> None:
    single = LayerConfig("LSTM", dropout=0.5).build()
    x = torch.randn(4, 2, 3, dtype=F64)
    assert torch.equal(single.train()(x)[0], single.eval()(x)[0])  # nothing between layers to drop
    stacked = LayerConfig("LSTM", num_layers=2, dropout=0.5).build().train()
    torch.manual_seed(1)
    a = stacked(x)[0]
    assert not torch.equal(a, stacked.eval()(x)[0])


@pytest.mark.parametrize("name", DROPOUTS + ("zoneout_hidden", "zoneout_cell"))
@pytest.mark.parametrize("value", [-0.1, 1.0, 1.5, float("nan"), "0.5", True])
def test_probabilities_outside_unit_interval_raise(name: str, value) -> None:
    with pytest.raises(ValueError, match=rf"{name} must be a probability in \[0, 1\); got"):
        rnnkit.LSTM(3, 4, num_layers=2, **{name: value})


# ------------------------------------------------------- the Regularisation object
def test_regularisation_object_validates_and_is_frozen() -> None:
    from dataclasses import FrozenInstanceError

    from rnnkit.regularisation import Regularisation

    with pytest.raises(InputError, match=r"^Regularisation: zoneout_cell must be a probability in \[0, 1\); "
                                                r"got 1\.0$"):
        Regularisation(zoneout_cell=1.0)
    with pytest.raises(InputError, match=r"^GRU: weight_dropout must be .* got True$"):
        Regularisation(weight_dropout=True, owner="GRU")
    reg = Regularisation(dropout=0, input_dropout=0.5)
    assert reg.dropout == 0.0 and isinstance(reg.dropout, float)
    with pytest.raises(FrozenInstanceError):
        reg.dropout = 0.5  # type: ignore[misc]
    with pytest.raises(InputError, match=r"^LSTM: zoneout_hidden needs a state named 'h'; SRUCell has"):
        Regularisation(zoneout_hidden=0.1, owner="LSTM").check_cell(rnnkit.SRUCell(3, 3))
    with pytest.raises(InputError, match=r"recurrent_dropout needs a cell with a recurrent matrix"):
        Regularisation(recurrent_dropout=0.1).check_cell(rnnkit.MinGRUCell(3, 4))


def test_regularisation_reports_what_is_active() -> None:
    from rnnkit.regularisation import Regularisation

    assert Regularisation().active() == () and str(Regularisation()) == ""
    reg = Regularisation(weight_dropout=0.5, dropout=0.25, zoneout_hidden=0.1)
    assert reg.active() == ("dropout", "zoneout_hidden", "weight_dropout")  # the constructor's order
    assert str(reg) == "dropout=0.25, zoneout_hidden=0.1, weight_dropout=0.5"
    layer = rnnkit.LSTM(3, 4, num_layers=2, dropout=0.25, zoneout_hidden=0.1, weight_dropout=0.5)
    assert layer.regularisation == reg
    assert "num_layers=2, dropout=0.25, zoneout_hidden=0.1, weight_dropout=0.5, backend='auto'" in repr(layer)
    with pytest.raises(InputError, match=r"step cannot draw per-sequence masks for dropout, zoneout_hidden, "
                                                r"weight_dropout one step"):
        layer.train().step(torch.randn(2, 3))


def test_layer_attributes_read_and_replace_the_regularisation() -> None:
    layer = rnnkit.GRU(3, 4, num_layers=2)
    assert layer.dropout == 0.0 and layer.regularisation.active() == ()
    layer.dropout = 0.5
    assert layer.regularisation.dropout == 0.5 and "dropout=0.5" in repr(layer)
    with pytest.raises(InputError, match=r"^GRU: output_dropout must be a probability in \[0, 1\); got 2$"):
        layer.output_dropout = 2
    with pytest.raises(InputError, match=r"^GRU: zoneout_cell needs a state named 'c'"):
        layer.zoneout_cell = 0.1
    assert layer.regularisation.active() == ("dropout",)  # a refused value leaves the layer as it was


def test_regularisation_masks() -> None:
    from rnnkit.regularisation import Regularisation

    reg = Regularisation(input_dropout=0.5, recurrent_dropout=0.5, zoneout_cell=0.25, weight_dropout=0.5)
    cell = rnnkit.LSTMCell(3, 4)
    x = torch.randn(6, 5, 3)
    assert reg.drop_input(x, training=False) is x and reg.recurrent_mask(cell, x, training=False) is None
    assert reg.zoneout(cell, x, training=False) == (None, 0.25)  # eval: the expectation
    weights = {"weight_ih": cell.weight_ih}
    assert reg.dropped_weights(cell, weights, training=False) is weights
    dropped = reg.drop_input(x, training=True)
    mask = dropped / x
    assert torch.allclose(mask, mask[:1].expand_as(mask)), "one input mask per sequence, shared over time"
    assert set(mask.round(decimals=4).unique().tolist()) == {0.0, 2.0}
    h_mask, c_mask = reg.zoneout(cell, x, training=True)
    assert h_mask is None and c_mask.shape == (6, 5, 4) and set(c_mask.unique().tolist()) == {0.0, 1.0}
    assert reg.recurrent_mask(cell, x, training=True).shape == (5, 4)
    w = reg.dropped_weights(cell, weights, training=True)
    assert w["weight_ih"] is cell.weight_ih and w["weight_hh"].shape == cell.weight_hh.shape
    # drawn in float32 at every dtype: one seed, the same masks in float64
    torch.manual_seed(3)
    in32 = reg.zoneout(cell, x, training=True)[1]
    torch.manual_seed(3)
    in64 = reg.zoneout(cell, x.double(), training=True)[1]
    assert in64.dtype == torch.float64 and torch.equal(in64.float(), in32)
