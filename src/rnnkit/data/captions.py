"""Images with captions: MNIST digit scenes captioned from their layout, and Flickr8k/COCO-style folders.

Digit scenes (`DigitScenes`): 1–3 digits from one MNIST pool (the same disjoint
train/valid/test pools as the moving digits) on a 3 × 3 grid of cells, all in one
row or one column, so that every scene has a caption that can be checked:

    1 digit    "a 7"                             | "the digit 7" | "one digit : 7"
    2 digits   "a 7 above a 2"                   | "a 2 below a 7" | "a 7 and a 2 , one above the other"
               "a 7 left of a 2"                 | "a 2 right of a 7" | "a 7 and a 2 side by side"
    3 digits   "three digits : 4 left of 9 left of 1" | "three digits in a row : 4 9 1"
               "three digits : 4 above 9 above 1"     | "three digits in a column : 4 9 1"

Scene i is drawn from a generator seeded by (seed, split, i) only. `parse_caption`
reads any of these phrasings back into (digits in reading order, orientation),
which the exact-match metrics compare.

Caption folders (`load_caption_folder`): an image directory plus a captions file in
one of three layouts — Flickr8k's token file (`img.jpg#0<TAB>caption`), the
Kaggle Flickr8k `captions.txt` (CSV with header `image,caption`), or a COCO
captions JSON (`images` with `file_name`, `annotations` with `caption`).

Tokens: lower-cased words and punctuation (`tokenize`); a `CaptionVocab` maps them to
ids with <pad>=0, <bos>=1, <eos>=2, <unk>=3.
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from .._optional import require
from .moving_digits import SPLIT_CODES, DigitPool, resize_digits
from .text import DataError
from ..checks import check_int
from ..errors import InputError

PathLike = Union[str, Path]
SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
PAD, BOS, EOS, UNK = 0, 1, 2, 3
_TOKEN = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")
NUMBER_WORDS = {1: "one", 2: "two", 3: "three"}


def tokenize(text: str) -> List[str]:
    return _TOKEN.findall(text.lower())


class CaptionVocab:
    """Word <-> id; ids 0..3 are <pad>, <bos>, <eos>, <unk>."""

    def __init__(self, words: Sequence[str]) -> None:
        self.itos = list(SPECIALS) + [w for w in words if w not in SPECIALS]
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    @classmethod
    def build(cls, captions: Sequence[str], min_count: int = 1) -> "CaptionVocab":
        counts = Counter(t for c in captions for t in tokenize(c))
        return cls(sorted(w for w, n in counts.items() if n >= min_count))

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> List[int]:
        return [self.stoi.get(t, UNK) for t in tokenize(text)]

    def decode(self, ids: Sequence[int]) -> str:
        return " ".join(self.itos[i] for i in ids if i >= len(SPECIALS) or i == UNK)

    def to_json(self) -> List[str]:
        return self.itos[len(SPECIALS):]

    @classmethod
    def from_json(cls, words: Sequence[str]) -> "CaptionVocab":
        return cls(list(words))


# ------------------------------------------------------------ digit scenes
@dataclass
class Scene:
    image: np.ndarray  # (1, S, S) float32 in [0, 1]
    digits: Tuple[int, ...]  # in reading order: left to right, or top to bottom
    orientation: str  # "single", "row", "column"
    captions: List[str]  # every phrasing; the first is the canonical one


def phrasings(digits: Sequence[int], orientation: str) -> List[str]:
    """All captions of a layout (see the module docstring)."""
    d = [str(x) for x in digits]
    if orientation == "single":
        return [f"a {d[0]}", f"the digit {d[0]}", f"one digit : {d[0]}"]
    if len(d) == 2:
        if orientation == "column":
            return [f"a {d[0]} above a {d[1]}", f"a {d[1]} below a {d[0]}", f"a {d[0]} and a {d[1]} , one above "
                                                                             f"the other"]
        return [f"a {d[0]} left of a {d[1]}", f"a {d[1]} right of a {d[0]}", f"a {d[0]} and a {d[1]} side by side"]
    rel, line = ("above", "column") if orientation == "column" else ("left of", "row")
    return [f"three digits : {f' {rel} '.join(d)}", f"three digits in a {line} : {' '.join(d)}"]


_PATTERNS = [
    (re.compile(r"^(?:a|the digit|one digit :) (\d)$"), lambda m: ((int(m[1]),), "single")),
    (re.compile(r"^a (\d) (above|below|left of|right of) a (\d)$"),
     lambda m: ((int(m[1]), int(m[3])) if m[2] in ("above", "left of") else (int(m[3]), int(m[1])),
                "column" if m[2] in ("above", "below") else "row")),
    (re.compile(r"^a (\d) and a (\d) , one above the other$"), lambda m: ((int(m[1]), int(m[2])), "column")),
    (re.compile(r"^a (\d) and a (\d) side by side$"), lambda m: ((int(m[1]), int(m[2])), "row")),
    (re.compile(r"^three digits : (\d) (above|left of) (\d) \2 (\d)$"),
     lambda m: ((int(m[1]), int(m[3]), int(m[4])), "column" if m[2] == "above" else "row")),
    (re.compile(r"^three digits in a (row|column) : (\d) (\d) (\d)$"),
     lambda m: ((int(m[2]), int(m[3]), int(m[4])), m[1])),
]


def parse_caption(text: str) -> Optional[Tuple[Tuple[int, ...], str]]:
    """(digits in reading order, orientation) of a digit-scene caption, or None if it is no phrasing of ours.

    "side by side" does not say which digit is left: it is read in the order written.
    """
    t = " ".join(tokenize(text))
    for pattern, read in _PATTERNS:
        m = pattern.match(t)
        if m:
            return read(m)
    return None


class DigitScenes:
    """Captioned scenes of 1–3 digits from one pool.

    Args:
        pool: the split's digits (see moving_digits.digit_pools).
        image_size: S, the canvas is S × S, split in a 3 × 3 grid; digits are resized to
            cell − 2 pixels and jittered by up to 1 pixel inside their cell.
        max_digits: 1 to 3 digits per scene, uniformly.
    """

    def __init__(self, pool: DigitPool, image_size: int = 60, *, max_digits: int = 3, seed: int = 0) -> None:
        check_int("image_size", image_size, minimum=12, owner="DigitScenes")
        if max_digits not in (1, 2, 3):
            raise InputError(f"DigitScenes: max_digits must be 1, 2 or 3; got {max_digits!r}")
        self.pool, self.image_size, self.max_digits, self.seed = pool, image_size, max_digits, seed
        self.cell = image_size // 3
        self.digit_size = self.cell - 2
        self.digits = resize_digits(pool.images, self.digit_size)
        self.split_code = SPLIT_CODES.get(pool.name, 9)

    def scene(self, i: int) -> Scene:
        rng = np.random.default_rng([self.seed, self.split_code, 1000 + i])
        n = int(rng.integers(1, self.max_digits + 1))
        orientation = "single" if n == 1 else ("row" if rng.random() < 0.5 else "column")
        line = int(rng.integers(0, 3))  # which row (or column)
        slots = sorted(rng.choice(3, size=n, replace=False).tolist())  # positions along the line, reading order
        which = rng.integers(0, len(self.digits), size=n)
        S, c, d = self.image_size, self.cell, self.digit_size
        image = np.zeros((S, S), dtype=np.float32)
        for slot, k in zip(slots, which):
            row, col = (line, slot) if orientation != "column" else (slot, line)
            y, x = row * c + 1 + int(rng.integers(-1, 2)), col * c + 1 + int(rng.integers(-1, 2))
            y, x = min(max(y, 0), S - d), min(max(x, 0), S - d)
            np.maximum(image[y:y + d, x:x + d], self.digits[k], out=image[y:y + d, x:x + d])
        digits = tuple(int(self.pool.labels[k]) for k in which)
        return Scene(image[None], digits, orientation, phrasings(digits, orientation))


# ------------------------------------------------------------ caption folders
@dataclass
class CaptionFolder:
    """Images named in a captions file: paths[i] has captions[i] (one or more)."""

    paths: List[Path]
    captions: List[List[str]]


def load_caption_folder(images: PathLike, captions_file: PathLike) -> CaptionFolder:
    """Read a Flickr8k token file, a Flickr8k captions.txt (CSV) or a COCO captions JSON.

    Every image the file names must exist in `images`; otherwise a DataError names
    the captions file and the first missing images.
    """
    root, cap = Path(images), Path(captions_file)
    if not root.is_dir():
        raise DataError(f"image folder {str(root)!r} does not exist")
    if not cap.is_file():
        raise DataError(f"captions file {str(cap)!r} does not exist")
    try:
        text = cap.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(f"captions file {str(cap)!r} is not UTF-8 text") from None
    by_image: Dict[str, List[str]] = {}
    if cap.suffix == ".json":
        try:
            data = json.loads(text)
            names = {im["id"]: im["file_name"] for im in data["images"]}
            for a in data["annotations"]:
                by_image.setdefault(names[a["image_id"]], []).append(a["caption"].strip())
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise DataError(f"captions file {str(cap)!r} is not COCO captions JSON (images[].file_name, "
                            f"annotations[].image_id/caption): {err}") from None
    else:
        lines = [ln for ln in text.splitlines() if ln.strip()]
        if lines and lines[0].strip().lower().replace(" ", "") == "image,caption":
            for row in csv.reader(lines[1:]):
                if len(row) < 2:
                    raise DataError(f"captions file {str(cap)!r}: expected 'image,caption' rows; got {row!r}")
                by_image.setdefault(row[0].strip(), []).append(",".join(row[1:]).strip())
        else:
            for n, ln in enumerate(lines, 1):
                if "\t" not in ln:
                    raise DataError(f"captions file {str(cap)!r} line {n}: expected 'image#k<TAB>caption' "
                                    f"(Flickr8k) or a CSV with header image,caption; got {ln[:60]!r}")
                name, caption = ln.split("\t", 1)
                by_image.setdefault(name.split("#")[0].strip(), []).append(caption.strip())
    if not by_image:
        raise DataError(f"captions file {str(cap)!r} holds no captions")
    missing = [name for name in by_image if not (root / name).is_file()]
    if missing:
        shown = ", ".join(repr(m) for m in missing[:3])
        raise DataError(f"captions file {str(cap)!r} names {len(missing)} image(s) missing from "
                        f"{str(root)!r}: {shown}{' ...' if len(missing) > 3 else ''}")
    names = sorted(by_image)
    return CaptionFolder([root / n for n in names], [by_image[n] for n in names])


def load_image(path: PathLike, size: int, channels: int) -> np.ndarray:
    """(channels, size, size) float32 in [0, 1]; DataError naming the file if it cannot be decoded."""
    Image = require("PIL.Image", extra="vision", purpose="reading images")

    try:
        with Image.open(path) as im:
            im = im.convert("L" if channels == 1 else "RGB").resize((size, size), Image.BILINEAR)
            a = np.asarray(im, dtype=np.float32) / 255.0
    except FileNotFoundError:
        raise DataError(f"image {str(path)!r} does not exist") from None
    except (Image.UnidentifiedImageError, OSError, ValueError) as err:
        raise DataError(f"image {str(path)!r} cannot be decoded ({type(err).__name__}: {err})") from None
    return a[None] if channels == 1 else a.transpose(2, 0, 1).copy()


# ------------------------------------------------------------ batches
def encode_batch(captions: Sequence[str], vocab: CaptionVocab, max_len: int) -> Tuple[Tensor, Tensor]:
    """(tokens (B, L+2) = <bos> caption <eos> <pad>..., lengths (B,) counting <eos>), captions cut at max_len."""
    ids = [vocab.encode(c)[:max_len] for c in captions]
    L = max(len(x) for x in ids) + 2
    out = torch.full((len(ids), L), PAD, dtype=torch.long)
    for b, x in enumerate(ids):
        out[b, :len(x) + 2] = torch.tensor([BOS, *x, EOS])
    return out, torch.tensor([len(x) + 1 for x in ids])


class CaptionBatches:
    """Trainer data source: {"images": (B, C, S, S), "tokens": (B, L), "lengths": (B,)}.

    `items(i) -> (image (C, S, S), captions)`; training picks one caption per image
    (seeded by epoch and index), evaluation the first. fixed=True: the same items every
    pass (validation); else epoch e, batch b holds items (e·N + b)·B … (digit scenes:
    new scenes every epoch) taken modulo `num_items` when that is finite.
    """

    def __init__(self, items, num_items: Optional[int], vocab: CaptionVocab, batch_size: int,
                 batches_per_epoch: int, *, fixed: bool, max_len: int = 32, seed: int = 0,
                 order: Optional[Sequence[int]] = None) -> None:
        self.items, self.num_items, self.vocab = items, num_items, vocab
        self.batch_size, self.batches_per_epoch, self.fixed, self.max_len, self.seed = (
            batch_size, batches_per_epoch, fixed, max_len, seed)
        self.order = list(order) if order is not None else None

    def __len__(self) -> int:
        return self.batches_per_epoch

    def _index(self, k: int) -> int:
        if self.num_items is None:
            return k
        k %= self.num_items
        return self.order[k] if self.order is not None else k

    def batches(self, epoch: int = 0, start: int = 0) -> Iterator[Dict[str, Tensor]]:
        base = 0 if self.fixed else epoch * self.batches_per_epoch
        for b in range(start, self.batches_per_epoch):
            images, texts = [], []
            for j in range((base + b) * self.batch_size, (base + b + 1) * self.batch_size):
                image, captions = self.items(self._index(j))
                rng = np.random.default_rng([self.seed, epoch if not self.fixed else 0, j])
                images.append(torch.from_numpy(image))
                texts.append(captions[0] if self.fixed else captions[int(rng.integers(len(captions)))])
            tokens, lengths = encode_batch(texts, self.vocab, self.max_len)
            yield {"images": torch.stack(images), "tokens": tokens, "lengths": lengths}


def digit_vocab() -> CaptionVocab:
    """The words of every digit-scene phrasing."""
    texts = [c for layout in ("single", "row", "column") for n in ((1,) if layout == "single" else (2, 3))
             for c in phrasings(list(range(n)) if n > 1 else [0], layout)]
    texts += [str(d) for d in range(10)]
    return CaptionVocab.build(texts)
