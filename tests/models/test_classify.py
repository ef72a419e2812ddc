"""Sequence classifier: pooling over padded positions, padding invariance, both objectives, training, CLI."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from rnnkit.data.labelled import SequenceLoader
from rnnkit.models.classify import (ClassifierConfig, ClassifierEnsemble, ClassifyTask, SequenceClassifier,
                                    build_classifier, classification_scores, pool)
from rnnkit.training import TrainConfig, Trainer


@pytest.mark.parametrize("how", ["last", "mean", "max", "max+mean"])
@pytest.mark.parametrize("D", [1, 2])
def test_pooling_ignores_padded_positions(how, D):
    B, T, H = 3, 5, 4
    lengths = torch.tensor([5, 2, 3])
    y = torch.randn(B, T, D * H)
    garbage = y.clone()
    for b, n in enumerate(lengths.tolist()):
        garbage[b, n:] = 1e6  # whatever sits at padded positions must not matter
    out = pool(garbage, lengths, how, D)
    for b, n in enumerate(lengths.tolist()):
        v = y[b, :n]
        expect = {"mean": v.mean(0), "max": v.max(0).values, "max+mean": torch.cat([v.max(0).values, v.mean(0)]),
                  "last": torch.cat([v[-1, :H], v[0, H:]]) if D == 2 else v[-1]}[how]
        torch.testing.assert_close(out[b], expect)


def test_attention_pooling_weighs_valid_steps_only():
    """v = Σ softmax(scores over the valid steps) · y: padded steps get no weight, whatever their score."""
    y, scores, lengths = torch.randn(2, 4, 3), torch.randn(2, 4), torch.tensor([4, 2])
    garbage_y, garbage_s = y.clone(), scores.clone()
    garbage_y[1, 2:], garbage_s[1, 2:] = 1e6, 50.0
    out = pool(garbage_y, lengths, "attention", scores=garbage_s)
    for b, n in enumerate(lengths.tolist()):
        expect = (torch.softmax(scores[b, :n], 0)[:, None] * y[b, :n]).sum(0)
        torch.testing.assert_close(out[b], expect)


def test_word_dropout_reads_tokens_as_unk_in_training_only():
    cfg = ClassifierConfig(20, 2, pooling="max", hidden_size=4, embedding_size=3, word_dropout=0.5)
    m = SequenceClassifier(cfg)
    seen = []
    m.embedding.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].clone()))
    tokens = torch.randint(2, 20, (8, 10))
    torch.manual_seed(0)
    m.train()(tokens, torch.full((8,), 10))
    m.eval()(tokens, torch.full((8,), 10))
    dropped = seen[0] == 1  # <unk>
    assert 0.3 < dropped.float().mean() < 0.7 and torch.equal(seen[0][~dropped], tokens[~dropped])
    assert torch.equal(seen[1], tokens)


@pytest.mark.parametrize("pooling", ["last", "mean", "max", "max+mean", "attention"])
def test_padded_batch_equals_sequences_alone(pooling):
    cfg = ClassifierConfig(20, 3, pooling=pooling, hidden_size=6, embedding_size=5, bidirectional=True)
    m = SequenceClassifier(cfg).double().eval()
    seqs = [[3, 4, 5, 6, 7], [8, 9], [10, 11, 12]]
    batch = SequenceLoader(seqs, [0, 1, 2], 3).collate([0, 1, 2])
    z = m(batch["tokens"], batch["lengths"])
    for b, s in enumerate(seqs):
        alone = m(torch.tensor([s]), torch.tensor([len(s)]))
        torch.testing.assert_close(z[b], alone[0], rtol=1e-10, atol=1e-10)


def test_objectives():
    tokens, lengths = torch.randint(1, 20, (4, 6)), torch.tensor([6, 3, 1, 4])
    labels = torch.tensor([0, 1, 1, 0])
    sig = SequenceClassifier(ClassifierConfig(20, 2, objective="sigmoid", hidden_size=4, embedding_size=3))
    z = sig(tokens, lengths)
    assert z.shape == (4,)
    r = ClassifyTask().loss(sig, {"tokens": tokens, "lengths": lengths, "labels": labels})
    torch.testing.assert_close(r.loss_sum, F.binary_cross_entropy(torch.sigmoid(z), labels.float(), reduction="sum"))
    soft = SequenceClassifier(ClassifierConfig(20, 3, objective="softmax", hidden_size=4, embedding_size=3))
    z = soft(tokens, lengths)
    assert z.shape == (4, 3)
    r = ClassifyTask().loss(soft, {"tokens": tokens, "lengths": lengths, "labels": labels})
    torch.testing.assert_close(r.loss_sum, -torch.log_softmax(z, -1)[torch.arange(4), labels].sum())
    with pytest.raises(ValueError, match="sigmoid objective is for two classes; got 3"):
        ClassifierConfig(20, 3, objective="sigmoid")


def test_pooled_dropout_drops_the_pooled_vector_alone():
    """pooled_dropout acts on the vector before the head, not on the embeddings; None means `dropout`."""
    tokens, lengths = torch.randint(1, 20, (6, 5)), torch.full((6,), 5)
    for dropout, pooled, head_dropped in ((0.0, 0.5, True), (0.5, 0.0, False), (0.5, None, True)):
        m = SequenceClassifier(ClassifierConfig(20, 2, pooling="max", hidden_size=8, embedding_size=4,
                                                dropout=dropout, pooled_dropout=pooled)).train()
        seen = {}
        m.encoder.register_forward_hook(lambda mod, inp, out: seen.update(encoder=inp[0]))
        m.head.register_forward_hook(lambda mod, inp, out: seen.update(head=inp[0]))
        m(tokens, lengths)
        assert ((seen["head"] == 0).float().mean().item() > 0.3) == head_dropped, (dropout, pooled)
        assert ((seen["encoder"] == 0).float().mean().item() > 0.3) == (dropout > 0), (dropout, pooled)
    with pytest.raises(ValueError, match="pooled_dropout"):
        ClassifierConfig(20, 2, pooled_dropout=1.0)


@pytest.mark.parametrize("objective,K", [("sigmoid", 2), ("softmax", 3)])
def test_ensemble_averages_the_members_probabilities(objective, K):
    torch.manual_seed(0)
    cfg = ClassifierConfig(20, K, objective=objective, pooling="max+mean", hidden_size=4, embedding_size=3,
                           ensemble=3)
    m = build_classifier(cfg).eval()
    assert isinstance(m, ClassifierEnsemble) and len(m.members) == 3
    assert not torch.equal(m.members[0].head.weight, m.members[1].head.weight)  # each its own initial weights
    assert isinstance(build_classifier(ClassifierConfig(20, K, objective=objective)), SequenceClassifier)
    tokens, lengths = torch.randint(1, 20, (4, 6)), torch.tensor([6, 3, 1, 4])
    z = torch.stack([member(tokens, lengths) for member in m.members])  # (3, B[, K])
    if objective == "sigmoid":
        torch.testing.assert_close(torch.sigmoid(m(tokens, lengths)), torch.sigmoid(z).mean(0))
    else:
        torch.testing.assert_close(torch.softmax(m(tokens, lengths), -1), torch.softmax(z, -1).mean(0))
    torch.testing.assert_close(m.predict(tokens, lengths), (m(tokens, lengths) > 0).long() if objective == "sigmoid"
                               else m(tokens, lengths).argmax(-1))


def test_ensemble_members_learn_from_their_own_losses_and_validation_scores_the_average():
    torch.manual_seed(0)
    m = build_classifier(ClassifierConfig(20, 2, objective="sigmoid", hidden_size=4, embedding_size=3, ensemble=2))
    tokens, lengths, labels = torch.randint(1, 20, (4, 6)), torch.tensor([6, 3, 1, 4]), torch.tensor([0, 1, 1, 0])
    batch = {"tokens": tokens, "lengths": lengths, "labels": labels}

    def bce(z):
        return F.binary_cross_entropy_with_logits(z, labels.float(), reduction="sum")
    m.train()
    torch.manual_seed(1)
    members = [bce(member(tokens, lengths)) for member in m.members]
    torch.manual_seed(1)
    torch.testing.assert_close(ClassifyTask().loss(m, batch).loss_sum, (members[0] + members[1]) / 2)
    m.eval()
    torch.testing.assert_close(ClassifyTask().loss(m, batch).loss_sum, bce(m(tokens, lengths)))


def test_ensemble_setting_is_checked():
    with pytest.raises(ValueError, match="ensemble"):
        ClassifierConfig(20, 2, ensemble=0)


def test_training_learns_a_keyword_task():
    g = torch.Generator().manual_seed(0)
    seqs, labels = [], []
    for i in range(256):
        n = int(torch.randint(2, 12, (1,), generator=g))
        s = torch.randint(3, 30, (n,), generator=g).tolist()
        if i % 2:
            s[int(torch.randint(0, n, (1,), generator=g))] = 2  # the keyword
        seqs.append(s)
        labels.append(int(2 in s))
    train = SequenceLoader(seqs, labels, 32, shuffle=True)
    m = SequenceClassifier(ClassifierConfig(30, 2, objective="sigmoid", pooling="max", cell="gru", hidden_size=16,
                                            embedding_size=8))
    tr = Trainer(m, ClassifyTask(), train, TrainConfig(max_steps=80, lr=1e-2, quiet=True, tensorboard=False),
                 val_data=SequenceLoader(seqs, labels, 256))
    before = tr.evaluate()["val_loss"]
    tr.fit()
    assert tr.evaluate()["val_loss"] < 0.5 * before
    b = SequenceLoader(seqs, labels, 256).collate(range(256))
    acc = (m.predict(b["tokens"], b["lengths"]) == b["labels"]).float().mean()
    assert acc > 0.9


def test_scores():
    s = classification_scores(torch.tensor([0, 1, 1, 0]).numpy(), torch.tensor([0, 1, 0, 0]).numpy(), 2)
    assert s["accuracy"] == 0.75 and s["f1"] == pytest.approx(2 / 3)


def _write(path, rows):
    path.write_text("".join(f"{l}\t{t}\n" for l, t in rows))
    return path


def test_cli_classify_end_to_end(tmp_path):
    from rnnkit.cli import main
    rows = [("pos" if i % 2 else "neg", ("great fun " if i % 2 else "dull mess ") + f"film {i % 7}")
            for i in range(60)]
    train = _write(tmp_path / "train.tsv", rows)
    test = _write(tmp_path / "test.tsv", rows[:10])
    out = tmp_path / "run"
    main(["train", "classify", "--data", str(train), "--test-data", str(test), "--tokenizer", "word",
          "--min-count", "1", "--hidden-size", "8", "--embedding-size", "8", "--max-steps", "3", "--batch-size", "16",
          "--out", str(out), "--quiet", "--no-tensorboard"])
    text = (out / "results.md").read_text()
    assert "| majority class |" in text and "| bag-of-words logistic regression |" in text
    assert (out / "confusion.png").stat().st_size > 1000


def test_cli_unseen_test_label_one_line(tmp_path, capsys):
    from rnnkit.cli import main
    train = _write(tmp_path / "train.tsv", [("pos", "good"), ("neg", "bad")] * 5)
    test = _write(tmp_path / "test.tsv", [("pos", "good"), ("neutral", "meh")])
    with pytest.raises(SystemExit) as e:
        main(["train", "classify", "--data", str(train), "--test-data", str(test), "--tokenizer", "word",
              "--max-steps", "1", "--out", str(tmp_path / "run")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "line 2: label 'neutral' was not seen in training" in err
    assert not (tmp_path / "run").exists()
