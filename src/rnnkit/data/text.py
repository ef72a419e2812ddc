"""Text corpora: reading files, character and word vocabularies, train/validation splits.

Nothing downloads: the caller names a file or a directory. Every problem with the
input (missing path, empty file, binary data, unknown characters) raises
`DataError` with a one-line message naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from ..errors import InputError

PathLike = Union[str, Path]
TEXT_SUFFIXES = (".txt", ".md", ".text", ".tok")
EOS = "<eos>"
UNK = "<unk>"


class DataError(InputError):
    """The data the user named cannot be used (the message says why)."""


def read_data_bytes(path: Path) -> bytes:
    """The bytes of one data file; DataError if it is missing, not a file, or empty (white space only)."""
    if not path.exists():
        raise DataError(f"data file {str(path)!r} does not exist")
    if not path.is_file():
        raise DataError(f"data path {str(path)!r} is not a file")
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"data file {str(path)!r} is empty")
    return raw


def _not_utf8(origin: str, raw: bytes, err: UnicodeDecodeError) -> DataError:
    """The error for bytes that are not UTF-8: file, line and the byte's place in it."""
    line = raw.count(b"\n", 0, err.start) + 1
    column = err.start - (raw.rfind(b"\n", 0, err.start) + 1)
    return DataError(f"{origin}:{line}: not UTF-8 text (byte {column} of the line: {err.reason}); "
                     f"save the file as UTF-8")


def decode_utf8(raw: bytes, origin: str) -> str:
    """`raw` as UTF-8 text; DataError naming `origin` (a file name or "<stdin>") and the line otherwise.

    A leading byte-order mark (what Windows editors and Excel write) is dropped: it is not text, and left
    in it would glue itself to the first label, header cell or character."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise _not_utf8(origin, raw, err) from None


def read_text_file(path: PathLike) -> str:
    """The UTF-8 text of one file; DataError if missing, empty, binary or not UTF-8 (naming file and line)."""
    path = Path(path)
    raw = read_data_bytes(path)
    if b"\x00" in raw[:65536]:
        raise DataError(f"data file {str(path)!r} looks binary (it contains NUL bytes); expected UTF-8 text")
    return decode_utf8(raw, str(path))


def split_lines(text: str) -> List[Tuple[int, str]]:
    """(line number, line) of `text`, split at \\n only (\\r before it is dropped), without a final empty line."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [(i, line.rstrip("\r")) for i, line in enumerate(lines, 1)]


def read_lines(path: PathLike) -> List[Tuple[int, str]]:
    """(line number, line) of a UTF-8 text file; DataError naming the file (and line) for every problem."""
    return split_lines(read_text_file(path))


def read_corpus(path: PathLike) -> List[Tuple[str, str]]:
    """(name, text) of a file, or of every text file (*.txt, *.md, ...) in a directory, sorted by name."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"data path {str(path)!r} does not exist")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
        if not files:
            raise DataError(f"data directory {str(path)!r} holds no text files ({', '.join(TEXT_SUFFIXES)})")
        return [(str(p), read_text_file(p)) for p in files]
    return [(str(path), read_text_file(path))]


@dataclass
class CharVocab:
    """Characters of a corpus, sorted; token id = index."""

    chars: List[str]

    @classmethod
    def from_text(cls, texts: Iterable[str]) -> "CharVocab":
        chars = sorted(set().union(*(set(t) for t in texts)))
        return cls(chars)

    def __post_init__(self) -> None:
        self.index: Dict[str, int] = {c: i for i, c in enumerate(self.chars)}
        if len(self.index) != len(self.chars):
            raise DataError("character vocabulary has duplicate entries")

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str, *, what: str = "text") -> Tensor:
        """(N,) int64 ids; DataError naming the first character outside the vocabulary."""
        try:
            return torch.tensor([self.index[c] for c in text], dtype=torch.int64)
        except KeyError as err:
            raise DataError(f"{what} contains the character {err.args[0]!r}, which is not in the model's "
                            f"vocabulary of {len(self)} characters") from None

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.chars[i] for i in ids)

    def to_json(self) -> dict:
        return {"kind": "char", "tokens": self.chars}


@dataclass
class WordVocab:
    """Words of a corpus (whitespace-split, `<eos>` after every line), ordered by frequency then spelling."""

    words: List[str]

    @classmethod
    def from_lines(cls, lines: Iterable[str]) -> "WordVocab":
        counts: Dict[str, int] = {}
        for line in lines:
            for w in line.split() + [EOS]:
                counts[w] = counts.get(w, 0) + 1
        return cls(sorted(counts, key=lambda w: (-counts[w], w)))

    def __post_init__(self) -> None:
        self.index: Dict[str, int] = {w: i for i, w in enumerate(self.words)}

    def __len__(self) -> int:
        return len(self.words)

    def encode_lines(self, lines: Iterable[str], *, what: str = "text") -> Tensor:
        """Ids of every word and an `<eos>` per line; unknown words map to `<unk>` if the vocabulary has it."""
        unk = self.index.get(UNK)
        ids: List[int] = []
        for n, line in enumerate(lines, 1):
            for w in line.split() + [EOS]:
                i = self.index.get(w, unk)
                if i is None:
                    raise DataError(f"{what} line {n}: the word {w!r} is not in the vocabulary and the "
                                    f"vocabulary has no {UNK!r} token")
                ids.append(i)
        return torch.tensor(ids, dtype=torch.int64)

    def decode(self, ids: Iterable[int]) -> str:
        return " ".join(self.words[i] for i in ids).replace(f" {EOS} ", "\n").replace(EOS, "\n")

    def to_json(self) -> dict:
        return {"kind": "word", "tokens": self.words}


def vocab_from_json(obj: dict) -> Union[CharVocab, WordVocab]:
    if not isinstance(obj, dict) or obj.get("kind") not in ("char", "word") or not isinstance(obj.get("tokens"), list):
        raise DataError("checkpoint vocabulary is malformed")
    return CharVocab(obj["tokens"]) if obj["kind"] == "char" else WordVocab(obj["tokens"])


@dataclass
class CharCorpus:
    """A character corpus split into training and validation token sequences (one per document)."""

    vocab: CharVocab
    train: List[Tensor]
    valid: List[Tensor]

    @property
    def train_tokens(self) -> int:
        return sum(t.numel() for t in self.train)


def load_char_corpus(path: PathLike, val_fraction: float = 0.1, vocab: Optional[CharVocab] = None) -> CharCorpus:
    """Read `path` (file or directory) and hold out the last `val_fraction` of each document.

    With `vocab` (resuming, or a model's vocabulary) every character must be in it.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"val_fraction must be in [0, 1); got {val_fraction}")
    docs = read_corpus(path)
    if vocab is None:
        vocab = CharVocab.from_text(t for _, t in docs)
    train, valid = [], []
    for name, text in docs:
        ids = vocab.encode(text, what=f"data file {name!r}")
        cut = len(ids) - int(round(len(ids) * val_fraction))
        if cut < 2 or (val_fraction > 0 and len(ids) - cut < 2):
            if len(docs) == 1:
                raise DataError(f"data file {name!r} has only {len(ids)} characters; too short to split off "
                                f"{val_fraction:.0%} for validation")
            continue
        train.append(ids[:cut])
        if val_fraction > 0:
            valid.append(ids[cut:])
    if not train:
        raise DataError(f"data path {str(path)!r}: every file is too short to train on")
    return CharCorpus(vocab, train, valid)


@dataclass
class WordCorpus:
    """PTB layout: train, valid, test token sequences (`<eos>` after each line)."""

    vocab: WordVocab
    train: Tensor
    valid: Tensor
    test: Tensor


def load_word_corpus(directory: PathLike, vocab: Optional[WordVocab] = None) -> WordCorpus:
    """Read DIR/train.txt, DIR/valid.txt, DIR/test.txt; the vocabulary comes from train.txt."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"word-LM data must be a directory with train.txt, valid.txt and test.txt; "
                        f"got {str(directory)!r}" + ("" if directory.exists() else " (it does not exist)"))
    texts = {}
    for split in ("train", "valid", "test"):
        texts[split] = [line for _, line in read_lines(directory / f"{split}.txt")]
    if vocab is None:
        vocab = WordVocab.from_lines(texts["train"])
    ids = {s: vocab.encode_lines(lines, what=f"{directory / (s + '.txt')}") for s, lines in texts.items()}
    return WordCorpus(vocab, ids["train"], ids["valid"], ids["test"])


def split_documents(docs: Sequence[Tensor]) -> List[Tensor]:
    """Drop documents with fewer than 2 tokens (nothing to predict)."""
    return [d for d in docs if d.numel() >= 2]
