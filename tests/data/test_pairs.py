"""Sentence pairs and SentencePiece: formats, bad input with file and line, filtering, batching, round trips."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rnnkit.data.pairs import (EncodedPairs, PairBatches, Pair, collate, encode_pairs, load_pair_splits,
                               read_pairs)
from rnnkit.data.spm import SentencePieceTokenizer, train_sentencepiece
from rnnkit.data.text import DataError

ROOT = Path(__file__).resolve().parents[2]
KOR = ROOT / "data" / "tatoeba-eng-kor" / "train.tsv"
FRA = ROOT / "data" / "tatoeba-eng-fra"


def write(tmp_path: Path, name: str, data) -> Path:
    p = tmp_path / name
    p.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return p


def test_tsv_with_extra_column_and_blank_lines(tmp_path):
    p = write(tmp_path, "p.tsv", "Hi.\tSalut.\tCC-BY attribution\n\nGo.\tVa !\n  \n")
    pairs, blank, notes = read_pairs(p)
    assert [(x.source, x.target) for x in pairs] == [("Hi.", "Salut."), ("Go.", "Va !")]
    assert blank == 2
    assert pairs[1].origin.endswith("p.tsv:3")
    assert notes == [f"{p}: source = column 1, target = column 2; unused: column 3"]


def test_header_columns_are_chosen_and_reported(tmp_path):
    named = write(tmp_path, "n.csv", "id,target,source\n1,un,one\n2,deux,two\n")
    pairs, _, notes = read_pairs(named)
    assert [(x.source, x.target) for x in pairs] == [("one", "un"), ("two", "deux")]
    assert notes == [f"{named}: header row 'id,target,source' skipped; source = column 3 ('source'), "
                     f"target = column 2 ('target'); unused: column 1 ('id')"]
    positional = write(tmp_path, "p.csv", "x,y,z\nhello,bonjour,a\n")
    pairs, _, notes = read_pairs(positional)
    assert [(x.source, x.target) for x in pairs] == [("hello", "bonjour")]
    assert "header row 'x,y,z' skipped; source = column 1 ('x'), target = column 2 ('y'); unused: column 3" in notes[0]
    tsv = write(tmp_path, "h.tsv", "source\ttarget\nHi.\tSalut.\n")  # a TSV header naming the sides
    pairs, _, notes = read_pairs(tsv)
    assert [(x.source, x.target) for x in pairs] == [("Hi.", "Salut.")] and "header row" in notes[0]


@pytest.mark.parametrize("n,fractions,needed", [(2, (0.05, 0.05), 11), (5, (0.1, 0.1), 6), (0, (0.0, 0.0), 1)])
def test_too_few_pairs_to_hold_out(tmp_path, n, fractions, needed):
    """A split that would hold out nothing (or leave nothing to train on) stops; it used to train silently."""
    p = write(tmp_path, "p.csv", "x,y\n" + "".join(f"s{i},t{i}\n" for i in range(n)))
    with pytest.raises(DataError, match=f"{n} sentence pairs are too few .* at least {needed} are needed"):
        load_pair_splits(p, valid_fraction=fractions[0], test_fraction=fractions[1])


def test_csv_and_aligned_files(tmp_path):
    p = write(tmp_path, "c.csv", 'Q,A,label\n12시 땡!,하루가 또 가네요.,0\n"a, b","c ""d""",1\n')
    pairs, _, _ = read_pairs(p)
    assert [(x.source, x.target) for x in pairs] == [("12시 땡!", "하루가 또 가네요."), ("a, b", 'c "d"')]
    s = write(tmp_path, "s.txt", "one\ntwo\n")
    t = write(tmp_path, "t.txt", "un\ndeux\n")
    pairs, _, _ = read_pairs(s, t)
    assert [(x.source, x.target) for x in pairs] == [("one", "un"), ("two", "deux")]


@pytest.mark.parametrize("content,needle", [
    ("Hi.\tSalut.\nno tab here\n", "p.tsv:2: expected at least 2 tab-separated columns"),
    ("Hi.\tSalut.\nGo.\t\n", "p.tsv:2: one-sided pair: the target is empty"),
    ("\tVa !\n", "p.tsv:1: one-sided pair: the source is empty"),
    (b"Hi.\tSalut.\nGo.\tVa \xff!\n", "p.tsv:2: not UTF-8"),
    ("", "is empty"),
])
def test_bad_pairs_name_file_and_line(tmp_path, content, needle):
    p = write(tmp_path, "p.tsv", content)
    with pytest.raises(DataError) as err:
        read_pairs(p)
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_bad_aligned_and_csv(tmp_path):
    s = write(tmp_path, "s.txt", "one\ntwo\nthree\n")
    t = write(tmp_path, "t.txt", "un\ndeux\n")
    with pytest.raises(DataError, match="differ in length"):
        read_pairs(s, t)
    t2 = write(tmp_path, "t2.txt", "un\n\ntrois\n")
    with pytest.raises(DataError, match=r"t2.txt:2: one-sided"):
        read_pairs(s, t2)
    c = write(tmp_path, "c.csv", "Q,A\nonly one column\n")
    with pytest.raises(DataError, match=r"c.csv:2: expected at least 2"):
        read_pairs(c)
    with pytest.raises(DataError, match="does not exist"):
        read_pairs(tmp_path / "missing.tsv")


def test_splits_directory_and_single_file(tmp_path):
    splits = load_pair_splits(FRA)
    assert (len(splits.train), len(splits.valid), len(splits.test)) == (54000, 2999, 3001)
    p = write(tmp_path, "p.tsv", "".join(f"s{i}\tt{i}\n" for i in range(100)))
    a = load_pair_splits(p, valid_fraction=0.1, test_fraction=0.2)
    b = load_pair_splits(p, valid_fraction=0.1, test_fraction=0.2)
    assert (len(a.train), len(a.valid), len(a.test)) == (70, 10, 20)
    assert [x.source for x in a.test] == [x.source for x in b.test]  # fixed split
    assert not {x.source for x in a.train} & {x.source for x in a.test}
    sw = load_pair_splits(p, swap=True)
    assert sw.train[0].source.startswith("t")


@pytest.fixture(scope="module")
def kor_tokenizers():
    pairs, _, _ = read_pairs(KOR)
    src = train_sentencepiece([p.source for p in pairs], 800, "bpe")
    tgt = train_sentencepiece([p.target for p in pairs], 1200, "unigram")
    return pairs, src, tgt


def test_sentencepiece_round_trip_hangul(kor_tokenizers):
    pairs, src, tgt = kor_tokenizers
    for p in pairs[:200]:
        assert tgt.decode(tgt.encode(p.target)) == p.target
        assert src.decode(src.encode(p.source)) == p.source
    ids = tgt.encode("나는 학생입니다.")
    assert 1 not in ids  # no <unk>: Hangul is covered
    assert any("학" in piece for piece in tgt.pieces("나는 학생입니다."))
    # bytes, JSON and file round trips give the same model
    again = SentencePieceTokenizer.from_json(tgt.to_json())
    assert again.encode("안녕하세요") == tgt.encode("안녕하세요")
    with pytest.raises(ValueError, match="corrupt"):
        SentencePieceTokenizer.from_json({**tgt.to_json(), "sha256": "0" * 64})
    with pytest.raises(ValueError, match="not a SentencePiece model"):
        SentencePieceTokenizer(b"not a model")


def test_sentencepiece_training_is_deterministic(tmp_path):
    pairs, _, _ = read_pairs(KOR)
    texts = [p.target for p in pairs[:1000]]
    a = train_sentencepiece(texts, 900, "unigram")
    b = train_sentencepiece(texts, 900, "unigram")
    assert a.sha256 == b.sha256
    a.save(tmp_path / "m.model")
    assert SentencePieceTokenizer.load(tmp_path / "m.model").sha256 == a.sha256
    with pytest.raises(DataError, match="empty corpus"):
        train_sentencepiece(["", "  "], 100)
    with pytest.raises(DataError, match="Vocabulary size is smaller than required_chars"):
        train_sentencepiece(texts, 100, "unigram")  # fewer pieces than Hangul syllables in the text


def test_encode_filters_and_counts(kor_tokenizers):
    _, src, tgt = kor_tokenizers
    pairs = [Pair("Go.", "가.", "x:1"), Pair("word " * 40, "단어", "x:2"), Pair("Hi.", "\u200b", "x:3")]
    enc = encode_pairs(pairs, src, tgt, max_source_len=20, max_target_len=20)
    assert len(enc) == 1 and enc.dropped_long == 1 and enc.dropped_empty == 1
    assert enc.origins == ["x:1"]


def test_collate_and_batches():
    b = collate([[5, 6, 7], [8]], [[9], [10, 11]], pad_id=0, bos_id=2, eos_id=3)
    assert b["source"].tolist() == [[5, 6, 7, 3], [8, 3, 0, 0]]
    assert b["source_lengths"].tolist() == [4, 2]
    assert b["target_in"].tolist() == [[2, 9, 0], [2, 10, 11]]
    assert b["target_out"].tolist() == [[9, 3, 0], [10, 11, 3]]
    g = torch.Generator().manual_seed(0)
    seqs = [torch.randint(4, 50, (int(n),), generator=g).tolist() for n in torch.randint(1, 20, (203,), generator=g)]
    data = EncodedPairs(seqs, seqs, [""] * 203)
    loader = PairBatches(data, 16, pad_id=0, bos_id=2, eos_id=3, seed=1, pool=4)
    assert len(loader) == 13
    e0 = list(loader.batches(0))
    assert sum(x["source"].shape[0] for x in e0) == 203
    again = list(loader.batches(0, 5))  # resume mid-epoch: the same batches from index 5
    assert all(torch.equal(x["source"], y["source"]) for x, y in zip(e0[5:], again))
    e1 = list(loader.batches(1))
    assert not all(torch.equal(x["source"], y["source"]) for x, y in zip(e0, e1) if x["source"].shape == y["source"].shape)
    # bucketing: padding is a small fraction of the tokens
    real = sum(int(x["source_lengths"].sum()) for x in e0)
    total = sum(x["source"].numel() for x in e0)
    assert real / total > 0.8
    with pytest.raises(DataError, match="no sentence pairs"):
        PairBatches(EncodedPairs([], [], []), 4, pad_id=0, bos_id=2, eos_id=3)
