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

from .._optional import require_extra
from ..data.moving_digits import MNIST_DIR, MovingDigits, VideoBatches, digit_pools
from ..models.video import (FEEDS, HEADS, VIDEO_CELLS, EncoderForecaster, VideoConfig, VideoTask, evaluate_video,
                            metrics_table, plot_per_frame, save_gif, save_strip)
from ..recipes import repository_data
from .apps import app_training_specs, load_app_model, run_app
from ._old_options import INPUT_PATH, NONNEG_INT, POS_INT, PROB, recipe_options, run_specs

from ..models.caption import CAPTION_ATTENTIONS  # noqa: E402
from ..cells import CELLS as CAPTION_CELLS  # noqa: E402
from ..errors import InputError

# ------------------------------------------------------------------ video
VIDEO_DEFAULTS = dict(batch_size=8, optimizer="adam", lr=1e-3, clip_norm=1.0, max_minutes=10.0, eval_every=200,
                      checkpoint_every=200, threads=1)

VIDEO_SPECS = [
    *run_specs("runs/video", "Run directory (checkpoints, video_metrics.md, video_strip.png, video.gif)."),
    ("data", INPUT_PATH, None, f"Directory with the MNIST IDX files (default: {MNIST_DIR})."),
    ("frame_size", POS_INT, 64, "Frames are S x S pixels (digits scale with S: 28 px at 64)."),
    ("num_digits", POS_INT, 2, "Digits bouncing in each sequence."),
    ("input_frames", POS_INT, 10, "Frames the encoder reads (k)."),
    ("output_frames", POS_INT, 10, "Frames the forecaster predicts (n)."),
    ("patch_size", POS_INT, 4, "Space-to-depth patches (Shi et al.: 4, so 64x64x1 -> 16x16x16)."),
    ("cell", click.Choice(VIDEO_CELLS), "convlstm", "Recurrent cell."),
    ("hidden_channels", POS_INT, 32, "Hidden channels per layer."),
    ("num_layers", POS_INT, 2, "Stacked layers in the encoder and in the forecaster."),
    ("kernel_size", POS_INT, 3, "Odd kernel size of both convolutions."),
    ("peephole", bool, False, "Hadamard peepholes (convlstm)."),
    ("forecaster_input", click.Choice(FEEDS), "frames", "none: the paper's input-less forecaster; frames: feed "
                                                      "the previous frame."),
    ("head", click.Choice(HEADS), "advect", "pixels: draw each frame from the hidden maps (Shi et al.); advect: "
                                            "move the previous frame by predicted kernels (Finn et al.'s CDNA)."),
    ("advect_kernels", POS_INT, 4, "head=advect: motion kernels per sequence."),
    ("advect_size", POS_INT, 9, "head=advect: odd size of the motion kernels (the largest move is half of it)."),
    ("select_by", click.Choice(["ssim", "bce"]), "ssim", "Which validation score picks the weights kept "
                                                          "(best.safetensors): SSIM, or the loss (BCE)."),
    ("teacher_forcing", click.FloatRange(0.0, 1.0), 1.0, "With forecaster_input=frames or head=advect: "
                                                          "probability of using the true previous frame in "
                                                          "training."),
    ("batches_per_epoch", POS_INT, 100, "Batches per epoch (new sequences every epoch)."),
    ("val_sequences", POS_INT, 32, "Validation sequences (valid split)."),
    ("test_sequences", POS_INT, 64, "Test sequences for the final metrics (test split)."),
] + app_training_specs(VIDEO_DEFAULTS)


def _video_config(s: Dict[str, Any]) -> VideoConfig:
    return VideoConfig(frame_size=s["frame_size"], patch_size=s["patch_size"], cell=s["cell"],
                       hidden_channels=s["hidden_channels"], num_layers=s["num_layers"], kernel_size=s["kernel_size"],
                       input_frames=s["input_frames"], output_frames=s["output_frames"],
                       forecaster_input=s["forecaster_input"], peephole=s["peephole"], head=s["head"],
                       advect_kernels=s["advect_kernels"], advect_size=s["advect_size"])


def _mnist_dir(s: Dict[str, Any]) -> str:
    return s.get("data") or repository_data(MNIST_DIR)


def _video_source(s: Dict[str, Any], split: str, pools=None) -> MovingDigits:
    pools = pools or digit_pools(_mnist_dir(s))
    return MovingDigits(pools[split], s["frame_size"], num_digits=s["num_digits"],
                        seq_len=s["input_frames"] + s["output_frames"], seed=s["seed"])


def _video_val_batches(s: Dict[str, Any], pools=None) -> VideoBatches:
    """The fixed validation sequences (valid split): the trainer's val_loss and --select-by ssim read the same."""
    vb = min(s["batch_size"], s["val_sequences"])
    return VideoBatches(_video_source(s, "valid", pools), vb, max(1, s["val_sequences"] // vb), fixed=True)


def _build_video(s: Dict[str, Any]):
    cfg = _video_config(s)
    if s["teacher_forcing"] and cfg.forecaster_input != "frames" and cfg.head != "advect":
        raise InputError("--teacher-forcing needs --forecaster-input frames or --head advect (the input-less "
                         "pixel forecaster sees no frames to force)")
    pools = digit_pools(_mnist_dir(s))
    train = VideoBatches(_video_source(s, "train", pools), s["batch_size"], s["batches_per_epoch"], fixed=False)
    val = _video_val_batches(s, pools)
    model = EncoderForecaster(cfg)
    run_info = {"model": cfg.to_dict(), "data": {"mnist": "t10k", "num_digits": s["num_digits"],
                                                 "seed": s["seed"]}}
    report = [f"video: {s['frame_size']}x{s['frame_size']} frames, {s['num_digits']} digits, "
              f"{cfg.input_frames} in -> {cfg.output_frames} out; digit pools train/valid/test 8000/1000/1000"]
    return model, VideoTask(cfg, s["teacher_forcing"]), train, val, run_info, report


def _video_selection(s: Dict[str, Any]):
    """--select-by ssim: keep the weights with the highest mean SSIM on the validation sequences (as 1 − SSIM)."""
    if s["select_by"] != "ssim":
        return "val_loss", None
    val = _video_val_batches(s)

    def one_minus_ssim(model: torch.nn.Module) -> float:
        ssim = evaluate_video(model, val.batches(), baselines=False)["model"]["ssim"]
        model.train()
        return 1.0 - float(np.mean(ssim))

    return "1 - val SSIM", one_minus_ssim


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
    require_extra("vision", "rnnkit train video")
    run_app(ctx, "video", values, _build_video, _finish_video, select=_video_selection)


def load_video_model(path: str, device: torch.device):
    """(model in eval mode, run info) of a video run directory or checkpoint; best.safetensors wins."""
    return load_app_model(path, "video", "a video model", lambda m: EncoderForecaster(VideoConfig(**m)), device)


def load_frames_file(path: str, config: VideoConfig) -> torch.Tensor:
    """A .npy of frames (T, S, S) or (T, 1, S, S), uint8 0..255 or float in [0, 1] -> (T, 1, 1, S, S)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"frames file {path!r} does not exist")
    try:
        a = np.load(p, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise InputError(f"frames file {path!r} is not a .npy array ({err})") from None
    S = config.frame_size
    if a.ndim == 4 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 3 or a.shape[1:] != (S, S) or a.shape[0] < config.input_frames:
        raise InputError(f"frames file {path!r} must hold (time >= {config.input_frames}, {S}, {S}) frames for "
                         f"this model; got shape {a.shape}")
    x = torch.from_numpy(a.astype(np.float32) / 255.0 if a.dtype == np.uint8 else a.astype(np.float32))
    if not torch.isfinite(x).all() or float(x.min()) < 0 or float(x.max()) > 1:
        raise InputError(f"frames file {path!r}: float frames must lie in [0, 1] (or be uint8)")
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
    require_extra("vision", "rnnkit predict-video")
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


# ------------------------------------------------------------------ caption
#: what the caption commands use of the vision extra: images, BLEU, the figures (not SSIM)
CAPTION_NEEDS = ("PIL", "sacrebleu", "matplotlib")
CAPTION_DEFAULTS = dict(batch_size=32, optimizer="adam", lr=2e-3, clip_norm=5.0, max_minutes=10.0, eval_every=200,
                        checkpoint_every=200, threads=1)

CAPTION_SPECS = [
    *run_specs("runs/caption", "Run directory (checkpoints, caption_metrics.md, caption_examples.png)."),
    ("data", INPUT_PATH, None, f"Directory with the MNIST IDX files for digit scenes (default: {MNIST_DIR})."),
    ("images", INPUT_PATH, None, "Image folder of a Flickr8k/COCO-style data set (with --captions) instead of digit "
                          "scenes."),
    ("captions", INPUT_PATH, None, "Captions file for --images: Flickr8k token file, captions.txt CSV or COCO JSON."),
    ("image_size", POS_INT, 60, "Images are resized (scenes drawn) to S x S."),
    ("max_digits", click.IntRange(1, 3), 3, "Digit scenes: 1 to this many digits."),
    ("cell", click.Choice(list(CAPTION_CELLS)), "lstm", "Decoder cell."),
    ("hidden_size", POS_INT, 128, "Decoder hidden units."),
    ("embedding_size", POS_INT, 64, "Word embedding size."),
    ("attention", click.Choice(CAPTION_ATTENTIONS), "bahdanau", "Soft attention over the grid, or none (the mean "
                                                               "feature every step)."),
    ("attention_size", POS_INT, 64, "Width of the additive attention."),
    ("cnn_width", POS_INT, 16, "Channels of the first CNN block (doubled per block)."),
    ("cnn_blocks", POS_INT, 3, "CNN blocks (conv-ReLU-pool); the grid is S / 2^blocks per side."),
    ("dropout", PROB, 0.1, "Dropout before the output layer."),
    ("alpha_c", click.FloatRange(min=0.0), 0.0, "Weight λ of the doubly stochastic attention penalty (Xu et al. "
                                                "use 1; with captions much shorter than the grid it pushes "
                                                "attention towards uniform, so the digit recipe uses 0)."),
    ("sampling", click.Choice(["none", "linear", "exponential", "inverse_sigmoid"]), "none",
     "Scheduled sampling of the fed word (none = teacher forcing)."),
    ("sampling_k", float, 1.0, "Schedule parameter k."),
    ("sampling_c", click.FloatRange(min=0.0), 0.0, "Schedule parameter c (linear)."),
    ("sampling_min", click.FloatRange(0.0, 1.0), 0.0, "Lowest probability of feeding the gold word."),
    ("max_len", POS_INT, 16, "Most words generated (and kept of a training caption)."),
    ("beam_size", POS_INT, 3, "Beam size for the test metrics (1 = greedy)."),
    ("batches_per_epoch", POS_INT, 100, "Batches per epoch."),
    ("val_images", POS_INT, 256, "Validation images."),
    ("test_images", POS_INT, 500, "Test images for the final metrics."),
    ("baseline_minutes", click.FloatRange(min=0.0), 5.0, "After training, train the no-attention baseline for this "
                                                         "long and report it next to the model (0: skip)."),
] + app_training_specs(CAPTION_DEFAULTS)


def _caption_data(s: Dict[str, Any], vocab_json: Optional[List[str]] = None):
    """(items per split {name: (items(i), count or None)}, vocab, channels, truths(i) or None)."""
    from ..data.captions import CaptionVocab, DigitScenes, digit_vocab, load_caption_folder, load_image

    if (s.get("images") is None) != (s.get("captions") is None):
        raise InputError("--images and --captions go together (an image folder and its captions file)")
    if s.get("images"):
        folder = load_caption_folder(s["images"], s["captions"])
        n = len(folder.paths)
        if n < 3:
            raise InputError(f"captions file {s['captions']!r} names {n} image(s); need at least 3 (train, valid, "
                             f"test)")
        order = np.random.default_rng(s["seed"]).permutation(n).tolist()
        n_test = n_val = max(1, n // 10)
        parts = {"test": order[:n_test], "valid": order[n_test:n_test + n_val], "train": order[n_test + n_val:]}
        vocab = (CaptionVocab.from_json(vocab_json) if vocab_json is not None else
                 CaptionVocab.build([c for k in parts["train"] for c in folder.captions[k]]))
        size = s["image_size"]

        def make(idx):
            return lambda i: (load_image(folder.paths[idx[i]], size, 3), folder.captions[idx[i]])

        return {k: (make(v), len(v)) for k, v in parts.items()}, vocab, 3, None
    pools = digit_pools(_mnist_dir(s))
    scenes = {k: DigitScenes(pools[k], s["image_size"], max_digits=s["max_digits"], seed=s["seed"])
              for k in ("train", "valid", "test")}

    def items(k):
        def get(i):
            sc = scenes[k].scene(i)
            return sc.image, sc.captions
        return get

    truths = lambda i: (lambda sc: (sc.digits, sc.orientation))(scenes["test"].scene(i))  # noqa: E731
    return {k: (items(k), None) for k in scenes}, digit_vocab(), 1, truths


def _caption_config(s: Dict[str, Any], vocab_size: int, channels: int, attention: Optional[str] = None):
    from ..models.caption import CaptionConfig
    return CaptionConfig(vocab_size=vocab_size, channels=channels, image_size=s["image_size"],
                         cnn_width=s["cnn_width"], cnn_blocks=s["cnn_blocks"], cell=s["cell"],
                         embedding_size=s["embedding_size"], hidden_size=s["hidden_size"],
                         attention=attention or s["attention"], attention_size=s["attention_size"],
                         dropout=s["dropout"], max_len=s["max_len"])


def _caption_task(s: Dict[str, Any]):
    from ..models.caption import CaptionTask
    from ..models.scheduled_sampling import SamplingSchedule
    return CaptionTask(alpha_c=s["alpha_c"], schedule=SamplingSchedule(s["sampling"], s["sampling_k"],
                                                                       s["sampling_c"], s["sampling_min"]))


def _caption_batches(s: Dict[str, Any], data, vocab):
    from ..data.captions import CaptionBatches
    train_items, n_train = data["train"]
    val_items, n_val = data["valid"]
    train = CaptionBatches(train_items, n_train, vocab, s["batch_size"], s["batches_per_epoch"], fixed=False,
                           max_len=s["max_len"], seed=s["seed"])
    n_val = min(s["val_images"], n_val or s["val_images"])
    vb = min(s["batch_size"], n_val)
    val = CaptionBatches(val_items, n_val, vocab, vb, max(1, n_val // vb), fixed=True, max_len=s["max_len"])
    return train, val


def _build_caption(s: Dict[str, Any]):
    from ..models.caption import CaptionModel
    data, vocab, channels, _ = _caption_data(s)
    cfg = _caption_config(s, len(vocab), channels)
    train, val = _caption_batches(s, data, vocab)
    model = CaptionModel(cfg)
    source = ({"images": str(s["images"]), "captions": str(s["captions"])} if s.get("images")
              else {"digit_scenes": {"max_digits": s["max_digits"], "seed": s["seed"]}})
    run_info = {"model": cfg.to_dict(), "vocab": vocab.to_json(), "data": source}
    kind = "Flickr8k/COCO-style folder" if s.get("images") else "digit scenes (1-%d MNIST digits)" % s["max_digits"]
    return model, _caption_task(s), train, val, run_info, [f"caption: {kind}, vocabulary {len(vocab)}"]


def evaluate_captioner(model, items, count: int, vocab, *, beam_size: int, truths=None, batch_size: int = 50
                       ) -> Dict[str, Any]:
    """Captions of test images 0..count−1 and their metrics (see models.caption.caption_metrics)."""
    from ..data.captions import tokenize
    from ..models.caption import caption_metrics

    model.eval()
    hyps, refs, truth, examples = [], [], [], []
    for start in range(0, count, batch_size):
        ids = list(range(start, min(count, start + batch_size)))
        pairs = [items(i) for i in ids]
        images = torch.from_numpy(np.stack([p[0] for p in pairs]))
        out = model.generate(images, beam_size=beam_size, return_attention=False)
        for i, p, h in zip(ids, pairs, out):
            hyps.append(vocab.decode(h.tokens))
            refs.append([" ".join(tokenize(c)) for c in p[1]])
            if truths is not None:
                truth.append(truths(i))
    metrics = caption_metrics(hyps, refs, truth if truths is not None else None)
    return {"metrics": metrics, "hypotheses": hyps[:20], "references": [r[0] for r in refs[:20]]}


def _caption_table(rows: Dict[str, Dict[str, float]]) -> str:
    keys = ["bleu1", "bleu2", "bleu3", "bleu4", "chrf"]
    extra = [k for k in ("digits_exact", "layout_exact") if any(k in m for m in rows.values())]
    head = ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "chrF"] + [{"digits_exact": "digits exact %",
                                                                "layout_exact": "digits+relation exact %"}[k]
                                                               for k in extra]
    lines = ["| model | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    for name, m in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{m[k]:.1f}" for k in keys + extra) + " |")
    return "\n".join(lines)


def _finish_caption(model, s: Dict[str, Any], out: Path, trainer) -> None:
    from ..models.caption import CaptionModel
    from ..training.config import TrainConfig
    from ..training.trainer import Trainer

    data, vocab, channels, truths = _caption_data(s, trainer.run_info["vocab"])
    test_items, n_test = data["test"]
    count = min(s["test_images"], n_test or s["test_images"])
    rows: Dict[str, Dict[str, float]] = {}
    results: Dict[str, Any] = {}
    name = f"{s['cell']} + {s['attention']} attention" if s["attention"] != "none" else f"{s['cell']}, no attention"
    for beam in sorted({1, s["beam_size"]}):
        r = evaluate_captioner(model, test_items, count, vocab, beam_size=beam, truths=truths)
        rows[f"{name}, {'greedy' if beam == 1 else f'beam {beam}'}"] = r["metrics"]
        results[f"beam{beam}"] = r
    if s["baseline_minutes"] and s["attention"] != "none":
        torch.manual_seed(s["seed"])
        base = CaptionModel(_caption_config(s, len(vocab), channels, attention="none"))
        train, val = _caption_batches(s, data, vocab)
        cfg = TrainConfig(max_minutes=s["baseline_minutes"], optimizer=s["optimizer"], lr=s["lr"],
                          clip_norm=s["clip_norm"], seed=s["seed"], quiet=s["quiet"], tensorboard=False)
        if not s["quiet"]:
            click.echo(f"rnnkit: training the no-attention baseline for {s['baseline_minutes']} min")
        summary = Trainer(base, _caption_task(s), train, cfg, val_data=val).fit()
        r = evaluate_captioner(base, test_items, count, vocab, beam_size=s["beam_size"], truths=truths)
        rows[f"{s['cell']}, no attention (baseline, {summary['step']} steps), "
             f"{'greedy' if s['beam_size'] == 1 else 'beam %d' % s['beam_size']}"] = r["metrics"]
        results["baseline"] = r
    table = _caption_table(rows)
    header = (f"Test split: {count} images, after {trainer.step} training steps. BLEU and chrF from sacrebleu "
              f"(corpus level, every phrasing of a scene as a reference, tokens as written).\n\n")
    (out / "caption_metrics.md").write_text(header + table + "\n")
    (out / "caption_metrics.json").write_text(json.dumps({"images": count, "step": trainer.step, "rows": rows,
                                                          "examples": results}, indent=1))
    write_caption_examples(model, [test_items(i) for i in range(min(4, count))], vocab, out / "caption_examples.png")
    if not s["quiet"]:
        click.echo(table)
        click.echo(f"rnnkit: wrote {out / 'caption_metrics.md'} and caption_examples.png")


def write_caption_examples(model, pairs, vocab, path: Path, beam_size: int = 1) -> List[str]:
    """One row per image (caption and the attention map of every word) in one PNG; returns the captions."""
    from ..models.caption import plot_attention
    images = torch.from_numpy(np.stack([p[0] for p in pairs]))
    hyps = model.generate(images, beam_size=beam_size)
    words = [[vocab.itos[t] for t in h.tokens] for h in hyps]
    titles = [f"model: {' '.join(w)}" + (f"   |   reference: {p[1][0]}" if p[1][0] else "")
              for w, p in zip(words, pairs)]
    plot_attention(path, list(images), words, [h.attention for h in hyps], titles)
    return [" ".join(w) for w in words]


@click.command("caption")
@recipe_options(CAPTION_SPECS)
@click.pass_context
def train_caption(ctx: click.Context, **values: Any) -> None:
    """Image captioning with soft attention (Show, Attend and Tell) on digit scenes or an image folder.

    Validation: cross-entropy per word (val_loss). At the end: BLEU-1..4, chrF and (digit
    scenes) exact digit/relation match on the test split, greedy and beam, next to a
    no-attention baseline trained for --baseline-minutes.
    """
    require_extra("vision", "rnnkit train caption", CAPTION_NEEDS)
    run_app(ctx, "caption", values, _build_caption, _finish_caption)


def load_captioner(path: str):
    """(model in eval mode, vocab, run info) of a caption run directory or checkpoint."""
    from ..data.captions import CaptionVocab
    from ..models.caption import CaptionConfig, CaptionModel
    model, run = load_app_model(path, "caption", "a captioner", lambda m: CaptionModel(CaptionConfig(**m)),
                                torch.device("cpu"), check_run=lambda r: CaptionVocab.from_json(r["vocab"]))
    return model, CaptionVocab.from_json(run["vocab"]), run


@click.command("caption")
@click.option("--checkpoint", required=True, help="Caption run directory (uses best.safetensors) or checkpoint.")
@click.argument("images", nargs=-1, required=True)
@click.option("--beam-size", type=POS_INT, default=1, show_default=True, help="1 = greedy.")
@click.option("--plot-attention", "plot", default=None, help="PNG with the attention map of every word "
                                                             "(one row per image).")
def caption(checkpoint: str, images: tuple, beam_size: int, plot: Optional[str]) -> None:
    """Caption image files with a trained captioner."""
    require_extra("vision", "rnnkit caption", CAPTION_NEEDS)
    from ..data.captions import load_image
    model, vocab, _ = load_captioner(checkpoint)
    c = model.config
    pairs = [(load_image(p, c.image_size, c.channels), [""]) for p in images]
    batch = torch.from_numpy(np.stack([p[0] for p in pairs]))
    for path, h in zip(images, model.generate(batch, beam_size=beam_size)):
        click.echo(f"{path}\t{vocab.decode(h.tokens)}")
    if plot:
        write_caption_examples(model, pairs, vocab, Path(plot), beam_size=beam_size)
        click.echo(f"rnnkit: wrote {plot}")


def register(cli: click.Group, train: click.Group) -> None:
    """Add `rnnkit train video`, `rnnkit predict-video` (and the caption commands when present)."""
    train.add_command(train_video)
    cli.add_command(predict_video)
    train.add_command(train_caption)
    cli.add_command(caption)
