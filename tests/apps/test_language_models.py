"""charlm and wordlm from Python: train on made-up text, generate from the Run and from the loaded run
directory, and the run directory's files (best weights, results)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

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
    assert json.loads((tmp_path / "run" / "results.json").read_text())["val_loss"] == pytest.approx(evals[-1]["val_loss"])
    sample = "".join(charlm.generate(run, "the ", 30, seed=3))
    assert len(sample) == 30 and set(sample) <= set("the cat sat on mat.")
    loaded = rnnkit.load(tmp_path / "run")
    assert loaded.app == "charlm" and "".join(charlm.generate(loaded, "the ", 30, seed=3)) == sample
    with pytest.raises(InputError, match="prime contains the character 'z'"):
        next(charlm.generate(loaded, "zebra", 5))


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
