"""Labelled sequences: sentence classification (label<TAB>text) and token tagging (token<TAB>tag, CoNLL-style).

    classification file  one example a line: label TAB text
    tagging file         one token a line: token [TAB other columns] TAB tag (the tag is the last column);
                         a blank line ends a sentence; "-DOCSTART-" lines are skipped

Tokenizers turn text into ids (0 = <pad>, 1 = <unk>): `WordTokenizer` (whitespace,
optionally lower-cased), `CharTokenizer`, `PieceTokenizer` (SentencePiece, trained
on the training texts only). `LabelVocab` maps labels to classes and rejects a
label the training data never had, naming it and its line. `SequenceLoader` pads
a batch to its longest sequence and hands `lengths` on, so the model runs the
core `lengths=` path and never needs packing.
"""

from __future__ import annotations

import base64
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .text import DataError
from .._optional import require
from ..errors import InputError

PathLike = Union[str, Path]
PAD, UNK = 0, 1
IGNORE = -100


# ------------------------------------------------------------------ reading
def read_classification(path: PathLike, line_numbers: Optional[List[int]] = None) -> Tuple[List[str], List[str]]:
    """(labels, texts) of a label<TAB>text file; DataError naming the line of a malformed row.

    `line_numbers`, when given, receives each example's line number (for later error messages)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"data file {str(p)!r} does not exist")
    labels, texts = [], []
    with open(p, encoding="utf-8") as f:
        for i, line in enumerate(f, start=1):
            line = line.rstrip("\n").rstrip("\r")
            if not line.strip():
                continue
            if "\t" not in line:
                raise DataError(f"{str(p)!r} line {i}: expected 'label<TAB>text'; got {line[:40]!r}")
            label, text = line.split("\t", 1)
            if not label.strip() or not text.strip():
                raise DataError(f"{str(p)!r} line {i}: empty {'label' if not label.strip() else 'text'}")
            labels.append(label.strip())
            texts.append(text)
            if line_numbers is not None:
                line_numbers.append(i)
    if not labels:
        raise DataError(f"{str(p)!r} holds no examples")
    return labels, texts


def read_tagged(path: PathLike) -> List[Tuple[List[str], List[str], int]]:
    """Sentences of a token/tag file: [(tokens, tags, first line number)]."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"data file {str(p)!r} does not exist")
    out: List[Tuple[List[str], List[str], int]] = []
    tokens: List[str] = []
    tags: List[str] = []
    start = 1
    with open(p, encoding="utf-8") as f:
        for i, line in enumerate(f, start=1):
            line = line.rstrip("\n").rstrip("\r")
            if not line.strip():
                if tokens:
                    out.append((tokens, tags, start))
                tokens, tags = [], []
                continue
            if line.startswith("-DOCSTART-"):
                continue
            cols = line.split("\t") if "\t" in line else line.split()
            if len(cols) < 2:
                raise DataError(f"{str(p)!r} line {i}: expected 'token<TAB>tag'; got {line[:40]!r}")
            if not tokens:
                start = i
            tokens.append(cols[0])
            tags.append(cols[-1])
    if tokens:
        out.append((tokens, tags, start))
    if not out:
        raise DataError(f"{str(p)!r} holds no sentences")
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
    """Trainer data source: padded batches {"tokens" (B, T), "lengths" (B,), "labels" (B,) or (B, T)}.

    Token sequences are right-padded with <pad> = 0; per-token labels with IGNORE (-100).
    Sequences longer than `max_length` are cut (the count is reported by the caller).
    Training order is shuffled per epoch (seeded) within buckets of similar length, so
    little padding is computed.
    """

    def __init__(self, sequences: Sequence[Sequence[int]], labels: Sequence[Any], batch_size: int, *,
                 shuffle: bool = False, seed: int = 0, max_length: Optional[int] = None) -> None:
        if len(sequences) != len(labels):
            raise InputError(f"{len(sequences)} sequences but {len(labels)} labels")
        if len(sequences) == 0:
            raise InputError("no examples")
        self.max_length = max_length
        self.sequences = [list(s[:max_length]) if max_length else list(s) for s in sequences]
        self.sequences = [s if s else [UNK] for s in self.sequences]  # an empty text still has one step
        self.labels = [list(l[:len(s)]) if isinstance(l, (list, tuple)) else l
                       for l, s in zip(labels, self.sequences)]
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
        first = self.labels[idx[0]]
        if isinstance(first, list):
            lab = torch.full((len(seqs), T), IGNORE, dtype=torch.int64)
            for r, i in enumerate(idx):
                lab[r, :len(self.labels[i])] = torch.tensor(self.labels[i], dtype=torch.int64)
            out["labels"] = lab
        else:
            out["labels"] = torch.tensor([self.labels[i] for i in idx], dtype=torch.int64)
        return out
