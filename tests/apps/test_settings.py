"""The settings classes of rnnkit.apps: checks at construction, explicit settings win, sources, replace."""

from __future__ import annotations

import pytest

from rnnkit.apps.charlm import CharLMSettings
from rnnkit.apps.settings import option_names, setting_name
from rnnkit.apps.wordlm import WordLMSettings
from rnnkit.errors import InputError


@pytest.mark.parametrize("changes,needle", [
    (dict(hidden_size=0), "hidden_size must be an int >= 1; got 0"),
    (dict(hidden_size=2.5), "hidden_size must be an int; got 2.5"),
    (dict(hidden_size=True), "hidden_size must be an int; got True"),
    (dict(cell="transformer"), "cell must be one of rnn, lstm"),
    (dict(val_fraction=0.0), "val_fraction must be a number in (0, 0.5]; got 0.0"),
    (dict(lr=float("nan")), "lr must be a number; got nan"),
    (dict(max_steps=None, max_epochs=None), "no budget"),
    (dict(bptt=32, bptt_k2=16), "k2 must be >= k1"),
])
def test_a_bad_setting_names_itself_what_was_expected_and_what_came(changes, needle):
    with pytest.raises(InputError, match=None) as err:
        CharLMSettings(**changes)
    assert needle in str(err.value)


def test_defaults_are_declared_once_and_changed_per_application():
    assert CharLMSettings().batch_size == 32 and WordLMSettings().batch_size == 20
    assert WordLMSettings().optimizer == "sgd" and CharLMSettings().optimizer == "adam"
    with pytest.raises(TypeError):
        CharLMSettings(no_such_setting=1)


def test_named_budget_drops_the_other_defaults_and_sources_say_who_chose():
    s = CharLMSettings(max_steps=50, lr=0.01)
    assert (s.max_steps, s.max_epochs, s.early_stop_patience) == (50, None, None)
    assert s.sources["max_steps"] == "user" and s.sources["max_epochs"] == "default" and s.explicit("lr")
    assert CharLMSettings().max_epochs == 10


def test_a_setting_switched_off_by_another_is_an_error_in_python_as_on_the_command_line():
    with pytest.raises(InputError, match="momentum has no effect with optimizer adam"):
        CharLMSettings(momentum=0.9)
    assert CharLMSettings(momentum=0.9, optimizer="sgd").momentum == 0.9
    with option_names(), pytest.raises(InputError, match="--momentum has no effect with --optimizer adam"):
        CharLMSettings(momentum=0.9)
    assert setting_name("batch_size") == "batch_size"


def test_replace_keeps_sources_and_checks_again():
    s = CharLMSettings(max_steps=50)
    t = s.replace(lr=0.01)
    assert t.lr == 0.01 and t.sources["lr"] == "user" and t.max_steps == 50 and t.max_epochs is None
    assert s.lr == 0.002  # frozen: the original is unchanged
    with pytest.raises(InputError):
        s.replace(hidden_size=-1)


def test_create_keeps_a_resumed_default_a_default():
    s = CharLMSettings.create({"max_epochs": 10, "max_steps": 400}, {"max_epochs": "default", "max_steps": "user"})
    assert s.max_epochs is None and s.max_steps == 400
    with pytest.raises(InputError, match="unknown settings bogus"):
        CharLMSettings.create({"bogus": 1}, {})
