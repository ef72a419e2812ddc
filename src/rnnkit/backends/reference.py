"""The reference backend: the cell's step in a Python loop under autograd.

Readable and general (any cell that follows the protocol, any device), and the
source of truth every fast backend is tested against. The input term of every
step is one GEMM over the whole sequence (`cell.project`), and the steps read it
through `unbind` — indexing `u[t]` under autograd would make backward O(T²).
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from .base import RunSpec, zoneout_step


def _loop(spec: RunSpec) -> Tuple[Tensor, Tuple[Tensor, ...]]:
    """The step loop: (outputs (T, B, O), final state tuple); see RunSpec."""
    cell = spec.cell
    inputs, state = spec.inputs, tuple(spec.state)
    T = inputs.shape[0]
    valid = None
    if spec.lengths is not None:
        steps = torch.arange(T, device=inputs.device)
        valid = (steps[:, None] < spec.lengths[None, :])  # (T, B)
        valid = valid.view(T, -1, *([1] * (inputs.dim() - 2))).unbind(0)  # T × (B, 1, ...) as one step's x
    zoneout = [z.unbind(0) if isinstance(z, Tensor) else z for z in spec.zoneout] or [None] * len(state)
    outputs = []
    for t, u_t in enumerate(cell.project(inputs).unbind(0)):
        # user cells may define step(u, state) without the mask argument (the documented protocol)
        y, new = (cell.step(u_t, cell.pack_state(state)) if spec.recurrent_mask is None
                  else cell.step(u_t, cell.pack_state(state), spec.recurrent_mask))
        new = cell.unpack_state(new)
        if spec.has_zoneout:
            y, new = zoneout_step(cell, y, new, state, [z if z is None or isinstance(z, float) else z[t]
                                                        for z in zoneout])
        if valid is not None:
            new = tuple(torch.where(valid[t], n, s) for n, s in zip(new, state))
            y = torch.where(valid[t], y, torch.zeros((), dtype=y.dtype, device=y.device))
        state = new
        outputs.append(y)
    return torch.stack(outputs), state


class ReferenceBackend:
    name = "reference"

    def accepts(self, spec: RunSpec) -> Optional[str]:
        return None

    def run(self, spec: RunSpec) -> Tuple[Tensor, Tuple[Tensor, ...]]:
        if not spec.weights:
            return _loop(spec)
        with spec.cell.using_weights(spec.weights):  # the cell's step reads them as its own
            return _loop(spec)
