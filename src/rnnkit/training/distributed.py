"""Data parallelism for the training loop: DistributedDataParallel when torch.distributed is
initialised, and the collectives the loop needs to keep every rank in step. Without a process
group every helper is the single-process identity."""

from __future__ import annotations

import contextlib
from typing import Any, ContextManager, List

import torch
from torch import Tensor, nn


class Distribution:
    """This process's place in the run (rank, world size) and the collectives over all ranks."""

    def __init__(self, device: torch.device) -> None:
        import torch.distributed as dist
        self.dist = dist if dist.is_available() and dist.is_initialized() else None
        self.device = device
        self.rank = self.dist.get_rank() if self.dist else 0
        self.world_size = self.dist.get_world_size() if self.dist else 1
        self.is_main = self.rank == 0

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module the loop trains through: DDP-wrapped under torch.distributed, else `model`."""
        if not self.dist:
            return model
        from torch.nn.parallel import DistributedDataParallel
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def no_sync(self, train_model: nn.Module, sync: bool) -> ContextManager[Any]:
        """DDP's no_sync() for micro-batches whose gradients are only accumulated."""
        return train_model.no_sync() if self.dist and not sync else contextlib.nullcontext()

    def all_sum(self, *values: float) -> List[float]:
        """Each value summed over all ranks."""
        if not self.dist:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        self.dist.all_reduce(t)
        return t.tolist()

    def any_rank(self, flag: bool) -> bool:
        """`flag` if any rank raises it: clock- and signal-driven decisions must agree on every rank."""
        if not self.dist:
            return flag
        t = torch.tensor([float(flag)], device=self.device)
        self.dist.all_reduce(t, op=self.dist.ReduceOp.MAX)
        return bool(t.item())

    def gather(self, tensor: Tensor) -> List[Tensor]:
        """Every rank's `tensor` (same shape on all), in rank order, on the CPU."""
        if not self.dist:
            return [tensor]
        t = tensor.to(self.device)
        parts = [torch.empty_like(t) for _ in range(self.world_size)]
        self.dist.all_gather(parts, t)
        return [p.cpu() for p in parts]

    def barrier(self) -> None:
        if self.dist:
            self.dist.barrier()
