"""Captioning: digit-scene captions and their parser, caption folders, the attention decoder, decoding
(beam 1 = greedy), metrics, the CLI and its bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from rnnkit.data.captions import (BOS, EOS, PAD, CaptionBatches, DigitScenes, digit_vocab, encode_batch,
                                  load_caption_folder, load_image, parse_caption, phrasings, tokenize)
from rnnkit.data.moving_digits import digit_pools
from rnnkit.data.text import DataError
from rnnkit.models.caption import CaptionConfig, CaptionModel, CaptionTask, caption_metrics
from rnnkit.models.seq2seq import SamplingSchedule

from helpers import cli_outcome as _cli, fit_losses

TINY = dict(image_size=24, cnn_width=4, cnn_blocks=2, embedding_size=8, hidden_size=16, attention_size=8,
            dropout=0.0, max_len=10)


@pytest.fixture(scope="module")
def scenes():
    return DigitScenes(digit_pools()["train"], 24, seed=0)


def _batch(scenes, vocab, n=4, start=0):
    items = lambda i: (scenes.scene(i).image, scenes.scene(i).captions)  # noqa: E731
    return next(CaptionBatches(items, None, vocab, n, 1, fixed=True).batches())


# ------------------------------------------------------------------ data
def test_every_phrasing_parses_back_to_its_layout():
    for digits, orientation in [((7,), "single"), ((3, 9), "row"), ((3, 9), "column"), ((4, 1, 4), "row"),
                                ((0, 8, 2), "column")]:
        for text in phrasings(digits, orientation):
            assert parse_caption(text) == (digits, orientation), text
    assert parse_caption("a 7 above a") is None and parse_caption("three digits : 1 above 2 left of 3") is None


def test_scenes_are_deterministic_and_captions_match_the_picture(scenes):
    a, b = scenes.scene(11), DigitScenes(digit_pools()["train"], 24, seed=0).scene(11)
    assert np.array_equal(a.image, b.image) and a.captions == b.captions
    counts = {1: 0, 2: 0, 3: 0}
    for i in range(60):
        sc = scenes.scene(i)
        counts[len(sc.digits)] += 1
        ink = sc.image[0] > 0.3
        cols, rows = ink.any(0), ink.any(1)
        c = scenes.cell
        used_cols = {k for k in range(3) if cols[k * c:(k + 1) * c].any()}
        used_rows = {k for k in range(3) if rows[k * c:(k + 1) * c].any()}
        if sc.orientation == "row":
            assert len(used_rows) == 1 and len(used_cols) == len(sc.digits)
        elif sc.orientation == "column":
            assert len(used_cols) == 1 and len(used_rows) == len(sc.digits)
        assert parse_caption(sc.captions[0]) == (sc.digits, sc.orientation)
    assert all(v > 5 for v in counts.values())


def test_vocab_and_encoding():
    vocab = digit_vocab()
    assert vocab.itos[:4] == ["<pad>", "<bos>", "<eos>", "<unk>"]
    tokens, lengths = encode_batch(["a 7 above a 2", "a 3"], vocab, 16)
    assert tokens[0, 0] == BOS and tokens[0, 6] == EOS and tokens[1, 3] == EOS and tokens[1, 4] == PAD
    assert lengths.tolist() == [6, 3]
    assert vocab.decode(tokens[0].tolist()) == "a 7 above a 2"
    assert tokenize("Three digits: 4 left of 9") == ["three", "digits", ":", "4", "left", "of", "9"]


def _write_folder(tmp_path, scenes, n=6):
    images = tmp_path / "Images"
    images.mkdir()
    for i in range(n):
        Image.fromarray((scenes.scene(i).image[0] * 255).astype(np.uint8)).convert("RGB").save(images / f"im{i}.jpg")
    token = tmp_path / "Flickr8k.token.txt"
    token.write_text("".join(f"im{i}.jpg#{k}\t{c}\n" for i in range(n) for k, c in enumerate(scenes.scene(i).captions)))
    csv = tmp_path / "captions.txt"
    csv.write_text("image,caption\n" + "".join(f"im{i}.jpg,\"{scenes.scene(i).captions[0]}, indeed\"\n"
                                               for i in range(n)))
    coco = tmp_path / "captions.json"
    coco.write_text(json.dumps({"images": [{"id": i, "file_name": f"im{i}.jpg"} for i in range(n)],
                                "annotations": [{"image_id": i, "caption": scenes.scene(i).captions[0]}
                                                for i in range(n)]}))
    return images, token, csv, coco


def test_caption_folder_layouts(tmp_path, scenes):
    images, token, csv, coco = _write_folder(tmp_path, scenes)
    f1, f2, f3 = (load_caption_folder(images, p) for p in (token, csv, coco))
    assert [p.name for p in f1.paths] == [f"im{i}.jpg" for i in range(6)]
    assert f1.captions[0] == scenes.scene(0).captions
    assert f2.captions[0] == [scenes.scene(0).captions[0] + ", indeed"]
    assert f3.captions[1] == [scenes.scene(1).captions[0]]
    img = load_image(f1.paths[0], 24, 3)
    assert img.shape == (3, 24, 24) and img.dtype == np.float32 and img.max() <= 1


def test_caption_folder_bad_input(tmp_path, scenes):
    images, token, _, _ = _write_folder(tmp_path, scenes, n=3)
    (images / "im1.jpg").unlink()
    with pytest.raises(DataError, match=r"Flickr8k.token.txt.*1 image\(s\) missing.*'im1.jpg'"):
        load_caption_folder(images, token)
    (images / "im1.jpg").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"im1.jpg.*cannot be decoded"):
        load_image(images / "im1.jpg", 24, 3)
    bad = tmp_path / "bad.txt"
    bad.write_text("im0.jpg a caption without a tab\n")
    with pytest.raises(DataError, match=r"bad.txt.*line 1"):
        load_caption_folder(images, bad)
    with pytest.raises(DataError, match="captions file .*nope.txt.* does not exist"):
        load_caption_folder(images, tmp_path / "nope.txt")
    (tmp_path / "bad.json").write_text("{\"images\": []}")
    with pytest.raises(DataError, match="COCO"):
        load_caption_folder(images, tmp_path / "bad.json")


# ------------------------------------------------------------------ model
@pytest.mark.parametrize("cell", ["lstm", "gru", "sru"])
def test_beam_one_equals_greedy(scenes, cell):
    torch.manual_seed(0)
    vocab = digit_vocab()
    model = CaptionModel(CaptionConfig(vocab_size=len(vocab), cell=cell, **TINY)).eval()
    images = _batch(scenes, vocab, n=5)["images"]
    greedy = model.generate(images, beam_size=1)
    beam = model.generate(images, beam_size=1 + 0, max_len=10)
    from rnnkit.models.decoding import beam_search
    with torch.no_grad():
        state = model.encode(images)
        via_beam = beam_search(model.step, state, 5, bos=BOS, eos=EOS, max_len=10, beam_size=1, return_attention=True)
    for g, b, vb in zip(greedy, beam, via_beam):
        assert g.tokens == b.tokens == vb[0].tokens
        assert abs(g.score - vb[0].score) < 1e-5
        torch.testing.assert_close(g.attention, vb[0].attention)
    wide = model.generate(images, beam_size=3)
    assert all(w.score >= g.score - 1e-6 for w, g in zip(wide, greedy) if w.finished and g.finished)


def test_attention_rows_sum_to_one_and_none_is_uniform(scenes):
    vocab = digit_vocab()
    batch = _batch(scenes, vocab)
    for attention in ("bahdanau", "none"):
        model = CaptionModel(CaptionConfig(vocab_size=len(vocab), attention=attention, **TINY))
        _, alpha = model(batch["images"], batch["tokens"])
        L = (24 // 4) ** 2
        assert alpha.shape == (4, batch["tokens"].shape[1] - 1, L)
        torch.testing.assert_close(alpha.sum(-1), torch.ones(alpha.shape[:2]))
        if attention == "none":
            torch.testing.assert_close(alpha, torch.full_like(alpha, 1 / L))


def test_doubly_stochastic_penalty_only_in_training(scenes):
    torch.manual_seed(0)
    vocab = digit_vocab()
    batch = _batch(scenes, vocab)
    model = CaptionModel(CaptionConfig(vocab_size=len(vocab), **TINY))
    plain, reg = CaptionTask(alpha_c=0.0), CaptionTask(alpha_c=2.0)
    a, b = plain.loss(model, batch, None), reg.loss(model, batch, None)
    _, alpha = model(batch["images"], batch["tokens"])
    real = (batch["tokens"][:, 1:] != PAD).unsqueeze(-1)
    penalty = ((1 - (alpha * real).sum(1)) ** 2).sum()
    torch.testing.assert_close(b.loss_sum - a.loss_sum, 2.0 * penalty, atol=1e-4, rtol=1e-5)
    model.eval()
    torch.testing.assert_close(plain.loss(model, batch, None).loss_sum, reg.loss(model, batch, None).loss_sum)
    assert int(model.train_batches) == 2  # counted in training only


def test_scheduled_sampling_feeds_model_words(scenes):
    vocab = digit_vocab()
    batch = _batch(scenes, vocab)
    model = CaptionModel(CaptionConfig(vocab_size=len(vocab), **TINY))
    torch.manual_seed(1)
    forced, _ = model(batch["images"], batch["tokens"], teacher_forcing=1.0)
    torch.manual_seed(1)
    sampled, _ = model(batch["images"], batch["tokens"], teacher_forcing=0.0)
    torch.testing.assert_close(forced[:, 0], sampled[:, 0])  # first step: <bos> either way
    assert not torch.allclose(forced[:, 2:], sampled[:, 2:])
    task = CaptionTask(schedule=SamplingSchedule("linear", 1.0, 0.5))
    assert task.schedule(0) == 1.0 and task.schedule(2) == 0.0


def test_a_few_steps_lower_the_loss(scenes):
    torch.manual_seed(0)
    vocab = digit_vocab()
    batch = _batch(scenes, vocab, n=8)
    model = CaptionModel(CaptionConfig(vocab_size=len(vocab), **TINY))
    losses = fit_losses(model, CaptionTask(), batch, steps=20)
    assert losses[-1] < 0.6 * losses[0]


def test_metrics():
    refs = [["a 7 above a 2", "a 2 below a 7"], ["a 3", "the digit 3"]]
    perfect = caption_metrics(["a 7 above a 2", "a 3"], refs, [((7, 2), "column"), ((3,), "single")])
    assert perfect["bleu1"] == pytest.approx(100) and perfect["layout_exact"] == 100
    m = caption_metrics(["a 2 above a 7", "a 5"], refs, [((7, 2), "column"), ((3,), "single")])
    assert m["digits_exact"] == 50 and m["layout_exact"] == 0 and m["bleu4"] < 100


def test_bad_images_name_the_shape():
    model = CaptionModel(CaptionConfig(vocab_size=10, **TINY))
    with pytest.raises(ValueError, match=r"images of shape \(batch, 1, height, width\); got \(2, 3, 24, 24\)"):
        model.encode(torch.zeros(2, 3, 24, 24))
    with pytest.raises(ValueError, match="attention must be one of"):
        CaptionConfig(vocab_size=10, attention="dot")


def test_backbone_hook():
    backbone = torch.nn.Sequential(torch.nn.Conv2d(1, 6, 3, stride=4, padding=1), torch.nn.ReLU())
    model = CaptionModel(CaptionConfig(vocab_size=12, feature_size=6, **TINY), backbone=backbone)
    hyps = model.generate(torch.rand(2, 1, 24, 24), beam_size=2)
    assert len(hyps) == 2 and hyps[0].attention.shape[-1] == 36
    with pytest.raises(ValueError, match="feature_size"):
        CaptionModel(CaptionConfig(vocab_size=12, **TINY), backbone=backbone)


# ------------------------------------------------------------------ CLI
CLI_TINY = ["--image-size", "24", "--cnn-width", "4", "--cnn-blocks", "2", "--hidden-size", "16",
            "--embedding-size", "8", "--attention-size", "8", "--batch-size", "4", "--max-steps", "2",
            "--val-images", "4", "--test-images", "4", "--no-tensorboard", "--quiet", "--max-len", "6"]


def test_cli_digit_scenes_and_caption_command(tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = _cli(["train", "caption", "--out", out, *CLI_TINY, "--baseline-minutes", "0.01"], capsys)
    assert code == 0, err
    metrics = json.loads((out / "results.json").read_text())
    assert any("no attention" in k for k in metrics["rows"]) and (out / "caption_examples.png").is_file()
    scene = DigitScenes(digit_pools()["test"], 24).scene(0)
    Image.fromarray((scene.image[0] * 255).astype(np.uint8)).save(tmp_path / "x.png")
    code, outp, err = _cli(["caption", "--checkpoint", out, tmp_path / "x.png", "--beam", "2",
                            "--out", tmp_path / "att", "--device", "cpu"], capsys)
    assert code == 0, err
    assert "x.png\t" in outp and (tmp_path / "att" / "attention.png").is_file()
    (tmp_path / "broken.png").write_bytes(b"\x89PNG broken")
    code, _, err = _cli(["caption", "--checkpoint", out, tmp_path / "broken.png"], capsys)
    assert code == 2 and "broken.png" in err and "cannot be decoded" in err and len(err.strip().splitlines()) == 1


def test_cli_caption_folder_and_missing_images(tmp_path, capsys):
    scenes = DigitScenes(digit_pools()["train"], 24, seed=0)
    images, token, _, _ = _write_folder(tmp_path, scenes, n=10)
    out = tmp_path / "run"
    code, _, err = _cli(["train", "caption", "--out", out, "--images", images, "--captions", token, *CLI_TINY,
                         "--baseline-minutes", "0"], capsys)
    assert code == 0, err
    assert json.loads((out / "config.json").read_text())["data"]["captions"] == str(token)
    (images / "im3.jpg").unlink()
    code, _, err = _cli(["train", "caption", "--out", tmp_path / "r2", "--images", images, "--captions", token,
                         *CLI_TINY], capsys)
    assert code == 2 and "Flickr8k.token.txt" in err and "im3.jpg" in err and not (tmp_path / "r2").exists()
    code, _, err = _cli(["train", "caption", "--out", tmp_path / "r3", "--images", images, *CLI_TINY], capsys)
    assert code == 2 and "--captions" in err
