"""Tagger: BIO entities (conlleval semantics), entity F1 on a CoNLL fixture, padding invariance, training, CLI."""

from __future__ import annotations

import pytest
import torch

from rnnkit.data.labelled import IGNORE, UNK, SequenceLoader
from rnnkit.errors import InputError
from rnnkit.models.char_words import CharWords
from rnnkit.models.tagger import SequenceTagger, TaggerConfig, TagTask, bio_entities, entity_scores, is_bio
from rnnkit.training import TrainConfig, Trainer


def test_bio_entities():
    assert bio_entities(["B-PER", "I-PER", "O", "B-LOC"]) == {("PER", 0, 2), ("LOC", 3, 4)}
    assert bio_entities(["I-ORG", "I-ORG", "O"]) == {("ORG", 0, 2)}  # I- after O starts an entity
    assert bio_entities(["B-PER", "I-LOC"]) == {("PER", 0, 1), ("LOC", 1, 2)}  # a type change starts another
    assert bio_entities(["B-PER", "B-PER"]) == {("PER", 0, 1), ("PER", 1, 2)}
    assert is_bio(["O", "B-X", "I-X"]) and not is_bio(["NOUN", "VERB"]) and not is_bio(["O"])


def test_entity_scores_fixture():
    true = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG", "I-ORG"]]
    pred = [["B-PER", "I-PER", "O", "O"], ["O", "B-ORG", "O"]]
    s = entity_scores(true, pred)
    # true entities 3, predicted 2 (PER right; ORG with the wrong end)
    assert s["entity_precision"] == pytest.approx(0.5) and s["entity_recall"] == pytest.approx(1 / 3)
    assert s["entity_f1"] == pytest.approx(0.4)
    assert entity_scores(true, true)["entity_f1"] == 1.0


def test_tagger_padding_invariance_and_masked_loss():
    m = SequenceTagger(TaggerConfig(20, 4, hidden_size=5, embedding_size=4, num_layers=2, dropout=0.0)).double()
    seqs, tags = [[3, 4, 5, 6], [7, 8]], [[0, 1, 2, 3], [1, 2]]
    b = SequenceLoader(seqs, tags, 2).collate([0, 1])
    z = m(b["tokens"], b["lengths"])
    alone = m(torch.tensor([[7, 8]]), torch.tensor([2]))
    torch.testing.assert_close(z[1, :2], alone[0], rtol=1e-10, atol=1e-10)
    r = TagTask().loss(m, b)
    assert int(r.count) == 6 and b["labels"][1, 2] == IGNORE


def test_tagger_learns():
    # tag = token parity, recoverable from the token itself; loss must fall fast
    g = torch.Generator().manual_seed(0)
    seqs = [torch.randint(2, 12, (int(torch.randint(1, 9, (1,), generator=g)),), generator=g).tolist()
            for _ in range(128)]
    tags = [[t % 2 for t in s] for s in seqs]
    m = SequenceTagger(TaggerConfig(12, 2, cell="gru", hidden_size=8, embedding_size=8, num_layers=1, dropout=0.0))
    tr = Trainer(m, TagTask(), SequenceLoader(seqs, tags, 32, shuffle=True),
                 TrainConfig(max_steps=60, lr=2e-2, quiet=True, tensorboard=False),
                 val_data=SequenceLoader(seqs, tags, 256))
    before = tr.evaluate()["val_loss"]
    tr.fit()
    assert tr.evaluate()["val_loss"] < 0.3 * before


def test_cli_tag_bio_end_to_end(tmp_path):
    from rnnkit.cli import main
    sent = ("Peter\tB-PER\nlives\tO\nin\tO\nParis\tB-LOC\n\nMary\tB-PER\nAnn\tI-PER\nvisits\tO\nRome\tB-LOC\n\n")
    (tmp_path / "train.txt").write_text(sent * 10)
    (tmp_path / "dev.txt").write_text(sent)
    (tmp_path / "test.txt").write_text(sent)
    out = tmp_path / "run"
    main(["train", "tag", "--data", str(tmp_path / "train.txt"), "--val-data", str(tmp_path / "dev.txt"),
          "--test-data", str(tmp_path / "test.txt"), "--min-count", "1", "--hidden-size", "8",
          "--embedding-size", "8", "--max-steps", "3", "--out", str(out), "--quiet", "--no-tensorboard"])
    text = (out / "results.md").read_text()
    assert "entity_f1" in text and "| majority tag |" in text and "| word-window logistic regression |" in text


def test_cli_tag_unseen_test_tag(tmp_path, capsys):
    from rnnkit.cli import main
    (tmp_path / "train.txt").write_text("a\tX\nb\tY\n\n" * 3)
    (tmp_path / "test.txt").write_text("a\tX\nb\tZ\n")
    with pytest.raises(SystemExit) as e:
        main(["train", "tag", "--data", str(tmp_path / "train.txt"), "--test-data", str(tmp_path / "test.txt"),
              "--max-steps", "1", "--out", str(tmp_path / "run")])
    assert e.value.code == 2
    assert "test.txt line 2: label 'Z' was not seen in training" in capsys.readouterr().err


def test_held_out_sentences_stay_out_of_the_vocabulary(tmp_path):
    """Without --val-data, 10% of the training sentences validate: their words must be as unseen as a test
    set's (a vocabulary fitted before the hold-out leaked them)."""
    from rnnkit.apps.tag import TagSettings, prepare

    sentences = [[(f"w{i}a", "N"), (f"w{i}b", "V")] for i in range(40)]  # every sentence has its own words
    path = tmp_path / "tags.tsv"
    path.write_text("\n\n".join("\n".join(f"{w}\t{t}" for w, t in s) for s in sentences) + "\n")
    settings = TagSettings(data=str(path), min_count=1, embedding_size=4, hidden_size=4, num_layers=1, dropout=0.0,
                           batch_size=4)
    run_info = prepare(settings, None, 0, 1).info
    # <pad>, <unk> and the two words of each of the 36 sentences kept for training
    assert len(run_info["tokenizer"]["words"]) == 2 + 2 * 36


@pytest.mark.parametrize("kind, width", [("cnn", 7), ("bilstm", 14)])
def test_char_words_shapes_zero_padding_and_padding_invariance(kind, width):
    """CharWords: (B, T, L) character ids → (B, T, width), zero at padded words; a word's vector does not depend
    on the padding around it (longer words, longer sentences in the batch)."""
    m = CharWords(kind, 12, 5, 7).double()
    chars = torch.tensor([[[2, 3, 4, 0], [5, 0, 0, 0], [6, 7, 8, 9]], [[2, 3, 4, 0], [0, 0, 0, 0], [0, 0, 0, 0]]])
    valid = torch.tensor([[True, True, True], [True, False, False]])
    v = m(chars, valid)
    assert v.shape == (2, 3, width) and torch.all(v[1, 1:] == 0)
    torch.testing.assert_close(v[0, 0], v[1, 0])
    alone = m(torch.tensor([[[2, 3, 4]]]), torch.tensor([[True]]))
    torch.testing.assert_close(v[0, 0], alone[0, 0])


@pytest.mark.parametrize("kind", ["cnn", "bilstm"])
def test_unknown_words_are_told_apart_by_their_characters(kind):
    """Two words outside the vocabulary (both <unk>) get different tag scores from their spelling with character
    features, and the same scores without."""
    tokens, lengths = torch.tensor([[2, 1], [2, 1]]), torch.tensor([2, 2])
    chars = torch.tensor([[[2, 3, 0], [4, 5, 6]], [[2, 3, 0], [7, 8, 0]]])
    cfg = dict(vocab_size=10, num_tags=3, hidden_size=4, embedding_size=3, num_layers=1, dropout=0.0)
    with_chars = SequenceTagger(TaggerConfig(**cfg, char_features=kind, num_chars=9, char_hidden_size=4)).eval()
    z = with_chars(tokens, lengths, chars)
    assert not torch.allclose(z[0, 1], z[1, 1])
    plain = SequenceTagger(TaggerConfig(**cfg)).eval()
    z = plain(tokens, lengths)
    torch.testing.assert_close(z[0, 1], z[1, 1])
    with pytest.raises(InputError, match="pass chars"):
        with_chars(tokens, lengths)
    with pytest.raises(InputError, match="character vocabulary"):
        TaggerConfig(**cfg, char_features="cnn")


def test_frequency_scaled_word_dropout_reads_rare_words_as_unk_more_often():
    """word_dropout_alpha α: a word seen n times in training becomes <unk> with p = α/(α+n) in training (and
    independently with p = word_dropout); padding stays padding; without the counts training stops with a
    message saying what to call."""
    cfg = dict(vocab_size=5, num_tags=2, hidden_size=4, embedding_size=3, num_layers=1, dropout=0.0)
    m = SequenceTagger(TaggerConfig(**cfg, word_dropout_alpha=1.0))
    with pytest.raises(InputError, match="set_word_counts"):
        m(torch.tensor([[2, 3]]), torch.tensor([2]))
    m.set_word_counts(torch.tensor([0, 0, 1, 99, 0]))  # id 2 seen once (p = 1/2), id 3 99 times (p = 1/100)
    torch.manual_seed(0)
    tokens = torch.tensor([[2, 3, 0]]).repeat(20000, 1)
    unk_rate = (m.drop_words(tokens) == UNK).double().mean(0)
    assert unk_rate[0] == pytest.approx(0.5, abs=0.02) and unk_rate[1] == pytest.approx(0.01, abs=0.004)
    assert unk_rate[2] == 0
    both = SequenceTagger(TaggerConfig(**cfg, word_dropout=0.5, word_dropout_alpha=1.0))
    both.set_word_counts(torch.tensor([0, 0, 1, 99, 0]))
    unk_rate = (both.drop_words(tokens) == UNK).double().mean(0)
    assert unk_rate[0] == pytest.approx(0.75, abs=0.02) and unk_rate[1] == pytest.approx(0.505, abs=0.02)
    with pytest.raises(InputError, match="shape"):
        m.set_word_counts(torch.tensor([1, 2]))
    with pytest.raises(InputError, match="word_dropout_alpha"):
        TaggerConfig(**cfg, word_dropout_alpha=-0.5)


@pytest.mark.parametrize("kind", ["cnn", "bilstm"])
def test_char_words_computes_each_distinct_word_once(kind):
    """A batch repeats its common words: the character encoder sees each distinct spelling once, and every
    occurrence gets its vector (and its gradient) as if computed alone."""
    m = CharWords(kind, 12, 5, 7).double()
    seen = []
    m.embedding.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape[0]))
    chars = torch.tensor([[[2, 3, 0], [4, 0, 0], [2, 3, 0]], [[4, 0, 0], [2, 3, 0], [0, 0, 0]]])
    valid = torch.tensor([[True, True, True], [True, True, False]])
    v = m(chars, valid)
    assert seen == [2]  # "2 3" and "4", not the five valid words
    torch.testing.assert_close(v[0, 0], v[1, 1])
    torch.testing.assert_close(v[0, 1], m(torch.tensor([[[4]]]), torch.tensor([[True]]))[0, 0])
    v[0, 0].sum().backward()  # one occurrence's gradient reaches the shared parameters
    assert m.embedding.weight.grad[2].abs().sum() > 0 and m.embedding.weight.grad[4].abs().sum() == 0
