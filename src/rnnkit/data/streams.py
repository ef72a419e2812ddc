"""Stateful streams for truncated BPTT: a token sequence cut into B parallel streams.

The layout of Karpathy's char-rnn and Zaremba et al.'s PTB code: the corpus is
split into B contiguous streams (one per batch row) and walked in chunks of k1
steps, so row b of chunk j+1 continues exactly where row b of chunk j stopped and
the trainer can carry the hidden state across chunks.

Documents (a directory of files) become a queue per stream: each document starts
at a chunk boundary, its last chunk is padded (targets `IGNORE_INDEX`), and
`reset[b]` marks a chunk whose stream b starts a new document, so the carried
state of that row is zeroed there.

Data-parallel ranks take disjoint row blocks of one global layout, so
`world_size` processes with batch B see exactly the rows of one process with
batch world_size·B.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence

import torch
from torch import Tensor

from ..checks import check_int
from ..errors import InputError

#: target value that contributes no loss (torch's cross_entropy default).
IGNORE_INDEX = -100


@dataclass
class StreamBatch:
    """One chunk of B parallel streams, time-major.

    inputs:  (T, B) token ids (or (T, B, F) features).
    targets: (T, B) next tokens, IGNORE_INDEX where no loss is taken; None when
             the chunk only advances the state (truncated-BPTT context).
    reset:   (B,) bool, True where the stream starts a new document at step 0
             of this chunk (its carried state must be zeroed first); None = no resets.
    """

    inputs: Tensor
    targets: Optional[Tensor]
    reset: Optional[Tensor] = None

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    @property
    def batch_size(self) -> int:
        return int(self.inputs.shape[1])

    def slice(self, start: int, stop: int, *, with_targets: bool = True) -> "StreamBatch":
        """Steps [start, stop); the reset flags stay only if the slice begins at step 0."""
        return StreamBatch(self.inputs[start:stop],
                           self.targets[start:stop] if (with_targets and self.targets is not None) else None,
                           self.reset if start == 0 else None)

    def to(self, device: torch.device) -> "StreamBatch":
        return StreamBatch(self.inputs.to(device), None if self.targets is None else self.targets.to(device),
                           None if self.reset is None else self.reset.to(device))


class StreamLoader:
    """Chunks of `bptt` steps over `batch_size · world_size` parallel streams.

    Args:
        documents: one 1-D int64 tensor of token ids per document (a single
            corpus is one document). Each needs >= 2 tokens.
        batch_size: streams per process (B).
        bptt: chunk length k1 (steps per trainer step).
        rank, world_size: this process's block of rows in the global layout.
        source, batch_option: how errors name the data (e.g. "the training part of 'x.txt'") and the
            setting that sets `batch_size` (e.g. "--batch-size").

    `batches(epoch, start)` yields the chunks of one epoch from chunk `start`
    (for resuming); every epoch walks the same layout (the state carry needs
    contiguous streams, so there is nothing to shuffle).
    """

    def __init__(self, documents: Sequence[Tensor], batch_size: int, bptt: int, *, rank: int = 0,
                 world_size: int = 1, source: str = "StreamLoader", batch_option: str = "batch_size") -> None:
        owner = type(self).__name__
        for name, value in (("batch_size", batch_size), ("bptt", bptt), ("world_size", world_size)):
            check_int(name, value, owner=owner)
        if not 0 <= rank < world_size:
            raise InputError(f"{owner}: rank must be in [0, {world_size}); got {rank}")
        docs = [d for d in documents]
        if not docs:
            raise InputError(f"{owner}: no documents")
        for i, d in enumerate(docs):
            if d.dim() != 1 or d.dtype != torch.int64:
                raise InputError(f"{owner}: document {i} must be a 1-D int64 tensor; got {d.dtype} {tuple(d.shape)}")
        self.batch_size, self.bptt, self.rank, self.world_size = batch_size, bptt, rank, world_size
        self.source, self.batch_option = source, batch_option
        total_rows = batch_size * world_size
        if len(docs) == 1:
            self._single(docs[0], total_rows)
        else:
            self._multi(docs, total_rows)
        rows = slice(rank * batch_size, (rank + 1) * batch_size)
        self.inputs, self.targets = self.inputs[rows], self.targets[rows]  # (B, N)
        self.starts = self.starts[rows]  # (B, N) bool: a document starts at this step

    def _single(self, tokens: Tensor, rows: int) -> None:
        per_row = (tokens.numel() - 1) // rows
        if per_row < 1:
            fit = max(tokens.numel() - 1, 0) // self.world_size
            raise InputError(f"{self.source}: {tokens.numel()} tokens are too few for {rows} streams "
                             f"({self.batch_option} x world_size); "
                             + (f"use {self.batch_option} {fit} or less, or more data" if fit else "use more data"))
        n = per_row * rows
        self.inputs = tokens[:n].view(rows, per_row)
        self.targets = tokens[1:n + 1].view(rows, per_row)
        self.starts = torch.zeros(rows, per_row, dtype=torch.bool)

    def _multi(self, docs: List[Tensor], rows: int) -> None:
        k1 = self.bptt
        queues: List[List[Tensor]] = [[] for _ in range(rows)]
        lengths = [0] * rows
        for d in docs:
            if d.numel() < 2:
                continue
            padded = math.ceil((d.numel() - 1) / k1) * k1
            r = min(range(rows), key=lambda i: lengths[i])  # the shortest stream takes the next document
            queues[r].append(d)
            lengths[r] += padded
        width = max(lengths)
        if width == 0:
            raise InputError("StreamLoader: every document has fewer than 2 tokens")
        self.inputs = torch.zeros(rows, width, dtype=torch.int64)
        self.targets = torch.full((rows, width), IGNORE_INDEX, dtype=torch.int64)
        self.starts = torch.zeros(rows, width, dtype=torch.bool)
        for r, queue in enumerate(queues):
            pos = 0
            for d in queue:
                n = d.numel() - 1
                self.inputs[r, pos:pos + n] = d[:-1]
                self.targets[r, pos:pos + n] = d[1:]
                self.starts[r, pos] = True
                pos += math.ceil(n / k1) * k1

    @property
    def steps_per_row(self) -> int:
        return int(self.inputs.shape[1])

    def __len__(self) -> int:
        """Chunks per epoch."""
        return math.ceil(self.steps_per_row / self.bptt)

    @property
    def tokens_per_epoch(self) -> int:
        return int((self.targets != IGNORE_INDEX).sum())

    def batches(self, epoch: int = 0, start: int = 0) -> Iterator[StreamBatch]:
        """Chunks `start`, `start`+1, … of one epoch: inputs/targets (T, B), reset (B,)."""
        for j in range(start, len(self)):
            a, b = j * self.bptt, min((j + 1) * self.bptt, self.steps_per_row)
            reset = self.starts[:, a]
            yield StreamBatch(self.inputs[:, a:b].t().contiguous(), self.targets[:, a:b].t().contiguous(),
                              reset.clone() if bool(reset.any()) else None)
