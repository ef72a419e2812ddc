"""Moving digits: the MNIST reader, split separation, generator determinism, bad files."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

from rnnkit.data.moving_digits import MovingDigits, VideoBatches, digit_pools, load_mnist
from rnnkit.data.text import DataError


@pytest.fixture(scope="module")
def pools():
    return digit_pools()


def test_mnist_reads_the_documented_file():
    images, labels = load_mnist()
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]  # data/mnist/SOURCE.md
    assert np.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_splits_are_disjoint_complete_and_fixed(pools):
    sizes = {k: len(p.index) for k, p in pools.items()}
    assert sizes == {"train": 8000, "valid": 1000, "test": 1000}
    sets = [set(p.index.tolist()) for p in pools.values()]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert set().union(*sets) == set(range(10000))
    again = digit_pools()
    for k in pools:
        assert np.array_equal(pools[k].index, again[k].index)


def test_generators_only_use_their_own_pool(pools):
    """A 28-pixel frame with one 28-pixel digit shows that digit unmoved: find it in the MNIST file and
    check that it belongs to the generator's split and to no other."""
    images, _ = load_mnist()
    flat = images.reshape(10000, -1).astype(np.float32) / 255.0
    for name in ("train", "valid", "test"):
        gen = MovingDigits(pools[name], 28, num_digits=1, digit_size=28, seed=3)
        others = set().union(*(set(p.index.tolist()) for k, p in pools.items() if k != name))
        for i in range(6):
            frame = gen.sequence(i)[0][0].reshape(-1)
            matches = np.flatnonzero(np.abs(flat - frame).max(1) < 1e-6)
            assert len(matches) >= 1
            assert set(matches.tolist()) <= set(pools[name].index.tolist())
            assert not set(matches.tolist()) & others


def test_sequences_are_deterministic_and_seed_dependent(pools):
    a = MovingDigits(pools["train"], 32, seed=1)
    b = MovingDigits(pools["train"], 32, seed=1)
    c = MovingDigits(pools["train"], 32, seed=2)
    assert np.array_equal(a.sequence(7)[0], b.sequence(7)[0])
    assert not np.array_equal(a.sequence(7)[0], c.sequence(7)[0])
    assert not np.array_equal(a.sequence(7)[0], a.sequence(8)[0])
    x = a.batch(5, 3)
    assert x.shape == (20, 3, 1, 32, 32) and x.dtype == torch.float32
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    assert torch.equal(x[:, 1, 0], torch.from_numpy(a.sequence(6)[0]))


def test_digits_move_and_stay_inside(pools):
    gen = MovingDigits(pools["valid"], 64, num_digits=1, seed=0)
    frames, _ = gen.sequence(0)
    mass = frames.reshape(20, -1).sum(1)
    assert np.allclose(mass, mass[0], rtol=1e-5)  # the whole digit is always inside the frame
    centres = [np.argwhere(f > 0.5).mean(0) for f in frames]
    assert np.linalg.norm(centres[-1] - centres[0]) > 1 or np.linalg.norm(centres[5] - centres[0]) > 1


def test_training_batches_differ_by_epoch_validation_batches_do_not(pools):
    gen = MovingDigits(pools["train"], 32, seed=0)
    train = VideoBatches(gen, 2, 3, fixed=False)
    e0, e1 = list(train.batches(0)), list(train.batches(1))
    assert not torch.equal(e0[0], e1[0])
    assert torch.equal(list(train.batches(0, start=2))[0], e0[2])  # resume mid-epoch
    val = VideoBatches(MovingDigits(pools["valid"], 32, seed=0), 2, 2, fixed=True)
    assert torch.equal(list(val.batches(0))[1], list(val.batches(5))[1])


def test_bad_mnist_files_name_the_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_mnist(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(b"not gzip")
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte.gz.*not a gzip file"):
        load_mnist(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x03" + b"\x00" * 8))
    with pytest.raises(DataError, match="IDX file|truncated"):
        load_mnist(tmp_path)
    with pytest.raises(ValueError, match="frame_size must be a positive int"):
        MovingDigits(digit_pools()["test"], 0)
