"""The scan backend: minGRU's and QRNN's recurrences as a parallel (log-depth) prefix scan.

minGRU's update h_t = (1 − z_t) ⊙ h_{t-1} + z_t ⊙ h̃_t is linear in the state:
h_t = a_t ⊙ h_{t-1} + b_t. Pairs (a, b) compose associatively,
(a2, b2) ∘ (a1, b1) = (a2 a1, a2 b1 + b2), so all T states follow from
ceil(log2 T) rounds of element-wise work (Hillis–Steele), each over the whole
sequence: the shape of work a GPU wants. Zoneout keeps the form
(a' = (1 − k) a + k, b' = (1 − k) b) and a padded step is the identity (a = 1,
b = 0), so lengths and zoneout run here too. Plain torch ops, autograd does
the backward, any device. QRNN's pooling (f, fo and ifo) is the same form in c,
c_t = f_t ⊙ c_{t-1} + b_t, after its convolution over all steps (`QRNNCell.convolve`).

On a 2-core CPU the sequential fused loop is faster (research/performance.md §7),
so `auto` ranks this backend above the reference only, and above fused only on GPU.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from ..cells import MinGRUCell, QRNNCell
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
        kind = cell_type(spec.cell)
        if kind not in (MinGRUCell, QRNNCell):
            return (f"the scan backend runs cells with a linear recurrence (MinGRUCell, QRNNCell); "
                    f"got {kind.__name__}")
        if spec.recurrent_mask is not None:
            return f"{kind.__name__} has no recurrent matrix, so a recurrent mask is not defined for it"
        return unsupported_weights(spec)

    def auto_priority(self, spec: RunSpec, registered: int) -> int:
        return 15 if spec.inputs.device.type != "cpu" else registered

    def run(self, spec: RunSpec) -> Result:
        if cell_type(spec.cell) is QRNNCell:
            return _run_qrnn(spec)
        u_z, h_tilde = spec.cell.project(spec.inputs).chunk(2, dim=-1)  # (T, B, H) each
        z = torch.sigmoid(u_z)
        keep = spec.zoneout[0] if spec.zoneout else None
        h = _masked_scan(1 - z, z * h_tilde, spec.state[0], keep, valid_steps(spec))
        return zero_padded(h, valid_steps(spec)), (h[-1],)


def valid_steps(spec: RunSpec) -> Optional[Tensor]:
    """(T, B, 1) True on each row's valid steps, or None when every row has T steps."""
    if spec.lengths is None:
        return None
    T = spec.inputs.shape[0]
    return (torch.arange(T, device=spec.inputs.device)[:, None] < spec.lengths[None, :]).unsqueeze(-1)


def zero_padded(y: Tensor, valid: Optional[Tensor]) -> Tensor:
    return y if valid is None else torch.where(valid, y, torch.zeros((), dtype=y.dtype, device=y.device))


def _masked_scan(a: Tensor, b: Tensor, h0: Tensor, keep, valid: Optional[Tensor]) -> Tensor:
    """All states of h_t = a_t ⊙ h_{t-1} + b_t with zoneout `keep` (None, p or a (T, B, H) mask) and padded
    steps as the identity: the states (T, B, H)."""
    if keep is not None:  # h_t = h~_t + k (h_{t-1} − h~_t) stays linear in h_{t-1}
        a, b = (1 - keep) * a + keep, (1 - keep) * b
    if valid is not None:
        a = torch.where(valid, a, torch.ones((), dtype=a.dtype, device=a.device))
        b = torch.where(valid, b, torch.zeros((), dtype=b.dtype, device=b.device))
    return linear_scan(a, b, h0)


def _run_qrnn(spec: RunSpec) -> Result:
    """QRNN: the convolution of all steps, the gates, then c by the scan; h = o ⊙ c̃ with c̃ before zoneout."""
    cell = spec.cell
    a, window_n = cell.convolve(spec.inputs, spec.state[1] if cell.window > 1 else None,
                                spec.lengths)
    z, f, o, i = cell.gates(a)
    keep_c, b = cell.pool(z, f, i)
    zoneout = spec.zoneout[0] if spec.zoneout else None
    valid = valid_steps(spec)
    c = _masked_scan(keep_c, b, spec.state[0], zoneout, valid)
    if o is None:  # f-pooling: h_t = c_t
        h = c
    else:  # zoneout keeps part of c_{t-1} in the state, not in h_t = o_t ⊙ (f_t ⊙ c_{t-1} + b_t)
        c_tilde = c if zoneout is None else keep_c * torch.cat([spec.state[0][None], c[:-1]]) + b
        h = o * c_tilde
    final = (c[-1],) if window_n is None else (c[-1], window_n)
    return zero_padded(h, valid), final


register(ScanBackend(), priority=3)
