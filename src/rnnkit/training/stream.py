"""The truncated-BPTT stream carry: the state and input context one chunk hands to the next.

Truncated BPTT(k1, k2): each chunk holds k1 new steps (one update per chunk); the update
backpropagates through the last k2 >= k1 steps. For k2 > k1 the carry keeps the previous
k2 − k1 steps of input as context, re-runs them from the state carried at the window's start,
takes the loss on the k1 new steps only, and carries the (detached) state at the start of the
next window. Resets (`StreamBatch.reset`) are applied by the task at the chunk boundaries where
they occur.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from ..data.streams import StreamBatch

State = Any
#: (stream position of its first step, the steps, whether the loss is taken on them)
Piece = Tuple[int, StreamBatch, bool]


def map_tensors(fn: Callable[[Tensor], Tensor], obj: Any) -> Any:
    """`obj` with `fn` applied to every tensor in it (nested tuples, lists and dicts keep their shape)."""
    if isinstance(obj, Tensor):
        return fn(obj)
    if isinstance(obj, (tuple, list)):
        return type(obj)(map_tensors(fn, v) for v in obj)
    if isinstance(obj, dict):
        return {k: map_tensors(fn, v) for k, v in obj.items()}
    return obj


def detach_state(state: State) -> State:
    """The same nesting of tensors, cut from the graph (the carried state must not
    drag the previous chunk's graph into this chunk's backward)."""
    return map_tensors(Tensor.detach, state)


class StreamCarry:
    """What one chunk of parallel streams hands to the next: the detached state at the start of the
    next window (`carry`, at stream position `carry_pos`), the position of the next chunk (`pos`), and
    for k2 > k1 the inputs of the steps between the two (`context`)."""

    def __init__(self, task: Any, bptt_k2: Optional[int]) -> None:
        self.task = task
        self.bptt_k2 = bptt_k2
        self.reset()

    def reset(self) -> None:
        """Forget the carried state and context (start of an epoch)."""
        self.carry: State = None
        self.carry_pos = 0  # stream position where the carried state belongs
        self.pos = 0  # stream position of the next chunk's first step
        self.context: List[Tuple[int, StreamBatch]] = []

    def _pieces(self, batch: StreamBatch, next_carry_pos: int) -> List[Piece]:
        """The window's steps in order: context [carry_pos, pos) without loss, then the chunk; cut where
        the next window starts, so the state there can be carried."""
        pieces: List[Piece] = []
        for pos, chunk in self.context:
            a, b = max(self.carry_pos, pos), pos + len(chunk)
            if b > a:
                pieces.append((a, chunk.slice(a - pos, b - pos, with_targets=False), False))
        pieces.append((self.pos, batch, True))
        split: List[Piece] = []
        for pos, piece, loss in pieces:
            if pos < next_carry_pos < pos + len(piece):
                cut = next_carry_pos - pos
                split += [(pos, piece.slice(0, cut, with_targets=loss), loss),
                          (next_carry_pos, piece.slice(cut, len(piece), with_targets=loss), loss)]
            else:
                split.append((pos, piece, loss))
        return split

    def run(self, model: nn.Module, train_model: nn.Module, batch: StreamBatch,
            device: torch.device) -> Tuple[Tensor, Tensor, int]:
        """Truncated BPTT over one chunk (on `device`): (loss_sum, count, sequences); moves the carry on.
        Only the last piece goes through `train_model` (possibly DDP-wrapped): DDP expects one forward per
        backward, and the gradient of earlier pieces reaches the same parameters through `model` anyway."""
        k1 = len(batch)
        k2 = max(self.bptt_k2 or k1, k1)
        start, end = self.pos, self.pos + k1
        next_carry_pos = min(end, max(self.carry_pos, end + k1 - k2))
        split = self._pieces(batch, next_carry_pos)
        state, new_carry, found = self.carry, None, False
        loss_sum: Tensor = torch.zeros((), device=device)
        count: Tensor = torch.zeros((), device=device)
        for i, (pos, piece, _) in enumerate(split):
            if pos == next_carry_pos and not found:
                new_carry, found = detach_state(state), True
            result = self.task.loss(train_model if i == len(split) - 1 else model, piece, state)
            state = result.state
            loss_sum = loss_sum + result.loss_sum
            count = count + result.count
        if not found:  # next window starts at the end of this chunk
            new_carry = detach_state(state)
        self.carry, self.carry_pos, self.pos = new_carry, next_carry_pos, end
        self.context = [(p, c) for p, c in self.context + [(start, StreamBatch(batch.inputs, None, batch.reset))]
                        if p + len(c) > next_carry_pos] if k2 > k1 else []
        return loss_sum, count, batch.batch_size

    def state_dict(self) -> Dict[str, Any]:
        """carry, positions and context (tensors inside; the checkpointer flattens them)."""
        context = [{"pos": p, "inputs": b.inputs,
                    "reset": b.reset if b.reset is not None else torch.zeros(b.batch_size, dtype=torch.bool),
                    "has_reset": b.reset is not None} for p, b in self.context]
        return {"carry": self.carry, "carry_pos": self.carry_pos, "pos": self.pos, "context": context}

    def load_state_dict(self, state: Dict[str, Any], device: torch.device) -> None:
        self.carry = map_tensors(lambda t: t.to(device), state["carry"])
        self.carry_pos, self.pos = state["carry_pos"], state["pos"]
        self.context = [(c["pos"], StreamBatch(c["inputs"], None, c["reset"] if c["has_reset"] else None))
                        for c in state["context"]]
