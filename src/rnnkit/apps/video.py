"""Video prediction: a ConvLSTM encoder–forecaster (Shi et al. 2015) learns the next frames of Moving-MNIST-style
sequences.

Sequences are made on the fly from the embedded MNIST test set (data/mnist, CC BY-SA 3.0): digits
bounce in S x S frames; the model reads k frames and predicts the next n. Validation: BCE per pixel
(val_loss); the weights kept (OUT/best.safetensors) are those with the best validation SSIM
(select_by ssim) or loss (select_by bce). At the end, on the test split: per-frame MSE, BCE and SSIM
next to the copy-last-frame and mean-frame baselines (OUT/results.md, results.json), video_per_frame.png,
video_strip.png (input | truth | prediction) and video.gif.

    >>> from rnnkit.apps import video
    >>> run = video.train(video.VideoSettings(max_steps=20, frame_size=32))   # doctest: +SKIP
    >>> frames = video.example_sequence(run, 0)        # (k + n, S, S), a test-split sequence  # doctest: +SKIP
    >>> predicted = video.predict(run, frames)         # (n, S, S) in [0, 1]                   # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np
import torch

from ..data.moving_digits import MNIST_DIR, DigitPool, MovingDigits, VideoBatches, digit_pools, read_npy
from ..errors import InputError, InputTypeError
from ..models.video import (FEEDS, HEADS, VIDEO_CELLS, EncoderForecaster, VideoConfig, VideoTask, evaluate_video,
                            metrics_table, plot_per_frame, save_gif, save_strip)
from ..recipes import repository_data
from .runner import Prepared, Recipe, Run, say
from .settings import TrainingSettings, setting, setting_name, settings_class

__all__ = ["VideoSettings", "train", "load", "predict", "example_sequence", "write_examples", "RECIPE"]

#: frames as a user gives them: an array or tensor (T, S, S) or (T, 1, S, S), or a .npy file of one
Frames = Union[np.ndarray, torch.Tensor, str, Path]


@settings_class
class VideoSettings(TrainingSettings):
    """Settings of `rnnkit train video` (defaults: 64x64 frames, two digits, 10 in -> 10 out, the advection head)."""

    DEFAULTS = dict(out="runs/video", batch_size=8, lr=1e-3, clip_norm=1.0, max_minutes=10.0, eval_every=200,
                    checkpoint_every=200, threads=1)
    data: Optional[str] = setting(None, f"Directory with the MNIST IDX files (default: {MNIST_DIR}).", path=True)
    frame_size: int = setting(64, "Frames are S x S pixels (digits scale with S: 28 px at 64).", min=1)
    num_digits: int = setting(2, "Digits bouncing in each sequence.", min=1)
    input_frames: int = setting(10, "Frames the encoder reads (k).", min=1)
    output_frames: int = setting(10, "Frames the forecaster predicts (n).", min=1)
    patch_size: int = setting(4, "Space-to-depth patches (Shi et al.: 4, so 64x64x1 -> 16x16x16).", min=1)
    cell: str = setting("convlstm", "Recurrent cell.", choices=VIDEO_CELLS)
    hidden_channels: int = setting(32, "Hidden channels per layer.", min=1)
    num_layers: int = setting(2, "Stacked layers in the encoder and in the forecaster.", min=1)
    kernel_size: int = setting(3, "Odd kernel size of both convolutions.", min=1)
    peephole: bool = setting(False, "Hadamard peepholes.", acts_with=("cell", ("convlstm",)))
    forecaster_input: str = setting("frames", "none: the paper's input-less forecaster; frames: feed the previous "
                                              "frame.", choices=FEEDS)
    head: str = setting("advect", "pixels: draw each frame from the hidden maps (Shi et al.); advect: move the "
                                  "previous frame by predicted kernels (Finn et al.'s CDNA).", choices=HEADS)
    advect_kernels: int = setting(4, "Motion kernels per sequence.", min=1, acts_with=("head", ("advect",)))
    advect_size: int = setting(9, "Odd size of the motion kernels (the largest move is half of it).", min=1,
                               acts_with=("head", ("advect",)))
    select_by: str = setting("ssim", "Which validation score picks the weights kept (best.safetensors): SSIM, or "
                                     "the loss (BCE).", choices=("ssim", "bce"))
    teacher_forcing: float = setting(1.0, "Probability of using the true previous frame in training (acts with "
                                          "forecaster_input frames or head advect).", min=0, max=1)
    batches_per_epoch: int = setting(100, "Batches per epoch (new sequences every epoch).", min=1)
    val_sequences: int = setting(32, "Validation sequences (valid split).", min=1)
    test_sequences: int = setting(64, "Test sequences for the final metrics (test split).", min=1)

    def check(self) -> None:
        super().check()
        if self.teacher_forcing and self.forecaster_input != "frames" and self.head != "advect":
            if self.explicit("teacher_forcing"):
                raise InputError(f"{setting_name('teacher_forcing')} needs {setting_name('forecaster_input')} frames "
                                 f"or {setting_name('head')} advect (the input-less pixel forecaster sees no frames "
                                 f"to force); leave it out or set it to 0")
            object.__setattr__(self, "teacher_forcing", 0.0)  # the default has nothing to act on
        self.model_config()  # its own checks (odd kernels, frame size divisible by the patch) before any work

    def model_config(self) -> VideoConfig:
        return VideoConfig(frame_size=self.frame_size, patch_size=self.patch_size, cell=self.cell,
                           hidden_channels=self.hidden_channels, num_layers=self.num_layers,
                           kernel_size=self.kernel_size, input_frames=self.input_frames,
                           output_frames=self.output_frames, forecaster_input=self.forecaster_input,
                           peephole=self.peephole, head=self.head, advect_kernels=self.advect_kernels,
                           advect_size=self.advect_size)


def mnist_pools(data: Optional[str]) -> Dict[str, DigitPool]:
    """The train/valid/test digit pools of the MNIST files in `data` (default: the repository's data/mnist)."""
    return digit_pools(data or repository_data(MNIST_DIR))


def sequences(pool: DigitPool, config: VideoConfig, num_digits: int, seed: int) -> MovingDigits:
    return MovingDigits(pool, config.frame_size, num_digits=num_digits,
                        seq_len=config.input_frames + config.output_frames, seed=seed)


def prepare(s: VideoSettings, resumed: Optional[Dict[str, Any]], rank: int, world: int) -> Prepared:
    config = s.model_config()
    pools = mnist_pools(s.data)
    train_data = VideoBatches(sequences(pools["train"], config, s.num_digits, s.seed), s.batch_size,
                              s.batches_per_epoch, fixed=False)
    vb = min(s.batch_size, s.val_sequences)
    # fixed sequences: the trainer's val_loss and the SSIM that picks the best weights read the same ones
    val_data = VideoBatches(sequences(pools["valid"], config, s.num_digits, s.seed), vb,
                            max(1, s.val_sequences // vb), fixed=True)
    info = {"model": config.to_dict(), "data": {"mnist": "t10k", "num_digits": s.num_digits, "seed": s.seed}}
    report = [f"video: {s.frame_size}x{s.frame_size} frames, {s.num_digits} digits, {s.input_frames} in -> "
              f"{s.output_frames} out; digit pools train/valid/test 8000/1000/1000"]
    select = None
    if s.select_by == "ssim":
        def one_minus_ssim(model: torch.nn.Module) -> float:
            ssim = evaluate_video(model, val_data.batches(), baselines=False)["model"]["ssim"]
            model.train()
            return 1.0 - float(np.mean(ssim))
        select = ("1 - val SSIM", one_minus_ssim)
    return Prepared(EncoderForecaster(config), VideoTask(config, s.teacher_forcing), train_data, val_data,
                    info=info, report=report, select=select)


def finish(run: Run) -> Dict[str, Any]:
    """Per-frame MSE, BCE and SSIM of the model and the two baselines on the test split; the plots."""
    s, out, c = run.settings, run.out, run.model.config
    source = sequences(mnist_pools(s.data)["test"], c, s.num_digits, s.seed)
    bs = min(16, s.test_sequences)
    test = VideoBatches(source, bs, max(1, s.test_sequences // bs), fixed=True)
    results = evaluate_video(run.model, test.batches())
    n, step = test.batch_size * len(test), run.summary.get("step")
    table = metrics_table(results)
    header = (f"Test split: {n} sequences ({c.frame_size}x{c.frame_size}, {s.num_digits} digits, {c.input_frames} "
              f"in -> {c.output_frames} out), after {step} steps. MSE and BCE are means per pixel (intensities in "
              f"[0, 1]), averaged over the future frames; SSIM from scikit-image (data_range 1).\n\n")
    plot_per_frame(out / "video_per_frame.png", results)
    write_examples(run, source.batch(0, 1)[:, 0, 0].numpy(), out, npy=False)
    say(s, f"wrote {out / 'video_strip.png'}, video.gif, video_per_frame.png")
    return {"sequences": n, "step": step, **results, "markdown": header + table}


def build_model(description: Dict[str, Any]) -> EncoderForecaster:
    return EncoderForecaster(VideoConfig(**description))


RECIPE = Recipe("video", VideoSettings, prepare, finish, build_model, extra="vision")


def train(settings: Optional[VideoSettings] = None, **changes: Any) -> Run:
    """Train a video predictor: `train(VideoSettings(frame_size=32, max_minutes=5))` or `train(max_steps=20)`."""
    return RECIPE.train(settings, **changes)


def load(path: Union[str, Path], device: Union[str, torch.device] = "cpu") -> Run:
    """A trained video predictor from its run directory or a checkpoint (best weights first)."""
    return RECIPE.load(path, device)


# ---------------------------------------------------------------------- inference
def example_sequence(run: Run, index: int = 0) -> np.ndarray:
    """Test-split sequence `index` (k + n frames (T, S, S) in [0, 1]), made as the run's training made them."""
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise InputError(f"{setting_name('index')} must be an int >= 0; got {index!r}")
    c, data = run.model.config, run.info.get("data") or {}
    source = sequences(mnist_pools(None)["test"], c, data.get("num_digits", 2), data.get("seed", 0))
    return source.batch(index, 1)[:, 0, 0].numpy()


def predict(run: Run, frames: Frames) -> Union[np.ndarray, torch.Tensor]:
    """The next n frames (n, S, S) in [0, 1] after the first k of `frames`.

    frames: (T >= k, S, S) or (T, 1, S, S), uint8 0..255 or floats in [0, 1], as a numpy array, a tensor
    (the result is then a tensor) or a .npy file. Frames past the k-th are ignored."""
    x = _frames_tensor(run, frames)
    c = run.model.config
    pred = run.model.predict(x[:c.input_frames, None, None].to(run.device))[:, 0, 0].cpu()
    return pred if isinstance(frames, torch.Tensor) else pred.numpy()


def write_examples(run: Run, frames: Frames, out: Union[str, Path], npy: bool = True) -> Dict[str, Path]:
    """Predict from `frames` and write OUT/video_strip.png (input | truth | prediction; the truth is
    frames k.. when given), OUT/video.gif (truth | prediction) and, with `npy`, OUT/prediction.npy
    (n, S, S) float32. Returns the paths written, by kind."""
    x = _frames_tensor(run, frames)
    c = run.model.config
    inputs, truth = x[:c.input_frames, None], x[c.input_frames:c.input_frames + c.output_frames, None]
    pred = torch.as_tensor(predict(run, x))[:, None]  # (n, 1, S, S)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"strip": out / "video_strip.png", "gif": out / "video.gif"}
    save_strip(paths["strip"], inputs, truth, pred, title=f"input | truth | prediction ({c.cell})")
    save_gif(paths["gif"], inputs, truth if len(truth) else pred, pred)
    if npy:
        paths["npy"] = out / "prediction.npy"
        np.save(paths["npy"], pred[:, 0].numpy().astype(np.float32))
    return paths


def _frames_tensor(run: Run, frames: Frames) -> torch.Tensor:
    """frames (see `predict`) -> float32 (T, S, S) in [0, 1]; InputError naming what came."""
    what = "frames"
    if isinstance(frames, (str, Path)):
        what, frames = f"frames file {str(frames)!r}", read_npy(frames, "frames file")
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu().numpy()
    if not isinstance(frames, np.ndarray):
        raise InputTypeError(f"{what} must be a numpy array, a tensor or a .npy path; got {type(frames).__name__}")
    c = run.model.config
    a = frames[:, 0] if frames.ndim == 4 and frames.shape[1] == 1 else frames
    k, S = c.input_frames, c.frame_size
    if a.ndim != 3 or a.shape[1:] != (S, S) or a.shape[0] < k:
        raise InputError(f"{what} must hold (time >= {k}, {S}, {S}) frames for this model; got shape {frames.shape}")
    if a.dtype == np.uint8:
        return torch.from_numpy(a.astype(np.float32) / 255.0)
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise InputError(f"{what} must be uint8 or floats in [0, 1]; got dtype {a.dtype}")
    x = torch.from_numpy(a.astype(np.float32))
    if not torch.isfinite(x).all() or float(x.min()) < 0 or float(x.max()) > 1:
        raise InputError(f"{what}: float frames must lie in [0, 1] (or be uint8 0..255)")
    return x


