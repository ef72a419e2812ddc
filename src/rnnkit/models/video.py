"""Video prediction: Shi et al. (2015)'s encoder–forecaster of stacked ConvLSTMs, its task and metrics.

Frames are patched first (space-to-depth, as in the paper: 64×64×1 with 4×4
patches becomes 16×16×16), so every convolution runs at the patch grid:

    p_t           = unshuffle(x_t, P)                                  (B, P²C, S/P, S/P)
    _, states     = Encoder(p_1 … p_k)            stacked ConvLSTM / ConvGRU, L layers
    h_{k+j}       = Forecaster(in_j, states)      same stack, initial state = encoder's final states
                    in_j = 0 ("none", the paper's forecaster has no input) or the previous
                    frame ("frames": the truth with probability teacher_forcing in training,
                    else the model's own prediction; always its own prediction at test time)
    logits_{k+j}  = shuffle(W ∗_1×1 h_{k+j} + b, P)                    (B, C, S, S)
    x̂_{k+j}       = σ(logits)                                          pixel intensities in [0, 1]

With head "advect" the frame is not drawn from h but moved (Finn et al. 2016's CDNA,
"convolutional dynamic neural advection"): from the forecaster's top hidden maps h
come M normalised K×K motion kernels k_m (one set per sequence) and M + 1 per-pixel
masks μ_m (softmax over m), and

    x̂_{k+j}       = Σ_m μ_m ⊙ (k_m ∗ x_prev) + μ_{M+1} · 0                 x_prev = x̂_{k+j−1} (x_k first)

so the forecaster only has to say where the content goes (and where it vanishes:
the last mask picks the black background), not redraw the digits; the content
comes from the previous frame — the truth with probability teacher_forcing in
training, else the model's own previous prediction.

Loss: binary cross-entropy per pixel (the paper's cross-entropy). Metrics per
future frame: MSE and BCE (means per pixel) and SSIM (scikit-image), always next
to two baselines that need no training: copy the last input frame, and the
mean of the input frames.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .._optional import pyplot, require
from ..checks import check_choice, check_positive_ints, check_probability
from ..layers_conv import ConvGRU, ConvLSTM
from ..training.trainer import LossResult
from ..errors import InputError

VIDEO_CELLS = ("convlstm", "convgru")
FEEDS = ("none", "frames")
HEADS = ("pixels", "advect")


@dataclass
class VideoConfig:
    """Shape of an EncoderForecaster."""

    frame_size: int = 64
    channels: int = 1
    patch_size: int = 4
    cell: str = "convlstm"
    hidden_channels: int = 32
    num_layers: int = 2
    kernel_size: int = 5
    input_frames: int = 10
    output_frames: int = 10
    forecaster_input: str = "none"
    peephole: bool = False
    head: str = "pixels"
    advect_kernels: int = 4
    advect_size: int = 9

    def __post_init__(self) -> None:
        check_positive_ints(self, ("frame_size", "channels", "patch_size", "hidden_channels", "num_layers",
                                   "kernel_size", "input_frames", "output_frames", "advect_kernels", "advect_size"),
                            owner="VideoConfig")
        if self.frame_size % self.patch_size:
            raise InputError(f"VideoConfig: frame_size {self.frame_size} must be divisible by patch_size "
                             f"{self.patch_size}")
        check_choice("cell", self.cell, VIDEO_CELLS, owner="VideoConfig")
        check_choice("forecaster_input", self.forecaster_input, FEEDS, owner="VideoConfig")
        check_choice("head", self.head, HEADS, owner="VideoConfig")
        for name in ("kernel_size", "advect_size"):
            if getattr(self, name) % 2 == 0:
                raise InputError(f"VideoConfig: {name} must be odd; got {getattr(self, name)}")
        if self.peephole and self.cell != "convlstm":
            raise InputError("VideoConfig: peephole needs cell 'convlstm'")

    def to_dict(self) -> Dict:
        return asdict(self)


class AdvectionHead(nn.Module):
    """CDNA (Finn et al. 2016): the next frame is the previous one moved by M kernels, mixed by per-pixel masks.

    forward(h (B, Hc, s, s), prev (B, C, S, S) in [0, 1]) -> next frame (B, C, S, S) in [0, 1]
    (a convex combination of moved copies of `prev` and black, so it stays in [0, 1]).
    The kernels are read from h average-pooled to `pool_size`×`pool_size`.
    """

    pool_size = 4  # the kernels are read from h average-pooled to this grid: where things are, coarsely

    def __init__(self, hidden_channels: int, channels: int, patch_size: int, kernels: int, size: int) -> None:
        super().__init__()
        self.kernels, self.size, self.patch_size = kernels, size, patch_size
        self.kernel_logits = nn.Linear(hidden_channels * self.pool_size ** 2, kernels * size * size)
        self.mask_logits = nn.Conv2d(hidden_channels, (kernels + 1) * patch_size ** 2, 1)
        with torch.no_grad():  # start as "copy the previous frame": every kernel peaked at its centre
            self.kernel_logits.weight.mul_(0.1)
            centre = torch.zeros(kernels, size, size)
            centre[:, size // 2, size // 2] = 3.0
            self.kernel_logits.bias.copy_(centre.flatten())

    def forward(self, h: Tensor, prev: Tensor) -> Tensor:
        M, K = self.kernels, self.size
        pooled = F.adaptive_avg_pool2d(h, self.pool_size).flatten(1)
        kernels = torch.softmax(self.kernel_logits(pooled).view(h.shape[0], M, K * K), dim=-1)
        N, C, S = prev.shape[0], prev.shape[1], prev.shape[-1]
        # one grouped convolution: group (n, c) moves channel c of sequence n by its own M kernels
        # (cross-correlation, so tap (dy, dx) reads prev at (y + dy − K//2, x + dx − K//2))
        weight = kernels.view(N, 1, M, K, K).expand(N, C, M, K, K).reshape(N * C * M, 1, K, K)
        moved = F.conv2d(prev.reshape(1, N * C, S, S), weight, padding=K // 2, groups=N * C)
        moved = moved.view(N, C, M, S, S).transpose(1, 2)  # (N, M, C, S, S)
        masks = torch.softmax(F.pixel_shuffle(self.mask_logits(h), self.patch_size), dim=1)  # (B, M+1, S, S)
        return (masks[:, :M, None] * moved).sum(1)  # mask M+1 selects black


class EncoderForecaster(nn.Module):
    """Shi et al.'s encoder–forecaster. forward(frames (k, B, C, S, S)) -> logits (n, B, C, S, S).

    With the advection head the logits are those of the moved frame's probabilities squeezed into
    [logit_eps, 1 − logit_eps] (smoothly, so exact 0/1 keep a gradient).
    """

    logit_eps = 1e-4

    def __init__(self, config: VideoConfig) -> None:
        super().__init__()
        self.config = c = config
        P2C = c.patch_size ** 2 * c.channels
        self.patch_channels = P2C

        def stack() -> nn.Module:
            if c.cell == "convlstm":
                return ConvLSTM(P2C, c.hidden_channels, c.kernel_size, num_layers=c.num_layers, peephole=c.peephole)
            return ConvGRU(P2C, c.hidden_channels, c.kernel_size, num_layers=c.num_layers)

        self.encoder = stack()
        self.forecaster = stack()
        if c.head == "pixels":
            self.head = nn.Conv2d(c.hidden_channels, P2C, 1)
        else:
            self.advect = AdvectionHead(c.hidden_channels, c.channels, c.patch_size, c.advect_kernels, c.advect_size)

    def check_frames(self, frames: Tensor, name: str = "frames") -> None:
        c = self.config
        expected = (c.channels, c.frame_size, c.frame_size)
        if not isinstance(frames, Tensor) or frames.dim() != 5 or tuple(frames.shape[2:]) != expected:
            got = tuple(frames.shape) if isinstance(frames, Tensor) else type(frames).__name__
            raise InputError(f"EncoderForecaster expects {name} of shape (time, batch, {c.channels}, "
                             f"{c.frame_size}, {c.frame_size}); got {got}")

    def _patch(self, x: Tensor) -> Tensor:
        T, B = x.shape[:2]
        return F.pixel_unshuffle(x.flatten(0, 1), self.config.patch_size).unflatten(0, (T, B))

    def _unpatch(self, p: Tensor) -> Tensor:
        T, B = p.shape[:2]
        return F.pixel_shuffle(p.flatten(0, 1), self.config.patch_size).unflatten(0, (T, B))

    def _logits(self, h: Tensor, prev: Tensor) -> Tensor:
        """h (T, B, Hc, s, s), the frames before them prev (T, B, C, S, S) -> frame logits (T, B, C, S, S)."""
        T, B = h.shape[:2]
        if self.config.head == "pixels":
            return self._unpatch(self.head(h.flatten(0, 1)).unflatten(0, (T, B)))
        return _logit(self.advect(h.flatten(0, 1), prev.flatten(0, 1)).unflatten(0, (T, B)))

    def forward(self, frames: Tensor, targets: Optional[Tensor] = None, teacher_forcing: float = 0.0,
                generator: Optional[torch.Generator] = None) -> Tensor:
        """Logits of the next n = output_frames frames.

        frames: (k, B, C, S, S) inputs in [0, 1]; targets: (n, B, C, S, S), used in training with
        teacher_forcing > 0, where the previous frame is fed (forecaster_input "frames") or moved
        (head "advect").
        """
        c = self.config
        self.check_frames(frames)
        _, states = self.encoder(self._patch(frames))
        n, B = c.output_frames, frames.shape[1]
        feed = c.forecaster_input == "frames"

        def step_inputs(prev: Tensor) -> Tensor:  # what the forecaster reads: the previous frames or nothing
            if feed:
                return self._patch(prev)
            s = c.frame_size // c.patch_size
            return prev.new_zeros(prev.shape[0], B, self.patch_channels, s, s)

        uses_prev = feed or c.head == "advect"
        if (targets is not None and teacher_forcing >= 1.0) or not uses_prev:  # all known up front: one pass
            prev = torch.cat([frames[-1:], targets[:-1]]) if uses_prev else frames[-1:].expand(n, *frames.shape[1:])
            h, _ = self.forecaster(step_inputs(prev), states)
            return self._logits(h, prev)
        prev, outs = frames[-1:], []
        for j in range(n):
            h, states = self.forecaster(step_inputs(prev), states)
            outs.append(self._logits(h, prev))
            prev = torch.sigmoid(outs[-1])
            if targets is not None and teacher_forcing > 0:
                use = torch.rand(B, 1, 1, 1, generator=generator) < teacher_forcing
                prev = torch.where(use.to(prev.device), targets[j:j + 1], prev)
        return torch.cat(outs)

    @torch.no_grad()
    def predict(self, frames: Tensor) -> Tensor:
        """Predicted frames (n, B, C, S, S) in [0, 1] (no teacher forcing)."""
        return torch.sigmoid(self(frames))


def _logit(probs: Tensor) -> Tensor:
    """Logits of probabilities squeezed into [eps, 1 − eps] (smoothly, so exact 0/1 keep a gradient)."""
    eps = EncoderForecaster.logit_eps
    p = eps + (1 - 2 * eps) * probs
    return torch.log(p) - torch.log1p(-p)


class VideoTask:
    """Splits each (T, B, C, S, S) batch into k inputs and n targets; loss = BCE summed over pixels."""

    def __init__(self, config: VideoConfig, teacher_forcing: float = 0.0) -> None:
        check_probability("teacher_forcing", teacher_forcing, include_one=True)
        self.k, self.n, self.teacher_forcing = config.input_frames, config.output_frames, teacher_forcing

    def split(self, batch: Tensor) -> Tuple[Tensor, Tensor]:
        if batch.shape[0] != self.k + self.n:
            raise InputError(f"video batches need {self.k} + {self.n} frames; got {batch.shape[0]}")
        return batch[:self.k], batch[self.k:]

    def loss(self, model: nn.Module, batch: Tensor, state) -> LossResult:
        inputs, targets = self.split(batch)
        tf = self.teacher_forcing if model.training else 0.0
        logits = model(inputs, targets, teacher_forcing=tf)
        loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="sum")
        return LossResult(loss, targets.numel(), targets.shape[1])

    def eval_metrics(self, loss: float) -> Dict[str, float]:
        return {"bce": loss}


# ------------------------------------------------------------------ metrics
BCE_EPS = 1e-4  # predictions are clipped to [eps, 1 − eps] for BCE only: a baseline's exact 0/1 would be ±inf


def copy_last_frame(inputs: Tensor, n: int) -> Tensor:
    return inputs[-1:].expand(n, *inputs.shape[1:])


def mean_frame(inputs: Tensor, n: int) -> Tensor:
    return inputs.mean(0, keepdim=True).expand(n, *inputs.shape[1:])


def frame_metrics(pred: Tensor, truth: Tensor) -> Dict[str, np.ndarray]:
    """Per future frame j (averaged over sequences): mse, bce (means per pixel), ssim. pred, truth (n, B, C, S, S)."""
    structural_similarity = require("skimage.metrics", extra="vision", purpose="SSIM").structural_similarity

    p, t = pred.detach().double().cpu(), truth.detach().double().cpu()
    mse = ((p - t) ** 2).mean(dim=(1, 2, 3, 4)).numpy()
    pc = p.clamp(BCE_EPS, 1 - BCE_EPS)
    bce = (-(t * pc.log() + (1 - t) * (1 - pc).log())).mean(dim=(1, 2, 3, 4)).numpy()
    n, B, C = p.shape[:3]
    ssim = np.zeros(n)
    pn, tn = p.numpy(), t.numpy()
    for j in range(n):
        ssim[j] = np.mean([structural_similarity(tn[j, b, ch], pn[j, b, ch], data_range=1.0)
                           for b in range(B) for ch in range(C)])
    return {"mse": mse, "bce": bce, "ssim": ssim}


def evaluate_video(model: EncoderForecaster, batches, *, device: Optional[torch.device] = None,
                   baselines: bool = True) -> Dict[str, Dict[str, List[float]]]:
    """Per-frame metrics of the model (and the two baselines) over `batches` ((T, B, C, S, S) tensors)."""
    c = model.config
    device = device or next(model.parameters()).device
    sums: Dict[str, Dict[str, np.ndarray]] = {}
    count = 0
    model.eval()
    for batch in batches:
        inputs, truth = batch[:c.input_frames].to(device), batch[c.input_frames:c.input_frames + c.output_frames]
        preds = {"model": model.predict(inputs).cpu()}
        if baselines:
            preds.update({"copy last frame": copy_last_frame(inputs.cpu(), c.output_frames),
                          "mean frame": mean_frame(inputs.cpu(), c.output_frames)})
        B = batch.shape[1]
        for name, pred in preds.items():
            m = frame_metrics(pred, truth)
            acc = sums.setdefault(name, {k: np.zeros(c.output_frames) for k in m})
            for k, v in m.items():
                acc[k] += v * B
        count += B
    return {name: {k: (v / count).tolist() for k, v in m.items()} for name, m in sums.items()}


def metrics_table(results: Dict[str, Dict[str, List[float]]]) -> str:
    """Markdown: one row per predictor, the per-pixel MSE, BCE and SSIM averaged over the future frames,
    then MSE at the first and the last future frame."""
    lines = ["| predictor | MSE ↓ | BCE ↓ | SSIM ↑ | MSE frame 1 | MSE last frame |", "|---|---|---|---|---|---|"]
    for name, m in results.items():
        lines.append(f"| {name} | {np.mean(m['mse']):.4f} | {np.mean(m['bce']):.4f} | {np.mean(m['ssim']):.3f} | "
                     f"{m['mse'][0]:.4f} | {m['mse'][-1]:.4f} |")
    return "\n".join(lines)


def save_strip(path, inputs: Tensor, truth: Tensor, pred: Tensor, title: str = "") -> None:
    """PNG with three rows: input frames | true future | predicted future. Tensors (T, C, S, S) of one sequence."""
    plt = pyplot(extra="vision", purpose="the frame strip")

    rows = [("input", inputs), ("truth", truth), ("prediction", pred)]
    cols = max(r[1].shape[0] for r in rows)
    fig, axes = plt.subplots(3, cols, figsize=(cols * 1.1, 3.6), squeeze=False)
    for r, (label, frames) in enumerate(rows):
        for j in range(cols):
            ax = axes[r][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < frames.shape[0]:
                ax.imshow(frames[j, 0].detach().cpu().numpy(), cmap="gray", vmin=0, vmax=1)
            else:
                ax.axis("off")
            if j == 0:
                ax.set_ylabel(label, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def save_gif(path, inputs: Tensor, truth: Tensor, pred: Tensor, frame_ms: int = 200) -> None:
    """Animated GIF, truth | prediction side by side (the inputs play on both sides first)."""
    Image = require("PIL.Image", extra="vision", purpose="GIFs")

    def img(left: Tensor, right: Tensor) -> Image.Image:
        a = (torch.cat([left[0], torch.ones_like(left[0][:, :2]), right[0]], dim=1).clamp(0, 1) * 255).byte()
        return Image.fromarray(a.cpu().numpy(), mode="L").resize((a.shape[1] * 3, a.shape[0] * 3), Image.NEAREST)

    frames = [img(x, x) for x in inputs] + [img(t, p) for t, p in zip(truth, pred)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=frame_ms, loop=0)


def plot_per_frame(path, results: Dict[str, Dict[str, List[float]]]) -> None:
    """Per-frame MSE and SSIM of every predictor."""
    plt = pyplot(extra="vision", purpose="the per-frame plot")

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for name, m in results.items():
        xs = range(1, len(m["mse"]) + 1)
        axes[0].plot(xs, m["mse"], marker="o", label=name)
        axes[1].plot(xs, m["ssim"], marker="o", label=name)
    axes[0].set(xlabel="future frame", ylabel="MSE per pixel", title="MSE (lower is better)")
    axes[1].set(xlabel="future frame", ylabel="SSIM", title="SSIM (higher is better)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
