"""The cell registry: one home (rnnkit.cells), its old import path kept, one message for an unknown name."""

from __future__ import annotations

import pytest

import rnnkit.cells as cells
from rnnkit.errors import InputError
from rnnkit.models.seq2seq import Seq2SeqConfig


def test_registry_builds_every_cell_by_name():
    for name, kind in cells.CELLS.items():
        cell = cells.make_cell(name, 3, 4)
        assert type(cell) is getattr(kind, "func", kind)  # a variant is a partial of its class (rnn-relu)
        assert (cell.input_size, cell.hidden_size) == (3, 4)
    assert cells.make_cell("rnn-relu", 3, 4).nonlinearity == "relu"


def test_old_import_path_is_the_same_registry():
    from rnnkit.models import char_lm
    assert char_lm.CELLS is cells.CELLS and char_lm.make_cell is cells.make_cell


def test_unknown_cell_names_setting_owner_and_choices():
    with pytest.raises(InputError, match=r"^CaptionConfig: unknown cell 'lstmm'; expected one of rnn, lstm, "):
        cells.check_cell("lstmm", owner="CaptionConfig")
    with pytest.raises(InputError, match=r"^unknown encoder_cell 'x'; expected one of rnn, lstm"):
        Seq2SeqConfig(10, 10, encoder_cell="x")
