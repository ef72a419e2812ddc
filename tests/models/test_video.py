"""Video prediction: the encoder-forecaster, its task and metrics, the PNG/GIF outputs, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rnnkit.data.moving_digits import MovingDigits, digit_pools
from rnnkit.models.video import (AdvectionHead, EncoderForecaster, VideoConfig, VideoTask, copy_last_frame,
                                 frame_metrics, mean_frame, save_gif, save_strip)

from helpers import cli_outcome as _cli, fit_losses

TINY = dict(frame_size=16, patch_size=2, hidden_channels=4, num_layers=1, kernel_size=3, input_frames=3,
            output_frames=2)


def _batch(cfg: VideoConfig, B: int = 2, start: int = 0) -> torch.Tensor:
    gen = MovingDigits(digit_pools()["train"], cfg.frame_size, seq_len=cfg.input_frames + cfg.output_frames)
    return gen.batch(start, B)


ADVECT = dict(head="advect", advect_kernels=2, advect_size=5)


@pytest.mark.parametrize("options", [dict(), dict(cell="convgru", num_layers=2), dict(forecaster_input="frames"),
                                     dict(peephole=True), ADVECT, dict(ADVECT, forecaster_input="frames")])
def test_shapes_and_probabilities(options):
    cfg = VideoConfig(**{**TINY, **options})
    model = EncoderForecaster(cfg)
    x = _batch(cfg)
    logits = model(x[:3])
    assert logits.shape == (2, 2, 1, 16, 16)
    p = model.predict(x[:3])
    assert float(p.min()) >= 0 and float(p.max()) <= 1
    assert model.encoder.last_backend == "reference"  # auto (docs/DESIGN.md: no conv backend)


@pytest.mark.parametrize("options", [dict(forecaster_input="frames"), ADVECT, dict(ADVECT, forecaster_input="frames")])
def test_full_teacher_forcing_equals_feeding_the_truth_step_by_step(options):
    torch.manual_seed(0)
    cfg = VideoConfig(**{**TINY, **options, "output_frames": 3})
    model = EncoderForecaster(cfg)
    x = _batch(cfg, start=5)
    one_pass = model(x[:3], x[3:], teacher_forcing=1.0)
    stepped = model(x[:3], x[3:], teacher_forcing=1.0 - 1e-12)  # the per-step loop, truth (almost surely) fed
    torch.testing.assert_close(one_pass, stepped, atol=1e-5, rtol=1e-5)
    free = model(x[:3])  # own predictions fed back
    assert not torch.allclose(free[1:], one_pass[1:])
    torch.testing.assert_close(free[0], one_pass[0])  # the first step sees the last input frame either way


@pytest.mark.parametrize("options,steps,bound", [(dict(), 15, 0.7), (dict(ADVECT, forecaster_input="frames"), 30, 0.85)])
def test_a_few_steps_lower_the_loss(options, steps, bound):
    """The advection head starts as copy-last-frame (a lower first loss), so it gets more steps to fall."""
    torch.manual_seed(0)
    cfg = VideoConfig(**TINY, **options)
    model, task = EncoderForecaster(cfg), VideoTask(cfg)
    x = _batch(cfg, B=4)
    losses = fit_losses(model, task, x, steps=steps)
    assert losses[-1] < bound * losses[0]


def _one_hot_head(dy: int, dx: int, K: int = 5, M: int = 2, Hc: int = 3, C: int = 2) -> AdvectionHead:
    """A head whose first kernel is the single tap (dy, dx) and whose masks all pick that kernel."""
    head = AdvectionHead(Hc, C, patch_size=2, kernels=M, size=K).double()
    with torch.no_grad():
        head.kernel_logits.weight.zero_()
        head.kernel_logits.bias.fill_(-1e4).view(M, K, K)[0, dy, dx] = 0.0
        head.mask_logits.weight.zero_()
        head.mask_logits.bias.zero_().view(M + 1, 4)[0] = 1e4
    return head


def test_advection_moves_the_previous_frame():
    """Tap (dy, dx) of a K×K kernel reads prev at (y + dy − K//2, x + dx − K//2); outside the frame is black."""
    prev = torch.rand(2, 2, 8, 8, dtype=torch.float64)
    h = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    torch.testing.assert_close(_one_hot_head(2, 2)(h, prev), prev)  # the centre tap copies
    down_right = _one_hot_head(1, 0)(h, prev)  # reads one row up, two columns left: content moves down/right
    expected = torch.zeros_like(prev)
    expected[..., 1:, 2:] = prev[..., :-1, :-2]
    torch.testing.assert_close(down_right, expected)
    head = AdvectionHead(3, 2, patch_size=2, kernels=2, size=5).double()  # any head: a convex mixture
    out = head(h, prev).detach()
    assert float(out.min()) >= 0 and float(out.max()) <= 1 + 1e-12


def test_advection_gradcheck():
    head = AdvectionHead(3, 1, patch_size=2, kernels=2, size=3).double()
    h = torch.randn(1, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    prev = torch.rand(1, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(head, (h, prev))


def test_metrics_and_baselines():
    truth = torch.rand(4, 2, 1, 16, 16)
    m = frame_metrics(truth, truth)
    assert np.allclose(m["mse"], 0) and np.allclose(m["ssim"], 1)
    inputs = torch.rand(3, 2, 1, 16, 16)
    assert torch.equal(copy_last_frame(inputs, 4)[2], inputs[-1])
    torch.testing.assert_close(mean_frame(inputs, 4)[0], inputs.mean(0))
    worse = frame_metrics(truth.flip(-1), truth)
    assert (worse["mse"] > 0).all() and (worse["ssim"] < 1).all() and (worse["bce"] > m["bce"]).all()


def test_bad_frames_name_the_shape():
    model = EncoderForecaster(VideoConfig(**TINY))
    with pytest.raises(ValueError, match=r"frames of shape \(time, batch, 1, 16, 16\); got \(3, 2, 16, 16\)"):
        model(torch.rand(3, 2, 16, 16))
    with pytest.raises(ValueError, match=r"got \(3, 2, 3, 16, 16\)"):
        model(torch.rand(3, 2, 3, 16, 16))
    with pytest.raises(ValueError, match=r"got \(3, 2, 1, 32, 32\)"):
        model(torch.rand(3, 2, 1, 32, 32))
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        VideoConfig(**{**TINY, "kernel_size": 4})
    with pytest.raises(ValueError, match="divisible by patch_size"):
        VideoConfig(**{**TINY, "patch_size": 3})
    with pytest.raises(ValueError, match="advect_size must be odd; got 4"):
        VideoConfig(**{**TINY, **ADVECT, "advect_size": 4})
    with pytest.raises(ValueError, match="head must be one of"):
        VideoConfig(**{**TINY, "head": "flow"})


def test_strip_and_gif(tmp_path):
    from PIL import Image
    x = torch.rand(5, 1, 16, 16)
    save_strip(tmp_path / "s.png", x[:3], x[3:], x[3:])
    save_gif(tmp_path / "a.gif", x[:3], x[3:], x[3:])
    assert Image.open(tmp_path / "s.png").size[0] > 100
    gif = Image.open(tmp_path / "a.gif")
    assert gif.n_frames == 5


CLI_TINY = ["--frame-size", "16", "--patch-size", "2", "--hidden-channels", "4", "--num-layers", "1",
            "--input-frames", "3", "--output-frames", "2", "--max-steps", "2", "--batch-size", "2",
            "--val-sequences", "2", "--test-sequences", "2", "--no-tensorboard", "--quiet"]


def test_cli_train_and_predict(tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = _cli(["train", "video", "--out", out, *CLI_TINY], capsys)
    assert code == 0, err
    for name in ("results.md", "results.json", "video_strip.png", "video.gif", "video_per_frame.png",
                 "best.safetensors"):
        assert (out / name).is_file(), name
    results = json.loads((out / "results.json").read_text())
    assert set(results) >= {"model", "copy last frame", "mean frame"}
    kept = json.loads((out / "best.json").read_text())  # --select-by ssim (default): kept by validation SSIM
    assert 0.0 <= kept["1 - val SSIM"] <= 2.0 and kept["value"] == kept["1 - val SSIM"] and kept["step"] >= 1
    frames = (np.random.default_rng(0).random((3, 16, 16)) * 255).astype(np.uint8)
    np.save(tmp_path / "in.npy", frames)
    code, outp, err = _cli(["predict-video", "--checkpoint", out, "--input", tmp_path / "in.npy", "--out",
                            tmp_path / "p", "--device", "cpu"], capsys)
    assert code == 0, err
    assert np.load(tmp_path / "p" / "prediction.npy").shape == (2, 16, 16)
    assert (tmp_path / "p" / "video_strip.png").is_file() and (tmp_path / "p" / "video.gif").is_file()
    code, _, err = _cli(["predict-video", "--checkpoint", out, "--out", tmp_path / "q", "--index", "3"], capsys)
    assert code == 0, err
    assert (tmp_path / "q" / "video_strip.png").is_file()
    # bad input: frames of the wrong size, a file that is no array, a checkpoint of another recipe
    np.save(tmp_path / "bad.npy", np.zeros((3, 32, 32), dtype=np.uint8))
    code, _, err = _cli(["predict-video", "--checkpoint", out, "--input", tmp_path / "bad.npy", "--out",
                         tmp_path / "b"], capsys)
    assert code == 2 and "bad.npy" in err and "(3, 32, 32)" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "junk.npy").write_text("hello")
    code, _, err = _cli(["predict-video", "--checkpoint", out, "--input", tmp_path / "junk.npy", "--out",
                         tmp_path / "b"], capsys)
    assert code == 2 and "junk.npy" in err and "not a .npy" in err
    code, _, err = _cli(["predict-video", "--checkpoint", tmp_path / "missing"], capsys)
    assert code == 2 and "Traceback" not in err


def test_cli_bad_settings_are_one_line_errors(tmp_path, capsys):
    code, _, err = _cli(["train", "video", "--out", tmp_path / "r", *CLI_TINY, "--kernel-size", "4"], capsys)
    assert code == 2 and "kernel_size must be odd" in err and not (tmp_path / "r").exists()
    code, _, err = _cli(["train", "video", "--out", tmp_path / "r", *CLI_TINY, "--head", "pixels",
                         "--forecaster-input", "none", "--teacher-forcing", "0.5"], capsys)
    assert code == 2 and "--forecaster-input frames or --head advect" in err
    code, _, err = _cli(["train", "video", "--out", tmp_path / "r", *CLI_TINY, "--data", tmp_path], capsys)
    assert code == 2 and "t10k-images" in err


def test_recipe_configs_name_only_known_settings():
    """The packaged recipes video-*.toml and caption-*.toml: every key is an option of its command."""
    import tomllib

    from rnnkit.cli.train import train_command
    from rnnkit.recipes import RECIPES as root
    files = sorted(root.glob("video-*.toml")) + sorted(root.glob("caption-*.toml"))
    assert len(files) >= 3
    for f in files:
        command = train_command("video" if f.name.startswith("video") else "caption")
        names = {p.name for p in command.params}
        unknown = set(tomllib.loads(f.read_text())) - names
        assert not unknown, f"{f.name}: {unknown}"
