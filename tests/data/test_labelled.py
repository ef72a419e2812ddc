"""Labelled sequences: file readers, tokenizers, label vocabularies (unseen labels), padded batches."""

from __future__ import annotations

import pytest
import torch

from rnnkit.data.labelled import (IGNORE, CharTokenizer, LabelVocab, PieceTokenizer, SequenceLoader, WordTokenizer,
                                  read_classification, read_tagged, tokenizer_from_json)
from rnnkit.data.text import DataError


def test_read_classification(tmp_path):
    p = tmp_path / "a.tsv"
    p.write_text("1\tgood film\n0\tbad film\n\n1\tgreat\n")
    labels, texts = read_classification(p)
    assert labels == ["1", "0", "1"] and texts == ["good film", "bad film", "great"]
    p.write_text("1\tgood film\nno tab here\n")
    with pytest.raises(DataError, match="line 2: expected 'label<TAB>text'"):
        read_classification(p)


def test_unseen_label_named(tmp_path):
    vocab = LabelVocab.from_labels(["neg", "pos", "neg"])
    assert vocab.labels == ["neg", "pos"] and vocab.encode(["pos", "neg"]) == [1, 0]
    with pytest.raises(DataError, match="test.tsv line 7: label 'neutral' was not seen in training"):
        vocab.encode(["pos", "neutral"], source="test.tsv", lines=[3, 7])


def test_read_tagged_conll(tmp_path):
    p = tmp_path / "ner.txt"
    p.write_text("-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\nPeter NNP B-NP B-PER\n"
                 "Blackburn NNP I-NP I-PER\n")
    s = read_tagged(p)
    assert [x[0] for x in s] == [["EU", "rejects"], ["Peter", "Blackburn"]]
    assert [x[1] for x in s] == [["B-ORG", "O"], ["B-PER", "I-PER"]]
    assert s[1][2] == 6  # first line of the sentence, for error messages
    p.write_text("lonely\n")
    with pytest.raises(DataError, match="line 1: expected 'token<TAB>tag'"):
        read_tagged(p)


def test_tokenizers_round_trip():
    w = WordTokenizer.fit(["a b a", "b c"], min_count=2)
    assert w.words == ["<pad>", "<unk>", "a", "b"] and w.encode("a c b") == [2, 1, 3]
    assert tokenizer_from_json(w.to_json()).encode("a c b") == [2, 1, 3]
    c = CharTokenizer.fit(["재미 있다", "재미 없다"])
    assert c.pieces("재미") == ["재", "미"] and 1 not in c.encode("재미 있다")
    texts = [f"this film number {i} was {'good' if i % 2 else 'bad'} and long" for i in range(200)]
    sp = PieceTokenizer.fit(texts, vocab_size=40)
    ids = sp.encode("this film was good")
    assert ids and all(i >= 1 for i in ids) and tokenizer_from_json(sp.to_json()).encode("this film was good") == ids


def test_loader_pads_and_covers_everything():
    seqs = [[5] * n for n in (3, 1, 4, 2, 6)]
    loader = SequenceLoader(seqs, [0, 1, 0, 1, 0], 2, shuffle=True, seed=3)
    seen = []
    for b in loader.batches(0):
        T = b["tokens"].shape[1]
        assert T == int(b["lengths"].max())
        for row, n in zip(b["tokens"], b["lengths"].tolist()):
            assert row[:n].eq(5).all() and row[n:].eq(0).all()
        seen += b["lengths"].tolist()
    assert sorted(seen) == [1, 2, 3, 4, 6] and len(loader) == 3
    tags = SequenceLoader([[1, 2, 3], [4]], [[0, 1, 2], [2]], 2)
    b = next(tags.batches(0))
    assert b["labels"].tolist() == [[0, 1, 2], [2, IGNORE, IGNORE]]
    cut = SequenceLoader([[1, 2, 3, 4]], [[0, 1, 2, 3]], 1, max_length=2)
    assert next(cut.batches(0))["labels"].tolist() == [[0, 1]]
