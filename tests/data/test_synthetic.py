"""The synthetic tasks: shapes, the placement of markers, targets, seeding and bad arguments."""

from __future__ import annotations

import math

import pytest
import torch

from rnnkit.data.synthetic import (ADDING_BASELINE_MSE, adding_problem, copy_task, copy_task_baseline)


def test_adding_shapes_and_dtype():
    x, y = adding_problem(5, 12, generator=torch.Generator().manual_seed(0))
    assert x.shape == (12, 5, 2) and y.shape == (5, 1)
    assert x.dtype == y.dtype == torch.float32
    x64, y64 = adding_problem(3, 4, dtype=torch.float64)
    assert x64.dtype == y64.dtype == torch.float64


def test_adding_two_markers_one_per_half_and_target_is_their_sum():
    T, B = 11, 200
    x, y = adding_problem(B, T, generator=torch.Generator().manual_seed(1))
    values, markers = x[..., 0], x[..., 1]
    assert ((values >= 0) & (values < 1)).all()
    assert set(markers.unique().tolist()) <= {0.0, 1.0}
    half = T // 2
    assert (markers[:half].sum(0) == 1).all(), "exactly one marker in the first half"
    assert (markers[half:].sum(0) == 1).all(), "exactly one marker in the second half"
    torch.testing.assert_close(y[:, 0], (values * markers).sum(0))


def test_adding_markers_cover_both_halves():
    T = 10
    x, _ = adding_problem(2000, T, generator=torch.Generator().manual_seed(2))
    positions = x[..., 1].nonzero()[:, 0].unique().tolist()
    assert positions == list(range(T)), "every step can carry a marker"


def test_adding_baseline_is_the_variance_of_the_target():
    _, y = adding_problem(200_000, 6, generator=torch.Generator().manual_seed(3))
    assert ADDING_BASELINE_MSE == pytest.approx(1 / 6)
    assert ((y - 1.0) ** 2).mean().item() == pytest.approx(ADDING_BASELINE_MSE, abs=0.003)


def test_adding_seeded_generator_repeats_and_differs_between_seeds():
    a = adding_problem(4, 9, generator=torch.Generator().manual_seed(7))
    b = adding_problem(4, 9, generator=torch.Generator().manual_seed(7))
    c = adding_problem(4, 9, generator=torch.Generator().manual_seed(8))
    torch.testing.assert_close(a, b)
    assert not torch.equal(a[0], c[0])


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(batch_size=0, seq_len=10), ValueError, "batch_size"),
    (dict(batch_size=4, seq_len=1), ValueError, "seq_len"),
    (dict(batch_size=4.0, seq_len=10), TypeError, "batch_size"),
    (dict(batch_size=True, seq_len=10), TypeError, "batch_size"),
    (dict(batch_size=4, seq_len=10, dtype=torch.int64), TypeError, "dtype"),
    (dict(batch_size=4, seq_len=10, generator=0), TypeError, "generator"),
])
def test_adding_bad_arguments(kwargs, error, words):
    with pytest.raises(error, match=words):
        adding_problem(**kwargs)


def test_copy_task_layout():
    L, delay, symbols, B = 4, 6, 5, 30
    inputs, targets = copy_task(B, delay, length=L, num_symbols=symbols,
                                generator=torch.Generator().manual_seed(0))
    total = delay + 2 * L
    assert inputs.shape == targets.shape == (total, B)
    assert inputs.dtype == targets.dtype == torch.long
    data = inputs[:L]
    assert ((data >= 1) & (data <= symbols)).all()
    assert (inputs[L:L + delay - 1] == 0).all()
    assert (inputs[L + delay - 1] == symbols + 1).all(), "the delimiter"
    assert (inputs[L + delay:] == 0).all()
    assert (targets[:L + delay] == 0).all()
    torch.testing.assert_close(targets[L + delay:], data)


def test_copy_task_seeded_and_baseline():
    a = copy_task(3, 5, generator=torch.Generator().manual_seed(4))
    b = copy_task(3, 5, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(a, b)
    assert copy_task_baseline(100, length=10, num_symbols=8) == pytest.approx(10 * math.log(8) / 120)


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(batch_size=2, delay=0), ValueError, "delay"),
    (dict(batch_size=0, delay=3), ValueError, "batch_size"),
    (dict(batch_size=2, delay=3, length=0), ValueError, "length"),
    (dict(batch_size=2, delay=3, num_symbols=0), ValueError, "num_symbols"),
    (dict(batch_size=2, delay="3"), TypeError, "delay"),
])
def test_copy_task_bad_arguments(kwargs, error, words):
    with pytest.raises(error, match=words):
        copy_task(**kwargs)
