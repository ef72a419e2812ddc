"""Subscribers of the training loop's step and eval events: metrics.jsonl, TensorBoard, a progress bar.

Each takes `train(record)` after every optimizer step, `eval(record)` after every evaluation and
`close()` when fit() ends; records are the dicts metrics.jsonl holds ({"kind": "train"|"eval", "step",
"epoch", ...}). Only rank 0 logs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional, Protocol

from .._optional import require
from .checkpoint import write_text_atomic

Record = Dict[str, Any]


class Logger(Protocol):
    def train(self, record: Record) -> None: ...
    def eval(self, record: Record) -> None: ...
    def close(self) -> None: ...


class JsonlLog:
    """metrics.jsonl: every eval record, and the train records of every `log_every`-th step.

    `lines` counts the lines written; a checkpoint stores it (state_dict), so a resumed run first cuts
    the file back to what its checkpoint had seen: later lines came from the lost tail of the run."""

    def __init__(self, path: Optional[Path], log_every: int) -> None:
        self.path, self.log_every = path, log_every
        self.lines = 0
        self._file: Any = None

    def open(self, resumed: bool) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resumed and self.path.exists():
            kept = self.path.read_text().splitlines()[:self.lines]
            write_text_atomic(self.path, "".join(k + "\n" for k in kept))
        elif not resumed:
            self.path.write_text("")
        self._file = open(self.path, "a", buffering=1)

    def train(self, record: Record) -> None:
        if record["step"] % self.log_every == 0:
            self.eval(record)

    def eval(self, record: Record) -> None:
        if self._file is not None:
            self._file.write(json.dumps(record) + "\n")
            self.lines += 1

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def state_dict(self) -> Dict[str, int]:
        return {"metrics_lines": self.lines}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.lines = state.get("metrics_lines", 0)


class TensorBoardLog:
    """Scalars under train/ and eval/ in `directory`; a resumed run purges what followed `resume_step`."""

    def __init__(self, directory: Path, resume_step: Optional[int]) -> None:
        self._writer: Any = None
        try:
            require("tensorboard", extra="tensorboard", purpose="TensorBoard logging")
            from torch.utils.tensorboard import SummaryWriter
            self._writer = SummaryWriter(str(directory),
                                         purge_step=resume_step + 1 if resume_step is not None else None)
        except Exception as err:  # tensorboard missing or broken: metrics.jsonl still has everything
            print(f"rnnkit: {err}; logging to metrics.jsonl only")

    def _scalars(self, record: Record, group: str) -> None:
        if self._writer is None:
            return
        for k, v in record.items():
            if k not in ("kind", "step", "epoch") and isinstance(v, (int, float)) and v is not None:
                self._writer.add_scalar(f"{group}/{k}", v, record["step"])

    def train(self, record: Record) -> None:
        self._scalars(record, "train")

    def eval(self, record: Record) -> None:
        self._scalars(record, "eval")

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class ProgressBar:
    """A tqdm bar over optimizer steps showing the loss and tokens/s; evaluations print a line above it.
    A run with a time budget and no step count (`seconds`, no `total`) fills the bar with the clock instead."""

    def __init__(self, total: Optional[int], initial: int, seconds: Optional[float] = None) -> None:
        from tqdm import tqdm
        self._by_time = total is None and seconds is not None
        if self._by_time:
            self._bar = tqdm(total=round(seconds), unit="s", dynamic_ncols=True, leave=True,
                             bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s {postfix}")
        else:
            self._bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, leave=True)

    def train(self, record: Record) -> None:
        if self._by_time:
            self._bar.update(min(record["elapsed_s"], self._bar.total) - self._bar.n)
        else:
            self._bar.update(record["step"] - self._bar.n)
        self._bar.set_postfix(**({"step": record["step"]} if self._by_time else {}), loss=f"{record['loss']:.4f}",
                              tok_s=f"{record.get('tokens_per_s', 0):.0f}", refresh=False)

    def eval(self, record: Record) -> None:
        shown = ", ".join(f"{k}={v:.4f}" for k, v in record.items() if k.startswith("val_") and isinstance(v, float))
        self._bar.write(f"step {record['step']}: {shown}")

    def close(self) -> None:
        self._bar.close()
