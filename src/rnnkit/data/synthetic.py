"""Synthetic long-dependency tasks: the adding problem and the copy task.

Both generate batches on the fly from a `torch.Generator`, so a seed fixes every
batch and nothing is read from disk. Tensors are time-major like torch.nn's RNNs.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import Tensor

from ..errors import InputError, InputTypeError

#: MSE of always predicting 1.0 (the mean of the target) on the adding problem:
#: the target is a sum of two U(0, 1) values, whose variance is 2 · 1/12 = 1/6.
ADDING_BASELINE_MSE = 1.0 / 6.0


def _check_int(owner: str, name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputTypeError(f"{owner}: {name} must be an int; got {type(value).__name__} {value!r}")
    if value < minimum:
        raise InputError(f"{owner}: {name} must be >= {minimum}; got {value}")


def _check_generator(owner: str, generator: Optional[torch.Generator]) -> None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise InputTypeError(f"{owner}: generator must be a torch.Generator or None; got {type(generator).__name__}")


def adding_problem(
    batch_size: int,
    seq_len: int,
    *,
    generator: Optional[torch.Generator] = None,
    dtype: torch.dtype = torch.float32,
) -> Tuple[Tensor, Tensor]:
    """One batch of the adding problem (Hochreiter & Schmidhuber 1997), in the
    form of Le et al. 2015 and Arjovsky et al. 2016.

    Each sequence has two channels: values v_t ~ U(0, 1) and a marker m_t that is
    1 at exactly two steps, one drawn uniformly from the first half
    [0, T//2) and one from the second half [T//2, T), and 0 elsewhere. The
    target is the sum of the two marked values, so a model must carry a value
    across up to T − 1 steps. Predicting 1.0 always scores MSE ≈ 1/6 ≈ 0.167
    (`ADDING_BASELINE_MSE`).

    Args:
        batch_size: B >= 1.
        seq_len: T >= 2.
        generator: source of randomness (CPU); the global one when None.
        dtype: floating dtype of both tensors.

    Returns:
        x (T, B, 2) with x[..., 0] the values and x[..., 1] the markers;
        y (B, 1) the targets.
    """
    owner = "adding_problem"
    _check_int(owner, "batch_size", batch_size, 1)
    _check_int(owner, "seq_len", seq_len, 2)
    _check_generator(owner, generator)
    if not dtype.is_floating_point:
        raise InputTypeError(f"{owner}: dtype must be a floating dtype; got {dtype}")
    T, B, half = seq_len, batch_size, seq_len // 2
    values = torch.rand(T, B, generator=generator, dtype=dtype)  # (T, B)
    first = torch.randint(0, half, (B,), generator=generator)  # (B,)
    second = torch.randint(half, T, (B,), generator=generator)  # (B,)
    markers = torch.zeros(T, B, dtype=dtype)
    columns = torch.arange(B)
    markers[first, columns] = 1.0
    markers[second, columns] = 1.0
    target = (values[first, columns] + values[second, columns]).unsqueeze(1)  # (B, 1)
    return torch.stack([values, markers], dim=-1), target


def copy_task(
    batch_size: int,
    delay: int,
    *,
    length: int = 10,
    num_symbols: int = 8,
    generator: Optional[torch.Generator] = None,
) -> Tuple[Tensor, Tensor]:
    """One batch of the copy task (Hochreiter & Schmidhuber 1997; Arjovsky et al. 2016's form).

    Tokens: 0 is blank, 1..num_symbols are data symbols, num_symbols + 1 is the
    delimiter ("now recall"); the vocabulary has num_symbols + 2 tokens.

        input:  s_1 … s_L, 0 × (delay − 1), delimiter, 0 × L
        target: 0 × (L + delay), s_1 … s_L

    Both have L' = delay + 2L steps: the model must remember L symbols over
    `delay` steps. Always predicting blank and then a random symbol scores
    cross-entropy L·log(num_symbols) / L' per step (the memoryless baseline).

    Args:
        batch_size: B >= 1.
        delay: steps between the end of the data and the delimiter's step + 1; >= 1.
        length: L symbols to copy, >= 1.
        num_symbols: size of the data alphabet, >= 1.
        generator: source of randomness; the global one when None.

    Returns:
        inputs (L', B) int64 and targets (L', B) int64 token ids.
    """
    owner = "copy_task"
    _check_int(owner, "batch_size", batch_size, 1)
    _check_int(owner, "delay", delay, 1)
    _check_int(owner, "length", length, 1)
    _check_int(owner, "num_symbols", num_symbols, 1)
    _check_generator(owner, generator)
    total = delay + 2 * length
    symbols = torch.randint(1, num_symbols + 1, (length, batch_size), generator=generator)  # (L, B)
    inputs = torch.zeros(total, batch_size, dtype=torch.long)
    targets = torch.zeros(total, batch_size, dtype=torch.long)
    inputs[:length] = symbols
    inputs[length + delay - 1] = num_symbols + 1
    targets[length + delay:] = symbols
    return inputs, targets


def copy_task_baseline(delay: int, *, length: int = 10, num_symbols: int = 8) -> float:
    """Per-step cross-entropy (nats) of the memoryless strategy on `copy_task`."""
    return length * math.log(num_symbols) / (delay + 2 * length)
