"""Sentence pairs (translation, dialogue): reading, checking, encoding, length-bucketed batches.

Formats (UTF-8):
    *.tsv / any other file   `source<TAB>target[<TAB>anything]` per line (the
                             third column, e.g. Tatoeba's attribution, is kept
                             aside, not used); a first line naming the sides
                             (source<TAB>target, src/tgt, ...) is a header
    *.csv                    a header row, then `source,target[,anything]` rows
                             with standard CSV quoting; header cells named
                             source and target pick those columns
    two aligned files        line i of the source file pairs with line i of the
                             target file
    a directory              train.tsv, and optionally valid.tsv and test.tsv
                             (a fixed split), else the one .tsv/.csv it holds

Which columns were read (and which header skipped) comes back as one note per
file, for the caller to show. A file without a fixed split must be large enough
to hold out at least one pair for each nonzero held-out fraction.

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
from typing import Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from .text import DataError, read_lines
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
    notes: List[str] = field(default_factory=list)


#: header cells that name the sides (case-insensitive): a first row made of them is a header, not a pair
SOURCE_NAMES = ("source", "src", "input", "question", "q")
TARGET_NAMES = ("target", "tgt", "output", "answer", "a")


class PairFile(NamedTuple):
    """What `read_pairs` found: the pairs, the blank lines skipped, and one line per column decision made."""

    pairs: List[Pair]
    blank: int
    notes: List[str]


def _check_pair(path: Path, line: int, source: str, target: str) -> Pair:
    if not source.strip() or not target.strip():
        side = "source" if not source.strip() else "target"
        raise DataError(f"{path}:{line}: one-sided pair: the {side} is empty")
    return Pair(source.strip(), target.strip(), f"{path}:{line}")


def _named_columns(header: List[str]) -> Optional[Tuple[int, int]]:
    """(source, target) column of a header row that names both sides, else None."""
    names = [h.strip().lower() for h in header]
    source = next((i for i, n in enumerate(names) if n in SOURCE_NAMES), None)
    target = next((i for i, n in enumerate(names) if n in TARGET_NAMES), None)
    return (source, target) if source is not None and target is not None and source != target else None


def _columns_note(path: Path, header: Optional[List[str]], columns: Tuple[int, int], width: int) -> str:
    """One line saying which columns were read as source and target, and which were not used."""
    name = (lambda i: f"column {i + 1} ({header[i]!r})") if header else (lambda i: f"column {i + 1}")
    unused = [name(i) for i in range(width) if i not in columns]
    return (f"{path}: " + (f"header row {','.join(header)!r} skipped; " if header else "")
            + f"source = {name(columns[0])}, target = {name(columns[1])}"
            + (f"; unused: {', '.join(unused)}" if unused else ""))


def _read_aligned(path: Path, target_path: Path) -> PairFile:
    src, tgt = read_lines(path), read_lines(target_path)
    if len(src) != len(tgt):
        raise DataError(f"aligned files differ in length: {str(path)!r} has {len(src)} lines, "
                        f"{str(target_path)!r} has {len(tgt)}")
    pairs: List[Pair] = []
    blank = 0
    for (i, s), (_, t) in zip(src, tgt):
        if not s.strip() and not t.strip():
            blank += 1
            continue
        if not s.strip() or not t.strip():
            which, p = ("source", path) if not s.strip() else ("target", target_path)
            raise DataError(f"{p}:{i}: one-sided pair: the {which} line is empty")
        pairs.append(Pair(s.strip(), t.strip(), f"{path}:{i}"))
    return PairFile(pairs, blank, [])


def _rows(path: Path) -> List[Tuple[int, List[str]]]:
    """(line number, cells) of the CSV (standard quoting) or tab-separated file `path`; blank rows included."""
    lines = read_lines(path)  # checks UTF-8 first, naming the line
    if path.suffix.lower() != ".csv":
        return [(i, text.split("\t")) for i, text in lines]
    reader = csv.reader(io.StringIO("\n".join(t for _, t in lines) + "\n"))
    return [(reader.line_num, row) for row in reader]


def read_pairs(path: PathLike, target_path: Optional[PathLike] = None) -> PairFile:
    """Pairs of a TSV/CSV file, or of two aligned files; `notes` say which columns were read and skipped.

    A CSV file's first row is its header: columns named source/target (or src/tgt, input/output,
    question/answer, q/a) are used wherever they stand, else the first two columns. A TSV file's first
    row is a header only when it names both sides that way."""
    path = Path(path)
    if target_path is not None:
        return _read_aligned(path, Path(target_path))
    kind = "comma" if path.suffix.lower() == ".csv" else "tab"
    rows = _rows(path)
    first = next(((i, row) for i, row in rows if any(c.strip() for c in row)), None)
    named = _named_columns(first[1]) if first else None
    header = first[1] if first and (kind == "comma" or named) else None
    columns = named or (0, 1)
    pairs: List[Pair] = []
    blank = width = 0
    for i, row in rows:
        if header is not None and i == first[0]:
            continue
        if not any(cell.strip() for cell in row):
            blank += 1
            continue
        if len(row) <= max(columns):
            raise DataError(f"{path}:{i}: expected at least {max(columns) + 1} {kind}-separated columns "
                            f"(source{',' if kind == 'comma' else '<TAB>'}target); got {len(row)}")
        width = max(width, len(row))
        pairs.append(_check_pair(path, i, row[columns[0]], row[columns[1]]))
    notes = [_columns_note(path, header, columns, width)] if header is not None or width > 2 else []
    return PairFile(pairs, blank, notes)


def load_pair_splits(data: PathLike, target_data: Optional[PathLike] = None, *, valid_fraction: float = 0.05,
                     test_fraction: float = 0.05, split_seed: int = 1234, swap: bool = False) -> PairSplits:
    """Train/valid/test pairs of `data` (see the module docstring).

    A directory with train.tsv uses its valid.tsv/test.tsv as they are. A single
    file (or two aligned files) is shuffled with `split_seed` (fixed, independent
    of the training seed, so every run sees the same split) and cut into
    valid/test/train by the fractions. `swap` exchanges source and target.
    """
    path = Path(data)
    if not path.exists():
        raise DataError(f"data path {str(path)!r} does not exist")
    if path.is_dir():
        if target_data is not None:
            raise DataError("--target-data needs --data to be a file, not a directory")
        if (path / "train.tsv").is_file():
            parts = {name: read_pairs(path / f"{name}.tsv") if (path / f"{name}.tsv").is_file() else PairFile([], 0, [])
                     for name in ("train", "valid", "test")}
            blank = sum(f.blank for f in parts.values())
            notes = [n for f in parts.values() for n in f.notes]
            if not parts["valid"].pairs and not parts["test"].pairs:
                splits = _split(parts["train"], valid_fraction, test_fraction, split_seed, str(path / "train.tsv"))
            else:
                splits = PairSplits(parts["train"].pairs, parts["valid"].pairs, parts["test"].pairs, blank,
                                    f"{path}/{{train,valid,test}}.tsv", notes)
        else:
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".tsv", ".csv"))
            if len(files) != 1:
                raise DataError(f"data directory {str(path)!r} must hold train.tsv (and valid.tsv, test.tsv) or "
                                f"exactly one .tsv/.csv file; found {[p.name for p in files]}")
            splits = _split(read_pairs(files[0]), valid_fraction, test_fraction, split_seed, str(files[0]))
    else:
        splits = _split(read_pairs(path, target_data), valid_fraction, test_fraction, split_seed, str(path))
    if not splits.train:
        raise DataError(f"{splits.description}: no training pairs")
    if swap:
        for part in (splits.train, splits.valid, splits.test):
            for p in part:
                p.source, p.target = p.target, p.source
    return splits


def _split_sizes(n: int, valid_fraction: float, test_fraction: float) -> Tuple[int, int]:
    return int(round(n * valid_fraction)), int(round(n * test_fraction))


def _fewest_pairs(valid_fraction: float, test_fraction: float) -> int:
    """The fewest pairs that leave one for training and one for each nonzero held-out fraction."""
    n = 1
    while True:
        v, t = _split_sizes(n, valid_fraction, test_fraction)
        if n - v - t >= 1 and (v or not valid_fraction) and (t or not test_fraction):
            return n
        n += 1


def _split(found: PairFile, valid_fraction: float, test_fraction: float, seed: int, description: str) -> PairSplits:
    """Shuffle (seeded) and cut into valid/test/train; DataError if a nonzero fraction would hold out nothing."""
    if not 0 <= valid_fraction < 1 or not 0 <= test_fraction < 1 or valid_fraction + test_fraction >= 1:
        raise InputError(f"valid_fraction and test_fraction must be in [0, 1) with a sum below 1; got "
                         f"{valid_fraction} and {test_fraction}")
    pairs = found.pairs
    need = _fewest_pairs(valid_fraction, test_fraction)
    if len(pairs) < need:
        many = f"{len(pairs)} sentence pairs are" if len(pairs) != 1 else "1 sentence pair is"
        raise DataError(f"{description}: {many} too few to hold out {valid_fraction:.0%} "
                        f"for validation and {test_fraction:.0%} for testing: at least {need} are needed (or set "
                        f"the validation and test fractions to 0 to train without held-out scores, or give a "
                        f"directory with train.tsv, valid.tsv and test.tsv)")
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    n_valid, n_test = _split_sizes(len(pairs), valid_fraction, test_fraction)
    valid = [pairs[i] for i in order[:n_valid]]
    test = [pairs[i] for i in order[n_valid:n_valid + n_test]]
    train = [pairs[i] for i in order[n_valid + n_test:]]
    return PairSplits(train, valid, test, found.blank, f"{description} (split {len(train)}/{len(valid)}/{len(test)} "
                                                       f"with seed {seed})", found.notes)


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

    @classmethod
    def join(cls, parts: Sequence["EncodedPairs"], repeats: Optional[Sequence[int]] = None) -> "EncodedPairs":
        """The pairs of every part in turn, part i `repeats[i]` times (oversampling a small corpus); the
        dropped counts once per part."""
        out = cls([], [], [])
        for part, times in zip(parts, repeats or [1] * len(parts)):
            out.source += part.source * times
            out.target += part.target * times
            out.origins += part.origins * times
            out.dropped_long += part.dropped_long
            out.dropped_empty += part.dropped_empty
        return out


def encode_pairs(pairs: Sequence[Pair], source_tokenizer, target_tokenizer, *, max_source_len: int,
                 max_target_len: int, source_prefix: Sequence[int] = ()) -> EncodedPairs:
    """Encode with the tokenizers; drop pairs with a side longer than its maximum (the end
    token and `source_prefix` count) or empty after tokenization (e.g. only characters the normaliser
    removes). `source_prefix` goes before every source (a multilingual run's target-language token)."""
    src_ids = source_tokenizer.encode_batch([p.source for p in pairs])
    tgt_ids = target_tokenizer.encode_batch([p.target for p in pairs])
    out = EncodedPairs([], [], [])
    for p, s, t in zip(pairs, src_ids, tgt_ids):
        if not s or not t:
            out.dropped_empty += 1
        elif len(source_prefix) + len(s) + 1 > max_source_len or len(t) + 1 > max_target_len:
            out.dropped_long += 1
        else:
            out.source.append([*source_prefix, *s])
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
