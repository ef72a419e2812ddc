"""Labelled clips of one MNIST digit gliding in one of K directions: video classification whose label needs time.

Clip i (from a generator seeded by (seed, split, i) only, as `MovingDigits`): a digit of the pool
starts at a uniform position from which it cannot reach a wall, and moves `speed` × (frame − digit)
pixels per frame in direction k = 0 … K−1 (angle 2πk/K, k = 0 is "right", counter-clockwise on screen),
never bouncing. The label is k.

No single frame says where the digit is going. The clip's mean frame shows a streak along the
motion's axis but not its sign (the mean is the same played backwards), so a model that sees only
the mean frame can tell at most the axis: with K = 8 it scores at most 50 %.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from ..checks import check_int
from ..errors import InputError
from .moving_digits import SPLIT_CODES, DigitPool, resize_digits

#: direction names for K = 4 and K = 8 (screen coordinates: y grows downwards, so angle π/2 is "up")
DIRECTION_NAMES = {4: ("right", "up", "left", "down"),
                   8: ("right", "up-right", "up", "up-left", "left", "down-left", "down", "down-right")}


def direction_names(directions: int) -> List[str]:
    """Label names of K directions ("right", "up-right", ... for K = 4 or 8; else the angles in degrees)."""
    return list(DIRECTION_NAMES.get(directions, [f"{round(360 * k / directions)}deg" for k in range(directions)]))


class DigitClips:
    """Clips (T, S, S) of one digit moving in a straight line, labelled with its direction.

    Args:
        pool: the split's digits.
        frame_size: S; digit_size defaults to round(28 · S / 64) as in `MovingDigits`.
        clip_len: T frames per clip (>= 2: one frame has no direction).
        directions: K classes, the angles 2πk/K.
        speed: per frame, as a fraction of the free range S − digit_size; the whole path must fit:
            (T − 1) · speed <= 1.
    """

    def __init__(self, pool: DigitPool, frame_size: int = 32, *, clip_len: int = 8, directions: int = 8,
                 digit_size: Optional[int] = None, speed: float = 0.1, seed: int = 0) -> None:
        for name, value in (("frame_size", frame_size), ("clip_len", clip_len), ("directions", directions)):
            check_int(name, value, owner="DigitClips")
        if clip_len < 2 or directions < 2:
            raise InputError(f"DigitClips: clip_len and directions must be >= 2; got {clip_len} and {directions}")
        digit_size = digit_size or max(4, round(28 * frame_size / 64))
        if digit_size >= frame_size:
            raise InputError(f"DigitClips: digit_size {digit_size} leaves no room to move in a {frame_size}-pixel "
                             f"frame")
        if not 0 < speed * (clip_len - 1) <= 1:
            raise InputError(f"DigitClips: a path of {clip_len} frames at speed {speed} does not fit the frame "
                             f"((clip_len - 1) * speed must lie in (0, 1])")
        self.pool, self.frame_size, self.digit_size = pool, frame_size, digit_size
        self.clip_len, self.directions, self.speed, self.seed = clip_len, directions, speed, seed
        self.digits = resize_digits(pool.images, digit_size)
        self.split_code = SPLIT_CODES.get(pool.name, 9)

    def clip(self, i: int) -> Tuple[np.ndarray, int]:
        """(frames (T, S, S) float32 in [0, 1], direction k)."""
        rng = np.random.default_rng([self.seed, self.split_code, i])
        S, d, T = self.frame_size, self.digit_size, self.clip_len
        digit = self.digits[rng.integers(len(self.digits))]
        k = int(rng.integers(self.directions))
        angle = 2 * np.pi * k / self.directions
        step = np.array([-np.sin(angle), np.cos(angle)]) * self.speed  # (y, x): "up" is y decreasing
        path = step * (T - 1)
        # start anywhere the whole path stays inside [0, 1] on both axes
        start = -np.minimum(path, 0) + rng.random(2) * (1 - np.abs(path))
        frames = np.zeros((T, S, S), dtype=np.float32)
        for t in range(T):
            y, x = ((start + step * t) * (S - d)).round().astype(int)
            frames[t, y:y + d, x:x + d] = digit
        return frames, k

    def batch(self, start: int, size: int) -> Dict[str, Tensor]:
        """Clips start .. start+size−1: {"frames": (T, B, 1, S, S) float32 (time-major), "labels": (B,) int64}."""
        clips = [self.clip(i) for i in range(start, start + size)]
        frames = torch.from_numpy(np.stack([f for f, _ in clips], axis=1))[:, :, None]
        return {"frames": frames, "labels": torch.tensor([k for _, k in clips], dtype=torch.long)}
