"""The adding problem from Python: one cell trained through the runner, evaluated at other lengths."""

from __future__ import annotations

import rnnkit
from rnnkit.apps import adding


def test_gru_learns_a_short_adding_problem_and_loads_back(tmp_path):
    run = adding.train(cell="gru", seq_len=8, hidden_size=16, max_steps=300, eval_every=100, eval_size=500,
                       out=str(tmp_path / "run"), quiet=True, tensorboard=False)
    assert run.results["verdict"] == "learned" and run.results["ratio"] < 0.1
    loaded = rnnkit.load(tmp_path / "run")
    same = adding.evaluate(loaded)
    assert same["mse"] == adding.evaluate(run)["mse"] < 0.1 * adding.BASELINE_MSE
    assert (tmp_path / "run" / "results.md").read_text().count("learned") == 1
