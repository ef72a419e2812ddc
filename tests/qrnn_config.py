"""QRNNConfig: a QRNN layer for the shared comparison helpers (tests/helpers.py), which know single-state
layers; QRNN's state is (c, window)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import torch

import rnnkit
from helpers import LayerConfig


@dataclass(frozen=True)
class QRNNConfig(LayerConfig):
    """A QRNN layer for the shared comparison helpers: its state is (c, window)."""

    mode: str = "QRNN"
    window: int = 2
    pooling: str = "fo"

    @property
    def state_sizes(self) -> Tuple[int, ...]:
        G = {"f": 2, "fo": 3, "ifo": 4}[self.pooling]
        H = self.hidden_size
        return (H, (self.window - 1) * G * H) if self.window > 1 else (H,)

    def build(self, backend: str = "reference", seed: int = 0) -> rnnkit.Recurrent:
        torch.manual_seed(seed)
        return rnnkit.QRNN(self.input_size, self.hidden_size, self.num_layers, self.window, self.pooling,
                           self.bidirectional, self.batch_first, self.dropout, bias=self.bias, dtype=self.dtype,
                           backend=backend, **dict(self.options))
