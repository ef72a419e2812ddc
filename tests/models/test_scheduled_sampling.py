"""Scheduled sampling: the schedule's values, the per-position choice, and both decoders feeding it."""

from __future__ import annotations

import math

import pytest
import torch

from rnnkit.data.captions import PAD as CAPTION_PAD
from rnnkit.errors import InputError
from rnnkit.models.caption import CaptionConfig, CaptionModel
from rnnkit.models.scheduled_sampling import SamplingSchedule, feed_previous
from rnnkit.models.seq2seq import Seq2Seq, Seq2SeqConfig

V = 11
FAVOURED = 7  # the token the rigged output layers always predict


@pytest.mark.parametrize("schedule,steps,expected", [
    (SamplingSchedule("none"), [0, 10 ** 6], [1.0, 1.0]),
    (SamplingSchedule("linear", k=0.9, c=0.1, minimum=0.25), [0, 2, 6, 100], [0.9, 0.7, 0.3, 0.25]),
    (SamplingSchedule("exponential", k=0.5), [0, 1, 3], [1.0, 0.5, 0.125]),
    (SamplingSchedule("exponential", k=0.5, minimum=0.2), [3], [0.2]),
    (SamplingSchedule("inverse_sigmoid", k=4), [0, 8], [4 / 5, 4 / (4 + math.exp(2))]),
    (SamplingSchedule("inverse_sigmoid", k=4), [10 ** 9], [0.0]),  # exp overflow is capped, not raised
])
def test_schedule_values(schedule, steps, expected):
    assert [schedule(i) for i in steps] == pytest.approx(expected)


def test_feed_previous_keeps_gold_at_rate_and_padding_always():
    g = torch.Generator().manual_seed(0)
    gold = torch.randint(1, V, (4000,), generator=g)
    gold[::4] = 0  # a quarter is padding
    logits = torch.full((4000, V), -30.0)
    logits[:, 0] = 30.0  # the model would say "padding" everywhere
    fed = feed_previous(gold, logits, 0.7, pad_id=0, generator=g)
    real = gold != 0
    assert torch.equal(fed[~real], gold[~real])
    kept = (fed[real] == gold[real]).float().mean().item()
    assert kept == pytest.approx(0.7, abs=0.03)
    assert set(fed[real][fed[real] != gold[real]].tolist()) == {0}  # the rest are the model's samples
    assert torch.equal(feed_previous(gold, logits, 1.0, pad_id=0), gold)
    with pytest.raises(InputError, match=r"teacher_forcing must be in \[0, 1\]; got 1.5"):
        feed_previous(gold, logits, 1.5, pad_id=0)


def _seq2seq_feeds(teacher_forcing):
    """(tokens the seq2seq decoder was fed (B, T), gold target_in (B, T), pad id)."""
    torch.manual_seed(0)
    model = Seq2Seq(Seq2SeqConfig(source_vocab_size=V, target_vocab_size=V, hidden_size=8, embedding_size=4,
                                  dropout=0.0, max_source_len=8, max_target_len=8))
    with torch.no_grad():
        model.head.bias.fill_(-30.0)
        model.head.bias[FAVOURED] = 30.0
    source, lengths = torch.randint(4, V, (3, 5)), torch.tensor([5, 4, 2])
    target_in = torch.tensor([[2, 4, 5, 6, 8, 9], [2, 5, 4, 0, 0, 0], [2, 9, 0, 0, 0, 0]])
    fed = []
    advance = model._advance
    model._advance = lambda tokens, state: (fed.append(tokens.clone()), advance(tokens, state))[1]
    model(source, lengths, target_in, teacher_forcing=teacher_forcing)
    return torch.stack(fed, 1), target_in, model.config.pad_id


def _caption_feeds(teacher_forcing):
    """(tokens the caption decoder was fed (B, T), gold inputs tokens[:, :-1] (B, T), pad id)."""
    torch.manual_seed(0)
    model = CaptionModel(CaptionConfig(vocab_size=V, image_size=8, cnn_width=2, cnn_blocks=1, embedding_size=4,
                                       hidden_size=8, attention_size=4, dropout=0.0))
    with torch.no_grad():
        model.out.bias.fill_(-30.0)
        model.out.bias[FAVOURED] = 30.0
    images = torch.rand(3, 1, 8, 8)
    tokens = torch.tensor([[1, 4, 5, 6, 8, 9, 2], [1, 5, 4, 2, 0, 0, 0], [1, 9, 2, 0, 0, 0, 0]])
    assert CAPTION_PAD == 0
    fed = []
    step = model.step
    model.step = lambda inp, state: (fed.append(inp.clone()), step(inp, state))[1]
    model(images, tokens, teacher_forcing=teacher_forcing)
    return torch.stack(fed, 1), tokens[:, :-1], CAPTION_PAD


@pytest.mark.parametrize("feeds", [_seq2seq_feeds, _caption_feeds], ids=["seq2seq", "caption"])
def test_decoders_feed_samples_but_never_in_place_of_padding(feeds):
    fed, gold, pad = feeds(0.0)
    real = gold != pad
    assert torch.equal(fed[:, 0], gold[:, 0])  # the start token is always gold
    assert torch.equal(fed[~real], gold[~real])  # padding stays padding
    assert (fed[:, 1:][real[:, 1:]] == FAVOURED).all()  # everything else is the model's own choice
    fed, gold, _ = feeds(1.0)
    assert torch.equal(fed, gold)
    with pytest.raises(InputError, match=r"teacher_forcing must be in \[0, 1\]"):
        feeds(-0.1)
