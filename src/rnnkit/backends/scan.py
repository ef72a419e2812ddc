"""The scan backend: minGRU's recurrence as a parallel (log-depth) prefix scan.

minGRU's update h_t = (1 − z_t) ⊙ h_{t-1} + z_t ⊙ h̃_t is linear in the state:
h_t = a_t ⊙ h_{t-1} + b_t. Pairs (a, b) compose associatively,
(a2, b2) ∘ (a1, b1) = (a2 a1, a2 b1 + b2), so all T states follow from
ceil(log2 T) rounds of element-wise work (Hillis–Steele), each over the whole
sequence: the shape of work a GPU wants. Zoneout keeps the form
(a' = (1 − k) a + k, b' = (1 − k) b) and a padded step is the identity (a = 1,
b = 0), so lengths and zoneout run here too. Plain torch ops, autograd does
the backward, any device.

On a 2-core CPU the sequential fused loop is faster (research/performance.md §7),
so `auto` ranks this backend above the reference only, and above fused only on GPU.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from ..cells import MinGRUCell
from .base import RunSpec, cell_type, unsupported_weights
from .registry import register

Result = Tuple[Tensor, Tuple[Tensor, ...]]


def linear_scan(a: Tensor, b: Tensor, h0: Tensor) -> Tensor:
    """All h_t of h_t = a_t ⊙ h_{t-1} + b_t: a, b (T, ...), h0 (...) -> (T, ...), log-depth."""
    T = a.shape[0]
    d = 1
    while d < T:
        b = torch.cat([b[:d], a[d:] * b[:-d] + b[d:]])
        a = torch.cat([a[:d], a[d:] * a[:-d]])
        d *= 2
    return a * h0 + b


class ScanBackend:
    name = "scan"

    def accepts(self, spec: RunSpec) -> Optional[str]:
        if cell_type(spec.cell) is not MinGRUCell:
            return (f"the scan backend runs cells with a linear recurrence (MinGRUCell); "
                    f"got {cell_type(spec.cell).__name__}")
        if spec.recurrent_mask is not None:
            return "MinGRUCell has no recurrent matrix, so a recurrent mask is not defined for it"
        return unsupported_weights(spec)

    def auto_priority(self, spec: RunSpec, registered: int) -> int:
        return 15 if spec.inputs.device.type != "cpu" else registered

    def run(self, spec: RunSpec) -> Result:
        cell = spec.cell
        T, B = spec.inputs.shape[:2]
        u_z, h_tilde = cell.project(spec.inputs).chunk(2, dim=-1)  # (T, B, H) each
        z = torch.sigmoid(u_z)
        a, b = 1 - z, z * h_tilde
        keep = spec.zoneout[0] if spec.zoneout else None
        if keep is not None:  # h_t = h~_t + k (h_{t-1} − h~_t) stays linear in h_{t-1}
            a, b = (1 - keep) * a + keep, (1 - keep) * b
        valid = None
        if spec.lengths is not None:
            valid = (torch.arange(T, device=spec.inputs.device)[:, None] < spec.lengths[None, :]).unsqueeze(-1)
            a = torch.where(valid, a, torch.ones((), dtype=a.dtype, device=a.device))
            b = torch.where(valid, b, torch.zeros((), dtype=b.dtype, device=b.device))
        h = linear_scan(a, b, spec.state[0])
        y = h if valid is None else torch.where(valid, h, torch.zeros((), dtype=h.dtype, device=h.device))
        return y, (h[-1],)


register(ScanBackend(), priority=3)
