"""Video classification: a CNN turns each frame into a vector, an RNN runs over the vectors (LRCN, Donahue et al.
2015), next to the two models it is measured against.

    lrcn          v_t = encoder(x_t)              (B, F)      the same CNN on every frame
                  y, _ = RNN(v_1 … v_T)           (T, B, H)   rnnkit.LSTM or rnnkit.GRU
                  z = W y_T + b                   (B, K)
    single_frame  z = W encoder(mean_t x_t) + b   (B, K)      the same CNN on the clip's mean frame
    convlstm      m_t = stem(x_t)                 (B, c, s, s) the encoder's convolutions, no flattening
                  h, _ = ConvLSTM(m_1 … m_T)      (T, B, Hc, s, s)
                  z = W maxpool(h_T) + b          (B, K)      Hc matched to the lrcn's parameter count
                  (the maximum over the map, not the mean: averaged, the motion features of opposite
                  signs cancel and the model stayed at chance for 400 steps)

The encoder of `LRCN` and `SingleFrameCNN` can be any nn.Module mapping frames (N, C, S, S) to vectors
(N, F) (a torchvision trunk, say); `ClipConfig` builds the small default one (`FrameEncoder`) so that a
run directory rebuilds its model from JSON. Frames come time-major: (T, B, C, S, S) in [0, 1].
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, Iterable, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..checks import check_choice, check_positive_ints
from ..errors import InputError
from ..layers import GRU, LSTM
from ..layers_conv import ConvLSTM

CLIP_MODELS = ("lrcn", "single_frame", "convlstm")
CLIP_CELLS = ("lstm", "gru")


class FrameEncoder(nn.Module):
    """Two stride-2 3×3 convolutions with ReLU (`stem`: (N, C, S, S) → (N, c, ⌈S/4⌉, ⌈S/4⌉)), then flatten →
    Linear → ReLU: forward(frames (N, C, S, S)) → (N, F). Flattening keeps where things are, which a
    pooled encoder would lose."""

    def __init__(self, channels: int, stem_channels: int, frame_size: int, feature_size: int) -> None:
        super().__init__()
        half = max(1, stem_channels // 2)
        self.stem = nn.Sequential(nn.Conv2d(channels, half, 3, stride=2, padding=1), nn.ReLU(),
                                  nn.Conv2d(half, stem_channels, 3, stride=2, padding=1), nn.ReLU())
        self.grid = -(-(-(-frame_size // 2)) // 2)  # ⌈⌈S/2⌉/2⌉, the stem's output size
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(stem_channels * self.grid ** 2, feature_size),
                                      nn.ReLU())

    def forward(self, frames: Tensor) -> Tensor:
        return self.features(self.stem(frames))


def _per_frame(module: nn.Module, frames: Tensor) -> Tensor:
    """module applied to every frame of (T, B, C, S, S): (T, B, ...)."""
    T, B = frames.shape[:2]
    return module(frames.flatten(0, 1)).unflatten(0, (T, B))


class LRCN(nn.Module):
    """Per-frame encoder → LSTM/GRU → linear head on the last step (see the module docstring).

    forward(frames (T, B, C, S, S)) → logits (B, K). `encoder`: any module (N, C, S, S) → (N, feature_size).
    """

    def __init__(self, encoder: nn.Module, feature_size: int, num_classes: int, cell: str = "lstm",
                 hidden_size: int = 64) -> None:
        super().__init__()
        check_choice("cell", cell, CLIP_CELLS, owner="LRCN")
        self.encoder = encoder
        self.rnn = (LSTM if cell == "lstm" else GRU)(feature_size, hidden_size)
        self.head = nn.Linear(hidden_size, num_classes)

    def forward(self, frames: Tensor) -> Tensor:
        y, _ = self.rnn(_per_frame(self.encoder, frames))  # (T, B, H)
        return self.head(y[-1])


class SingleFrameCNN(nn.Module):
    """The baseline that sees no time: the encoder on the clip's mean frame → linear head.
    forward(frames (T, B, C, S, S)) → logits (B, K)."""

    def __init__(self, encoder: nn.Module, feature_size: int, num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(feature_size, num_classes)

    def forward(self, frames: Tensor) -> Tensor:
        return self.head(self.encoder(frames.mean(0)))


class ConvLSTMClassifier(nn.Module):
    """Convolutional stem per frame → ConvLSTM over the maps → last state max-pooled over space → linear head.
    forward(frames (T, B, C, S, S)) → logits (B, K). `stem`: any module (N, C, S, S) → (N, stem_channels, s, s)."""

    def __init__(self, stem: nn.Module, stem_channels: int, hidden_channels: int, num_classes: int,
                 kernel_size: int = 3) -> None:
        super().__init__()
        self.stem = stem
        self.rnn = ConvLSTM(stem_channels, hidden_channels, kernel_size)
        self.head = nn.Linear(hidden_channels, num_classes)

    def forward(self, frames: Tensor) -> Tensor:
        h, _ = self.rnn(_per_frame(self.stem, frames))  # (T, B, Hc, s, s)
        return self.head(h[-1].amax(dim=(-2, -1)))


@dataclass
class ClipConfig:
    """A clip classifier as JSON: which model, its sizes. convlstm_channels None: the Hc whose
    ConvLSTMClassifier has about as many parameters as the lrcn of the same sizes (filled in)."""

    frame_size: int = 32
    num_classes: int = 8
    model: str = "lrcn"
    cell: str = "lstm"
    channels: int = 1
    stem_channels: int = 16
    feature_size: int = 64
    hidden_size: int = 64
    convlstm_channels: Optional[int] = None

    def __post_init__(self) -> None:
        check_positive_ints(self, ("frame_size", "channels", "stem_channels", "feature_size", "hidden_size"),
                            owner="ClipConfig")
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) or self.num_classes < 2:
            raise InputError(f"ClipConfig: num_classes must be an int >= 2; got {self.num_classes!r}")
        check_choice("model", self.model, CLIP_MODELS, owner="ClipConfig")
        check_choice("cell", self.cell, CLIP_CELLS, owner="ClipConfig")
        if self.convlstm_channels is None:
            self.convlstm_channels = matched_convlstm_channels(self)
        check_positive_ints(self, ("convlstm_channels",), owner="ClipConfig")

    def to_dict(self) -> Dict:
        return asdict(self)


def frame_encoder(c: ClipConfig) -> FrameEncoder:
    return FrameEncoder(c.channels, c.stem_channels, c.frame_size, c.feature_size)


def build_clip_model(c: ClipConfig) -> nn.Module:
    """The model `c` describes, freshly initialised."""
    encoder = frame_encoder(c)
    if c.model == "lrcn":
        return LRCN(encoder, c.feature_size, c.num_classes, c.cell, c.hidden_size)
    if c.model == "single_frame":
        return SingleFrameCNN(encoder, c.feature_size, c.num_classes)
    return ConvLSTMClassifier(encoder.stem, c.stem_channels, c.convlstm_channels, c.num_classes)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def matched_convlstm_channels(c: ClipConfig) -> int:
    """The hidden channels Hc with which the convlstm model's parameter count is nearest the lrcn's."""
    target = count_parameters(LRCN(frame_encoder(c), c.feature_size, c.num_classes, c.cell, c.hidden_size))

    def size(hc: int) -> int:  # stem + ConvLSTM (4Hc·(c + Hc)·9 weights + biases) + head
        return count_parameters(ConvLSTMClassifier(nn.Identity(), c.stem_channels, hc, c.num_classes)) + \
            count_parameters(frame_encoder(c).stem)

    low, high = 1, 1
    while size(high) < target:  # the sizes grow with Hc: double, then bisect
        low, high = high, high * 2
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if size(mid) < target else (low, mid)
    return min((low, high), key=lambda hc: abs(size(hc) - target))


class ClipTask:
    """Cross-entropy summed over the clips of a batch {"frames": (T, B, C, S, S), "labels": (B,)}."""

    def loss(self, model: nn.Module, batch: Dict[str, Tensor], state=None):
        from ..training.trainer import LossResult
        labels = batch["labels"]
        loss = F.cross_entropy(model(batch["frames"]).float(), labels, reduction="sum")
        return LossResult(loss, labels.numel(), labels.numel())


@torch.no_grad()
def predict_labels(model: nn.Module, frames: Tensor) -> Tensor:
    """Class ids (B,) of clips (T, B, C, S, S)."""
    model.eval()
    return model(frames).argmax(-1)


def accuracy(model: nn.Module, batches: Iterable[Dict[str, Tensor]],
             device: Optional[torch.device] = None) -> Tuple[float, Tensor, Tensor]:
    """(accuracy, predicted (N,), true (N,)) over `batches` of labelled clips."""
    device = device or next(model.parameters()).device
    predicted, true = [], []
    for batch in batches:
        predicted.append(predict_labels(model, batch["frames"].to(device)).cpu())
        true.append(batch["labels"])
    p, t = torch.cat(predicted), torch.cat(true)
    return float((p == t).float().mean()), p, t
