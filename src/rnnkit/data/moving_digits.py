"""MNIST digits (the embedded 10,000-image test set) and Moving-MNIST-style sequences made from them.

    load_mnist(dir)          images (N, 28, 28) uint8, labels (N,) from the gzipped IDX files
    digit_pools(dir)         disjoint train / valid / test pools (8,000 / 1,000 / 1,000 images),
                             split once by a fixed permutation: the same split on every machine and run
    MovingDigits(pool, ...)  sequence i: `num_digits` digits bouncing in a square frame (Srivastava
                             et al. 2015's generator), drawn from a generator seeded by (seed, i) only,
                             so every sequence can be re-made on its own
    VideoBatches(...)        batches for the trainer: (frames (T, B, 1, S, S) float in [0, 1])

A generator only ever reads its own pool, so sequences of different splits never
share a digit image. Data: MNIST (LeCun, Cortes, Burges), CC BY-SA 3.0 — see
data/mnist/SOURCE.md; sequences made from it carry the same licence.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from .text import DataError
from ..checks import check_int
from ..errors import InputError

PathLike = Union[str, Path]
MNIST_DIR = "data/mnist"
IMAGES, LABELS = "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"
SPLITS = {"train": (0, 8000), "valid": (8000, 9000), "test": (9000, 10000)}
SPLIT_CODES = {"train": 0, "valid": 1, "test": 2}
#: the permutation that splits the 10,000 images; fixed, so the pools never change
SPLIT_SEED = 20150101


def _read_idx(path: Path, magic: int, rank: int) -> np.ndarray:
    try:
        raw = gzip.decompress(path.read_bytes())
    except FileNotFoundError:
        raise DataError(f"MNIST file {str(path)!r} does not exist (expected the gzipped IDX files of "
                        f"data/mnist/, see its SOURCE.md)") from None
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise DataError(f"MNIST file {str(path)!r} is not a gzip file ({err})") from None
    if len(raw) < 4 + 4 * rank or int.from_bytes(raw[:4], "big") != magic:
        raise DataError(f"MNIST file {str(path)!r} is not an IDX file with magic number {magic}")
    shape = tuple(int.from_bytes(raw[4 + 4 * k:8 + 4 * k], "big") for k in range(rank))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * rank)
    if data.size != int(np.prod(shape)):
        raise DataError(f"MNIST file {str(path)!r} is truncated: header says {shape}, got {data.size} values")
    return data.reshape(shape)


def load_mnist(directory: PathLike = MNIST_DIR) -> Tuple[np.ndarray, np.ndarray]:
    """(images (N, 28, 28) uint8, labels (N,) uint8) from DIR/t10k-{images,labels}-*.gz."""
    d = Path(directory)
    images = _read_idx(d / IMAGES, 2051, 3)
    labels = _read_idx(d / LABELS, 2049, 1)
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"MNIST files in {str(d)!r} disagree: {images.shape[0]} images, {labels.shape[0]} labels")
    return images, labels


@dataclass
class DigitPool:
    """The images of one split; `index` are their positions in the MNIST file."""

    name: str
    images: np.ndarray  # (N, 28, 28) uint8
    labels: np.ndarray  # (N,)
    index: np.ndarray  # (N,)


def digit_pools(directory: PathLike = MNIST_DIR) -> Dict[str, DigitPool]:
    """Disjoint train/valid/test pools (8,000/1,000/1,000 images), always the same split."""
    images, labels = load_mnist(directory)
    if images.shape[0] != 10000:
        raise DataError(f"expected the 10,000-image MNIST test set in {str(directory)!r}; got {images.shape[0]}")
    order = np.random.default_rng(SPLIT_SEED).permutation(images.shape[0])
    return {name: DigitPool(name, images[order[a:b]], labels[order[a:b]], order[a:b])
            for name, (a, b) in SPLITS.items()}


def resize_digits(images: np.ndarray, size: int) -> np.ndarray:
    """(N, 28, 28) uint8 -> (N, size, size) float32 in [0, 1] (area interpolation; 28 keeps them)."""
    x = torch.from_numpy(images.astype(np.float32) / 255.0)[:, None]
    if size != images.shape[-1]:
        x = F.interpolate(x, size=(size, size), mode="area" if size < images.shape[-1] else "bilinear",
                          align_corners=None if size < images.shape[-1] else False)
    return x[:, 0].clamp_(0, 1).numpy()


class MovingDigits:
    """Moving-MNIST-style sequences from one digit pool.

    Each digit starts at a uniform position with a uniform direction and moves
    `speed` × (frame − digit) pixels per frame, bouncing off the walls; digits are
    combined by the pixel-wise maximum. Sequence i uses a generator seeded with
    (seed, split, i) only.

    Args:
        pool: the split's digits.
        frame_size: S (frames are S × S); digit_size defaults to round(28 · S / 64),
            so a 32 × 32 frame holds 14-pixel digits moving like 28-pixel ones in 64 × 64.
        num_digits, seq_len: digits per sequence, frames per sequence (inputs + targets).
    """

    def __init__(self, pool: DigitPool, frame_size: int = 64, *, num_digits: int = 2, seq_len: int = 20,
                 digit_size: Optional[int] = None, speed: float = 0.1, seed: int = 0) -> None:
        for name, value in (("frame_size", frame_size), ("num_digits", num_digits), ("seq_len", seq_len)):
            check_int(name, value, owner="MovingDigits")
        digit_size = digit_size or max(4, round(28 * frame_size / 64))
        if digit_size > frame_size:
            raise InputError(f"MovingDigits: digit_size {digit_size} does not fit a {frame_size}-pixel frame")
        self.pool, self.frame_size, self.digit_size = pool, frame_size, digit_size
        self.num_digits, self.seq_len, self.speed, self.seed = num_digits, seq_len, speed, seed
        self.digits = resize_digits(pool.images, digit_size)
        self.split_code = SPLIT_CODES.get(pool.name, 9)

    def rng(self, i: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.split_code, i])

    def sequence(self, i: int) -> Tuple[np.ndarray, np.ndarray]:
        """(frames (T, S, S) float32 in [0, 1], pool indices of its digits (num_digits,))."""
        rng = self.rng(i)
        S, d, T = self.frame_size, self.digit_size, self.seq_len
        lim = S - d
        frames = np.zeros((T, S, S), dtype=np.float32)
        which = rng.integers(0, len(self.digits), size=self.num_digits)
        for k in which:
            pos = rng.random(2)  # (y, x) in [0, 1] of the free range
            theta = rng.random() * 2 * np.pi
            vel = np.array([np.sin(theta), np.cos(theta)]) * self.speed
            for t in range(T):
                y, x = (pos * lim).round().astype(int)
                np.maximum(frames[t, y:y + d, x:x + d], self.digits[k], out=frames[t, y:y + d, x:x + d])
                pos = pos + vel
                for a in range(2):  # bounce
                    if pos[a] < 0:
                        pos[a], vel[a] = -pos[a], -vel[a]
                    elif pos[a] > 1:
                        pos[a], vel[a] = 2 - pos[a], -vel[a]
        return frames, which

    def batch(self, start: int, size: int) -> Tensor:
        """Sequences start .. start+size−1 as (T, B, 1, S, S) float32 (time-major)."""
        frames = np.stack([self.sequence(i)[0] for i in range(start, start + size)], axis=1)
        return torch.from_numpy(frames)[:, :, None]


class VideoBatches:
    """Trainer data source over a MovingDigits generator.

    fixed=False (training): epoch e's batch b holds sequences (e·N + b)·B … — new
    sequences every epoch, each re-made from its index alone (exact resume).
    fixed=True (validation/test): the same `batches_per_epoch` batches every pass.
    """

    def __init__(self, source: MovingDigits, batch_size: int, batches_per_epoch: int, *, fixed: bool) -> None:
        check_int("batch_size", batch_size, owner="VideoBatches")
        check_int("batches_per_epoch", batches_per_epoch, owner="VideoBatches")
        self.source, self.batch_size, self.batches_per_epoch, self.fixed = source, batch_size, batches_per_epoch, fixed

    def __len__(self) -> int:
        return self.batches_per_epoch

    def batches(self, epoch: int = 0, start: int = 0) -> Iterator[Tensor]:
        base = 0 if self.fixed else epoch * self.batches_per_epoch
        for b in range(start, self.batches_per_epoch):
            yield self.source.batch((base + b) * self.batch_size, self.batch_size)


def read_npy(path: Union[str, Path], what: str = "file") -> np.ndarray:
    """The array a .npy file holds (never pickled objects); InputError naming the file when it is missing or
    not a .npy array. `what` names it in the message ("frames file", "clips file")."""
    if not Path(path).is_file():
        raise InputError(f"{what} {str(path)!r} does not exist")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise InputError(f"{what} {str(path)!r} is not a .npy array ({err})") from None
