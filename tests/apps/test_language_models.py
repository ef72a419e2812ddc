"""charlm and wordlm from Python: train on made-up text, generate from the Run and from the loaded run
directory, and the run directory's files (best weights, results)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import rnnkit
from rnnkit.apps import charlm, wordlm
from rnnkit.errors import InputError

TINY = dict(hidden_size=16, embedding_size=8, batch_size=4, bptt=16, val_batch_size=2, eval_every=10,
            tensorboard=False, quiet=True, threads=1)


def test_charlm_trains_generates_and_loads(tmp_path: Path):
    text = tmp_path / "notes.txt"
    text.write_text("the cat sat on the mat. " * 60, encoding="utf-8")
    run = charlm.train(data=str(text), out=str(tmp_path / "run"), max_steps=40, **TINY)
    assert run.app == "charlm" and not run.preempted and run.summary["step"] == 40
    first = run.summary["best"]["val_loss"]
    evals = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
             if '"eval"' in l]
    assert first == min(e["val_loss"] for e in evals)  # the best of the evaluations, kept and restored
    for name in ("best.safetensors", "results.md", "results.json", "config.json"):
        assert (tmp_path / "run" / name).is_file(), name
    # the report's validation scores are the kept weights', not the last evaluation's
    assert json.loads((tmp_path / "run" / "results.json").read_text())["val_loss"] == first
    sample = "".join(charlm.generate(run, "the ", 30, seed=3))
    assert len(sample) == 30 and set(sample) <= set("the cat sat on mat.")
    loaded = rnnkit.load(tmp_path / "run")
    assert loaded.app == "charlm" and "".join(charlm.generate(loaded, "the ", 30, seed=3)) == sample
    with pytest.raises(InputError, match="prime contains the character 'z'"):
        next(charlm.generate(loaded, "zebra", 5))


def test_results_report_the_kept_weights_when_a_later_evaluation_is_worse(tmp_path: Path):
    """The validation tenth ("acb…") is unlike the training text ("abc…"): the more the model learns, the
    worse it validates. results.json gives the scores of the kept (best) weights, not of the last evaluation."""
    text = tmp_path / "abc.txt"
    text.write_text("abc" * 540 + "acb" * 60, encoding="utf-8")
    run = charlm.train(data=str(text), out=str(tmp_path / "run"), max_steps=40, **TINY)
    evals = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if '"eval"' in l]
    best = min(e["val_loss"] for e in evals)
    assert evals[-1]["val_loss"] > best  # the situation under test
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["val_loss"] == best == run.summary["best"]["val_loss"]
    assert json.loads((tmp_path / "run" / "best.json").read_text())["scores"]["val_bpc"] == results["val_bpc"]


def test_charlm_settings_object_and_changes(tmp_path: Path):
    text = tmp_path / "t.txt"
    text.write_text("abcabcabd " * 80)
    s = charlm.CharLMSettings(data=str(text), out=str(tmp_path / "r"), max_steps=3, **TINY)
    run = charlm.train(s, cell="gru")
    assert run.settings.cell == "gru" and run.model.config.cell == "gru"
    with pytest.raises(InputError, match="holds a previous run"):
        charlm.train(s)
    assert charlm.train(s, overwrite=True).summary["step"] == 3


def test_wordlm_reports_test_perplexity(tmp_path: Path):
    data = tmp_path / "ptb"
    data.mkdir()
    words = "a b c d e f g h".split()
    for split, n in (("train", 300), ("valid", 60), ("test", 60)):
        (data / f"{split}.txt").write_text("\n".join(" ".join(words[(i + j) % 8] for j in range(6))
                                                     for i in range(n // 6)) + "\n")
    run = wordlm.train(data=str(data), out=str(tmp_path / "run"), max_steps=60, hidden_size=16, batch_size=4,
                       optimizer="adam", lr=0.01, schedule="constant", init_range=0.1,
                       bptt=8, val_batch_size=2, eval_every=10, tensorboard=False, quiet=True, threads=1)
    assert run.results["test_ppl"] < 9  # below the uniform 9 tokens (8 words and <eos>)
    words_out = "".join(wordlm.generate(rnnkit.load(tmp_path / "run"), "a b", 12, seed=0)).split()
    assert len(words_out) <= 12 and set(words_out) <= set(words)


def test_a_fine_tune_starts_from_the_weights_and_vocabulary_of_another_run(tmp_path: Path):
    text = tmp_path / "notes.txt"
    text.write_text("the cat sat on the mat. " * 60, encoding="utf-8")
    base = charlm.train(data=str(text), out=str(tmp_path / "base"), max_steps=40, **TINY)
    other = tmp_path / "other.txt"  # fewer characters: the vocabulary (and so the model's shape) is base's
    other.write_text("the hat. " * 80, encoding="utf-8")
    tuned = charlm.train(data=str(other), out=str(tmp_path / "tuned"), max_steps=1, lr=1e-12,
                         init_from=str(tmp_path / "base"), **TINY)
    assert tuned.info["vocab"] == base.info["vocab"]
    for name, w in base.model.state_dict().items():  # one step at lr 1e-12: still base's weights
        torch.testing.assert_close(tuned.model.state_dict()[name], w, rtol=1e-6, atol=1e-9)
    with pytest.raises(InputError, match=r"init_from .*its model has hidden_size 16, this run's 24"):
        charlm.train(data=str(text), out=str(tmp_path / "wide"), max_steps=1, init_from=str(tmp_path / "base"),
                     **{**TINY, "hidden_size": 24})
    with pytest.raises(InputError, match="init_from 'nowhere'.*does not exist"):
        charlm.train(data=str(text), out=str(tmp_path / "x"), max_steps=1, init_from="nowhere", **TINY)
