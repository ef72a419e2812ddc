"""Batch sources for the trainer that are not streams."""

from __future__ import annotations

from typing import Any, Callable, Iterator

import torch

from ..checks import check_int


class GeneratedBatches:
    """Batches drawn by `make(generator)`, e.g. a synthetic task; `batches_per_epoch` per epoch.

    Batch i of epoch e comes from a generator seeded with (seed, e, i), so any batch
    can be re-drawn on its own: a resumed run sees exactly the batches it would have.
    """

    def __init__(self, make: Callable[[torch.Generator], Any], batches_per_epoch: int, seed: int = 0) -> None:
        check_int("batches_per_epoch", batches_per_epoch, owner="GeneratedBatches")
        self.make, self.batches_per_epoch, self.seed = make, batches_per_epoch, seed

    def __len__(self) -> int:
        return self.batches_per_epoch

    def batches(self, epoch: int = 0, start: int = 0) -> Iterator[Any]:
        for i in range(start, self.batches_per_epoch):
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch * 100_003 + i)
            yield self.make(g)
