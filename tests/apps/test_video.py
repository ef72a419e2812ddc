"""rnnkit.apps.video from Python: train on tiny sequences, predict from the Run and from its loaded run
directory, settings and frame errors that name what is wrong; the help texts that were cut or missing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rnnkit import apps
from rnnkit.apps import video
from rnnkit.apps.runner import Run
from rnnkit.errors import InputError
from rnnkit.models.video import EncoderForecaster

TINY = dict(frame_size=16, patch_size=2, hidden_channels=4, num_layers=1, input_frames=3, output_frames=2,
            batch_size=2, val_sequences=2, test_sequences=2, max_steps=2, tensorboard=False, quiet=True)


def test_train_predict_and_load(tmp_path):
    out = tmp_path / "run"
    run = video.train(video.VideoSettings(out=str(out), **TINY))
    assert {"model", "copy last frame", "mean frame"} <= set(run.results)
    assert json.loads((out / "results.json").read_text())["sequences"] == 2
    assert "copy last frame" in (out / "results.md").read_text()
    assert "1 - val SSIM" in json.loads((out / "best.json").read_text())  # select_by ssim, the default
    for name in ("video_strip.png", "video.gif", "video_per_frame.png"):
        assert (out / name).is_file(), name

    frames = video.example_sequence(run, 1)  # (k + n, S, S)
    assert frames.shape == (5, 16, 16) and frames.dtype == np.float32
    predicted = video.predict(run, frames)
    assert isinstance(predicted, np.ndarray) and predicted.shape == (2, 16, 16)
    assert 0.0 <= predicted.min() and predicted.max() <= 1.0
    as_tensor = video.predict(run, torch.from_numpy(frames[:3]))  # only the k inputs; a tensor gives a tensor
    assert isinstance(as_tensor, torch.Tensor) and np.allclose(as_tensor.numpy(), predicted, atol=1e-6)
    for loaded in (video.load(out), apps.load(out)):  # the best weights, as the Run holds them after training
        assert loaded.app == "video"
        assert np.allclose(video.predict(loaded, frames), predicted, atol=1e-6)
    paths = video.write_examples(loaded, frames, tmp_path / "examples")
    assert np.allclose(np.load(paths["npy"]), predicted, atol=1e-6)
    assert paths["strip"].is_file() and paths["gif"].is_file()


def tiny_run() -> Run:
    model = EncoderForecaster(video.VideoSettings(**TINY).model_config())
    return Run("video", model.eval(), {"data": {"num_digits": 1, "seed": 0}})


def test_uint8_frames_are_intensities():
    run, frames = tiny_run(), np.random.default_rng(0).integers(0, 256, (3, 16, 16)).astype(np.uint8)
    assert np.allclose(video.predict(run, frames), video.predict(run, frames / np.float32(255)), atol=1e-6)
    assert video.predict(run, frames[:, None]).shape == (2, 16, 16)  # (T, 1, S, S) too


@pytest.mark.parametrize("frames,needle", [
    (np.zeros((3, 32, 32), np.float32), "(time >= 3, 16, 16)"),
    (np.zeros((2, 16, 16), np.float32), "got shape (2, 16, 16)"),
    (np.full((3, 16, 16), 1.5, np.float32), "[0, 1]"),
    ("no-such.npy", "no-such.npy"),
    ([[0.0]], "numpy array, a tensor or a .npy path"),
])
def test_bad_frames_name_the_problem(tmp_path, frames, needle):
    with pytest.raises(InputError) as err:
        video.predict(tiny_run(), str(tmp_path / frames) if isinstance(frames, str) else frames)
    assert needle in str(err.value)


@pytest.mark.parametrize("changes,needles", [
    (dict(kernel_size=4), ["kernel_size", "odd"]),
    (dict(head="pixels", forecaster_input="none", teacher_forcing=0.5), ["teacher_forcing", "forecaster_input frames"]),
    (dict(cell="convgru", peephole=True), ["peephole", "cell convgru"]),
    (dict(head="pixels", advect_size=5), ["advect_size", "head pixels"]),
    (dict(frame_size=30), ["frame_size", "patch_size"]),
])
def test_settings_errors_name_the_setting(changes, needles):
    with pytest.raises(InputError) as err:
        video.VideoSettings(**changes)
    for needle in needles:
        assert needle in str(err.value)


def test_default_teacher_forcing_is_dropped_where_it_cannot_act():
    s = video.VideoSettings(head="pixels", forecaster_input="none")
    assert s.teacher_forcing == 0.0 and video.VideoSettings().teacher_forcing == 1.0


def test_help_summaries_are_whole_sentences():
    from rnnkit.cli.export import export
    from rnnkit.cli.train import train_command
    for name in ("video", "caption"):
        summary = train_command(name).get_short_help_str()
        assert summary.endswith(".") and summary.count("(") == summary.count(")"), summary
    assert "video" in export.help
