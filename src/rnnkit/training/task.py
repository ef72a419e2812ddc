"""What an application hands the training loop: a task that turns a batch into a summed loss."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Protocol, Union

from torch import Tensor, nn

State = Any


@dataclass
class LossResult:
    """What a task returns for one batch.

    loss_sum:  scalar tensor, the loss summed over every predicted element (nats).
    count:     number of predicted elements in the sum (0 for context-only chunks).
    sequences: number of sequences/streams in the batch (for "sequence" normalization).
    state:     the state to carry into the next chunk (stream tasks), else None.
    sums:      optional per-element quantities summed over the batch (e.g. {"accuracy": correct predictions});
               an evaluation reports each one's sum over the pass divided by the summed `count`
               (val_accuracy). Computed only when it is cheap or the model is in eval mode.
    """

    loss_sum: Tensor
    count: Union[int, Tensor]
    sequences: int
    state: State = None
    sums: Optional[Dict[str, Union[float, Tensor]]] = None


class Task(Protocol):
    """`loss` of one batch; optionally `eval_metrics(loss) -> dict` (derived metrics such as bits per
    character) and a `step` attribute, which the loop sets to the optimizer steps taken before each batch
    (a schedule that follows training, such as scheduled sampling, reads it; a resumed run restores it)."""

    def loss(self, model: nn.Module, batch: Any, state: State) -> LossResult: ...


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss became NaN)."""
