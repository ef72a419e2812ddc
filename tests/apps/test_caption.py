"""rnnkit.apps.caption from Python: train on tiny digit scenes, caption arrays and image files with the Run
and with its loaded run directory, settings and image errors that name what is wrong."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from rnnkit import apps
from rnnkit.apps import caption
from rnnkit.apps.runner import Run
from rnnkit.apps.video import mnist_pools
from rnnkit.data.captions import DigitScenes, digit_vocab
from rnnkit.errors import InputError
from rnnkit.models.caption import CaptionModel

TINY = dict(image_size=24, cnn_width=4, cnn_blocks=2, hidden_size=16, embedding_size=8, attention_size=8,
            batch_size=4, max_steps=2, val_images=4, test_images=4, max_len=6, baseline_minutes=0.0,
            tensorboard=False, quiet=True)


@pytest.fixture(scope="module")
def scene():
    return DigitScenes(mnist_pools(None)["test"], 24).scene(0)


def test_train_caption_and_load(tmp_path, scene):
    out = tmp_path / "run"
    run = caption.train(caption.CaptionSettings(out=str(out), beam=2, **TINY))
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert sorted(rows) == ["lstm + bahdanau attention, beam 2", "lstm + bahdanau attention, greedy"]
    assert "BLEU-4" in (out / "results.md").read_text() and (out / "caption_examples.png").is_file()

    path = tmp_path / "scene.png"
    Image.fromarray((scene.image[0] * 255).round().astype(np.uint8)).save(path)
    images = [scene.image, scene.image[0], torch.from_numpy(scene.image), (scene.image * 255).round().astype(np.uint8)]
    captions = caption.caption(run, images + [path], beam=2)
    assert len(captions) == 5 and all(isinstance(c, str) for c in captions)
    assert len(set(captions[:4])) == 1  # the same picture, however it came
    words = set(digit_vocab().itos)
    assert all(w in words for c in captions for w in c.split())
    for loaded in (caption.load(out), apps.load(out)):
        assert caption.caption(loaded, images + [path], beam=2) == captions
    assert caption.caption(loaded, np.stack([scene.image] * 3)) == caption.caption(run, [scene.image] * 3)
    shown = caption.write_attention(loaded, [path], tmp_path / "attention.png")
    assert shown == caption.caption(run, [path]) and (tmp_path / "attention.png").is_file()


def tiny_run() -> Run:
    s = caption.CaptionSettings(**TINY)
    vocab = digit_vocab()
    model = CaptionModel(s.model_config(len(vocab), 1)).eval()
    return Run("caption", model, {"vocab": vocab.to_json()}, extras={"vocab": vocab})


@pytest.mark.parametrize("images,beam,needle", [
    ([np.zeros((1, 20, 20), np.float32)], 1, "images[0] must have shape (1, 24, 24)"),
    ([np.zeros((24, 24)), np.zeros((3, 24, 24))], 1, "images[1] must have shape (1, 24, 24)"),
    ([np.full((1, 24, 24), 2.0)], 1, "[0, 1]"),
    ([], 1, "no images"),
    (["missing.png"], 1, "missing.png"),
    ([np.zeros((24, 24))], 0, "beam must be an int >= 1"),
])
def test_bad_images_name_the_problem(tmp_path, images, beam, needle):
    images = [str(tmp_path / i) if isinstance(i, str) else i for i in images]
    with pytest.raises(InputError) as err:
        caption.caption(tiny_run(), images, beam=beam)
    assert needle in str(err.value)


@pytest.mark.parametrize("changes,needles", [
    (dict(images="Images"), ["images and captions go together"]),
    (dict(images="Images", captions="captions.txt", max_digits=2), ["max_digits", "digit scenes"]),
    (dict(sampling_k=0.5), ["sampling_k", "sampling none"]),
    (dict(sampling="exponential", sampling_k=2.0), ["sampling_k 2.0", "0 < k < 1"]),
    (dict(beam=0), ["beam", ">= 1"]),
    (dict(image_size=60, cnn_blocks=7), ["no grid"]),
])
def test_settings_errors_name_the_setting(changes, needles):
    with pytest.raises(InputError) as err:
        caption.CaptionSettings(**changes)
    for needle in needles:
        assert needle in str(err.value)
