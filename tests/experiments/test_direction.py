"""The direction experiment: the kinds of token, the breakdown, the verdict, and a tiny run end to end."""

from __future__ import annotations

import random

import pytest

from rnnkit import experiments
from rnnkit.experiments import direction

TRAIN = [(["the", "can", "rusts"], ["DET", "NOUN", "VERB"], 1),
         (["we", "can", "go"], ["PRON", "AUX", "VERB"], 5),
         (["the", "can", "is"], ["DET", "NOUN", "AUX"], 9)]


def test_token_groups_from_training_counts():
    counts = direction.tag_counts(TRAIN)
    # "can" is ambiguous (NOUN twice, AUX once); after "the" it was always NOUN
    assert direction.token_groups(counts, ["the", "can", "fly"], ["DET", "AUX", "VERB"]) == [
        ["one tag in training"], ["ambiguous, other tag", "left context misleads"], ["unseen word"]]
    assert direction.token_groups(counts, ["we", "can"], ["PRON", "AUX"]) == [
        ["one tag in training"], ["ambiguous, other tag"]]  # after "we" it was AUX: the left context decides
    assert direction.token_groups(counts, ["they", "can"], ["PRON", "NOUN"])[1] == ["ambiguous, usual tag"]


def test_breakdown_counts_right_answers_by_group_and_tag():
    test = [(["the", "can", "fly"], ["DET", "AUX", "VERB"], 1)]
    tables = direction.breakdown(TRAIN, test, {"unidirectional": [["DET", "NOUN", "VERB"]],
                                               "bidirectional": [["DET", "AUX", "NOUN"]]})
    assert tables["groups"]["all"] == {"tokens": 3, "unidirectional": 2, "bidirectional": 2}
    assert tables["groups"]["left context misleads"] == {"tokens": 1, "unidirectional": 0, "bidirectional": 1}
    assert tables["tags"]["VERB"] == {"tokens": 1, "unidirectional": 1, "bidirectional": 0}
    assert tables["groups"]["ambiguous, usual tag"] == {}


def test_verdict_on_made_up_counts():
    groups = {"all": {"tokens": 1000, "unidirectional": 900, "bidirectional": 930},
              "left context misleads": {"tokens": 100, "unidirectional": 40, "bidirectional": 60}}
    holds, line = direction.verdict(groups, margin=0.005)
    assert holds and "+3.00 points" in line and "+20.0 points" in line
    groups["all"]["bidirectional"] = 903
    assert direction.verdict(groups, margin=0.005)[0] is False


def right_context_corpus(n: int, seed: int) -> str:
    """Sentences where "x" is tagged by the word AFTER it: A before "a", B before "b"."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        after = rng.choice("ab")
        lines += ["w\tW", f"x\t{after.upper()}", f"{after}\tL", ""]
    return "\n".join(lines)


def test_run_end_to_end_on_a_tiny_tagged_file(tmp_path):
    for name, n, seed in (("train.tsv", 120, 0), ("dev.tsv", 20, 1), ("test.tsv", 30, 2)):
        (tmp_path / name).write_text(right_context_corpus(n, seed), encoding="utf-8")
    s = direction.DirectionSettings(data=str(tmp_path / "train.tsv"), val_data=str(tmp_path / "dev.tsv"),
                                    test_data=str(tmp_path / "test.tsv"), hidden_size=8, embedding_size=8,
                                    steps=60, eval_every=30, batch_size=8, lr=2e-2, out=str(tmp_path / "out"),
                                    quiet=True)
    results = experiments.run_experiment(direction, s)
    groups = results["tables"]["groups"]
    assert groups["all"]["tokens"] == 90 and groups["left context misleads"]["tokens"] > 0
    # only the right context tells A from B: the bidirectional tagger gets "x" right, the other cannot beat chance
    assert groups["all"]["bidirectional"] == 90
    assert groups["all"]["unidirectional"] < 90 and results["holds"]
    uni, bi = results["sizes"]["unidirectional"], results["sizes"]["bidirectional"]
    assert uni[0] > bi[0] and abs(uni[1] - bi[1]) < 0.05 * bi[1]  # widened to the same parameter count
    assert (tmp_path / "out" / "direction.png").read_bytes()[:4] == b"\x89PNG"
    assert "left context misleads" in (tmp_path / "out" / "results.md").read_text()


def test_settings_checks():
    with pytest.raises(ValueError, match="steps"):
        direction.DirectionSettings(steps=0)


def test_own_validation_or_test_files_need_own_training_data():
    with pytest.raises(ValueError, match="test_data goes with data"):
        direction.DirectionSettings(test_data="test.tsv")
