"""What a backend receives and must return: one layer, one direction, a whole sequence."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import AbstractSet, Dict, Optional, Protocol, Sequence, Tuple, Union

import torch
from torch import Tensor

from ..cells.base import RecurrentCell

#: Per state tensor: None (no zoneout), a float p (eval: the expectation
#: s_t = p·s_{t-1} + (1−p)·s̃_t) or a 0/1 tensor (T, B, S) (training: 1 keeps s_{t-1}).
Zoneout = Union[None, float, Tensor]


@dataclass
class RunSpec:
    """One layer and direction of a recurrent network over a whole sequence.

    inputs:          (T, B, I) time-major. With `lengths`, row b is valid for
                     t < lengths[b] (right-padded); the layer already reversed
                     each valid prefix for a reverse direction.
    state:           initial state, one (B, S_k) tensor per entry of cell.state_sizes.
    lengths:         (B,) int64 on inputs.device, or None when every row has T steps.
    weights:         tensors that replace the cell's parameters for this run, by the cell's
                     parameter name: every parameter of a cell whose layer holds them
                     (torch-named drop-ins, read once per forward, parametrized or
                     pruned as the layer has them), DropConnect's weight_hh; empty when
                     none. A backend reads each parameter here first, then on the cell.
    recurrent_mask:  (B, cell.recurrent_input_size) multiplies h_{t-1} inside the
                     recurrent product, or None.
    zoneout:         one `Zoneout` entry per state tensor.

    A backend returns (outputs (T, B, O), final state tuple). Outputs at padded
    positions are zero; the final state of row b is its state after step lengths[b].
    """

    cell: RecurrentCell
    inputs: Tensor
    state: Tuple[Tensor, ...]
    lengths: Optional[Tensor] = None
    weights: Dict[str, Tensor] = field(default_factory=dict)
    recurrent_mask: Optional[Tensor] = None
    zoneout: Tuple[Zoneout, ...] = ()
    #: mixed precision: the dtype the input projection's GEMM runs in (bfloat16 under autocast), while
    #: everything else runs in the inputs' float32; None: the inputs' own dtype throughout
    projection_dtype: Optional[torch.dtype] = None

    def weight(self, name: str) -> Optional[Tensor]:
        """The cell's parameter `name` for this run (None where the cell has it off, e.g. bias=False)."""
        return self.weights[name] if name in self.weights else getattr(self.cell, name)

    @property
    def has_zoneout(self) -> bool:
        return any(z is not None for z in self.zoneout)


def zoneout_step(cell: RecurrentCell, y: Tensor, new: Tuple[Tensor, ...], old: Tuple[Tensor, ...],
                 keeps: Sequence[Zoneout]) -> Tuple[Tensor, Tuple[Tensor, ...]]:
    """One step's zoneout: s_t = keep·s_{t-1} + (1 − keep)·s̃_t per state tensor, keep a (B, S) 0/1 mask
    (training), p (eval) or None (off); a cell whose output is its first state outputs the result."""
    new = tuple(n if keep is None else n + keep * (o - n) for n, o, keep in zip(new, old, keeps))
    return (new[0] if cell.outputs_state else y), new


def cell_type(cell: RecurrentCell) -> type:
    """The cell's class, seen through the subclass torch.nn.utils.parametrize puts on a parametrized cell
    (same math, a weight computed from its parametrization), so the kernels still take that cell."""
    kind = type(cell)
    return kind.__bases__[0] if "parametrizations" in cell._modules else kind


def unsupported_weights(spec: RunSpec, supported: AbstractSet[str] = frozenset()) -> Optional[str]:
    """The reason a backend cannot run `spec` when its weight overrides name a parameter outside
    `supported` (the ones the backend reads from `spec.weights`), else None."""
    extra = sorted(set(spec.weights) - set(supported))
    if not extra:
        return None
    scope = f"supported for {', '.join(sorted(supported))} only" if supported else "not supported"
    return f"weight overrides for {cell_type(spec.cell).__name__} are {scope}; got {extra}"


class Backend(Protocol):
    name: str

    def accepts(self, spec: RunSpec) -> Optional[str]:
        """None if this backend can run `spec`, else the reason it cannot (one line)."""

    def run(self, spec: RunSpec) -> Tuple[Tensor, Tuple[Tensor, ...]]:
        """Run the sequence; see RunSpec for shapes."""
