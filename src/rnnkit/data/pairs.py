"""Sentence pairs (translation, dialogue): reading, checking, encoding, length-bucketed batches.

Formats (UTF-8):
    *.tsv / any other file   `source<TAB>target[<TAB>anything]` per line (the
                             third column, e.g. Tatoeba's attribution, is kept
                             aside, not used)
    *.csv                    a header row, then `source,target[,anything]` rows
                             with standard CSV quoting
    two aligned files        line i of the source file pairs with line i of the
                             target file
    a directory              train.tsv, and optionally valid.tsv and test.tsv
                             (a fixed split), else the one .tsv/.csv it holds

Whitespace-only lines are skipped and counted. Every other problem — a line
without a tab, an empty side, bytes that are not UTF-8, files of different
lengths — raises `DataError` naming the file and line; nothing is repaired.
"""

from __future__ import annotations

import csv
import io
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from .text import DataError, read_data_bytes
from ..errors import InputError

PathLike = Union[str, Path]


@dataclass
class Pair:
    source: str
    target: str
    origin: str  # "file:line", for messages


@dataclass
class PairSplits:
    train: List[Pair]
    valid: List[Pair]
    test: List[Pair]
    skipped_blank: int = 0
    description: str = ""


def _lines(path: Path) -> List[Tuple[int, str]]:
    """(line number, text) of a UTF-8 file, line endings stripped; DataError on bad bytes."""
    raw = read_data_bytes(path)
    out = []
    for i, line in enumerate(raw.split(b"\n"), 1):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as err:
            raise DataError(f"{path}:{i}: not UTF-8 text (byte {err.start} of the line: {err.reason})") from None
        out.append((i, text.rstrip("\r")))
    if out and out[-1][1] == "" and raw.endswith(b"\n"):
        out.pop()
    return out


def _check_pair(path: Path, line: int, source: str, target: str) -> Pair:
    if not source.strip() or not target.strip():
        side = "source" if not source.strip() else "target"
        raise DataError(f"{path}:{line}: one-sided pair: the {side} is empty")
    return Pair(source.strip(), target.strip(), f"{path}:{line}")


def read_pairs(path: PathLike, target_path: Optional[PathLike] = None) -> Tuple[List[Pair], int]:
    """(pairs, number of blank lines skipped) of a TSV/CSV file, or of two aligned files."""
    path = Path(path)
    pairs: List[Pair] = []
    blank = 0
    if target_path is not None:
        target_path = Path(target_path)
        src, tgt = _lines(path), _lines(target_path)
        if len(src) != len(tgt):
            raise DataError(f"aligned files differ in length: {str(path)!r} has {len(src)} lines, "
                            f"{str(target_path)!r} has {len(tgt)}")
        for (i, s), (_, t) in zip(src, tgt):
            if not s.strip() and not t.strip():
                blank += 1
                continue
            if not s.strip() or not t.strip():
                which, p = ("source", path) if not s.strip() else ("target", target_path)
                raise DataError(f"{p}:{i}: one-sided pair: the {which} line is empty")
            pairs.append(Pair(s.strip(), t.strip(), f"{path}:{i}"))
        return pairs, blank
    if path.suffix.lower() == ".csv":
        lines = _lines(path)  # checks UTF-8 line by line first
        reader = csv.reader(io.StringIO("\n".join(t for _, t in lines) + "\n"))
        header = True
        for row in reader:
            if header:
                header = False
                continue
            n = reader.line_num
            if not any(cell.strip() for cell in row):
                blank += 1
                continue
            if len(row) < 2:
                raise DataError(f"{path}:{n}: expected at least 2 comma-separated columns (source,target); "
                                f"got {len(row)}")
            pairs.append(_check_pair(path, n, row[0], row[1]))
        return pairs, blank
    for i, text in _lines(path):
        if not text.strip():
            blank += 1
            continue
        cols = text.split("\t")
        if len(cols) < 2:
            raise DataError(f"{path}:{i}: expected at least 2 tab-separated columns (source<TAB>target); got 1")
        pairs.append(_check_pair(path, i, cols[0], cols[1]))
    return pairs, blank


def load_pair_splits(data: PathLike, target_data: Optional[PathLike] = None, *, valid_fraction: float = 0.05,
                     test_fraction: float = 0.05, split_seed: int = 1234, swap: bool = False) -> PairSplits:
    """Train/valid/test pairs of `data` (see the module docstring).

    A directory with train.tsv uses its valid.tsv/test.tsv as they are. A single
    file (or two aligned files) is shuffled with `split_seed` (fixed, independent
    of the training seed, so every run sees the same split) and cut into
    valid/test/train by the fractions. `swap` exchanges source and target.
    """
    path = Path(data)
    blank = 0
    if not path.exists():
        raise DataError(f"data path {str(path)!r} does not exist")
    if path.is_dir():
        if target_data is not None:
            raise DataError("--target-data needs --data to be a file, not a directory")
        if (path / "train.tsv").is_file():
            parts = {}
            for name in ("train", "valid", "test"):
                f = path / f"{name}.tsv"
                if f.is_file():
                    parts[name], b = read_pairs(f)
                    blank += b
                else:
                    parts[name] = []
            splits = PairSplits(parts["train"], parts["valid"], parts["test"], blank, f"{path}/{{train,valid,test}}.tsv")
            if not splits.valid and not splits.test:
                splits = _split(splits.train, valid_fraction, test_fraction, split_seed, blank, str(path / "train.tsv"))
        else:
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".tsv", ".csv"))
            if len(files) != 1:
                raise DataError(f"data directory {str(path)!r} must hold train.tsv (and valid.tsv, test.tsv) or "
                                f"exactly one .tsv/.csv file; found {[p.name for p in files]}")
            pairs, blank = read_pairs(files[0])
            splits = _split(pairs, valid_fraction, test_fraction, split_seed, blank, str(files[0]))
    else:
        pairs, blank = read_pairs(path, target_data)
        splits = _split(pairs, valid_fraction, test_fraction, split_seed, blank, str(path))
    if not splits.train:
        raise DataError(f"{splits.description}: no training pairs")
    if swap:
        for part in (splits.train, splits.valid, splits.test):
            for p in part:
                p.source, p.target = p.target, p.source
    return splits


def _split(pairs: List[Pair], valid_fraction: float, test_fraction: float, seed: int, blank: int,
           description: str) -> PairSplits:
    if not 0 <= valid_fraction < 1 or not 0 <= test_fraction < 1 or valid_fraction + test_fraction >= 1:
        raise InputError(f"valid_fraction and test_fraction must be in [0, 1) with a sum below 1; got "
                         f"{valid_fraction} and {test_fraction}")
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    n_valid = int(round(len(pairs) * valid_fraction))
    n_test = int(round(len(pairs) * test_fraction))
    valid = [pairs[i] for i in order[:n_valid]]
    test = [pairs[i] for i in order[n_valid:n_valid + n_test]]
    train = [pairs[i] for i in order[n_valid + n_test:]]
    return PairSplits(train, valid, test, blank, f"{description} (split {len(train)}/{len(valid)}/{len(test)} "
                                                 f"with seed {seed})")


# ---------------------------------------------------------------- encoding
@dataclass
class EncodedPairs:
    """Token ids of pairs that fit, and how many were dropped and why."""

    source: List[List[int]]
    target: List[List[int]]
    origins: List[str]
    dropped_long: int = 0
    dropped_empty: int = 0

    def __len__(self) -> int:
        return len(self.source)

    @property
    def dropped(self) -> int:
        return self.dropped_long + self.dropped_empty


def encode_pairs(pairs: Sequence[Pair], source_tokenizer, target_tokenizer, *, max_source_len: int,
                 max_target_len: int) -> EncodedPairs:
    """Encode with the tokenizers; drop pairs with a side longer than its maximum (the end
    token counts) or empty after tokenization (e.g. only characters the normaliser removes)."""
    src_ids = source_tokenizer.encode_batch([p.source for p in pairs])
    tgt_ids = target_tokenizer.encode_batch([p.target for p in pairs])
    out = EncodedPairs([], [], [])
    for p, s, t in zip(pairs, src_ids, tgt_ids):
        if not s or not t:
            out.dropped_empty += 1
        elif len(s) + 1 > max_source_len or len(t) + 1 > max_target_len:
            out.dropped_long += 1
        else:
            out.source.append(s)
            out.target.append(t)
            out.origins.append(p.origin)
    return out


def collate(source: Sequence[Sequence[int]], target: Optional[Sequence[Sequence[int]]], *, pad_id: int,
            bos_id: int, eos_id: int) -> Dict[str, Tensor]:
    """Right-padded batch tensors (batch first).

    source (B, S): tokens + eos; source_lengths (B,); target_in (B, T): bos + tokens;
    target_out (B, T): tokens + eos.
    """
    B = len(source)
    S = max(len(s) for s in source) + 1
    src = torch.full((B, S), pad_id, dtype=torch.long)
    lengths = torch.empty(B, dtype=torch.long)
    for b, s in enumerate(source):
        src[b, :len(s)] = torch.tensor(s, dtype=torch.long)
        src[b, len(s)] = eos_id
        lengths[b] = len(s) + 1
    batch = {"source": src, "source_lengths": lengths}
    if target is not None:
        T = max(len(t) for t in target) + 1
        tin = torch.full((B, T), pad_id, dtype=torch.long)
        tout = torch.full((B, T), pad_id, dtype=torch.long)
        for b, t in enumerate(target):
            ids = torch.tensor(t, dtype=torch.long)
            tin[b, 0] = bos_id
            tin[b, 1:len(t) + 1] = ids
            tout[b, :len(t)] = ids
            tout[b, len(t)] = eos_id
        batch["target_in"], batch["target_out"] = tin, tout
    return batch


class PairBatches:
    """Length-bucketed batches of encoded pairs: the trainer's data source.

    Training (shuffle=True): each epoch shuffles the pairs with seed + epoch,
    sorts pools of `pool` batches by length (little padding), and shuffles the
    order of the batches. Evaluation (shuffle=False): sorted by length, fixed.
    """

    def __init__(self, data: EncodedPairs, batch_size: int, *, pad_id: int, bos_id: int, eos_id: int,
                 shuffle: bool = True, seed: int = 0, pool: int = 50) -> None:
        if len(data) == 0:
            raise DataError("no sentence pairs left to batch (all were dropped or the split is empty)")
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1; got {batch_size}")
        self.data, self.batch_size = data, batch_size
        self.ids = dict(pad_id=pad_id, bos_id=bos_id, eos_id=eos_id)
        self.shuffle, self.seed, self.pool = shuffle, seed, pool

    def __len__(self) -> int:
        return -(-len(self.data) // self.batch_size)

    @property
    def tokens_per_epoch(self) -> int:
        return sum(len(t) + 1 for t in self.data.target)

    def _order(self, epoch: int) -> List[List[int]]:
        n = len(self.data)
        key = lambda i: (len(self.data.source[i]), len(self.data.target[i]))  # noqa: E731
        if not self.shuffle:
            idx = sorted(range(n), key=key)
            return [idx[i:i + self.batch_size] for i in range(0, n, self.batch_size)]
        rng = random.Random(self.seed * 1_000_003 + epoch)
        idx = list(range(n))
        rng.shuffle(idx)
        span = self.batch_size * self.pool
        batches = []
        for p in range(0, n, span):
            chunk = sorted(idx[p:p + span], key=key)
            batches += [chunk[i:i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        rng.shuffle(batches)
        return batches

    def batches(self, epoch: int, start: int = 0) -> Iterator[Dict[str, Tensor]]:
        for b in self._order(epoch)[start:]:
            yield collate([self.data.source[i] for i in b], [self.data.target[i] for i in b], **self.ids)
