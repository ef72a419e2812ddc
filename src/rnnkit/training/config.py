"""TrainConfig: what the trainer needs to know, checked once at construction."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from typing import Any, Dict, Optional, Tuple

import torch

from ..checks import check_choice, check_int, check_positive_ints, check_positive_number
from ..errors import InputError

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
SCHEDULES = ("constant", "cosine", "step", "plateau", "epoch_decay")
NORMALIZATIONS = ("token", "sequence")
PRECISIONS = ("fp32", "bf16", "auto")  # what the forward runs in during training (see TrainConfig)
CLOCKS = ("wall", "cpu")  # what max_minutes, eval_every_minutes and elapsed_s count (see TrainConfig)


def native_bf16(device: torch.device) -> bool:
    """Whether `device` is a CPU with bfloat16 units (AMX or AVX512-BF16) that oneDNN may use: not where
    ONEDNN_MAX_CPU_ISA caps it below them."""
    if device.type != "cpu" or not (torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()):
        return False
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", os.environ.get("DNNL_MAX_CPU_ISA", "ALL")).upper()
    return cap in ("ALL", "DEFAULT") or any(unit in cap for unit in ("BF16", "AMX", "FP16"))


def resolved_precision(precision: str, device: torch.device) -> str:
    """"fp32" or "bf16": "auto" resolved for `device`."""
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


@dataclass
class TrainConfig:
    """Training hyper-parameters (one run).

    Stopping: the first of `max_steps` optimizer steps, `max_epochs` epochs,
    `max_minutes` of wall time (a resumed run counts the time already spent) or
    early stopping (`early_stop_patience` evaluations without improvement of
    `early_stop_metric`, lower is better). At least one limit must be set.

    Clock: `max_minutes`, `eval_every_minutes`, the cosine schedule's time axis
    and the logged `elapsed_s` count wall-clock time (`clock="wall"`) or this
    process's CPU time (`clock="cpu"`, all its threads summed): with one torch
    thread the CPU clock gives about the same number of steps per budget on a
    busy machine as on a quiet one. Evaluations and checkpoints count too.

    Truncated BPTT: the data's chunk length is k1 (steps between updates);
    `bptt_k2` (>= k1, default k1) is how far back each update backpropagates.

    Schedules: "cosine" decays from lr to lr_min over max_steps (else max_epochs
    times the batches per epoch) or max_minutes, whichever runs out first (after
    `warmup_steps` of linear warm-up): over the limits the run has, never a default's; "step"
    multiplies by lr_gamma every lr_step_size steps; "plateau" when the
    validation loss stops improving; "epoch_decay" every epoch after
    lr_decay_after_epochs (Zaremba et al.).

    Precision: "bf16" runs each training forward (and so the backward's matching products) under
    `torch.autocast(device, dtype=torch.bfloat16)`: bfloat16 GEMMs with float32 accumulation where the
    CPU has bfloat16 units (AMX, AVX512-BF16), float32 master weights and optimizer. Evaluation stays
    float32, so validation numbers compare across precisions. "auto" is "bf16" on a CPU with bfloat16
    units (`native_bf16`), else "fp32" (elsewhere bfloat16 is emulated: slower, not faster).

    Loss normalization: "token" divides the summed loss by the number of
    predicted elements; "sequence" divides by the number of sequences (streams)
    only, i.e. sums over time (Zaremba et al. 2014).
    """

    max_steps: Optional[int] = None
    max_epochs: Optional[int] = None
    max_minutes: Optional[float] = None
    optimizer: str = "adam"
    lr: float = 2e-3
    weight_decay: float = 0.0
    momentum: float = 0.0
    betas: Tuple[float, float] = (0.9, 0.999)
    schedule: str = "constant"
    warmup_steps: int = 0
    lr_step_size: int = 1000  # "step": multiply by lr_gamma every lr_step_size steps
    lr_gamma: float = 0.5  # "step", "plateau", "epoch_decay" factor
    lr_min: float = 0.0  # "cosine" floor
    lr_decay_after_epochs: int = 0  # "epoch_decay": epochs at the full rate before decaying each epoch
    plateau_patience: int = 1
    clip_norm: Optional[float] = None
    clip_value: Optional[float] = None
    grad_accum: int = 1
    bptt_k2: Optional[int] = None
    loss_normalization: str = "token"
    eval_every: Optional[int] = None  # steps; evaluation also runs at every epoch end and at the end
    eval_every_minutes: Optional[float] = None  # also evaluate each time this much of the clock has passed
    clock: str = "wall"  # "wall" or "cpu": what the time settings count (see above)
    precision: str = "fp32"  # "bf16": the training forward under torch.autocast(bfloat16); "auto" (see above)
    checkpoint_every: Optional[int] = None  # steps; a checkpoint is also written at the end
    keep_checkpoints: int = 3
    early_stop_patience: Optional[int] = None
    early_stop_metric: str = "val_loss"
    seed: int = 0
    log_every: int = 1
    quiet: bool = False
    tensorboard: bool = True

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)  # type: ignore[assignment]
        self.validate()

    def validate(self) -> None:
        for name in ("max_steps", "max_epochs", "eval_every", "checkpoint_every", "early_stop_patience",
                     "bptt_k2"):
            check_int(name, getattr(self, name), allow_none=True)
        check_positive_ints(self, ("grad_accum", "log_every", "lr_step_size", "keep_checkpoints"))
        check_positive_number("max_minutes", self.max_minutes, allow_none=True)
        check_positive_number("eval_every_minutes", self.eval_every_minutes, allow_none=True)
        check_choice("clock", self.clock, CLOCKS)
        check_choice("precision", self.precision, PRECISIONS)
        check_positive_number("lr", self.lr)
        for name in ("clip_norm", "clip_value"):
            check_positive_number(name, getattr(self, name), allow_none=True)
        if self.max_steps is None and self.max_epochs is None and self.max_minutes is None:
            raise InputError("set at least one of max_steps, max_epochs, max_minutes")
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("schedule", self.schedule, SCHEDULES)
        if self.warmup_steps < 0 or (self.warmup_steps and self.schedule in ("plateau", "epoch_decay")):
            raise InputError(f"warmup_steps must be >= 0 and works with the constant, cosine and step schedules; "
                             f"got {self.warmup_steps} with {self.schedule!r}")
        check_choice("loss_normalization", self.loss_normalization, NORMALIZATIONS)
        if not 0.0 < self.lr_gamma <= 1.0:
            raise InputError(f"lr_gamma must be in (0, 1]; got {self.lr_gamma}")
        for name in ("weight_decay", "momentum", "lr_min", "lr_decay_after_epochs", "plateau_patience", "warmup_steps"):
            if getattr(self, name) < 0:
                raise InputError(f"{name} must be >= 0; got {getattr(self, name)}")

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise InputError(f"unknown training settings {unknown}")
        return cls(**d)
