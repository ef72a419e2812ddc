"""normalise_input turns every input form of Recurrent into (T, B, I) right-padded; restore undoes it."""

from __future__ import annotations

from typing import List

import pytest
import torch
from torch import Tensor
from torch.nn.utils.rnn import pack_padded_sequence

from rnnkit.errors import InputError
from rnnkit.input_layout import InputLayout, normalise_input


def normalise(input, *, lengths=None, mask=None, padding_side="right", batch_first=False, seen: List = None):
    def check(t: Tensor) -> bool:
        if seen is not None:
            seen.append(t)
        return t.dim() == 2

    return normalise_input(input, lengths=lengths, mask=mask, padding_side=padding_side, batch_first=batch_first,
                           owner="Demo", check=check)


def test_time_major_is_left_as_it_is() -> None:
    x = torch.randn(5, 3, 2)
    xt, lengths, layout = normalise(x)
    assert xt is x and lengths is None and layout == InputLayout()
    out, final = layout.restore(xt, (torch.ones(1, 3, 4),))
    assert out is x and final[0].shape == (1, 3, 4)


def test_batch_first_round_trip() -> None:
    x = torch.randn(3, 5, 2)  # (B, T, I)
    xt, _, layout = normalise(x, batch_first=True)
    assert torch.equal(xt, x.transpose(0, 1))
    assert torch.equal(layout.restore(xt, ())[0], x)


def test_unbatched_round_trip_drops_the_batch_axis_of_output_and_state() -> None:
    x = torch.randn(5, 2)  # (T, I)
    xt, _, layout = normalise(x, batch_first=True)  # batch_first does not apply to unbatched input
    assert xt.shape == (5, 1, 2) and layout.unbatched
    out, (h,) = layout.restore(xt, (torch.randn(2, 1, 4),))
    assert torch.equal(out, x) and h.shape == (2, 4)
    with pytest.raises(InputError, match=r"^Demo: lengths= and mask= need batched input"):
        normalise(x, lengths=[5])


@pytest.mark.parametrize("batch_first", [False, True])
def test_left_padding_round_trip(batch_first: bool) -> None:
    lengths = torch.tensor([5, 2, 4])
    x = torch.randn(3, 5, 2) if batch_first else torch.randn(5, 3, 2)
    mask = torch.arange(5)[None, :] >= (5 - lengths)[:, None]  # valid steps at the end of each row
    xt, got, layout = normalise(x, mask=mask, padding_side="left", batch_first=batch_first)
    assert got.tolist() == [5, 2, 4]
    rows = x if batch_first else x.transpose(0, 1)
    for b, n in enumerate(lengths.tolist()):
        assert torch.equal(xt[:n, b], rows[b, 5 - n:]), "valid steps moved to the start"
    assert torch.equal(layout.restore(xt, ())[0], x)


def test_right_padding_keeps_the_steps_in_place() -> None:
    x = torch.randn(5, 2, 3)
    xt, lengths, layout = normalise(x, lengths=[3, 5])
    assert xt is x and lengths.dtype == torch.int64 and layout.left_lengths is None
    with pytest.raises(InputError, match=r"^Demo: padding_side must be 'right' or 'left'; got 'up'"):
        normalise(x, padding_side="up")


@pytest.mark.parametrize("enforce_sorted", [False, True])
def test_packed_round_trip(enforce_sorted: bool) -> None:
    lengths = torch.tensor([2, 5, 3]) if not enforce_sorted else torch.tensor([5, 3, 2])
    padded = torch.randn(5, 3, 2)
    packed = pack_padded_sequence(padded, lengths, enforce_sorted=enforce_sorted)
    seen: List[Tensor] = []
    xt, got, layout = normalise(packed, seen=seen)
    assert seen[0] is packed.data, "the features of a pack are checked on its data"
    assert torch.equal(got, lengths)
    valid = (torch.arange(5)[:, None] < lengths[None, :])[..., None]
    assert torch.equal(xt, torch.where(valid, padded, 0.0))
    out, _ = layout.restore(xt, ())
    assert torch.equal(out.data, packed.data) and torch.equal(out.batch_sizes, packed.batch_sizes)
    with pytest.raises(InputError, match=r"^Demo: a PackedSequence carries its own lengths"):
        normalise(packed, lengths=lengths)
