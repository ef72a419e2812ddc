"""Labelled sequences: file readers, tokenizers, label vocabularies (unseen labels), padded batches."""

from __future__ import annotations

import pytest
import torch

from rnnkit.data.labelled import (IGNORE, CharTokenizer, LabelVocab, PieceTokenizer, SequenceLoader, WordTokenizer,
                                  read_classification, read_tagged, tokenizer_from_json)
from rnnkit.data.text import DataError
from rnnkit.errors import InputError


def test_read_classification(tmp_path):
    p = tmp_path / "a.tsv"
    p.write_text("1\tgood film\n0\tbad film\n\n1\tgreat\n")
    data = read_classification(p)
    assert data.labels == ["1", "0", "1"] and data.texts == ["good film", "bad film", "great"]
    assert data.lines == [1, 2, 4] and data.notes == []
    p.write_text("1\tgood film\nno tab here\n")
    with pytest.raises(DataError, match="line 2: expected 'label<TAB>text'"):
        read_classification(p)


REVIEWS = [("pos" if i % 2 else "neg", f"{'a fine' if i % 2 else 'a dull'} film number {i}") for i in range(30)]


def test_classification_header_is_skipped_and_reported(tmp_path):
    """A header row used to become a label of its own (one example; a third class)."""
    p = tmp_path / "h.tsv"
    p.write_text("label\ttext\n" + "".join(f"{l}\t{t}\n" for l, t in REVIEWS))
    data = read_classification(p)
    assert sorted(set(data.labels)) == ["neg", "pos"] and len(data.labels) == 30 and data.lines[0] == 2
    assert data.notes == [f"{p}: line 1 is a header, skipped: label = column 1 ('label'), text = column 2 ('text')"]
    named = tmp_path / "n.tsv"  # columns found by their names, in any order
    named.write_text("id\treview\tsentiment\n" + "".join(f"{i}\t{t}\t{l}\n" for i, (l, t) in enumerate(REVIEWS)))
    data = read_classification(named)
    assert data.labels[:2] == ["neg", "pos"] and data.texts[0] == "a dull film number 0"
    numeric = tmp_path / "stars.tsv"  # an unknown header name above numeric labels
    numeric.write_text("stars\tblurb\n" + "".join(f"{i % 3}\t{t}\n" for i, (_, t) in enumerate(REVIEWS)))
    assert sorted(set(read_classification(numeric).labels)) == ["0", "1", "2"]


def test_classification_swapped_columns(tmp_path):
    """text<TAB>label used to be read with each text as a label (a 30-class problem)."""
    p = tmp_path / "s.tsv"
    p.write_text("".join(f"{t}\t{l}\n" for l, t in REVIEWS))
    data = read_classification(p)
    assert sorted(set(data.labels)) == ["neg", "pos"] and data.texts[0] == "a dull film number 0"
    assert data.columns == (-1, None) and "read as text<TAB>label" in data.notes[0]
    # a small test file follows the training file's layout instead of guessing
    small = tmp_path / "t.tsv"
    small.write_text("a film\tpos\nanother\tneg\nthird\tmeh\n")
    assert read_classification(small, data.columns).labels == ["pos", "neg", "meh"]
    ids = tmp_path / "ids.tsv"  # neither end looks like labels: stop, do not guess
    ids.write_text("".join(f"{i}\t{t} {i}\n" for i, (_, t) in enumerate(REVIEWS)))
    with pytest.raises(DataError, match="first column does not look like labels .30 distinct values in 30"):
        read_classification(ids)


@pytest.mark.parametrize("reader", [read_classification, read_tagged])
def test_not_utf8_names_file_and_line(tmp_path, reader):
    p = tmp_path / "latin1.tsv"
    p.write_bytes("pos\tgood\n\nneg\tcaf\xe9 noir\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1.tsv:3: not UTF-8 text \(byte 7 of the line"):
        reader(p)
    with pytest.raises(DataError, match="missing.tsv' does not exist"):
        reader(tmp_path / "missing.tsv")


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


def test_read_tagged_conllu_skips_ranges_and_empty_nodes(tmp_path):
    """CoNLL-U used to be read as token<TAB>tag with the MISC column as the tag and comments as tokens."""
    p = tmp_path / "ud.txt"
    p.write_text("# sent_id = 1\n# text = Don't go.\n"
                 "1-2\tDon't\t_\t_\t_\t_\t_\t_\t_\t_\n"
                 "1\tDo\tdo\tAUX\tVBP\t_\t3\taux\t_\t_\n"
                 "2\tn't\tnot\tPART\tRB\t_\t3\tadvmod\t_\t_\n"
                 "3\tgo\tgo\tVERB\tVB\t_\t0\troot\t_\tSpaceAfter=No\n"
                 "3.1\tgo\tgo\tVERB\tVB\t_\t_\t_\t0:root\t_\n"
                 "4\t.\t.\tPUNCT\t.\t_\t3\tpunct\t_\t_\n\n"
                 "# sent_id = 2\n1\tHi\thi\tINTJ\tUH\t_\t0\troot\t_\t_\n")
    s = read_tagged(p)
    assert s == [(["Do", "n't", "go", "."], ["AUX", "PART", "VERB", "PUNCT"], 4), (["Hi"], ["INTJ"], 11)]
    bad = tmp_path / "bad.conllu"
    bad.write_text("1\tHi\thi\tINTJ\n")
    with pytest.raises(DataError, match="bad.conllu' line 1: expected 10 tab-separated CoNLL-U columns; got 4"):
        read_tagged(bad)


def test_read_tagged_without_blank_lines(tmp_path):
    """A token-per-line file without blank lines used to end in 'no examples' (or one huge sentence)."""
    p = tmp_path / "flat.tsv"
    p.write_text("".join(f"w{i}\tX\n" for i in range(10)))
    with pytest.raises(DataError, match="flat.tsv': no blank line separates sentences, so all 10 tokens would "
                                        "be one sentence .at least 2 sentences needed.; expected one token<TAB>tag"):
        read_tagged(p, min_sentences=2)
    assert len(read_tagged(p)) == 1  # one short sentence is a sentence
    p.write_text("".join(f"w{i}\tX\n" for i in range(500)))
    with pytest.raises(DataError, match="all 500 tokens would be one sentence; expected"):
        read_tagged(p)


def test_sequence_loader_pads_each_tokens_characters():
    """chars: per sequence, per token, character ids → "chars" (B, T, L) padded with 0 in both T and L, in the
    same order as the tokens; an empty sequence's one <unk> step has one padding character."""
    loader = SequenceLoader([[5, 6, 7], [8], []], [[0, 1, 0], [1], []], 3,
                            chars=[[[2, 3], [4], [2, 3, 4, 5]], [[6, 7, 8]], []])
    b = loader.collate([0, 1, 2])
    assert b["chars"].shape == (3, 3, 4)
    assert b["chars"][0].tolist() == [[2, 3, 0, 0], [4, 0, 0, 0], [2, 3, 4, 5]]
    assert b["chars"][1].tolist() == [[6, 7, 8, 0], [0] * 4, [0] * 4] and b["chars"][2].sum() == 0
    assert "chars" not in SequenceLoader([[5]], [[0]], 1).collate([0])
    with pytest.raises(InputError, match="2 sequences but 2 labels and 1 character sequences"):
        SequenceLoader([[5], [6]], [0, 1], 1, chars=[[[2]]])
