"""Checks of settings shared by the config classes, so that each kind of mistake reads the same everywhere.

Each raises `rnnkit.errors.InputError` naming the setting (and its owner, when given), what was
expected and what came:

    >>> check_int("hidden_size", 0, owner="LMConfig")
    Traceback (most recent call last):
    ...
    rnnkit.errors.InputError: LMConfig: hidden_size must be a positive int; got 0
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

from .errors import InputError


def _prefix(owner: str) -> str:
    return f"{owner}: " if owner else ""


def check_int(name: str, value: Any, *, minimum: int = 1, allow_none: bool = False, owner: str = "",
              hint: str = "") -> None:
    """Raise InputError unless `value` is an int (a bool is not) of at least `minimum`, or None when allowed.

    The message says "a positive int" for minimum 1, "an int >= m" otherwise; `hint` follows it, e.g.
    " (0 = one-hot input)".

    >>> check_int("num_classes", 1, minimum=2)
    Traceback (most recent call last):
    ...
    rnnkit.errors.InputError: num_classes must be an int >= 2; got 1
    """
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise InputError(f"{_prefix(owner)}{name} must be {kind}{' or None' if allow_none else ''}{hint}; "
                         f"got {value!r}")


def check_positive_ints(config: Any, names: Iterable[str], *, owner: str = "") -> None:
    """`check_int` on each attribute `names` of `config` (a dataclass's size fields, typically)."""
    for name in names:
        check_int(name, getattr(config, name), owner=owner)


def check_positive_number(name: str, value: Any, *, allow_none: bool = False, owner: str = "") -> None:
    """Raise InputError unless `value` is a finite real number > 0 (a bool is not), or None when allowed.

    >>> check_positive_number("lr", float("nan"))
    Traceback (most recent call last):
    ...
    rnnkit.errors.InputError: lr must be a positive number; got nan
    """
    if value is None and allow_none:
        return
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            or value <= 0):
        raise InputError(f"{_prefix(owner)}{name} must be a positive number{' or None' if allow_none else ''}; "
                         f"got {value!r}")


def check_probability(name: str, value: Any, *, include_one: bool = False, owner: str = "") -> None:
    """Raise InputError unless `value` is a real number in [0, 1) ([0, 1] with include_one).

    >>> check_probability("dropout", 1.0)
    Traceback (most recent call last):
    ...
    rnnkit.errors.InputError: dropout must be in [0, 1); got 1.0
    """
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (
        0.0 <= value <= 1.0 if include_one else 0.0 <= value < 1.0)
    if not ok:
        raise InputError(f"{_prefix(owner)}{name} must be in [0, 1{']' if include_one else ')'}; got {value!r}")


def check_choice(name: str, value: Any, choices: Sequence[Any], *, owner: str = "") -> None:
    """Raise InputError unless `value` is one of `choices`.

    >>> check_choice("head", "mean", ("point", "quantile"))
    Traceback (most recent call last):
    ...
    rnnkit.errors.InputError: head must be one of ('point', 'quantile'); got 'mean'
    """
    if value not in choices:
        raise InputError(f"{_prefix(owner)}{name} must be one of {choices}; got {value!r}")
