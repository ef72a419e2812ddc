"""Many-to-one sequence classification: embedding → (bidirectional) recurrent encoder → pooling → head.

    e = Embed(tokens)                               (B, T, E)
    y, _ = Recurrent(cell)(e, lengths=lengths)      (B, T, D·H)   padded steps are never read
    v = pool(y, lengths)                            (B, D·H)
        last: forward half at step lengths−1, backward half at step 0 (each direction's final state)
        mean: mean over valid steps;  max: max over valid steps;  max+mean: [max, mean]  (B, 2·D·H)
        attention: a = softmax over valid t of w·tanh(A y_t + b);  v = Σ_t a_t y_t   (Yang et al. 2016)
    sigmoid objective: z = w·v + b (B,),  loss = BCE(σ(z), label)      (two classes)
    softmax objective: z = W v + b (B, K), loss = CE(softmax(z), label)
    v is dropped out with p = pooled_dropout (default: dropout) before the head (Kim 2014 uses 0.5).

An ensemble (`ensemble = k > 1`, `ClassifierEnsemble`) holds k such models with their own initial weights:
in training each member learns from its own loss (the loss is the mean of the members'); its output is the
average of the members' probabilities, as logits: log(p̄/(1−p̄)) (sigmoid) or log p̄ (softmax).

Variable lengths go through the core `lengths=` path: no packing in user code.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .._optional import pyplot, require
from ..checks import check_choice, check_int, check_positive_ints, check_probability
from .token_encoder import TokenEncoderModel, check_cell_and_dropout
from ..errors import InputError

POOLINGS = ("last", "mean", "max", "max+mean", "attention")
OBJECTIVES = ("sigmoid", "softmax")


def pool(y: Tensor, lengths: Tensor, how: str, num_directions: int = 1, scores: Optional[Tensor] = None
         ) -> Tensor:
    """Pool encoder outputs y (B, T, D·H) over the valid steps given by lengths (B,) → (B, D·H); "attention"
    weighs the steps by the softmax of `scores` (B, T) over valid steps.

    Padded positions never count, whatever values they hold.
    """
    B, T, W = y.shape
    lengths = lengths.to(y.device)
    valid = torch.arange(T, device=y.device)[None, :] < lengths[:, None]  # (B, T)
    if how == "attention":
        if scores is None:
            raise InputError("attention pooling needs a score for each step")
        a = torch.softmax(scores.masked_fill(~valid, float("-inf")), dim=1)  # (B, T)
        return (a[..., None] * y.masked_fill(~valid[..., None], 0.0)).sum(1)
    if how == "mean":
        return (y * valid[..., None]).sum(1) / lengths[:, None].to(y.dtype)
    if how == "max+mean":
        return torch.cat([pool(y, lengths, "max"), pool(y, lengths, "mean")], dim=-1)  # (B, 2·D·H)
    if how == "max":
        return y.masked_fill(~valid[..., None], float("-inf")).max(1).values
    if how == "last":
        H = W // num_directions
        fwd = y[torch.arange(B, device=y.device), lengths - 1, :H]  # the forward direction ends at the last step
        if num_directions == 1:
            return fwd
        return torch.cat([fwd, y[:, 0, H:]], dim=-1)  # the backward direction ends at step 0
    raise InputError(f"pooling must be one of {POOLINGS}; got {how!r}")


@dataclass
class ClassifierConfig:
    vocab_size: int
    num_classes: int
    objective: str = "softmax"
    pooling: str = "mean"
    cell: str = "lstm"
    embedding_size: int = 64
    hidden_size: int = 128
    num_layers: int = 1
    bidirectional: bool = True
    dropout: float = 0.0
    #: training only: the probability that a token id becomes <unk> (see token_encoder.py)
    word_dropout: float = 0.0
    #: dropout on the pooled vector before the head; None: `dropout`
    pooled_dropout: Optional[float] = None
    #: models trained side by side whose probabilities are averaged (1: a single model)
    ensemble: int = 1

    def __post_init__(self) -> None:
        check_positive_ints(self, ("vocab_size", "embedding_size", "hidden_size", "num_layers"))
        check_int("num_classes", self.num_classes, minimum=2)
        check_choice("objective", self.objective, OBJECTIVES)
        if self.objective == "sigmoid" and self.num_classes != 2:
            raise InputError(f"the sigmoid objective is for two classes; got {self.num_classes} (use softmax)")
        check_choice("pooling", self.pooling, POOLINGS)
        check_cell_and_dropout(self)
        if self.pooled_dropout is not None:
            check_probability("pooled_dropout", self.pooled_dropout)
        check_int("ensemble", self.ensemble, minimum=1)

    def to_dict(self) -> dict:
        return asdict(self)


class SequenceClassifier(TokenEncoderModel):
    """forward(tokens (B, T) int64, lengths (B,)) → logits: (B,) for sigmoid, (B, K) for softmax."""

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__(config)
        W = self.encoder_width
        pooled = 2 * W if config.pooling == "max+mean" else W
        self.head = nn.Linear(pooled, 1 if config.objective == "sigmoid" else config.num_classes)
        p = config.dropout if config.pooled_dropout is None else config.pooled_dropout
        self.pooled_drop = nn.Dropout(p)
        # attention pooling's scorer: w·tanh(A y_t + b), one score per step
        self.attention = (nn.Sequential(nn.Linear(W, W), nn.Tanh(), nn.Linear(W, 1, bias=False))
                          if config.pooling == "attention" else None)

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        y = self.encode(tokens, lengths)  # (B, T, D·H)
        scores = self.attention(y).squeeze(-1) if self.attention is not None else None  # (B, T)
        v = pool(y, lengths, self.config.pooling, 2 if self.config.bidirectional else 1, scores)
        z = self.head(self.pooled_drop(v))
        return z.squeeze(-1) if self.config.objective == "sigmoid" else z

    def member_logits(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        """The logits of each member, (1, B) or (1, B, K): a single model is an ensemble of one."""
        return self(tokens, lengths)[None]

    @torch.no_grad()
    def predict(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        """Class ids (B,)."""
        z = self(tokens, lengths)
        return (z > 0).long() if self.config.objective == "sigmoid" else z.argmax(-1)


class ClassifierEnsemble(nn.Module):
    """`config.ensemble` SequenceClassifiers (`members`), each with its own initial weights; forward gives the
    logits of their averaged probabilities, so predict, probabilities and the loss read it as one model."""

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.config = config
        member = ClassifierConfig(**{**config.to_dict(), "ensemble": 1})
        self.members = nn.ModuleList(SequenceClassifier(member) for _ in range(config.ensemble))

    def member_logits(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        """Each member's logits: (k, B) for sigmoid, (k, B, K) for softmax."""
        return torch.stack([m(tokens, lengths) for m in self.members])

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        """tokens (B, T), lengths (B,) → logits of the mean probability: (B,) sigmoid, (B, K) softmax."""
        z = self.member_logits(tokens, lengths).float()
        if self.config.objective == "sigmoid":  # log p̄ − log(1 − p̄) from each member's log σ(z) and log σ(−z)
            return torch.logsumexp(F.logsigmoid(z), 0) - torch.logsumexp(F.logsigmoid(-z), 0)
        return torch.logsumexp(torch.log_softmax(z, -1), 0) - math.log(len(self.members))  # log p̄

    predict = SequenceClassifier.predict


def build_classifier(config: ClassifierConfig) -> nn.Module:
    """A SequenceClassifier, or a ClassifierEnsemble when config.ensemble > 1."""
    return ClassifierEnsemble(config) if config.ensemble > 1 else SequenceClassifier(config)


class ClassifyTask:
    """Summed BCE (sigmoid) or CE (softmax) over the examples of a batch. In training an ensemble's loss is the
    mean of its members' losses (each member learns on its own); in evaluation it is the averaged model's,
    and the correct predictions are counted too (val_accuracy)."""

    def loss(self, model: nn.Module, batch: Dict[str, Tensor], state=None):
        from ..training.trainer import LossResult
        inner = model.module if hasattr(model, "module") else model
        y = batch["labels"]
        if model.training:  # classify trains in one process, so no DDP wrapper is bypassed here
            z = inner.member_logits(batch["tokens"], batch["lengths"])  # (k, B[, K])
        else:
            z = model(batch["tokens"], batch["lengths"])[None]
        if inner.config.objective == "sigmoid":
            loss = F.binary_cross_entropy_with_logits(z.float(), y.float().expand(z.shape), reduction="sum")
        else:
            loss = F.cross_entropy(z.float().flatten(0, 1), y.repeat(z.shape[0]), reduction="sum")
        sums = None
        if not model.training:  # val_accuracy beside val_loss: what a classifier is chosen by
            predicted = (z[0] > 0).long() if inner.config.objective == "sigmoid" else z[0].argmax(-1)
            sums = {"accuracy": (predicted == y).sum()}
        return LossResult(loss / z.shape[0], y.numel(), y.shape[0], None, sums)


# ------------------------------------------------------------------ metrics
def classification_scores(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> Dict[str, float]:
    """accuracy, macro F1 and (two classes) F1 of class 1."""
    metrics = require("sklearn.metrics", extra="nlp", purpose="classification scores")
    accuracy_score, f1_score = metrics.accuracy_score, metrics.f1_score
    out = {"accuracy": float(accuracy_score(y_true, y_pred)),
           "macro_f1": float(f1_score(y_true, y_pred, average="macro", labels=list(range(num_classes)),
                                      zero_division=0))}
    if num_classes == 2:
        out["f1"] = float(f1_score(y_true, y_pred, pos_label=1, zero_division=0))
    return out


def plot_confusion(path, y_true: np.ndarray, y_pred: np.ndarray, labels: List[str], title: str = "") -> np.ndarray:
    """Write a confusion-matrix PNG (rows: true, columns: predicted); returns the matrix."""
    plt = pyplot(extra="nlp", purpose="the confusion-matrix plot")
    confusion_matrix = require("sklearn.metrics", extra="nlp", purpose="the confusion matrix").confusion_matrix
    cm = confusion_matrix(y_true, y_pred, labels=list(range(len(labels))))
    k = len(labels)
    fig, ax = plt.subplots(figsize=(2.5 + 0.45 * k, 2.2 + 0.45 * k))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(k), labels, rotation=45 if k > 4 else 0, ha="right" if k > 4 else "center", fontsize=8)
    ax.set_yticks(range(k), labels, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top = cm.max() if cm.size else 1
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7 if k > 8 else 9,
                    color="white" if cm[i, j] > top / 2 else "black")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return cm
