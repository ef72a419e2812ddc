"""Labelled digit clips: the digit moves the way its label says, stays whole inside the frame, and every clip
is re-made from its index alone."""

from __future__ import annotations

import numpy as np
import pytest

from rnnkit.data.digit_clips import DigitClips, direction_names
from rnnkit.data.moving_digits import DigitPool
from rnnkit.errors import InputError


def square_pool(name: str = "train", n: int = 20) -> DigitPool:
    """Digits that are solid squares (their centroid is their centre), each of another brightness."""
    images = np.zeros((n, 28, 28), np.uint8)
    images[:, 6:22, 6:22] = np.linspace(80, 255, n).astype(np.uint8)[:, None, None]
    return DigitPool(name, images, np.arange(n) % 10, np.arange(n))


def centroid(frame: np.ndarray) -> np.ndarray:
    ys, xs = np.indices(frame.shape)
    return np.array([(frame * ys).sum(), (frame * xs).sum()]) / frame.sum()


@pytest.mark.parametrize("directions", [4, 8])
def test_the_digit_moves_in_the_labelled_direction_and_stays_whole(directions):
    clips = DigitClips(square_pool(), 32, clip_len=6, directions=directions, speed=0.15)
    seen = set()
    for i in range(100):
        frames, k = clips.clip(i)
        seen.add(k)
        dy, dx = centroid(frames[-1]) - centroid(frames[0])
        angle = np.arctan2(-dy, dx) % (2 * np.pi)  # screen y grows downwards: "up" is -dy
        assert abs((angle - 2 * np.pi * k / directions + np.pi) % (2 * np.pi) - np.pi) < 0.15, (i, k, angle)
        assert np.allclose(frames.sum(axis=(1, 2)), frames[0].sum())  # never cut by a wall
    assert seen == set(range(directions))
    assert direction_names(directions)[0] == "right" and len(direction_names(directions)) == directions


def test_clips_are_remade_from_their_index_and_depend_on_seed_and_split():
    a = DigitClips(square_pool(), 16, clip_len=4, seed=1)
    batch = a.batch(3, 2)
    assert batch["frames"].shape == (4, 2, 1, 16, 16) and batch["labels"].shape == (2,)
    frames, label = a.clip(4)
    assert np.array_equal(batch["frames"][:, 1, 0].numpy(), frames) and int(batch["labels"][1]) == label
    others = [DigitClips(square_pool(), 16, clip_len=4, seed=2), DigitClips(square_pool("valid"), 16, clip_len=4, seed=1)]
    for other in others:
        assert any(not np.array_equal(a.clip(i)[0], other.clip(i)[0]) for i in range(5))


@pytest.mark.parametrize("kwargs,needle", [
    (dict(clip_len=1), "clip_len and directions must be >= 2"),
    (dict(clip_len=12, speed=0.1), "does not fit the frame"),
    (dict(frame_size=8, digit_size=8), "leaves no room to move"),
])
def test_bad_arguments_say_what_is_wrong(kwargs, needle):
    with pytest.raises(InputError, match=needle):
        DigitClips(square_pool(), **{"frame_size": 32, **kwargs})
