"""Word-level LM (Zaremba et al. 2014): PTB-layout loader, <eos> per line, vocabulary from train,
perplexity on valid/test, the paper's epoch schedule, weight tying, a few steps on a tiny corpus."""

from __future__ import annotations

import json
import math

import pytest
import torch

from rnnkit.cli import main
from rnnkit.data.text import EOS, DataError, load_word_corpus
from rnnkit.models import word_lm


def write_ptb(d, n_train=300, unknown_in_valid=False):
    g = torch.Generator().manual_seed(0)
    words = "the cat sat on a mat dog ran to park and then home".split()

    def line():
        # a learnable pattern: word i is usually followed by word i+1
        start = int(torch.randint(0, len(words), (1,), generator=g))
        return " ".join(words[(start + k) % len(words)] for k in range(int(torch.randint(3, 9, (1,), generator=g))))

    d.mkdir(exist_ok=True)
    (d / "train.txt").write_text("\n".join(line() for _ in range(n_train)) + "\n")
    (d / "valid.txt").write_text("\n".join(line() for _ in range(40)) + ("\nzebra" if unknown_in_valid else "") + "\n")
    (d / "test.txt").write_text("\n".join(line() for _ in range(40)) + "\n")
    return d


def test_loader(tmp_path):
    d = write_ptb(tmp_path / "ptb")
    corpus = load_word_corpus(d)
    n_lines = len((d / "train.txt").read_text().splitlines())
    n_words = len((d / "train.txt").read_text().split())
    assert corpus.train.numel() == n_words + n_lines  # one <eos> per line
    assert int((corpus.train == corpus.vocab.index[EOS]).sum()) == n_lines
    assert len(corpus.vocab) == 13 + 1
    with pytest.raises(DataError, match="zebra"):
        load_word_corpus(write_ptb(tmp_path / "bad", unknown_in_valid=True))
    with pytest.raises(DataError, match="train.txt, valid.txt and test.txt"):
        load_word_corpus(tmp_path / "nope")


def test_model_init_and_tying():
    m = word_lm(50, hidden_size=16, init_range=0.1, tie_weights=True)
    assert m.head.weight is m.embedding.weight
    assert all(float(p.detach().abs().max()) <= 0.1 for p in m.parameters())
    assert m.embedding.weight.shape == (50, 16)


def test_train_wordlm_cli(tmp_path, capsys):
    d = write_ptb(tmp_path / "ptb")
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        main(["train", "wordlm", "--config", "zaremba-small", "--data", str(d), "--out", str(out),
              "--hidden-size", "24", "--max-epochs", "6", "--lr-decay-after-epochs", "2", "--quiet",
              "--no-tensorboard", "--batch-size", "4", "--bptt", "10", "--val-batch-size", "2",
              "--checkpoint-every", "50", "--tie-weights"])
        raise SystemExit(0)
    assert exc.value.code in (0, None), capsys.readouterr().err
    recs = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in recs if r["kind"] == "eval"]
    test = [r for r in recs if r["kind"] == "test"]
    assert len(evals) == 6 and len(test) == 1
    assert evals[-1]["val_ppl"] == pytest.approx(math.exp(evals[-1]["val_loss"]))
    assert evals[-1]["val_ppl"] < evals[0]["val_ppl"]
    assert evals[-1]["val_ppl"] < 14  # below the uniform guess over the 14-word vocabulary
    # the paper's schedule: lr 1 for the first epochs, then halved each epoch
    lrs = {}
    for r in recs:
        if r["kind"] == "train":
            lrs.setdefault(r["epoch"], r["lr"])
    assert [lrs[e] for e in sorted(lrs)] == [1.0, 1.0, 0.5, 0.25, 0.125, 0.0625]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["settings"]["loss_normalization"] == "sequence" and cfg["model"]["tie_weights"]
