"""The exploding-gradient experiment: the verdict's logic on made-up runs, a tiny run end to end through the
shared Trainer, and its settings' errors."""

from __future__ import annotations

import math

import pytest

from rnnkit import experiments
from rnnkit.errors import InputError
from rnnkit.experiments.exploding import ExplodingSettings, TrainingRun, growth, verdict
from rnnkit.training import Trainer


def _run(clip, diverged_at=None, mse=(0.9, 0.2)):
    return TrainingRun("rnn", clip, eval_steps=[0, 10], eval_mse=list(mse), diverged_at=diverged_at)


def test_verdict_needs_growth_divergence_without_clipping_and_training_with_it():
    diverged, trained = _run(None, diverged_at=7), _run(1.0)
    assert verdict(12.0, diverged, trained)
    assert not verdict(0.5, diverged, trained)  # the gradient vanishes instead
    assert not verdict(12.0, _run(None), trained)  # no clipping stayed finite
    assert not verdict(12.0, diverged, _run(1.0, diverged_at=3))  # clipping diverged too
    assert not verdict(12.0, diverged, _run(1.0, mse=(0.2, 0.3)))  # clipping kept it finite but did not learn
    assert not verdict(12.0, diverged, _run(1.0, mse=(0.2, math.nan)))
    assert growth([8.0, 2.0, 1.0]) == 8.0 and math.isnan(growth([1.0, 0.0]))


def test_tiny_run_diverges_without_clipping_and_trains_with_it(tmp_path, monkeypatch):
    fits = []
    fit = Trainer.fit
    monkeypatch.setattr(Trainer, "fit", lambda self: (fits.append(self.config.clip_norm), fit(self))[1])
    results = experiments.run("exploding", out=str(tmp_path), seq_len=20, hidden_size=16, batch_size=8, steps=30,
                              eval_every=15, init_scale=2.5, lr=0.3, quiet=True)
    assert fits == [None, 1.0, None, 1.0]  # every run is the shared Trainer's, unclipped then clipped
    assert (tmp_path / "exploding.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "results.md").read_text() == results["markdown"]
    for name in ("rnn-relu", "rnn"):
        cell = results["cells"][name]
        assert cell["radius"] == pytest.approx(2.5) and cell["default_radius"] < 1
        assert cell["growth"] > 1 > cell["default_growth"]
        assert cell["unclipped"]["diverged_at"] is not None and "training loss became" in cell["unclipped"]["error"]
        assert cell["clipped"]["diverged_at"] is None and len(cell["clipped"]["loss"]) == 30
        assert cell["clipped"]["eval_steps"] == [0, 15, 30]
        assert max(cell["clipped"]["grad_norm"]) > 1.0  # the norm before clipping is what is recorded
    assert results["holds"] and "the claim holds on this machine" in results["markdown"]
    assert "| Elman ReLU | 2.50" in results["markdown"]


def test_settings_errors():
    with pytest.raises(InputError, match="cells must list some of rnn-relu,rnn; got 'lstm'"):
        ExplodingSettings(cells="lstm")
    with pytest.raises(InputError, match="init_scale"):
        ExplodingSettings(init_scale=0.0)
    assert "exploding" in experiments.EXPERIMENTS and "clipped by norm" in experiments.module("exploding").CLAIM
