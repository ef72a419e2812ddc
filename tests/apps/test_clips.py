"""rnnkit.apps.clips from Python (and `rnnkit train clips`): train on clips of made-up digits, compare the three
models, predict from the Run and from its loaded run directory; settings and clip errors that name the problem."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
import torch

import rnnkit
from rnnkit.apps import clips
from rnnkit.errors import InputError

from helpers import cli_outcome

SMALL = dict(frame_size=16, clip_len=4, speed=0.3, stem_channels=4, feature_size=8, hidden_size=8,
             tensorboard=False, quiet=True)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """A 10,000-image MNIST stand-in in the IDX format: blobs of random size and brightness."""
    rng = np.random.default_rng(0)
    images = np.zeros((10000, 28, 28), np.uint8)
    for i, (size, level) in enumerate(zip(rng.integers(8, 20, 10000), rng.integers(100, 256, 10000))):
        images[i, 14 - size // 2:14 + size - size // 2, 10:18] = level
    folder = tmp_path_factory.mktemp("mnist")
    header = (2051).to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in images.shape)
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + images.tobytes(), 1))
    labels = (np.arange(10000) % 10).astype(np.uint8)
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress((2049).to_bytes(4, "big")
                                                                     + (10000).to_bytes(4, "big") + labels.tobytes()))
    return str(folder)


def test_train_compare_predict_and_load(tmp_path, digits):
    out = tmp_path / "run"
    run = clips.train(clips.ClipSettings(data=digits, out=str(out), directions=4, batch_size=8, val_clips=8,
                                         test_clips=16, max_steps=3, **SMALL))
    saved = json.loads((out / "results.json").read_text())
    assert set(saved["models"]) == {"lrcn", "single_frame", "convlstm"} and saved["clips"] == 16
    for row in saved["models"].values():
        assert row["steps"] == 3 and row["train_s"] > 0 and 0 <= row["accuracy"] <= 1
    assert "ConvLSTM encoder" in (out / "results.md").read_text()

    frames, truth = clips.example_clips(run, 5, start=2)
    assert frames.shape == (5, 4, 16, 16) and frames.dtype == np.float32
    assert set(truth) <= {"right", "up", "left", "down"}
    predicted = clips.predict(run, frames)
    assert len(predicted) == 5 and set(predicted) <= {"right", "up", "left", "down"}
    assert clips.predict(run, torch.from_numpy(frames)[:, :, None]) == predicted  # (N, T, 1, S, S) tensors
    assert clips.predict(run, [f for f in (frames * 255).round().astype(np.uint8)]) == predicted  # uint8 list
    for loaded in (clips.load(out), rnnkit.load(out)):  # the best weights, as the Run holds them after training
        assert loaded.app == "clips" and clips.predict(loaded, frames) == predicted


def test_the_lrcn_beats_the_single_frame_baseline(tmp_path, digits):
    """Left or right: the mean frame cannot tell them apart, the frames in order can."""
    acc = {}
    for model in ("lrcn", "single_frame"):  # (each alone: the ConvLSTM would triple the time)
        run = clips.train(data=digits, out=str(tmp_path / model), model=model, compare=False, directions=2,
                          batch_size=16, val_clips=32, test_clips=64, max_steps=100, eval_every=50, lr=1e-2, **SMALL)
        acc[model] = run.results["models"][model]["accuracy"]
    assert acc["lrcn"] >= 0.9 and acc["single_frame"] <= 0.75, acc


def test_the_command_line_trains_it(tmp_path, digits, capsys):
    code, out, err = cli_outcome(["train", "clips", "--data", digits, "--out", tmp_path / "run", "--frame-size", 16,
                                  "--clip-len", 3, "--speed", 0.4, "--no-compare", "--model", "single_frame",
                                  "--max-steps", 2, "--val-clips", 4, "--test-clips", 4, "--batch-size", 4,
                                  "--no-tensorboard"], capsys)
    assert code == 0, err
    assert list(json.loads((tmp_path / "run" / "results.json").read_text())["models"]) == ["single_frame"]
    # inference from the command line: a .npy of clips in, one direction a line out, as from Python
    run = clips.load(tmp_path / "run")
    frames, _ = clips.example_clips(run, 5)
    np.save(tmp_path / "clips.npy", (frames * 255).round().astype(np.uint8))
    code, out, err = cli_outcome(["predict", "--checkpoint", tmp_path / "run", "--input", tmp_path / "clips.npy"],
                                 capsys)
    assert code == 0, err
    assert out.splitlines() == clips.predict(run, str(tmp_path / "clips.npy")) and len(out.splitlines()) == 5
    code, out, err = cli_outcome(["predict", "--checkpoint", tmp_path / "run"], capsys)
    assert code == 2 and "--input CLIPS.npy" in err and "Traceback" not in err


@pytest.mark.parametrize("changes,needles", [
    (dict(clip_len=12), ["speed", "clip_len 12"]),
    (dict(model="convlstm", compare=False, cell="gru"), ["cell", "lrcn"]),
    (dict(model="transformer"), ["model", "lrcn, single_frame, convlstm"]),
    (dict(frame_size=4), ["frame_size", ">= 8"]),
])
def test_settings_errors_name_the_setting(changes, needles):
    with pytest.raises(InputError) as err:
        clips.ClipSettings(**changes)
    for needle in needles:
        assert needle in str(err.value)


def test_missing_digits_name_the_file(tmp_path):
    with pytest.raises(InputError, match="t10k-images"):
        clips.train(data=str(tmp_path), out=str(tmp_path / "run"), max_steps=1, quiet=True)


@pytest.fixture(scope="module")
def untrained():
    from rnnkit.apps.runner import Run
    from rnnkit.models.clips import ClipConfig, build_clip_model
    model = build_clip_model(ClipConfig(frame_size=16, num_classes=2, stem_channels=4, feature_size=8, hidden_size=8))
    return Run("clips", model.eval(), {"model": {"frame_size": 16}, "labels": ["right", "left"]})


@pytest.mark.parametrize("given,needle", [
    (np.zeros((2, 4, 32, 32), np.float32), "(clips, time >= 2, 16, 16)"),
    (np.zeros((4, 16, 16), np.float32), "got (4, 16, 16)"),
    (np.zeros((2, 1, 16, 16), np.float32), "time >= 2"),
    (np.full((1, 3, 16, 16), 1.5, np.float32), "[0, 1]"),
    ("clip.npy", "clips file 'clip.npy' does not exist"),
    (3, "numpy array, a tensor or a list"),
    ([], "one or more"),
])
def test_bad_clips_name_the_problem(untrained, given, needle):
    with pytest.raises(InputError) as err:
        clips.predict(untrained, given)
    assert needle in str(err.value)
