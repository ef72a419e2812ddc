"""The depth experiment: equal parameter budgets, a short run end to end through the char-LM, the verdict."""

from __future__ import annotations

import json

import pytest

from rnnkit.errors import InputError
from rnnkit.experiments import depth
from rnnkit.experiments.app_runs import Curve, hidden_for_budget


def test_hidden_for_budget_picks_the_closest_size():
    assert hidden_for_budget(100, lambda h: h * h) == 10
    assert hidden_for_budget(110, lambda h: h * h) == 10  # 100 is closer than 121
    assert hidden_for_budget(118, lambda h: h * h) == 11
    with pytest.raises(InputError, match="below the smallest"):
        hidden_for_budget(5, lambda h: 10 + h)


def test_every_depth_gets_the_same_parameter_budget():
    sizes = []
    for layers in (1, 2, 4):
        hidden = hidden_for_budget(50_000, lambda h: depth.model_size(30, "lstm", 16, h, layers))
        sizes.append(depth.model_size(30, "lstm", 16, hidden, layers))
    assert all(abs(n - 50_000) < 0.03 * 50_000 for n in sizes)


def test_verdict_on_made_up_scores():
    holds, line = depth.verdict({1: 2.50, 2: 2.40, 3: 2.45}, margin=0.02)
    assert holds and "2 layers, reaches 2.400" in line and "0.100 better" in line and "the claim holds" in line
    holds, line = depth.verdict({1: 2.50, 2: 2.60, 4: 2.70}, margin=0.02)
    assert not holds and "does NOT hold" in line and "0.100 worse" in line
    assert not depth.verdict({1: 2.50, 2: 2.49}, margin=0.02)[0]  # better, but not by the margin
    assert depth.verdict({2: 2.0, 3: 1.9}, margin=0.0)[0] is False  # no one-layer model to compare with


@pytest.mark.parametrize("depths", ["0,1", "1,1", "a", ""])
def test_settings_reject_bad_depths(depths):
    with pytest.raises(InputError, match="depths"):
        depth.DepthSettings(depths=depths)


def test_gap_trend_compares_first_and_last_evaluations():
    curves = [Curve("1", [1, 2], [0, 1], [3.0, 2.5]), Curve("4", [1, 2], [0, 1], [4.0, 2.6])]
    assert "by 1.000 bits/char at the first evaluation and by 0.100 at the last" in depth.gap_trend(curves, [1, 4])
    assert depth.gap_trend(curves[:1], [1]) == ""


def test_run_end_to_end_on_a_tiny_text(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("the cat sat on the mat. " * 200, encoding="utf-8")
    s = depth.DepthSettings(data=str(text), depths="1,2", parameters=4000, embedding_size=8, steps=6,
                            eval_every=3, batch_size=2, bptt=8, out=str(tmp_path / "out"), quiet=True)
    from rnnkit import experiments
    results = experiments.run_experiment(depth, s)
    assert [r["layers"] for r in results["rows"]] == [1, 2]
    assert all(abs(r["parameters"] - 4000) < 400 and r["steps"] == 6 for r in results["rows"])
    assert [c["steps"] for c in results["curves"]] == [[3, 6], [3, 6]]
    assert (tmp_path / "out" / "depth.png").read_bytes()[:4] == b"\x89PNG"
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["rows"][1]["hidden"] < saved["rows"][0]["hidden"]  # two layers: narrower at the same budget
    assert "Verdict" in (tmp_path / "out" / "results.md").read_text()
