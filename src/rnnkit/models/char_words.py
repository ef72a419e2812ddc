"""Character-level word representations: one vector per word from its characters, concatenated with the word
embedding, so a word outside the vocabulary is still seen by its spelling (Plank, Søgaard & Goldberg 2016;
Lample et al. 2016; Ma & Hovy 2016 for the CNN).

    c = CharEmbed(chars)                              (N, L, C)   N words, L characters, 0 is padding
    cnn:    v = max over valid l of ReLU(Conv1d_k(c))  (N, F)      F filters, kernel k, zero-padded ends
    bilstm: y = BiLSTM(c, lengths);  v = [y_fwd at the last character, y_bwd at the first]   (N, 2F)

`CharWords(chars (B, T, L), valid (B, T))` → (B, T, width), zero for padded words.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..cells.registry import make_cell
from ..errors import InputError
from ..recurrent import Recurrent
from .classify import pool

CHAR_FEATURES = ("none", "bilstm", "cnn")
#: the CNN's window of characters
KERNEL = 3


class CharWords(nn.Module):
    """Per-word vectors from character ids: a character CNN (max over time) or a character BiLSTM (final states).

    kind "cnn": `hidden_size` filters, width hidden_size; "bilstm": hidden_size units per direction, width 2H."""

    def __init__(self, kind: str, num_chars: int, embedding_size: int, hidden_size: int) -> None:
        super().__init__()
        if kind not in CHAR_FEATURES[1:]:
            raise InputError(f"character features must be one of {CHAR_FEATURES[1:]}; got {kind!r}")
        self.kind = kind
        self.embedding = nn.Embedding(num_chars, embedding_size, padding_idx=0)
        if kind == "cnn":
            self.conv = nn.Conv1d(embedding_size, hidden_size, KERNEL, padding=KERNEL // 2)
            self.width = hidden_size
        else:
            self.rnn = Recurrent(lambda size: make_cell("lstm", size, hidden_size), 1, bidirectional=True,
                                 batch_first=True, input_size=embedding_size)
            self.width = 2 * hidden_size

    def forward(self, chars: Tensor, valid: Tensor) -> Tensor:
        """chars (B, T, L) int64, valid (B, T) bool → (B, T, width); only valid words are computed, each distinct
        one once."""
        B, T, L = chars.shape
        # a batch repeats its common words ("the", ","): each distinct spelling is computed once
        words, inverse = torch.unique(chars[valid], dim=0, return_inverse=True)  # (N, L), (valid words,)
        lengths = (words != 0).sum(1).clamp(min=1)  # (N,) a word of no known character still has one step
        e = self.embedding(words)  # (N, L, C)
        if self.kind == "cnn":
            h = torch.relu(self.conv(e.transpose(1, 2))).transpose(1, 2)  # (N, L, F)
            v = pool(h, lengths, "max")
        else:
            y, _ = self.rnn(e, lengths=lengths)  # (N, L, 2H)
            v = pool(y, lengths, "last", num_directions=2)
        out = v.new_zeros(B, T, self.width)
        out[valid] = v[inverse]
        return out
