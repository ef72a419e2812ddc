"""Video classification on moving digits: a CNN reads each frame, an LSTM or GRU reads the CNN's vectors (LRCN).

The clips are made on the fly from the embedded MNIST test set (data/mnist, CC BY-SA 3.0; its digit
pools split train/valid/test as for the video app): one digit glides in a straight line in one of
`directions` directions, and the label is the direction, which no single frame shows. The model trained
(`model`, default lrcn: per-frame CNN → LSTM/GRU → linear head, Donahue et al. 2015) is compared on the
test split, with `compare` (on by default), with the two others trained for the same budget: a
single-frame CNN (the same CNN on the clip's mean frame, which shows the motion's axis but not its
sign) and a ConvLSTM encoder with about as many parameters. Accuracy, parameters and training time of
each go to OUT/results.md and results.json.

    >>> from rnnkit.apps import clips
    >>> run = clips.train(clips.ClipSettings(max_steps=200))                # doctest: +SKIP
    >>> frames, labels = clips.example_clips(run, 4)   # (4, T, S, S) test-split clips, their labels  # doctest: +SKIP
    >>> clips.predict(run, frames)                                           # doctest: +SKIP
    ['up-left', 'down', 'right', 'up-right']
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..data.digit_clips import DigitClips, direction_names
from ..data.moving_digits import MNIST_DIR, VideoBatches, digit_pools, read_npy
from ..errors import InputError, InputTypeError
from ..models.clips import (CLIP_CELLS, CLIP_MODELS, ClipConfig, ClipTask, accuracy, build_clip_model,
                            count_parameters, predict_labels)
from ..recipes import repository_data
from ..training.trainer import Trainer
from .runner import Prepared, Recipe, Run, say
from .settings import TrainingSettings, setting, setting_name, settings_class

__all__ = ["ClipSettings", "train", "load", "predict", "example_clips", "RECIPE"]

#: clips as a user gives them: (N, T, S, S) or (N, T, 1, S, S), uint8 0..255 or floats in [0, 1]
Clips = Union[np.ndarray, torch.Tensor, Sequence[np.ndarray], str, Path]
MODEL_NAMES = {"lrcn": "LRCN (CNN per frame → {cell})", "single_frame": "single-frame CNN (mean frame)",
               "convlstm": "ConvLSTM encoder"}


@settings_class
class ClipSettings(TrainingSettings):
    """Settings of `rnnkit train clips` (defaults: 32x32 clips of 8 frames, 8 directions, LRCN with an LSTM)."""

    DEFAULTS = dict(out="runs/clips", batch_size=32, lr=2e-3, clip_norm=1.0, max_steps=400, eval_every=100,
                    checkpoint_every=200, threads=1)
    data: Optional[str] = setting(None, f"Directory with the MNIST IDX files (default: {MNIST_DIR}).", path=True)
    frame_size: int = setting(32, "Frames are S x S pixels (digits scale with S: 14 px at 32).", min=8)
    clip_len: int = setting(8, "Frames per clip.", min=2)
    directions: int = setting(8, "Directions of motion, the classes (angles 360/K degrees apart).", min=2)
    speed: float = setting(0.1, "Distance per frame as a fraction of the free range (frame - digit); the path "
                                "must fit: (clip_len - 1) * speed <= 1.", min=0, min_open=True, max=1)
    model: str = setting("lrcn", "The model trained: lrcn (CNN per frame, then an RNN), single_frame (the CNN on "
                                 "the clip's mean frame) or convlstm (a ConvLSTM over the CNN's feature maps).",
                         choices=CLIP_MODELS)
    cell: str = setting("lstm", "The LRCN's recurrent layer.", choices=CLIP_CELLS)
    stem_channels: int = setting(16, "Channels of the frame CNN's convolutions (shared by all three models).", min=1)
    feature_size: int = setting(32, "Length of the vector the CNN makes of each frame.", min=1)
    hidden_size: int = setting(32, "Hidden units of the LRCN's LSTM/GRU.", min=1)
    convlstm_channels: Optional[int] = setting(None, "Hidden channels of the ConvLSTM (default: as many "
                                                     "parameters as the LRCN).", min=1)
    compare: bool = setting(True, "Also train the other two models for the same budget and report all three.")
    batches_per_epoch: int = setting(100, "Batches per epoch (new clips every epoch).", min=1)
    val_clips: int = setting(256, "Validation clips (valid split).", min=1)
    test_clips: int = setting(1000, "Test clips for the final accuracy (test split).", min=1)

    def check(self) -> None:
        super().check()
        if self.explicit("cell") and self.model != "lrcn" and not self.compare:
            raise InputError(f"{setting_name('cell')} acts only on the lrcn model; {setting_name('model')} is "
                             f"{self.model} and {setting_name('compare')} is off")
        if (self.clip_len - 1) * self.speed > 1:
            raise InputError(f"{setting_name('speed')} {self.speed} moves the digit off the frame in "
                             f"{setting_name('clip_len')} {self.clip_len} frames: ({setting_name('clip_len')} - 1) * "
                             f"{setting_name('speed')} must be <= 1")
        self.model_config()

    def model_config(self, model: Optional[str] = None) -> ClipConfig:
        return ClipConfig(frame_size=self.frame_size, num_classes=self.directions, model=model or self.model,
                          cell=self.cell, stem_channels=self.stem_channels, feature_size=self.feature_size,
                          hidden_size=self.hidden_size, convlstm_channels=self.convlstm_channels)


def clip_source(s: ClipSettings, split: str) -> DigitClips:
    """The clips of one split of the MNIST digit pools."""
    return make_clips(s.data, split, s.frame_size, s.clip_len, s.directions, s.speed, s.seed)


def make_clips(data: Optional[str], split: str, frame_size: int, clip_len: int, directions: int, speed: float,
               seed: int) -> DigitClips:
    pool = digit_pools(data or repository_data(MNIST_DIR))[split]
    return DigitClips(pool, frame_size, clip_len=clip_len, directions=directions, speed=speed, seed=seed)


def clip_data(s: ClipSettings) -> Tuple[VideoBatches, VideoBatches]:
    """(training batches: new clips every epoch, validation batches: the same clips every pass)."""
    train = VideoBatches(clip_source(s, "train"), s.batch_size, s.batches_per_epoch, fixed=False)
    vb = min(s.batch_size, s.val_clips)
    return train, VideoBatches(clip_source(s, "valid"), vb, max(1, s.val_clips // vb), fixed=True)


def prepare(s: ClipSettings, resumed: Optional[Dict[str, Any]], rank: int, world: int) -> Prepared:
    config = s.model_config()
    train_data, val_data = clip_data(s)
    info = {"model": config.to_dict(), "labels": direction_names(s.directions),
            "data": {"mnist": "t10k", "clip_len": s.clip_len, "speed": s.speed, "seed": s.seed}}
    report = [f"clips: {s.frame_size}x{s.frame_size}, {s.clip_len} frames, {s.directions} directions of motion; "
              f"digit pools train/valid/test 8000/1000/1000; model {s.model}"]
    return Prepared(build_clip_model(config), ClipTask(), train_data, val_data, info=info, report=report)


def finish(run: Run) -> Dict[str, Any]:
    """Test accuracy of the run's model and, with `compare`, of the other two trained for the same budget."""
    s = run.settings
    bs = min(50, s.test_clips)
    test = VideoBatches(clip_source(s, "test"), bs, max(1, s.test_clips // bs), fixed=True)
    trained = {s.model: (run.model, run.summary)}
    if s.compare:
        train_data, val_data = clip_data(s)
        for other in (m for m in CLIP_MODELS if m != s.model):
            say(s, f"training the {other} model for comparison (the same budget)")
            trained[other] = fit_in_memory(s, other, train_data, val_data, run.device)
    rows = {}
    for name, (model, summary) in trained.items():
        acc = accuracy(model, test.batches())[0]
        rows[name] = {"accuracy": acc, "parameters": count_parameters(model), "train_s": summary.get("elapsed_s"),
                      "steps": summary.get("step")}
    n = test.batch_size * len(test)
    return {"clips": n, "chance": 1 / s.directions, "models": rows, "markdown": results_markdown(s, rows, n)}


def fit_in_memory(s: ClipSettings, model_name: str, train_data: Any, val_data: Any,
                  device: torch.device) -> Tuple[torch.nn.Module, Dict[str, Any]]:
    """Train model `model_name` with the run's settings, nothing written; (its best weights by val_loss, summary)."""
    torch.manual_seed(s.seed)
    model = build_clip_model(s.model_config(model_name))
    config = dataclasses.replace(s.train_config(), tensorboard=False)
    trainer = Trainer(model, ClipTask(), train_data, config, val_data=val_data, device=device)
    best: Dict[str, Any] = {}

    def keep_best(trainer: Trainer, record: Dict[str, Any]) -> None:
        if "val_loss" in record and record["val_loss"] < best.get("val_loss", float("inf")):
            best.update(val_loss=record["val_loss"], weights=copy.deepcopy(trainer.model.state_dict()))

    trainer.add_hook("eval_end", keep_best)
    summary = trainer.fit()
    if "weights" in best:
        model.load_state_dict(best["weights"])
    return model.eval(), summary


def results_markdown(s: ClipSettings, rows: Dict[str, Dict[str, Any]], n: int) -> str:
    lines = [f"Test split: {n} clips ({s.frame_size}x{s.frame_size}, {s.clip_len} frames), label = the direction "
             f"of motion, {s.directions} classes (chance {1 / s.directions:.3f}). "
             + ("Each model trained with the same budget on the same clips, w" if len(rows) > 1 else "W")
             + "eights with the best validation loss; time = training wall clock (evaluations included).", "",
             "| model | parameters | test accuracy ↑ | training time (s) | steps |", "|---|---|---|---|---|"]
    for name, r in rows.items():
        label = MODEL_NAMES[name].format(cell=s.cell.upper())
        time_s = f"{r['train_s']:.0f}" if r["train_s"] is not None else "—"
        lines.append(f"| {label} | {r['parameters']:,} | {r['accuracy']:.3f} | {time_s} | {r['steps']} |")
    if "single_frame" in rows and s.directions % 2 == 0:
        lines += ["", "The mean frame shows the streak's axis, not its sign, and each axis is two opposite "
                      "directions: a model that sees only the mean frame scores at most 0.5."]
    return "\n".join(lines)


def build_model(description: Dict[str, Any]) -> torch.nn.Module:
    return build_clip_model(ClipConfig(**description))


def load_extras(info: Dict[str, Any]) -> Dict[str, Any]:
    return {"labels": list(info["labels"])}


RECIPE = Recipe("clips", ClipSettings, prepare, finish, build_model, load_extras=load_extras)


def train(settings: Optional[ClipSettings] = None, **changes: Any) -> Run:
    """Train a clip classifier: `train(ClipSettings(cell="gru"))` or `train(max_steps=200, compare=False)`."""
    return RECIPE.train(settings, **changes)


def load(path: Union[str, Path], device: Union[str, torch.device] = "cpu") -> Run:
    """A trained clip classifier from its run directory or a checkpoint (best weights first)."""
    return RECIPE.load(path, device)


# ---------------------------------------------------------------------- inference
def labels_of(run: Run) -> List[str]:
    return run.extras.get("labels") or run.info["labels"]


def predict(run: Run, clips: Clips) -> List[str]:
    """The direction of motion of each clip, by name ("right", "up-right", ... as in `labels_of(run)`).

    clips: (N, T, S, S) or (N, T, 1, S, S) as a numpy array, a tensor or a .npy file's path, or a list of
    (T, S, S) arrays; uint8 0..255 or floats in [0, 1]; T >= 2 frames (the model was trained on the run's
    clip_len)."""
    frames = _clips_tensor(run, clips)  # (T, N, 1, S, S)
    names = labels_of(run)
    return [names[k] for k in predict_labels(run.model, frames.to(run.device)).tolist()]


def example_clips(run: Run, count: int = 8, start: int = 0) -> Tuple[np.ndarray, List[str]]:
    """Test-split clips start .. start+count−1, made as the run's were: (frames (N, T, S, S) float32 in [0, 1],
    their true labels)."""
    for name, value, low in (("count", count, 1), ("start", start, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InputError(f"{setting_name(name)} must be an int >= {low}; got {value!r}")
    c, data = run.info["model"], run.info["data"]
    source = make_clips(None, "test", c["frame_size"], data["clip_len"], c["num_classes"], data["speed"], data["seed"])
    batch = source.batch(start, count)
    names = labels_of(run)
    return batch["frames"][:, :, 0].transpose(0, 1).numpy(), [names[k] for k in batch["labels"].tolist()]


def _clips_tensor(run: Run, clips: Clips) -> torch.Tensor:
    """clips (see `predict`) -> float32 (T, N, 1, S, S) in [0, 1]; InputError naming what came."""
    if isinstance(clips, (str, Path)):
        clips = read_npy(clips, "clips file")
    if isinstance(clips, (list, tuple)):
        if not clips or not all(isinstance(c, (np.ndarray, torch.Tensor)) for c in clips):
            raise InputTypeError("clips: a list must hold one or more (T, S, S) arrays")
        clips = np.stack([np.asarray(c) for c in clips])
    if isinstance(clips, torch.Tensor):
        clips = clips.detach().cpu().numpy()
    if not isinstance(clips, np.ndarray):
        raise InputTypeError(f"clips must be a numpy array, a tensor or a list of arrays; got {type(clips).__name__}")
    S = run.info["model"]["frame_size"]
    a = clips[:, :, 0] if clips.ndim == 5 and clips.shape[2] == 1 else clips
    if a.ndim != 4 or a.shape[2:] != (S, S) or a.shape[1] < 2:
        raise InputError(f"clips must have shape (clips, time >= 2, {S}, {S}) for this model; got {clips.shape}")
    if a.dtype == np.uint8:
        x = torch.from_numpy(a.astype(np.float32) / 255.0)
    elif np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer):
        x = torch.from_numpy(a.astype(np.float32))
        if not torch.isfinite(x).all() or float(x.min()) < 0 or float(x.max()) > 1:
            raise InputError("clips: float frames must lie in [0, 1] (or be uint8 0..255)")
    else:
        raise InputError(f"clips must be uint8 or floats in [0, 1]; got dtype {a.dtype}")
    return x.transpose(0, 1)[:, :, None]
