"""Bad input gets a clear error: the argument, what was expected and what came.

One test per mistake. Each asserts the exception type and that the message
names the argument, the expected value and the received one.
"""

from __future__ import annotations

import re

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import rnnkit

F64 = torch.float64


def raises(exc, *fragments: str):
    """pytest.raises(exc) whose message must contain every fragment (literally)."""
    return pytest.raises(exc, match="(?s)" + "".join(f"(?=.*{re.escape(f)})" for f in fragments))


@pytest.fixture
def lstm() -> rnnkit.LSTM:
    return rnnkit.LSTM(3, 4, num_layers=2, bidirectional=True, backend="reference")


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(5, 2, 3)


# ------------------------------------------------------------------ the input
@pytest.mark.parametrize("shape", [(5, 2, 3, 1), (5,)])
def test_wrong_rank(lstm, shape) -> None:
    with raises(ValueError, "input of rank 3", "(time, batch, features)", f"got shape {shape}"):
        lstm(torch.randn(*shape))


def test_wrong_rank_batch_first_names_the_layout() -> None:
    with raises(ValueError, "(batch, time, features)", "got shape (7,)"):
        rnnkit.GRU(3, 4, batch_first=True)(torch.randn(7))


def test_wrong_feature_size(lstm) -> None:
    with raises(ValueError, "3 features", "got shape (5, 2, 7)"):
        lstm(torch.randn(5, 2, 7))


def test_wrong_input_dtype(lstm, x) -> None:
    with raises(TypeError, "input of dtype torch.float32", "got torch.float64", ".to(dtype)"):
        lstm(x.double())


def test_integer_input(lstm) -> None:
    with raises(TypeError, "floating-point input", "got torch.int64"):
        lstm(torch.ones(5, 2, 3, dtype=torch.int64))


def test_input_not_a_tensor(lstm) -> None:
    with raises(TypeError, "input to be a Tensor or PackedSequence", "got list"):
        lstm([[0.0, 1.0, 2.0]])


def test_wrong_input_device(lstm, x) -> None:
    # 'meta' tensors have a device but no data: enough to test the device check without a GPU
    with raises(ValueError, "input on cpu", "got meta"):
        lstm(x.to("meta"))


def test_empty_batch(lstm) -> None:
    with raises(ValueError, "empty batch", "(5, 0, 3)"):
        lstm(torch.randn(5, 0, 3))


def test_zero_time_steps(lstm) -> None:
    with raises(ValueError, "at least one time step", "(0, 2, 3)"):
        lstm(torch.randn(0, 2, 3))


def test_packed_input_is_checked_too(lstm) -> None:
    with raises(ValueError, "3 features", "got shape"):
        lstm(pack_padded_sequence(torch.randn(5, 2, 7), torch.tensor([5, 3])))
    with raises(TypeError, "dtype torch.float32", "got torch.float64"):
        lstm(pack_padded_sequence(torch.randn(5, 2, 3, dtype=F64), torch.tensor([5, 3])))


# --------------------------------------------------------------------- lengths
@pytest.mark.parametrize("lengths,got", [([6, 2], "max 6"), ([-1, 2], "min -1")])
def test_lengths_out_of_range(lstm, x, lengths, got) -> None:
    with raises(ValueError, "lengths", "[1, 5]", got):
        lstm(x, lengths=lengths)


def test_lengths_zero(lstm, x) -> None:
    with raises(ValueError, "every entry of lengths must be in [1, 5]", "min 0"):
        lstm(x, lengths=torch.tensor([0, 3]))


def test_lengths_wrong_count(lstm, x) -> None:
    with raises(ValueError, "lengths must have shape (2,)", "got shape (3,)"):
        lstm(x, lengths=[5, 2, 3])


def test_lengths_float_dtype(lstm, x) -> None:
    with raises(TypeError, "lengths must hold integers", "torch.float32"):
        lstm(x, lengths=torch.tensor([5.0, 2.0]))


def test_lengths_not_numbers(lstm, x) -> None:
    with raises(TypeError, "lengths", "'ab'"):
        lstm(x, lengths="ab")


def test_lengths_on_unbatched_input(lstm) -> None:
    with raises(ValueError, "lengths= and mask= need batched input", "(5, 3)"):
        lstm(torch.randn(5, 3), lengths=[5])


def test_mask_not_contiguous(lstm, x) -> None:
    mask = torch.tensor([[True, False, True, False, False], [True] * 5])
    with raises(ValueError, "mask", "one contiguous run of valid steps", "padding_side='right'"):
        lstm(x, mask=mask)


def test_mask_with_an_empty_row(lstm, x) -> None:
    mask = torch.tensor([[True] * 5, [False] * 5])
    with raises(ValueError, "mask must mark at least one valid (True) step in every row", "rows [1]"):
        lstm(x, mask=mask)


def test_mask_on_the_wrong_side(lstm, x) -> None:
    mask = torch.tensor([[False, False, True, True, True], [True] * 5])  # left padding, said right
    with raises(ValueError, "mask", "right side"):
        lstm(x, mask=mask)


def test_mask_wrong_dtype_and_shape(lstm, x) -> None:
    with raises(TypeError, "mask must be a bool tensor of shape (2, 5)", "got torch.int64"):
        lstm(x, mask=torch.ones(2, 5, dtype=torch.int64))
    with raises(ValueError, "mask must have shape (batch, time) = (2, 5)", "got (5, 2)"):
        lstm(x, mask=torch.ones(5, 2, dtype=torch.bool))


def test_lengths_and_mask_together(lstm, x) -> None:
    with raises(ValueError, "lengths= or mask=, not both"):
        lstm(x, lengths=[5, 5], mask=torch.ones(2, 5, dtype=torch.bool))


def test_lengths_with_packed_sequence(lstm, x) -> None:
    packed = pack_padded_sequence(x, torch.tensor([5, 3]))
    with raises(ValueError, "PackedSequence carries its own lengths", "lengths="):
        lstm(packed, lengths=[5, 3])
    with raises(ValueError, "PackedSequence carries its own lengths", "mask="):
        lstm(packed, mask=torch.ones(2, 5, dtype=torch.bool))


def test_unknown_padding_side(lstm, x) -> None:
    with raises(ValueError, "padding_side must be 'right' or 'left'", "'middle'"):
        lstm(x, lengths=[5, 2], padding_side="middle")


# ----------------------------------------------------------------------- state
def test_h0_batch_first_layout() -> None:
    """States are (L·D, B, H) even with batch_first, as in torch: a (B, L·D, H) h_0 is refused."""
    gru = rnnkit.GRU(3, 4, batch_first=True)
    with raises(ValueError, "initial state h must have shape (1, 2, 4)", "never batch-first", "got (2, 1, 4)"):
        gru(torch.randn(2, 5, 3), torch.zeros(2, 1, 4))


def test_h0_wrong_num_layers(lstm, x) -> None:
    with raises(ValueError, "initial state h must have shape (4, 2, 4)", "num_layers * num_directions",
                "got (2, 2, 4)"):
        lstm(x, (torch.zeros(2, 2, 4), torch.zeros(2, 2, 4)))


def test_h0_wrong_directions(x) -> None:
    with raises(ValueError, "initial state h must have shape (2, 2, 4)", "got (1, 2, 4)"):
        rnnkit.GRU(3, 4, bidirectional=True)(x, torch.zeros(1, 2, 4))


def test_c0_wrong_size_with_proj(x) -> None:
    lstm = rnnkit.LSTM(3, 5, proj_size=2)
    with raises(ValueError, "initial state c must have shape (1, 2, 5)", "got (1, 2, 2)"):
        lstm(x, (torch.zeros(1, 2, 2), torch.zeros(1, 2, 2)))


def test_unbatched_state_shape(lstm) -> None:
    with raises(ValueError, "initial state h must have shape (4, 4)", "unbatched", "got (4, 1, 4)"):
        lstm(torch.randn(5, 3), (torch.zeros(4, 1, 4), torch.zeros(4, 1, 4)))


def test_lstm_state_as_a_single_tensor(lstm, x) -> None:
    with raises(TypeError, "tuple of 2 tensors ('h', 'c')", "got a single tensor"):
        lstm(x, torch.zeros(4, 2, 4))


def test_lstm_state_with_three_parts(lstm, x) -> None:
    with raises(TypeError, "tuple of 2 tensors", "got 3 items"):
        lstm(x, (torch.zeros(4, 2, 4),) * 3)


def test_gru_state_as_a_tuple(x) -> None:
    with raises(TypeError, "initial state as one tensor (h)", "got a tuple of 1"):
        rnnkit.GRU(3, 4)(x, (torch.zeros(1, 2, 4),))


def test_state_part_not_a_tensor(lstm, x) -> None:
    with raises(TypeError, "initial state c must be a Tensor", "got list"):
        lstm(x, (torch.zeros(4, 2, 4), [0.0]))


def test_state_wrong_dtype(lstm, x) -> None:
    with raises(TypeError, "initial state h must have dtype torch.float32", "got torch.float64"):
        lstm(x, (torch.zeros(4, 2, 4, dtype=F64), torch.zeros(4, 2, 4, dtype=F64)))


def test_state_wrong_device(lstm, x) -> None:
    with raises(ValueError, "initial state c must be on cpu", "got meta"):
        lstm(x, (torch.zeros(4, 2, 4), torch.zeros(4, 2, 4, device="meta")))


def test_packed_state_batch_mismatch(lstm, x) -> None:
    with raises(ValueError, "initial state h must have shape (4, 2, 4)", "got (4, 3, 4)"):
        lstm(pack_padded_sequence(x, torch.tensor([5, 3])), (torch.zeros(4, 3, 4), torch.zeros(4, 3, 4)))


# ------------------------------------------------------------------ state_dict
def test_state_dict_missing_and_extra_keys_use_torch_names(lstm) -> None:
    sd = lstm.state_dict()
    sd.pop("weight_hh_l1")
    sd["weight_hh_l5"] = torch.zeros(1)
    with raises(RuntimeError, 'Missing key(s) in state_dict: "weight_hh_l1"',
                'Unexpected key(s) in state_dict: "weight_hh_l5"') as info:
        lstm.load_state_dict(sd)
    assert "cells." not in str(info.value)
    result = lstm.load_state_dict(sd, strict=False)
    assert result.missing_keys == ["weight_hh_l1"] and result.unexpected_keys == ["weight_hh_l5"]


def test_state_dict_from_a_deeper_torch_lstm() -> None:
    ours = rnnkit.LSTM(3, 4, num_layers=1)
    with raises(RuntimeError, "weight_ih_l1", "Unexpected"):
        ours.load_state_dict(torch.nn.LSTM(3, 4, num_layers=2).state_dict())
    with raises(RuntimeError, "weight_hh_l1_reverse", "Missing"):
        rnnkit.GRU(3, 4, num_layers=2, bidirectional=True).load_state_dict(
            torch.nn.GRU(3, 4, num_layers=2).state_dict())


def test_state_dict_size_mismatch_uses_torch_names(lstm) -> None:
    sd = lstm.state_dict()
    sd["weight_hh_l1"] = torch.zeros(3, 3)
    with raises(RuntimeError, "size mismatch for weight_hh_l1", "torch.Size([3, 3])") as info:
        lstm.load_state_dict(sd)
    assert "cells." not in str(info.value)


def test_nested_state_dict_errors_keep_the_prefix() -> None:
    model = torch.nn.Sequential(torch.nn.Identity(), rnnkit.GRU(3, 4, num_layers=2))
    sd = model.state_dict()
    sd.pop("1.bias_ih_l1")
    sd["1.weight_hh_l0"] = torch.zeros(2, 2)
    with raises(RuntimeError, '"1.bias_ih_l1"', "size mismatch for 1.weight_hh_l0"):
        model.load_state_dict(sd)


# ---------------------------------------------------------------- constructors
def test_num_layers_zero() -> None:
    with raises(ValueError, "num_layers must be an int >= 1", "got 0"):
        rnnkit.LSTM(3, 4, num_layers=0)


def test_dropout_above_one() -> None:
    with raises(ValueError, "dropout must be a probability in [0, 1)", "got 1.5"):
        rnnkit.LSTM(3, 4, num_layers=2, dropout=1.5)


def test_unknown_nonlinearity() -> None:
    with raises(ValueError, "nonlinearity must be 'tanh' or 'relu'", "got 'sigmoid'"):
        rnnkit.RNN(3, 4, nonlinearity="sigmoid")


def test_unknown_reset() -> None:
    with raises(ValueError, "reset must be 'after' or 'before'", "got 'middle'"):
        rnnkit.GRU(3, 4, reset="middle")


def test_unknown_backend() -> None:
    with raises(ValueError, "backend must be 'auto' or one of", "'reference'", "got 'cuda9'"):
        rnnkit.GRU(3, 4, backend="cuda9")


@pytest.mark.parametrize("proj_size", [4, 9])
def test_proj_size_not_below_hidden_size(proj_size: int) -> None:
    with raises(ValueError, "proj_size must be smaller than hidden_size (4)", f"got {proj_size}"):
        rnnkit.LSTM(3, 4, proj_size=proj_size)


def test_proj_size_negative() -> None:
    with raises(ValueError, "proj_size must be an int >= 0", "got -1"):
        rnnkit.LSTM(3, 4, proj_size=-1)


@pytest.mark.parametrize("layer,cell", [(rnnkit.SRU, "SRUCell"), (rnnkit.MinGRU, "MinGRUCell")])
def test_recurrent_dropout_without_recurrent_matrix(layer, cell: str) -> None:
    with raises(ValueError, "recurrent_dropout needs a cell with a recurrent matrix", cell):
        layer(3, 4, recurrent_dropout=0.2)


@pytest.mark.parametrize("layer,cell", [(rnnkit.SRU, "SRUCell"), (rnnkit.MinGRU, "MinGRUCell")])
def test_weight_dropout_without_weight_hh(layer, cell: str) -> None:
    with raises(ValueError, "weight_dropout", "needs a cell with weight_hh", cell):
        layer(3, 4, weight_dropout=0.2)


def test_zoneout_on_a_state_the_cell_lacks() -> None:
    with raises(ValueError, "zoneout_cell needs a state named 'c'", "('h',)"):
        rnnkit.GRU(3, 4, zoneout_cell=0.2)
    with raises(ValueError, "zoneout_hidden needs a state named 'h'", "('c',)"):
        rnnkit.SRU(3, 4, zoneout_hidden=0.2)


@pytest.mark.parametrize("kwargs,fragments", [
    (dict(hidden_size=0), ("hidden_size must be positive", "got 0")),
    (dict(input_size=3.0), ("input_size must be an int", "got float 3.0")),
    (dict(bias="yes"), ("bias must be a bool", "got 'yes'")),
    (dict(bidirectional=1), ("bidirectional must be a bool", "got 1")),
    (dict(batch_first="no"), ("batch_first must be a bool", "got 'no'")),
])
def test_bad_sizes_and_flags(kwargs, fragments) -> None:
    args = dict(input_size=3, hidden_size=4)
    args.update(kwargs)
    with pytest.raises((TypeError, ValueError), match="(?s)" + "".join(f"(?=.*{re.escape(f)})" for f in fragments)):
        rnnkit.LSTM(**args)


def test_recurrent_constructor_mistakes() -> None:
    with raises(TypeError, "a cell factory needs input_size="):
        rnnkit.Recurrent(lambda size: rnnkit.GRUCell(size, 4))
    with raises(ValueError, "input_size=5 disagrees with the cell's 3"):
        rnnkit.Recurrent(rnnkit.GRUCell(3, 4), input_size=5)
    with raises(ValueError, "layer 1 and above read 4 features but the cell takes 3", "factory"):
        rnnkit.Recurrent(rnnkit.GRUCell(3, 4), num_layers=2)
    with raises(TypeError, "cell must be a RecurrentCell", "got int"):
        rnnkit.Recurrent(3)
    with raises(ValueError, "asked for a cell reading 4 features", "input_size=3"):
        rnnkit.Recurrent(lambda size: rnnkit.GRUCell(3, 4), num_layers=2, input_size=3)


def test_cell_called_with_a_sequence() -> None:
    with raises(ValueError, "GRUCell expects x of shape (batch, 3)", "got (5, 2, 3)", "rnnkit.Recurrent"):
        rnnkit.GRUCell(3, 4)(torch.randn(5, 2, 3))


def test_named_backend_that_cannot_run_says_why() -> None:
    from rnnkit.backends import registry

    class Picky:
        name = "picky-test-backend"

        def accepts(self, spec):
            return "only runs on Tuesdays"

        def run(self, spec):  # pragma: no cover - never accepted
            raise AssertionError

    registry.register(Picky(), priority=1000)  # auto asks it first
    try:
        layer = rnnkit.GRU(3, 4, backend="picky-test-backend")
        with raises(ValueError, "backend 'picky-test-backend' cannot run this configuration", "only runs on Tuesdays"):
            layer(torch.randn(5, 2, 3))
        # auto passes over it, records why, and says which backend ran
        auto = rnnkit.GRU(3, 4)
        auto(torch.randn(5, 2, 3))
        assert auto.last_backend in registry.available() and auto.last_backend != "picky-test-backend"
        assert auto.last_skipped["picky-test-backend"] == "only runs on Tuesdays"
    finally:
        registry._BACKENDS.pop("picky-test-backend", None)
        registry._PRIORITY.pop("picky-test-backend", None)
