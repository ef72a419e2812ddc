"""`rnnkit train video`, `rnnkit predict-video`, `rnnkit train caption`, `rnnkit caption`.

Video: Moving-MNIST-style sequences made on the fly from the embedded MNIST test
set (data/mnist, CC BY-SA 3.0), an encoder–forecaster of ConvLSTMs. The run
directory gets, besides the checkpoints, video_metrics.md/json (model vs
copy-last-frame and mean-frame baselines on the test split), video_per_frame.png,
video_strip.png (input | truth | prediction) and video.gif.

Caption: scenes of 1–3 MNIST digits with captions made from their layout (or a
Flickr8k/COCO-style folder), a small CNN and an attention decoder. The run
directory gets caption_metrics.md/json (BLEU-1..4, chrF, exact digit and
relation match, next to the no-attention baseline when trained) and
caption_examples.png (images, captions, attention maps).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional

import click
import numpy as np
import torch

from ..data.moving_digits import MNIST_DIR, MovingDigits, VideoBatches, digit_pools
from ..models.video import (FEEDS, VIDEO_CELLS, EncoderForecaster, VideoConfig, VideoTask, evaluate_video,
                            metrics_table, plot_per_frame, save_gif, save_strip)
from ..training.checkpoint import CheckpointError, load_checkpoint, sub_dict
from .apps import app_training_specs, load_weights, repo_path, run_app
from .options import NONNEG_INT, POS_INT, PROB, recipe_options

# ------------------------------------------------------------------ video
VIDEO_DEFAULTS = dict(batch_size=8, optimizer="adam", lr=2e-3, clip_norm=1.0, max_minutes=10.0, eval_every=200,
                      checkpoint_every=200, threads=1)

VIDEO_SPECS = [
    ("out", str, "runs/video", "Run directory (checkpoints, video_metrics.md, video_strip.png, video.gif)."),
    ("config", str, None, "TOML file with settings (command-line options win)."),
    ("resume", bool, False, "Continue the run in --out from its latest complete checkpoint."),
    ("quiet", bool, False, "No progress bar or summaries."),
    ("data", str, None, f"Directory with the MNIST IDX files (default: {MNIST_DIR})."),
    ("frame_size", POS_INT, 64, "Frames are S x S pixels (digits scale with S: 28 px at 64)."),
    ("num_digits", POS_INT, 2, "Digits bouncing in each sequence."),
    ("input_frames", POS_INT, 10, "Frames the encoder reads (k)."),
    ("output_frames", POS_INT, 10, "Frames the forecaster predicts (n)."),
    ("patch_size", POS_INT, 4, "Space-to-depth patches (Shi et al.: 4, so 64x64x1 -> 16x16x16)."),
    ("cell", click.Choice(VIDEO_CELLS), "convlstm", "Recurrent cell."),
    ("hidden_channels", POS_INT, 16, "Hidden channels per layer."),
    ("num_layers", POS_INT, 2, "Stacked layers in the encoder and in the forecaster."),
    ("kernel_size", POS_INT, 3, "Odd kernel size of both convolutions."),
    ("peephole", bool, False, "Hadamard peepholes (convlstm)."),
    ("forecaster_input", click.Choice(FEEDS), "none", "none: the paper's input-less forecaster; frames: feed "
                                                      "the previous frame."),
    ("teacher_forcing", click.FloatRange(0.0, 1.0), 0.0, "With forecaster_input=frames: probability of feeding "
                                                          "the true previous frame in training."),
    ("batches_per_epoch", POS_INT, 100, "Batches per epoch (new sequences every epoch)."),
    ("val_sequences", POS_INT, 32, "Validation sequences (valid split)."),
    ("test_sequences", POS_INT, 64, "Test sequences for the final metrics (test split)."),
] + app_training_specs(VIDEO_DEFAULTS)


def _video_config(s: Dict[str, Any]) -> VideoConfig:
    return VideoConfig(frame_size=s["frame_size"], patch_size=s["patch_size"], cell=s["cell"],
                       hidden_channels=s["hidden_channels"], num_layers=s["num_layers"], kernel_size=s["kernel_size"],
                       input_frames=s["input_frames"], output_frames=s["output_frames"],
                       forecaster_input=s["forecaster_input"], peephole=s["peephole"])


def _mnist_dir(s: Dict[str, Any]) -> str:
    return s.get("data") or repo_path(MNIST_DIR)


def _video_source(s: Dict[str, Any], split: str, pools=None) -> MovingDigits:
    pools = pools or digit_pools(_mnist_dir(s))
    return MovingDigits(pools[split], s["frame_size"], num_digits=s["num_digits"],
                        seq_len=s["input_frames"] + s["output_frames"], seed=s["seed"])


def _build_video(s: Dict[str, Any]):
    cfg = _video_config(s)
    if s["teacher_forcing"] and cfg.forecaster_input != "frames":
        raise ValueError("--teacher-forcing needs --forecaster-input frames (the input-less forecaster sees no "
                         "frames to force)")
    pools = digit_pools(_mnist_dir(s))
    train = VideoBatches(_video_source(s, "train", pools), s["batch_size"], s["batches_per_epoch"], fixed=False)
    vb = min(s["batch_size"], s["val_sequences"])
    val = VideoBatches(_video_source(s, "valid", pools), vb, max(1, s["val_sequences"] // vb), fixed=True)
    model = EncoderForecaster(cfg)
    run_info = {"model": cfg.to_dict(), "data": {"mnist": "t10k", "num_digits": s["num_digits"],
                                                 "seed": s["seed"]}}
    report = [f"video: {s['frame_size']}x{s['frame_size']} frames, {s['num_digits']} digits, "
              f"{cfg.input_frames} in -> {cfg.output_frames} out; digit pools train/valid/test 8000/1000/1000"]
    return model, VideoTask(cfg, s["teacher_forcing"]), train, val, run_info, report


def _finish_video(model: EncoderForecaster, s: Dict[str, Any], out: Path, trainer) -> None:
    source = _video_source(s, "test")
    bs = min(16, s["test_sequences"])
    test = VideoBatches(source, bs, max(1, s["test_sequences"] // bs), fixed=True)
    results = evaluate_video(model, test.batches())
    table = metrics_table(results)
    n = test.batch_size * len(test)
    header = (f"Test split: {n} sequences ({s['frame_size']}x{s['frame_size']}, {s['num_digits']} digits, "
              f"{s['input_frames']} in -> {s['output_frames']} out), after {trainer.step} steps. MSE and BCE are "
              f"means per pixel (intensities in [0, 1]), averaged over the future frames; SSIM from "
              f"scikit-image (data_range 1).\n\n")
    (out / "video_metrics.md").write_text(header + table + "\n")
    (out / "video_metrics.json").write_text(json.dumps({"sequences": n, "step": trainer.step, **results}, indent=1))
    plot_per_frame(out / "video_per_frame.png", results)
    write_video_examples(model, source, out / "video_strip.png", out / "video.gif", index=0)
    if not s["quiet"]:
        click.echo(table)
        click.echo(f"rnnkit: wrote {out / 'video_metrics.md'}, video_strip.png, video.gif, video_per_frame.png")


def write_video_examples(model: EncoderForecaster, source: MovingDigits, strip: Optional[Path],
                         gif: Optional[Path], index: int = 0, frames: Optional[torch.Tensor] = None) -> None:
    c = model.config
    seq = frames if frames is not None else source.batch(index, 1)  # (T, 1, C, S, S)
    device = next(model.parameters()).device
    inputs = seq[:c.input_frames]
    truth = seq[c.input_frames:c.input_frames + c.output_frames]
    pred = model.predict(inputs.to(device)).cpu()
    if strip is not None:
        save_strip(strip, inputs[:, 0], truth[:, 0], pred[:, 0], title=f"input | truth | prediction ({c.cell})")
    if gif is not None:
        save_gif(gif, inputs[:, 0], truth[:, 0] if len(truth) else pred[:, 0], pred[:, 0])


@click.command("video")
@recipe_options(VIDEO_SPECS)
@click.pass_context
def train_video(ctx: click.Context, **values: Any) -> None:
    """Video prediction (Shi et al. 2015) on Moving-MNIST-style sequences made from data/mnist.

    Validation: BCE per pixel (val_loss). At the end: per-frame MSE, BCE, SSIM on
    the test split next to copy-last-frame and mean-frame baselines.
    """
    run_app(ctx, "video", values, _build_video, _finish_video)


def load_video_model(path: str, device: torch.device):
    """(model in eval mode, run info) of a video run directory or checkpoint; best.safetensors wins."""
    record, meta, tensors = load_checkpoint(path)
    run = meta.get("run") or {}
    if run.get("recipe") != "video":
        raise CheckpointError(f"checkpoint {str(record)!r} is not a video model (recipe {run.get('recipe')!r})")
    try:
        model = EncoderForecaster(VideoConfig(**run["model"]))
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint {str(record)!r} has a malformed model description ({err})") from None
    best = Path(path) / "best.safetensors"
    weights = load_weights(best) if best.is_file() else sub_dict(tensors, "model")
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint {str(record)!r} does not fit its own model description: "
                              f"{' '.join(str(err).split()[:30])}") from None
    return model.to(device).eval(), run


def load_frames_file(path: str, config: VideoConfig) -> torch.Tensor:
    """A .npy of frames (T, S, S) or (T, 1, S, S), uint8 0..255 or float in [0, 1] -> (T, 1, 1, S, S)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"frames file {path!r} does not exist")
    try:
        a = np.load(p, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise ValueError(f"frames file {path!r} is not a .npy array ({err})") from None
    S = config.frame_size
    if a.ndim == 4 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 3 or a.shape[1:] != (S, S) or a.shape[0] < config.input_frames:
        raise ValueError(f"frames file {path!r} must hold (time >= {config.input_frames}, {S}, {S}) frames for "
                         f"this model; got shape {a.shape}")
    x = torch.from_numpy(a.astype(np.float32) / 255.0 if a.dtype == np.uint8 else a.astype(np.float32))
    if not torch.isfinite(x).all() or float(x.min()) < 0 or float(x.max()) > 1:
        raise ValueError(f"frames file {path!r}: float frames must lie in [0, 1] (or be uint8)")
    return x[:, None, None]


@click.command("predict-video")
@click.option("--checkpoint", required=True, help="Video run directory (uses best.safetensors) or checkpoint.")
@click.option("--input", "input_", default=None, help="Frames .npy (T, S, S), uint8 or [0, 1] floats; the first "
                                                       "k are read. Default: a generated test-split sequence.")
@click.option("--index", type=NONNEG_INT, default=0, show_default=True, help="Test-split sequence (without --input).")
@click.option("--strip", default="video_strip.png", show_default=True, help="PNG: input | truth | prediction.")
@click.option("--gif", default="video.gif", show_default=True, help="Animated GIF (truth | prediction).")
@click.option("--npy", default=None, help="Also save the predicted frames (n, S, S) float32 here.")
def predict_video(checkpoint: str, input_: Optional[str], index: int, strip: str, gif: str,
                  npy: Optional[str]) -> None:
    """Predict the next frames of a sequence with a trained video model."""
    model, run = load_video_model(checkpoint, torch.device("cpu"))
    c = model.config
    if input_ is not None:
        frames = load_frames_file(input_, c)
        source = None
    else:
        data = run.get("data") or {}
        s = {"frame_size": c.frame_size, "num_digits": data.get("num_digits", 2), "input_frames": c.input_frames,
             "output_frames": c.output_frames, "seed": data.get("seed", 0), "data": None}
        source = _video_source(s, "test")
        frames = source.batch(index, 1)
    write_video_examples(model, source, Path(strip), Path(gif), frames=frames)
    if npy:
        pred = model.predict(frames[:c.input_frames])
        np.save(npy, pred[:, 0, 0].numpy())
    click.echo(f"rnnkit: wrote {strip} and {gif}" + (f" and {npy}" if npy else ""))


def register(cli: click.Group, train: click.Group) -> None:
    """Add `rnnkit train video`, `rnnkit predict-video` (and the caption commands when present)."""
    train.add_command(train_video)
    cli.add_command(predict_video)
