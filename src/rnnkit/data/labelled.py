"""Labelled sequences: sentence classification (label<TAB>text) and token tagging (token<TAB>tag, CoNLL-style).

    classification file  one example a line: label TAB text (a header row naming the columns is
                         skipped; text TAB label is recognised and reported)
    tagging file         one token a line: token [TAB other columns] TAB tag (the tag is the last column);
                         a blank line ends a sentence; "-DOCSTART-" lines are skipped
    CoNLL-U              FORM and UPOS of each word; comments, multiword ranges, empty nodes skipped

Tokenizers turn text into ids (0 = <pad>, 1 = <unk>): `WordTokenizer` (whitespace,
optionally lower-cased), `CharTokenizer`, `PieceTokenizer` (SentencePiece, trained
on the training texts only). `LabelVocab` maps labels to classes and rejects a
label the training data never had, naming it and its line. `SequenceLoader` pads
a batch to its longest sequence and hands `lengths` on, so the model runs the
core `lengths=` path and never needs packing.
"""

from __future__ import annotations

import base64
import re
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .._optional import require
from .text import DataError, read_lines
from ..errors import InputError

PathLike = Union[str, Path]
PAD, UNK = 0, 1
IGNORE = -100


# ------------------------------------------------------------------ reading
#: header cells (case-insensitive) that name a classification file's label and text columns
LABEL_NAMES = ("label", "labels", "class", "category", "sentiment", "polarity", "target", "y", "tag", "intent",
               "topic", "rating")
TEXT_NAMES = ("text", "sentence", "document", "review", "content", "comment", "utterance", "body", "x", "query",
              "question")


@dataclass
class ClassificationData:
    """What `read_classification` read: labels and texts, each example's line, and one note per decision
    taken about the file's layout (a header skipped, columns swapped) for the caller to show.

    `columns` is (label column, text column): a text column of None means every column but the label's."""

    labels: List[str]
    texts: List[str]
    lines: List[int]
    columns: Tuple[int, Optional[int]]
    notes: List[str]


def _is_number(cell: str) -> bool:
    try:
        float(cell)
        return True
    except ValueError:
        return False


def _looks_like_labels(values: Sequence[str]) -> bool:
    """A label column repeats a few short values; free text (spaces, mostly distinct values) does not."""
    spaced = sum(" " in v.strip() for v in values)
    return spaced <= 0.1 * len(values) and len(set(values)) <= max(2, len(values) / 2)


def _header_columns(path: Path, rows: List[Tuple[int, List[str]]]) -> Optional[Tuple[int, Optional[int]]]:
    """(label, text) columns named by a header first row, or None when the first row is an example.

    A header names a column (label/text/sentiment/...), or, above numeric labels, is the only non-number."""
    if len(rows) < 2:
        return None
    header = [c.strip().lower() for c in rows[0][1]]
    label = next((i for i, c in enumerate(header) if c in LABEL_NAMES), None)
    text = next((i for i, c in enumerate(header) if c in TEXT_NAMES), None)
    if label is None and text is None:
        for col in (0, len(header) - 1):  # e.g. "stars<TAB>review_body" above 1..5
            if not _is_number(header[col]) and all(len(c) > col and _is_number(c[col]) for _, c in rows[1:]):
                label = col
                break
    if label is None and text is None:
        return None
    if label is None or text is None:
        if len(header) != 2:
            raise DataError(f"{path}:{rows[0][0]}: a header row {rows[0][1]!r} that names only one of the label "
                            f"and text columns among {len(header)}; name both (label<TAB>text)")
        label = 1 - text if label is None else label
        text = 1 - label
    return label, text


def _layout(path: Path, rows: List[Tuple[int, List[str]]]) -> Tuple[Tuple[int, Optional[int]], List[str]]:
    """(label, text) columns of a headerless file, with a note when the label is the last column."""
    if _looks_like_labels([c[0] for _, c in rows]):
        return (0, None), []
    last = [c[-1] for _, c in rows]
    if len({len(c) for _, c in rows}) == 1 and _looks_like_labels(last):
        return (-1, None), [f"{path}: the first column looks like text and the last like labels "
                            f"({len(set(last))} distinct): read as text<TAB>label"]
    first = [c[0] for _, c in rows]
    spaced = ", most with spaces" if sum(" " in v for v in first) > len(first) / 2 else ""
    raise DataError(f"{path}: the first column does not look like labels ({len(set(first))} distinct values in "
                    f"{len(first)} examples{spaced}), nor does the last; expected label<TAB>text a line, each label "
                    f"shared by several examples")


def read_classification(path: PathLike, columns: Optional[Tuple[int, Optional[int]]] = None) -> ClassificationData:
    """Labels and texts of a label<TAB>text file; DataError naming the file and line of a malformed row.

    A first row that names its columns (label<TAB>text, sentiment<TAB>review, ...) is a header: it is
    skipped and says where the label and text are. Without one, `columns` (e.g. the training file's)
    is used, else the layout is inferred: a first column that looks like free text and a last that looks
    like labels are read as text<TAB>label. Each decision is reported in `notes`."""
    p = Path(path)
    rows = [(i, line.split("\t")) for i, line in read_lines(p) if line.strip()]
    if not rows:
        raise DataError(f"{str(p)!r} holds no examples")
    for i, cells in rows:
        if len(cells) < 2:
            raise DataError(f"{str(p)!r} line {i}: expected 'label<TAB>text'; got {cells[0][:40]!r}")
    notes: List[str] = []
    header = _header_columns(p, rows)
    if header is not None:
        names = rows[0][1]
        notes.append(f"{p}: line {rows[0][0]} is a header, skipped: label = column {header[0] + 1} "
                     f"({names[header[0]]!r}), text = column {header[1] + 1} ({names[header[1]]!r})")
        rows, columns = rows[1:], header
    elif columns is None:
        columns, notes = _layout(p, rows)
    label_col, text_col = columns
    data = ClassificationData([], [], [], columns, notes)
    for i, cells in rows:
        if len(cells) <= max(label_col, text_col or 0):
            raise DataError(f"{str(p)!r} line {i}: expected at least {max(label_col, text_col or 0) + 1} "
                            f"tab-separated columns; got {len(cells)}")
        label = cells[label_col]
        if text_col is not None:
            text = cells[text_col]
        else:
            text = "\t".join(cells[1:] if label_col == 0 else cells[:-1])
        if not label.strip() or not text.strip():
            raise DataError(f"{str(p)!r} line {i}: empty {'label' if not label.strip() else 'text'}")
        data.labels.append(label.strip())
        data.texts.append(text)
        data.lines.append(i)
    return data


#: a "sentence" longer than this in a file without blank lines means the blank lines are missing
MAX_UNSPLIT_TOKENS = 200
#: CoNLL-U: ten tab-separated columns; FORM (1) is the token, UPOS (3) the tag
CONLLU_COLUMNS, CONLLU_FORM, CONLLU_UPOS = 10, 1, 3


def _is_conllu(p: Path, lines: List[Tuple[int, str]]) -> bool:
    """A .conllu file, or one whose first token line has CoNLL-U's ten columns and a word ID (1, 1-2, 8.1)."""
    if p.suffix.lower() == ".conllu":
        return True
    first = next((t for _, t in lines if t.strip() and not t.startswith("#")), "")
    cols = first.split("\t")
    return len(cols) == CONLLU_COLUMNS and re.fullmatch(r"\d+([-.]\d+)?", cols[0]) is not None


def _tagged_line(p: Path, i: int, line: str, conllu: bool) -> Optional[Tuple[str, str]]:
    """(token, tag) of one non-blank line, or None for a line that holds no token (comment, range, empty node)."""
    if conllu:
        if line.startswith("#"):
            return None
        cols = line.split("\t")
        if len(cols) != CONLLU_COLUMNS:
            raise DataError(f"{str(p)!r} line {i}: expected {CONLLU_COLUMNS} tab-separated CoNLL-U columns; "
                            f"got {len(cols)}")
        if "-" in cols[0] or "." in cols[0]:  # a multiword token's range (1-2) or an empty node (8.1)
            return None
        return cols[CONLLU_FORM], cols[CONLLU_UPOS]
    if line.startswith("-DOCSTART-"):
        return None
    cols = line.split("\t") if "\t" in line else line.split()
    if len(cols) < 2:
        raise DataError(f"{str(p)!r} line {i}: expected 'token<TAB>tag'; got {line[:40]!r}")
    return cols[0], cols[-1]


def read_tagged(path: PathLike, min_sentences: int = 1) -> List[Tuple[List[str], List[str], int]]:
    """Sentences of a token/tag file or a CoNLL-U file: [(tokens, tags, first line number)].

    CoNLL-U (a .conllu file, or ten-column lines with integer IDs): FORM and UPOS of each word; comments,
    multiword-token ranges and empty nodes are skipped. DataError, naming the file, for fewer than
    `min_sentences` sentences, or one over MAX_UNSPLIT_TOKENS tokens in a file without blank lines."""
    p = Path(path)
    lines = read_lines(p)
    conllu = _is_conllu(p, lines)
    out: List[Tuple[List[str], List[str], int]] = []
    tokens: List[str] = []
    tags: List[str] = []
    start = 1
    for i, line in lines + [(len(lines) + 1, "")]:  # a blank line after the last one ends the last sentence
        if not line.strip():
            if tokens:
                out.append((tokens, tags, start))
            tokens, tags = [], []
            continue
        pair = _tagged_line(p, i, line, conllu)
        if pair is None:
            continue
        if not tokens:
            start = i
        tokens.append(pair[0])
        tags.append(pair[1])
    expected = ("CoNLL-U: ten tab-separated columns" if conllu else "one token<TAB>tag a line") + \
        ", a blank line after each sentence"
    unsplit = len(out) == 1 and not any(not t.strip() for _, t in lines)
    if len(out) < min_sentences or (unsplit and len(out[0][0]) > MAX_UNSPLIT_TOKENS):
        found = (f"no blank line separates sentences, so all {len(out[0][0])} tokens would be one sentence"
                 if unsplit else f"found {len(out)} sentence{'s' if len(out) != 1 else ''}")
        need = f" (at least {min_sentences} sentences needed)" if len(out) < min_sentences else ""
        raise DataError(f"{str(p)!r}: {found}{need}; expected {expected}")
    return out


# ------------------------------------------------------------------ vocabularies
@dataclass
class LabelVocab:
    """Labels in a fixed order (sorted, so runs agree)."""

    labels: List[str]

    @classmethod
    def from_labels(cls, labels: Iterable[str]) -> "LabelVocab":
        return cls(sorted(set(labels)))

    def __len__(self) -> int:
        return len(self.labels)

    def encode(self, labels: Sequence[str], *, source: str = "data", lines: Optional[Sequence[int]] = None
               ) -> List[int]:
        index = {l: i for i, l in enumerate(self.labels)}
        out = []
        for k, l in enumerate(labels):
            if l not in index:
                where = f"line {lines[k]}" if lines is not None else f"example {k + 1}"
                raise DataError(f"{source} {where}: label {l!r} was not seen in training (known: "
                                f"{', '.join(self.labels[:20])}{', ...' if len(self.labels) > 20 else ''})")
            out.append(index[l])
        return out

    def to_json(self) -> dict:
        return {"labels": self.labels}


class WordTokenizer:
    """Whitespace tokens; words seen fewer than `min_count` times in training map to <unk>."""

    kind = "word"

    def __init__(self, words: List[str], lower: bool = False) -> None:
        self.words = words  # index 0 <pad>, 1 <unk>
        self.lower = lower
        self.index = {w: i for i, w in enumerate(words)}

    @classmethod
    def fit(cls, texts: Iterable[Union[str, List[str]]], min_count: int = 1, lower: bool = False,
            max_size: Optional[int] = None) -> "WordTokenizer":
        counts: Counter = Counter()
        for t in texts:
            toks = t.split() if isinstance(t, str) else t
            counts.update(w.lower() if lower else w for w in toks)
        kept = [w for w, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if n >= min_count]
        if max_size is not None:
            kept = kept[:max_size - 2]
        return cls(["<pad>", "<unk>"] + kept, lower)

    def __len__(self) -> int:
        return len(self.words)

    def pieces(self, text: Union[str, List[str]]) -> List[str]:
        toks = text.split() if isinstance(text, str) else text
        return [w.lower() for w in toks] if self.lower else list(toks)

    def encode(self, text: Union[str, List[str]]) -> List[int]:
        return [self.index.get(w, UNK) for w in self.pieces(text)]

    def to_json(self) -> dict:
        return {"kind": self.kind, "words": self.words, "lower": self.lower}


class CharTokenizer(WordTokenizer):
    """Characters (spaces included) as tokens; suits Korean reviews without a segmenter."""

    kind = "char"

    @classmethod
    def fit(cls, texts: Iterable[str], min_count: int = 1, lower: bool = False,  # type: ignore[override]
            max_size: Optional[int] = None) -> "CharTokenizer":
        base = WordTokenizer.fit((list(t) for t in texts), min_count, lower, max_size)
        return cls(base.words, lower)

    def pieces(self, text: Union[str, List[str]]) -> List[str]:
        chars = list(text) if isinstance(text, str) else list("".join(text))
        return [c.lower() for c in chars] if self.lower else chars


class PieceTokenizer:
    """SentencePiece (unigram) trained on the training texts; the model travels as base64 in JSON."""

    kind = "sentencepiece"

    def __init__(self, model_proto: bytes) -> None:
        spm = require("sentencepiece", extra="nlp", purpose="SentencePiece tokens")
        self.proto = model_proto
        self.sp = spm.SentencePieceProcessor(model_proto=model_proto)

    @classmethod
    def fit(cls, texts: Sequence[str], vocab_size: int = 4000, seed: int = 0) -> "PieceTokenizer":
        spm = require("sentencepiece", extra="nlp", purpose="SentencePiece tokens")
        import io
        buf = io.BytesIO()
        # ids: 0 <pad>, 1 <unk> like the other tokenizers; no BOS/EOS (a classifier needs neither)
        spm.SentencePieceTrainer.train(sentence_iterator=iter(list(texts)), model_writer=buf, vocab_size=vocab_size,
                                       model_type="unigram", character_coverage=0.9995, pad_id=0, unk_id=1,
                                       bos_id=-1, eos_id=-1, hard_vocab_limit=False,
                                       num_threads=1, minloglevel=2)
        return cls(buf.getvalue())

    def __len__(self) -> int:
        return self.sp.get_piece_size()

    def pieces(self, text: str) -> List[str]:
        return self.sp.encode(text, out_type=str)

    def encode(self, text: str) -> List[int]:
        return self.sp.encode(text)

    def to_json(self) -> dict:
        return {"kind": self.kind, "model": base64.b64encode(self.proto).decode("ascii")}


def tokenizer_from_json(d: dict):
    kind = d.get("kind")
    if kind == "word":
        return WordTokenizer(d["words"], d.get("lower", False))
    if kind == "char":
        return CharTokenizer(d["words"], d.get("lower", False))
    if kind == "sentencepiece":
        return PieceTokenizer(base64.b64decode(d["model"]))
    raise InputError(f"unknown tokenizer kind {kind!r}")


# ------------------------------------------------------------------ batching
class SequenceLoader:
    """Trainer data source: padded batches {"tokens" (B, T), "lengths" (B,), "labels" (B,) or (B, T)}, and
    "chars" (B, T, L) when each token's character ids are given (`chars`: per sequence, per token).

    Token sequences are right-padded with <pad> = 0; per-token labels with IGNORE (-100); characters with 0.
    Sequences longer than `max_length` are cut (the count is reported by the caller).
    Training order is shuffled per epoch (seeded) within buckets of similar length, so
    little padding is computed.
    """

    def __init__(self, sequences: Sequence[Sequence[int]], labels: Sequence[Any], batch_size: int, *,
                 shuffle: bool = False, seed: int = 0, max_length: Optional[int] = None,
                 chars: Optional[Sequence[Sequence[Sequence[int]]]] = None) -> None:
        if len(sequences) != len(labels) or (chars is not None and len(chars) != len(sequences)):
            raise InputError(f"{len(sequences)} sequences but {len(labels)} labels"
                             + (f" and {len(chars)} character sequences" if chars is not None else ""))
        if len(sequences) == 0:
            raise InputError("no examples")
        self.max_length = max_length
        self.sequences = [list(s[:max_length]) if max_length else list(s) for s in sequences]
        self.sequences = [s if s else [UNK] for s in self.sequences]  # an empty text still has one step
        self.labels = [list(l[:len(s)]) if isinstance(l, (list, tuple)) else l
                       for l, s in zip(labels, self.sequences)]
        # an empty sequence's one <unk> step has one padding character
        self.chars = None if chars is None else [[list(w) or [PAD] for w in c[:len(s)]] or [[PAD]]
                                                 for c, s in zip(chars, self.sequences)]
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed

    def __len__(self) -> int:
        return -(-len(self.sequences) // self.batch_size)

    def _order(self, epoch: int) -> np.ndarray:
        n = len(self.sequences)
        if not self.shuffle:
            return np.arange(n)
        rng = np.random.default_rng(self.seed + epoch)
        perm = rng.permutation(n)
        # bucket: sort chunks of 50 batches by length, then shuffle the batches
        chunk = self.batch_size * 50
        lens = np.array([len(s) for s in self.sequences])
        parts = [perm[i:i + chunk][np.argsort(lens[perm[i:i + chunk]], kind="stable")] for i in range(0, n, chunk)]
        order = np.concatenate(parts)
        batches = [order[i:i + self.batch_size] for i in range(0, n, self.batch_size)]
        return np.concatenate([batches[i] for i in rng.permutation(len(batches))])

    def batches(self, epoch: int, start: int = 0) -> Iterator[Dict[str, torch.Tensor]]:
        order = self._order(epoch)
        for b in range(start, len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            yield self.collate(idx)

    def collate(self, idx: Sequence[int]) -> Dict[str, torch.Tensor]:
        seqs = [self.sequences[i] for i in idx]
        T = max(len(s) for s in seqs)
        tokens = torch.full((len(seqs), T), PAD, dtype=torch.int64)
        for r, s in enumerate(seqs):
            tokens[r, :len(s)] = torch.tensor(s, dtype=torch.int64)
        out = {"tokens": tokens, "lengths": torch.tensor([len(s) for s in seqs], dtype=torch.int64)}
        if self.chars is not None:
            words = [self.chars[i] for i in idx]
            chars = torch.full((len(seqs), T, max(len(w) for c in words for w in c)), PAD, dtype=torch.int64)
            for r, c in enumerate(words):
                for t, w in enumerate(c):
                    chars[r, t, :len(w)] = torch.tensor(w, dtype=torch.int64)
            out["chars"] = chars
        first = self.labels[idx[0]]
        if isinstance(first, list):
            lab = torch.full((len(seqs), T), IGNORE, dtype=torch.int64)
            for r, i in enumerate(idx):
                lab[r, :len(self.labels[i])] = torch.tensor(self.labels[i], dtype=torch.int64)
            out["labels"] = lab
        else:
            out["labels"] = torch.tensor([self.labels[i] for i in idx], dtype=torch.int64)
        return out
