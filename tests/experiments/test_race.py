"""gru-vs-lstm and sru-vs-lstm (the shared race module): verdicts on made-up numbers, the interleaved timing,
a tiny race end to end through the shared Trainer, and the settings' errors."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from rnnkit import experiments
from rnnkit.data.text import DataError
from rnnkit.errors import InputError
from rnnkit.experiments import gru_vs_lstm, race, sru_vs_lstm
from rnnkit.training import Trainer


def _contestant(cell, parameters, step_ms, bpc):
    return race.Contestant(cell, parameters, parameters, step_ms, seconds=[0.0, 1.0], steps=[0, 10], bpc=[5.0, bpc])


def test_gru_verdict_needs_fewer_parameters_and_a_clearly_shorter_step():
    lstm = _contestant("lstm", 400, 10.0, 2.0)
    assert gru_vs_lstm.holds(_contestant("gru", 300, 9.0, 2.1), lstm)
    assert not gru_vs_lstm.holds(_contestant("gru", 300, 9.8, 2.1), lstm)  # 2% is within the timing noise
    assert not gru_vs_lstm.holds(_contestant("gru", 500, 5.0, 2.1), lstm)
    text = gru_vs_lstm.verdict(_contestant("gru", 300, 12.0, 1.9), lstm)
    assert text.startswith("**Verdict: the claim does not hold on this machine.**")
    assert "0.75× the LSTM's parameters" in text and "not faster" in text and "GRU reached the lower" in text


def test_sru_verdict_needs_the_claimed_speedup():
    lstm = _contestant("lstm", 400, 10.0, 2.0)
    assert sru_vs_lstm.speedup(_contestant("sru", 100, 2.0, 2.1), lstm) == 5.0
    assert sru_vs_lstm.holds(_contestant("sru", 100, 2.0, 2.1), lstm)
    assert "claim holds on this CPU" in sru_vs_lstm.verdict(_contestant("sru", 100, 2.0, 2.1), lstm)
    text = sru_vs_lstm.verdict(_contestant("sru", 100, 4.0, 2.1), lstm)
    assert "claim does not hold on this CPU" in text and "2.50× as fast" in text and "LSTM reached the lower" in text


def test_step_times_take_turns_and_update_nothing():
    calls = []

    def fake(cell):
        model = torch.nn.Linear(2, 1)

        def loss(m, batch, state):
            calls.append(cell)
            return SimpleNamespace(loss_sum=m(batch).sum())

        data = SimpleNamespace(batches=lambda epoch, start: iter([torch.ones(3, 2)]))
        return SimpleNamespace(model=model, task=SimpleNamespace(loss=loss), train_data=data)

    prepared = {"gru": fake("gru"), "lstm": fake("lstm")}
    weights = {c: p.model.weight.detach().clone() for c, p in prepared.items()}
    times = race.step_times(prepared, rounds=3)
    assert calls == ["gru", "lstm"] * 4  # a warm-up round, then 3 counted, alternating
    assert set(times) == {"gru", "lstm"} and all(t >= 0 for t in times.values())
    for c, p in prepared.items():
        assert torch.equal(p.model.weight, weights[c]) and p.model.weight.grad is None


def test_tiny_race_end_to_end(tmp_path, monkeypatch):
    text = tmp_path / "text.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 200, encoding="utf-8")
    clocks = []
    fit = Trainer.fit
    monkeypatch.setattr(Trainer, "fit", lambda self: (clocks.append(self.config.clock), fit(self))[1])
    results = experiments.run("gru-vs-lstm", out=str(tmp_path / "out"), data=str(text), chars=5000, hidden_size=8,
                              batch_size=4, bptt=16, seconds_per_cell=0.5, eval_every=0.25, timing_rounds=2,
                              quiet=True)
    assert clocks == ["cpu", "cpu"]  # both trained on the shared Trainer, on the CPU clock
    assert (tmp_path / "out" / "gru-vs-lstm.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "out" / "data.txt").read_text(encoding="utf-8") == text.read_text(encoding="utf-8")[:5000]
    gru, lstm = results["contestants"]
    assert (gru["cell"], lstm["cell"]) == ("gru", "lstm")
    assert gru["recurrent_parameters"] * 4 == lstm["recurrent_parameters"] * 3  # 3 gate blocks against 4
    for c in (gru, lstm):
        assert c["step_ms"] > 0 and c["steps"][-1] > 0 and c["seconds"][-1] >= 0.5
        assert c["bpc"][-1] < c["bpc"][0]  # it learned something
    assert "| GRU |" in results["markdown"] and "**Verdict: the claim" in results["markdown"]
    assert results["holds"] == ("the claim holds" in results["markdown"])


def test_settings_and_data_errors(tmp_path):
    with pytest.raises(InputError, match="chars"):
        gru_vs_lstm.SETTINGS(chars=10)
    short = tmp_path / "short.txt"
    short.write_text("too short", encoding="utf-8")
    with pytest.raises(DataError, match=r"short\.txt: the race needs at least 1000 characters of text; the file has 9"):
        experiments.run("sru-vs-lstm", out=str(tmp_path / "out"), data=str(short), quiet=True)
    assert {"gru-vs-lstm", "sru-vs-lstm"} <= set(experiments.EXPERIMENTS)
