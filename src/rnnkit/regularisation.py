"""The sequence layer's regularisation: which dropouts and zoneouts are on, and their masks.

`Regularisation` is one frozen value holding the seven probabilities that
`Recurrent` takes as keywords. It checks them (each in [0, 1)), checks that a
cell has what each needs (`check_cell`), says which are on (`active`) and draws
every mask. Masks are drawn only in training; in eval() dropout is off and
zoneout is its expectation p (see backends.base.Zoneout).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .backends.base import Zoneout
from .cells.base import RecurrentCell
from .errors import InputError


@dataclass(frozen=True)
class Regularisation:
    """Dropout and zoneout probabilities of one `Recurrent` layer, each in [0, 1); 0 is off.

    dropout:            torch's inter-layer dropout on every layer's outputs but the last.
    input_dropout:      variational dropout on the layer's input, one (1, B, I) mask per sequence.
    output_dropout:     variational dropout on the layer's output, one (1, B, D·O) mask per sequence.
    recurrent_dropout:  variational dropout on h_{t-1} where it enters W_hh, (B, recurrent_input_size).
    zoneout_hidden:     zoneout on the state named "h": a (T, B, S) 0/1 mask, 1 keeps s_{t-1}.
    zoneout_cell:       the same on the state named "c".
    weight_dropout:     DropConnect on weight_hh, one mask per forward call.
    owner:              the name error messages start with (the layer's class).

    >>> reg = Regularisation(dropout=0.25, zoneout_cell=0.1)
    >>> reg.active()
    ('dropout', 'zoneout_cell')
    >>> str(reg)
    'dropout=0.25, zoneout_cell=0.1'
    """

    dropout: float = 0.0
    input_dropout: float = 0.0
    output_dropout: float = 0.0
    recurrent_dropout: float = 0.0
    zoneout_hidden: float = 0.0
    zoneout_cell: float = 0.0
    weight_dropout: float = 0.0
    owner: str = field(default="Regularisation", repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in self.names():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise InputError(f"{self.owner}: {name} must be a probability in [0, 1); got {value!r}")
            object.__setattr__(self, name, float(value))

    @classmethod
    def names(cls) -> Tuple[str, ...]:
        """The probabilities' names, in the order `Recurrent` takes them."""
        return tuple(f.name for f in fields(cls) if f.name != "owner")

    def active(self) -> Tuple[str, ...]:
        """The names of the probabilities that are on (non-zero)."""
        return tuple(name for name in self.names() if getattr(self, name))

    def __str__(self) -> str:
        return ", ".join(f"{name}={getattr(self, name)}" for name in self.active())

    def check_cell(self, cell: RecurrentCell) -> None:
        """Raise InputError when `cell` lacks what an active regularisation acts on."""
        kind = type(cell).__name__
        if self.recurrent_dropout and not cell.recurrent_input_size:
            raise InputError(f"{self.owner}: recurrent_dropout needs a cell with a recurrent matrix; {kind} has none")
        if self.weight_dropout and not isinstance(getattr(cell, "weight_hh", None), Tensor):
            raise InputError(f"{self.owner}: weight_dropout (DropConnect on weight_hh) needs a cell with weight_hh; "
                             f"{kind} has none")
        if self.zoneout_hidden and "h" not in cell.state_names:
            raise InputError(f"{self.owner}: zoneout_hidden needs a state named 'h'; {kind} has {cell.state_names}")
        if self.zoneout_cell and "c" not in cell.state_names:
            raise InputError(f"{self.owner}: zoneout_cell needs a state named 'c'; {kind} has {cell.state_names}")

    # ------------------------------------------------------------------ masks
    def drop_input(self, x: Tensor, training: bool) -> Tensor:
        """x (T, B, I) with variational input dropout in training."""
        return x * _variational_mask(x, self.input_dropout) if training and self.input_dropout else x

    def drop_output(self, x: Tensor, training: bool) -> Tensor:
        """x (T, B, D·O) with variational output dropout in training."""
        return x * _variational_mask(x, self.output_dropout) if training and self.output_dropout else x

    def drop_between_layers(self, x: Tensor, training: bool) -> Tensor:
        """A layer's outputs (T, B, D·O) with torch's inter-layer dropout (a fresh draw per element) in training."""
        if not (training and self.dropout):
            return x
        keep = 1.0 - self.dropout
        return x * (_bernoulli(x.shape, keep, x) / keep)

    def dropped_weights(self, cell: RecurrentCell, weights: Dict[str, Tensor], training: bool) -> Dict[str, Tensor]:
        """`weights` (those the layer holds for the cell, read once) with DropConnect on weight_hh in training."""
        if not (training and self.weight_dropout):
            return weights
        w, keep = weights.get("weight_hh", cell.weight_hh), 1.0 - self.weight_dropout
        return {**weights, "weight_hh": w * (_bernoulli(w.shape, keep, w) / keep)}

    def recurrent_mask(self, cell: RecurrentCell, x: Tensor, training: bool) -> Optional[Tensor]:
        """(B, recurrent_input_size, *spatial) scaled 0/1 mask on h_{t-1} for x (T, B, ...), or None."""
        if not (training and self.recurrent_dropout):
            return None
        keep = 1.0 - self.recurrent_dropout
        shape = (x.shape[1], cell.recurrent_input_size, *x.shape[3:])
        return _bernoulli(shape, keep, x) / keep

    def zoneout(self, cell: RecurrentCell, x: Tensor, training: bool) -> Tuple[Zoneout, ...]:
        """One entry per state tensor of `cell`: None (off), a (T, B, S, *spatial) 0/1 mask drawn for
        x (T, B, ...) in training, or the probability p in eval (the expectation)."""
        probabilities = {"h": self.zoneout_hidden, "c": self.zoneout_cell}
        result: List[Zoneout] = []
        for name, size in zip(cell.state_names, cell.state_sizes):
            p = probabilities.get(name, 0.0)
            if not p:
                result.append(None)
            elif training:
                result.append(_bernoulli((x.shape[0], x.shape[1], size, *x.shape[3:]), p, x))
            else:
                result.append(p)
        return tuple(result)


def regularisation_attributes(cls: type) -> type:
    """Class decorator: one attribute per probability (`layer.dropout`, `layer.zoneout_hidden`, ...) that
    reads `layer.regularisation`; setting one replaces that frozen object, checked again."""

    def attribute(name: str) -> property:
        def get(layer) -> float:
            return getattr(layer.regularisation, name)

        def set_(layer, value: float) -> None:
            changed = replace(layer.regularisation, **{name: value})
            changed.check_cell(layer.cells[0])
            layer.regularisation = changed

        return property(get, set_, doc=f"the layer's {name} probability (see Regularisation)")

    for name in Regularisation.names():
        setattr(cls, name, attribute(name))
    return cls


def _variational_mask(x: Tensor, p: float) -> Tensor:
    """One dropout mask per sequence, shared over time: (1, B, F) for x (T, B, F)."""
    keep = 1.0 - p
    return _bernoulli((1,) + tuple(x.shape[1:]), keep, x) / keep


def _bernoulli(shape: Sequence[int], p: float, like: Tensor) -> Tensor:
    """0/1 draws with probability p, in `like`'s dtype and device. Drawn in float32 whatever the dtype,
    so one seed gives the same masks at every precision (a float64 run repeats a float32 run's dropout)."""
    return torch.bernoulli(torch.full(tuple(shape), p, device=like.device, dtype=torch.float32)).to(like.dtype)
