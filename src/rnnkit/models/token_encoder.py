"""The token encoder shared by the sequence classifier and the sequence tagger.

    e = Embed(tokens)                                   (B, T, E)   index 0 is padding; in training a token
                                                                    is <unk> with p = word_dropout, and (with
                                                                    word_dropout_alpha α > 0) also with
                                                                    α / (α + its training count)
    e = [e, features]                                   (B, T, E+F) when a model adds per-token features
    y, _ = Recurrent(cell)(dropout(e), lengths=lengths) (B, T, D·H) batch-first, D = 2 when bidirectional

Each model adds its own head on `y`. The submodules keep the names `embedding`, `encoder` and `drop`,
which checkpoints (state_dict keys) and the ONNX exporter rely on.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch
from torch import Tensor, nn

from ..data.labelled import PAD, UNK
from ..recurrent import Recurrent
from ..checks import check_positive_ints, check_probability  # noqa: F401 (check_positive_ints: its old home)
from ..cells.registry import check_cell, make_cell
from ..errors import InputError


def check_cell_and_dropout(config: Any) -> None:
    """Raise ValueError when `config.cell` is not in CELLS or `config.dropout` (or word_dropout) is outside [0, 1)."""
    check_cell(config.cell)
    check_probability("dropout", config.dropout)
    check_probability("word_dropout", getattr(config, "word_dropout", 0.0))
    alpha = getattr(config, "word_dropout_alpha", 0.0)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not (alpha >= 0 and math.isfinite(alpha)):
        raise InputError(f"word_dropout_alpha must be a finite number >= 0; got {alpha!r}")


class TokenEncoderModel(nn.Module):
    """Base of the token models: embedding → dropout → batch-first Recurrent encoder.

    `config` needs vocab_size, embedding_size, cell, hidden_size, num_layers, bidirectional and dropout
    (already validated), and may have word_dropout: in training, the probability that a token is read as
    <unk>, and word_dropout_alpha α: a token seen n times in training is also read as <unk> with probability
    α / (α + n) (Plank, Søgaard & Goldberg 2016: rare words most often; the counts come from
    `set_word_counts`). Subclasses build their head on `encoder_width` features; one that adds `feature_size`
    features per token to the embedding passes them to `encode`.
    """

    def __init__(self, config: Any, feature_size: int = 0) -> None:
        super().__init__()
        self.config = c = config
        self.embedding = nn.Embedding(c.vocab_size, c.embedding_size, padding_idx=0)
        self.encoder = Recurrent(lambda size: make_cell(c.cell, size, c.hidden_size), c.num_layers,
                                 bidirectional=c.bidirectional, batch_first=True, dropout=c.dropout,
                                 input_size=c.embedding_size + feature_size)
        self.drop = nn.Dropout(c.dropout)
        # training only, so not in the checkpoint: prepare sets it again when a run resumes
        self.register_buffer("word_drop_prob", None, persistent=False)

    def set_word_counts(self, counts: Tensor) -> None:
        """counts (vocab_size,): how often each token id occurs in the training data; with word_dropout_alpha α
        a token seen n > 0 times is read as <unk> in training with probability α / (α + n)."""
        if counts.shape != (self.config.vocab_size,):
            raise InputError(f"word counts must have shape ({self.config.vocab_size},); got {tuple(counts.shape)}")
        alpha = getattr(self.config, "word_dropout_alpha", 0.0)
        counts = counts.to(self.embedding.weight.device, torch.float32)
        self.word_drop_prob = torch.where(counts > 0, alpha / (alpha + counts), torch.zeros_like(counts))

    @property
    def encoder_width(self) -> int:
        """D·H: the feature size of the encoder outputs, both directions side by side."""
        return self.encoder.output_size * (2 if self.config.bidirectional else 1)

    def encode(self, tokens: Tensor, lengths: Tensor, features: Optional[Tensor] = None) -> Tensor:
        """tokens (B, T) int64, lengths (B,) [, features (B, T, F)] → encoder outputs y (B, T, D·H), zero at
        padded steps."""
        if tokens.dim() != 2:
            raise InputError(f"{type(self).__name__} expects tokens of shape (batch, time); got {tuple(tokens.shape)}")
        if self.training:  # the model learns to read a rare word from its context (and characters)
            tokens = self.drop_words(tokens)
        e = self.embedding(tokens)
        if features is not None:
            e = torch.cat([e, features.to(e.dtype)], dim=-1)
        y, _ = self.encoder(self.drop(e), lengths=lengths)
        return y

    def drop_words(self, tokens: Tensor) -> Tensor:
        """tokens (B, T) with each token read as <unk> at random (word_dropout, word_dropout_alpha); padding
        stays."""
        p = getattr(self.config, "word_dropout", 0.0)
        if getattr(self.config, "word_dropout_alpha", 0.0) > 0:
            if self.word_drop_prob is None:
                raise InputError(f"{type(self).__name__}: word_dropout_alpha needs the training counts of the "
                                 f"words: call set_word_counts(counts) before training")
            p = 1 - (1 - p) * (1 - self.word_drop_prob[tokens])  # either drop: (B, T)
        elif p == 0:
            return tokens
        return tokens.masked_fill((torch.rand(tokens.shape, device=tokens.device) < p) & (tokens != PAD), UNK)
