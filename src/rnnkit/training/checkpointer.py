"""The training run's checkpoints: one file pair per step (training/checkpoint.py writes it atomically),
assembled from the state_dict() of each part of the run.

The JSON record holds `run` (the caller's run_info), `train_config`, `optimizer` and `scheduler`
(flattened state dicts), `local` (the stream carry and RNG of a rank), `counters`, `world_size` and
`history`; the tensor file holds `model.*`, `optim.*`, `sched.*` and `rank{r}/local.*` for every rank.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from . import checkpoint as ckpt
from .distributed import Distribution

Tensors = Dict[str, Tensor]


class Checkpointer:
    """Saves to and restores from `directory` (run_dir/checkpoints), keeping the `keep` newest."""

    def __init__(self, directory: Optional[Path], keep: int, distribution: Distribution) -> None:
        self.directory, self.keep, self.distribution = directory, keep, distribution

    def assemble(self, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                 local: Dict[str, Any], meta: Dict[str, Any]) -> Tuple[Tensors, Dict[str, Any]]:
        """(tensors, JSON record) of a checkpoint: the model's, optimizer's and scheduler's state dicts,
        every rank's `local` state (gathered: rank 0 writes one file) and the JSON-only entries `meta`
        (run, train_config, counters, history)."""
        tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
        record: Dict[str, Any] = {"run": meta["run"], "train_config": meta["train_config"],
                                  "optimizer": ckpt.flatten(optimizer.state_dict(), "optim", tensors)}
        record["scheduler"] = ckpt.flatten(scheduler.state_dict(), "sched", tensors) if scheduler else None
        local_tensors: Tensors = {}
        record["local"] = ckpt.flatten(local, "local", local_tensors)
        for name in sorted(local_tensors):
            for rank, part in enumerate(self.distribution.gather(local_tensors[name])):
                tensors[f"rank{rank}/{name}"] = part
        record.update(counters=meta["counters"], world_size=self.distribution.world_size, history=meta["history"])
        return tensors, record

    def save(self, step: int, tensors: Tensors, record: Dict[str, Any]) -> Optional[Path]:
        """Rank 0 writes the checkpoint of `step` and prunes old ones (returns its record path; None on
        other ranks); every rank waits for it."""
        path = None
        if self.distribution.is_main and self.directory is not None:
            path = ckpt.save_checkpoint(self.directory, step, tensors, record)
            ckpt.prune_checkpoints(self.directory, self.keep)
        self.distribution.barrier()
        return path

    def load(self, source: Union[str, Path], run_info: Dict[str, Any]) -> Tuple[Path, Dict[str, Any], Tensors]:
        """(record path, JSON record, tensors) of a checkpoint (file or run directory) of this run."""
        record, meta, tensors = ckpt.load_checkpoint(source)
        check_run_info(meta.get("run", {}), run_info, record)
        if meta.get("world_size", 1) != self.distribution.world_size:
            raise ckpt.CheckpointError(f"checkpoint {str(record)!r} was written by {meta.get('world_size')} "
                                       f"processes; resume it with the same number (got "
                                       f"{self.distribution.world_size})")
        return record, meta, tensors

    def restore(self, record: Path, meta: Dict[str, Any], tensors: Tensors, model: nn.Module,
                optimizer: torch.optim.Optimizer, scheduler: Any) -> Dict[str, Any]:
        """Load the model, optimizer and scheduler state; returns this rank's `local` state."""
        try:
            model.load_state_dict(ckpt.sub_dict(tensors, "model"), strict=True)
        except RuntimeError as err:
            first = str(err).strip().splitlines()
            raise ckpt.CheckpointError(f"checkpoint {str(record)!r} does not fit this model: "
                                       f"{' '.join(l.strip() for l in first[:3])}") from None
        optimizer.load_state_dict(ckpt.unflatten(meta["optimizer"], tensors))
        if scheduler is not None and meta.get("scheduler") is not None:
            scheduler.load_state_dict(ckpt.unflatten(meta["scheduler"], tensors))
        prefix = f"rank{self.distribution.rank}/"
        return ckpt.unflatten(meta["local"], {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})


def check_run_info(saved: Dict[str, Any], current: Dict[str, Any], record: Path) -> None:
    """Raise CheckpointError naming the first setting in which a checkpoint's run differs."""
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key), current.get(key)
        if a == b:
            continue
        what, av, bv = key, a, b
        if isinstance(a, dict) and isinstance(b, dict):
            for sub in sorted(set(a) | set(b)):
                if a.get(sub) != b.get(sub):
                    what = f"{key}.{sub}"
                    av, bv = a.get(sub), b.get(sub)
                    break
        if isinstance(av, list) and isinstance(bv, list):
            first = next((i for i, (x, y) in enumerate(zip(av, bv)) if x != y), None)
            if len(av) == len(bv) and first is not None:  # e.g. a vocabulary: name the first entry that differs
                what, av, bv = f"{what}[{first}]", av[first], bv[first]
            else:
                av, bv = f"{len(av)} entries", f"{len(bv)} entries"
        raise ckpt.CheckpointError(f"checkpoint {str(record)!r} belongs to another model or data: its {what} is "
                                   f"{_short(av)}, this run's is {_short(bv)}")


def _short(v: Any) -> str:
    s = json.dumps(v) if not isinstance(v, str) else repr(v)
    return s if len(s) < 80 else s[:77] + "..."
