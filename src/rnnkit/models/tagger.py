"""Many-to-many aligned tagging: embedding → stacked bidirectional recurrent encoder → per-token softmax.

    e = Embed(tokens)                               (B, T, E)    training: a word becomes <unk> with p = word_dropout
                                                                 (and α / (α + its count), word_dropout_alpha)
    e = [e, CharWords(chars)]                       (B, T, E+C)  with character features (see char_words.py)
    y, _ = Recurrent(cell, bidirectional)(e, lengths=lengths)   (B, T, 2H)
    z_t = W y_t + b                                 (B, T, K)    loss: CE over valid tokens only

Metrics: token accuracy; for BIO tag sets, entity-level precision / recall / F1
(conlleval / seqeval default semantics: an entity starts at B-X, or at I-X after
a tag that is not X; it ends before the next tag that is not I-X; it counts only
when type and both boundaries match).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence, Set, Tuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..data.labelled import IGNORE
from ..checks import check_choice, check_positive_ints
from .char_words import CHAR_FEATURES, CharWords
from .token_encoder import TokenEncoderModel, check_cell_and_dropout
from ..errors import InputError


@dataclass
class TaggerConfig:
    vocab_size: int
    num_tags: int
    cell: str = "lstm"
    embedding_size: int = 100
    hidden_size: int = 128
    num_layers: int = 2
    bidirectional: bool = True
    dropout: float = 0.2
    #: character-level word representations: "none", "cnn" or "bilstm" (see char_words.py)
    char_features: str = "none"
    num_chars: int = 0
    char_embedding_size: int = 32
    #: CNN filters, or BiLSTM units per direction
    char_hidden_size: int = 50
    #: training only: the probability that a word id becomes <unk> (see token_encoder.py)
    word_dropout: float = 0.0
    #: training only: α > 0 also reads a word seen n times in training as <unk> with p = α / (α + n)
    word_dropout_alpha: float = 0.0

    def __post_init__(self) -> None:
        check_positive_ints(self, ("vocab_size", "num_tags", "embedding_size", "hidden_size", "num_layers",
                                   "char_embedding_size", "char_hidden_size"))
        check_cell_and_dropout(self)
        check_choice("char_features", self.char_features, CHAR_FEATURES)
        if self.char_features != "none" and self.num_chars < 2:
            raise InputError(f"character features need a character vocabulary (num_chars >= 2); got {self.num_chars}")

    def to_dict(self) -> dict:
        return asdict(self)


class SequenceTagger(TokenEncoderModel):
    """forward(tokens (B, T), lengths (B,)[, chars (B, T, L)]) → logits (B, T, K); rows past a sequence's length
    are meaningless. `chars` (each word's character ids) is required with character features."""

    def __init__(self, config: TaggerConfig) -> None:
        chars = None
        if config.char_features != "none":
            chars = CharWords(config.char_features, config.num_chars, config.char_embedding_size,
                              config.char_hidden_size)
        super().__init__(config, chars.width if chars is not None else 0)
        self.chars = chars
        self.head = nn.Linear(self.encoder_width, config.num_tags)

    def forward(self, tokens: Tensor, lengths: Tensor, chars: Optional[Tensor] = None) -> Tensor:
        features = None
        if self.chars is not None:
            if chars is None:
                raise InputError("this tagger reads each word's characters: pass chars (batch, time, letters)")
            valid = torch.arange(tokens.shape[1], device=tokens.device)[None, :] < lengths.to(tokens.device)[:, None]
            features = self.chars(chars, valid)  # (B, T, C)
        y = self.encode(tokens, lengths, features)  # (B, T, D·H)
        return self.head(self.drop(y))


class TagTask:
    """Cross-entropy summed over valid tokens (labels IGNORE at padding); in evaluation the correctly
    tagged tokens are counted too (val_accuracy)."""

    def loss(self, model: nn.Module, batch: Dict[str, Tensor], state=None):
        from ..training.trainer import LossResult
        z = model(batch["tokens"], batch["lengths"], batch.get("chars"))
        y = batch["labels"]
        loss = F.cross_entropy(z.float().flatten(0, 1), y.flatten(), ignore_index=IGNORE, reduction="sum")
        sums = None if model.training else {"accuracy": (z.argmax(-1) == y).sum()}  # IGNORE is never predicted
        return LossResult(loss, (y != IGNORE).sum(), y.shape[0], None, sums)


# ------------------------------------------------------------------ BIO entities
def is_bio(tags: Sequence[str]) -> bool:
    """True when every tag is O or B-X / I-X (and at least one B- or I- occurs)."""
    return any(t[:2] in ("B-", "I-") for t in tags) and all(t == "O" or t[:2] in ("B-", "I-") for t in tags)


def bio_entities(tags: Sequence[str]) -> Set[Tuple[str, int, int]]:
    """Entities (type, start, end exclusive) of one tag sequence (conlleval semantics)."""
    out: Set[Tuple[str, int, int]] = set()
    kind, start = None, 0
    for i, t in enumerate(list(tags) + ["O"]):
        prefix, typ = (t[:1], t[2:]) if t[:2] in ("B-", "I-") else ("O", None)
        continues = prefix == "I" and typ == kind
        if kind is not None and not continues:
            out.add((kind, start, i))
            kind = None
        if prefix == "B" or (prefix == "I" and not continues):
            kind, start = typ, i
    return out


def entity_scores(true: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> Dict[str, float]:
    """Micro precision, recall, F1 over entities of all sentences."""
    tp = n_true = n_pred = 0
    for k, (t, p) in enumerate(zip(true, pred)):
        if len(t) != len(p):
            raise InputError(f"sentence {k}: {len(t)} true tags but {len(p)} predicted")
        et, ep = bio_entities(t), bio_entities(p)
        tp += len(et & ep)
        n_true += len(et)
        n_pred += len(ep)
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_true if n_true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"entity_precision": precision, "entity_recall": recall, "entity_f1": f1}


@torch.no_grad()
def predict_tags(model: SequenceTagger, loader) -> Tuple[List[List[int]], List[List[int]]]:
    """(true, predicted) tag ids per sentence over one pass of a SequenceLoader."""
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    true, pred = [], []
    try:
        for b in loader.batches(0, 0):
            chars = b["chars"].to(device) if "chars" in b else None
            z = model(b["tokens"].to(device), b["lengths"].to(device), chars).argmax(-1).cpu()
            for r, n in enumerate(b["lengths"].tolist()):
                true.append(b["labels"][r, :n].tolist())
                pred.append(z[r, :n].tolist())
    finally:
        model.train(was)
    return true, pred
