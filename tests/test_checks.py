"""rnnkit.checks: one message shape per kind of bad setting, and the configs that use it."""

from __future__ import annotations

import math

import pytest

from rnnkit.checks import check_choice, check_int, check_positive_ints, check_positive_number, check_probability
from rnnkit.errors import InputError
from rnnkit.models.caption import CaptionConfig
from rnnkit.models.char_lm import LMConfig
from rnnkit.models.forecast import ForecastConfig
from rnnkit.models.seq2seq import Seq2SeqConfig
from rnnkit.training import TrainConfig


@pytest.mark.parametrize("value", [0, -3, True, 2.0, "2", None])
def test_check_int_refuses_what_is_not_a_positive_int(value):
    with pytest.raises(InputError, match=rf"^Owner: size must be a positive int; got {value!r}$"):
        check_int("size", value, owner="Owner")


def test_check_int_minimum_none_and_hint():
    check_int("size", None, allow_none=True)
    check_int("layers", 0, minimum=0)
    with pytest.raises(InputError, match=r"^size must be a positive int or None; got 0$"):
        check_int("size", 0, allow_none=True)
    with pytest.raises(InputError, match=r"^width must be an int >= 0 \(0 = off\); got -1$"):
        check_int("width", -1, minimum=0, hint=" (0 = off)")


def test_check_positive_ints_names_the_first_bad_field():
    class Config:
        a, b, c = 1, 0, -1
    with pytest.raises(InputError, match=r"^C: b must be a positive int; got 0$"):
        check_positive_ints(Config(), ("a", "b", "c"), owner="C")


@pytest.mark.parametrize("value", [0, -1.0, math.nan, math.inf, True, "1"])
def test_check_positive_number(value):
    with pytest.raises(InputError, match=r"^lr must be a positive number; got "):
        check_positive_number("lr", value)
    check_positive_number("lr", 1e-9)
    check_positive_number("lr", None, allow_none=True)


def test_check_probability_bounds():
    check_probability("p", 0.0)
    check_probability("p", 1.0, include_one=True)
    for bad in (1.0, -0.01, True, "0.5", None):
        with pytest.raises(InputError, match=r"^p must be in \[0, 1\); got "):
            check_probability("p", bad)
    with pytest.raises(InputError, match=r"^p must be in \[0, 1\]; got 1.5$"):
        check_probability("p", 1.5, include_one=True)


def test_check_choice():
    check_choice("kind", "b", ("a", "b"))
    with pytest.raises(InputError, match=r"^X: kind must be one of \('a', 'b'\); got 'c'$"):
        check_choice("kind", "c", ("a", "b"), owner="X")


# The configs: a wrong type is reported as bad input, never as a TypeError from a comparison, and a bool
# is not a count.
@pytest.mark.parametrize("make,match", [
    (lambda: Seq2SeqConfig(10, 10, decoder_layers=True), "decoder_layers must be a positive int or None; got True"),
    (lambda: ForecastConfig(1, 3, "2", 4, 2), "num_calendar must be an int >= 0; got '2'"),
    (lambda: CaptionConfig(10, dropout="0.1"), r"CaptionConfig: dropout must be in \[0, 1\); got '0.1'"),
    (lambda: LMConfig(10, dropout=None), r"dropout must be in \[0, 1\); got None"),
    (lambda: LMConfig(10, embedding_size=-1), r"embedding_size must be an int >= 0 \(0 = one-hot input\); got -1"),
    (lambda: TrainConfig(max_steps=0), "max_steps must be a positive int or None; got 0"),
    (lambda: TrainConfig(max_steps=1, lr=math.inf), "lr must be a positive number; got inf"),
])
def test_configs_report_bad_settings(make, match):
    with pytest.raises(InputError, match=match):
        make()
