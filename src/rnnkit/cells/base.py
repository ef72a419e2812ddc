"""The cell protocol: one time step of a recurrent network.

A cell owns its parameters and the math of one step. It never loops over time,
inspects devices or calls kernels; `rnnkit.Recurrent` and the backends do that.

Every built-in cell splits its step in two, so that the sequence layer can hoist
the input term out of the time loop (one GEMM over all steps):

    u_t           = cell.project(x_t)           (B, K)   input term, no recurrence
    y_t, state_t  = cell.step(u_t, state_{t-1}) (B, O)   the recurrence

`cell(x_t, state)` is `cell.step(cell.project(x_t), state)`. `project` also
accepts a whole sequence (T, B, I) and then returns (T, B, K).
"""

from __future__ import annotations

import contextlib
import math
from typing import Dict, Iterator, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from ..errors import InputError, InputTypeError

State = Union[Tensor, Tuple[Tensor, ...]]


class RecurrentCell(nn.Module):
    """Base class of rnnkit's cells.

    Subclasses set `input_size`, `hidden_size`, `output_size` (the size of y_t),
    `state_names` and `state_sizes` (one entry per state tensor, e.g. LSTM:
    ("h", "c") and (H, H)), and implement `project` and `step`.

    `outputs_state` is True when y_t is the first state tensor (Elman, LSTM,
    GRU, minGRU); zoneout then changes the output too. SRU's y_t is not part of
    its state, so it is False there.

    `recurrent_input_size` is the width of the vector that multiplies W_hh (the
    size of a recurrent-dropout mask), or 0 for cells without a recurrent matrix.

    A cell may hand its parameters to the layer that runs it (`hand_parameters_to`,
    what the drop-ins rnnkit.RNN/LSTM/GRU do to hold them under torch's names):
    `cell.weight_hh` then reads the layer's `weight_hh_l0`, parametrized or pruned
    as it is there, and assigning it assigns the layer's. There is one copy.
    """

    input_size: int
    hidden_size: int
    output_size: int
    state_names: Tuple[str, ...] = ("h",)
    state_sizes: Tuple[int, ...]
    outputs_state: bool = True
    recurrent_input_size: int = 0
    #: where `init_forget_bias` writes: (bias parameter names, the H-block of the gate that keeps the
    #: previous state, +1 if that gate is σ(bias) or −1 if it is 1 − σ(bias)); None: no such gate.
    keep_gate: Optional[Tuple[Tuple[str, ...], int, int]] = None
    #: number of feature axes of x_t after the batch axis (1 for vectors; a
    #: convolutional cell would have 3: channels, height, width). With more than
    #: one, the first feature axis holds `input_size` channels and the state
    #: tensors keep the input's trailing (spatial) axes: (B, S_k, *spatial).
    feature_dims: int = 1

    # ------------------------------------------------------------- parameters
    def set_sizes(self, input_size: int, hidden_size: int, num_states: int = 1, recurrent: bool = True) -> None:
        """Check and record the sizes of a vector cell whose output is h: input I, hidden H (= output),
        `num_states` state tensors of H units, and whether W_hh multiplies h (recurrent_input_size H)."""
        check_sizes(type(self).__name__, input_size=input_size, hidden_size=hidden_size)
        self.input_size, self.hidden_size, self.output_size = input_size, hidden_size, hidden_size
        self.state_sizes = (hidden_size,) * num_states
        if recurrent:
            self.recurrent_input_size = hidden_size

    def hand_parameters_to(self, owner: nn.Module, names: Dict[str, str]) -> None:
        """Move the parameters named in `names` to `owner`, registered there as `names[param]`;
        `self.<param>` reads (and assignment writes) `owner.<names[param]>` from now on."""
        for param, owner_name in names.items():
            owner.register_parameter(owner_name, self._parameters.pop(param))
        self.__dict__["_parameter_owner"] = (owner, dict(names))

    def held_weights(self) -> Dict[str, Tensor]:
        """The parameters the owner holds for this cell, each read once now (a parametrization or a
        pruning mask is applied by this read); {} for a cell that holds its own."""
        linked = self.__dict__.get("_parameter_owner")
        if linked is None:
            return {}
        owner, names = linked
        plain = owner._parameters  # read directly (Module.__getattr__ is slow; step reads these per token);
        # a parametrized or pruned weight is not there and goes through getattr, which applies it
        return {param: plain[name] if name in plain else getattr(owner, name) for param, name in names.items()}

    @contextlib.contextmanager
    def using_weights(self, weights: Dict[str, Tensor]) -> Iterator[None]:
        """Within the block `self.<name>` is `weights[name]` (DropConnect, or the owner's weights read
        once per forward); nothing is registered or assigned, so the parameters are untouched."""
        shadowed = {name: self.__dict__[name] for name in weights if name in self.__dict__}
        self.__dict__.update(weights)  # instance attributes come before nn.Module's parameter lookup
        try:
            yield
        finally:
            for name in weights:
                del self.__dict__[name]
            self.__dict__.update(shadowed)

    def __getattr__(self, name: str):
        linked = self.__dict__.get("_parameter_owner")
        if linked is not None and name in linked[1]:
            return getattr(linked[0], linked[1][name])
        return super().__getattr__(name)

    def __setattr__(self, name: str, value) -> None:
        linked = self.__dict__.get("_parameter_owner")
        if linked is not None and name in linked[1]:
            setattr(linked[0], linked[1][name], value)
        else:
            super().__setattr__(name, value)

    # ------------------------------------------------------------------ state
    def initial_state(
        self,
        batch_size: int,
        *,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> State:
        """Zeros: one (B, S) tensor per entry of `state_sizes` (a tuple if several)."""
        ref = next(iter(self._parameter_tensors()), None)
        device = device if device is not None else (ref.device if ref is not None else None)
        dtype = dtype if dtype is not None else (ref.dtype if ref is not None else None)
        zeros = tuple(torch.zeros(batch_size, s, device=device, dtype=dtype) for s in self.state_sizes)
        return zeros if len(zeros) > 1 else zeros[0]

    def pack_state(self, parts: Sequence[Tensor]) -> State:
        """A tuple of state tensors in this cell's public form (bare tensor if one)."""
        return tuple(parts) if len(self.state_sizes) > 1 else parts[0]

    @staticmethod
    def unpack_state(state: State) -> Tuple[Tensor, ...]:
        return tuple(state) if isinstance(state, (tuple, list)) else (state,)

    # ------------------------------------------------------------------- math
    def project(self, x: Tensor) -> Tensor:
        """Input term of every step: (..., I) -> (..., K).

        A cell that defines only `forward(x, state)` gets u = x here and its
        `forward` as `step`, so `Recurrent` runs it too (without hoisting).
        """
        if type(self).forward is not RecurrentCell.forward:
            return x
        raise NotImplementedError(f"{type(self).__name__} must define project and step, or forward")

    def step(self, u: Tensor, state: State, recurrent_mask: Optional[Tensor] = None) -> Tuple[Tensor, State]:
        """One recurrence step from the projected input u (B, K).

        `recurrent_mask` (B, recurrent_input_size), when given, multiplies the
        vector that enters the recurrent matrix product (recurrent dropout); the
        state itself is carried undropped.
        """
        if type(self).forward is not RecurrentCell.forward:  # forward-only cell: u is x_t (see project)
            if recurrent_mask is not None:
                raise InputError(f"{type(self).__name__} defines only forward, so recurrent dropout cannot reach "
                                 f"its recurrent product")
            return self.forward(u, state)
        raise NotImplementedError(f"{type(self).__name__} must define project and step, or forward")

    def forward(self, x: Tensor, state: Optional[State] = None) -> Tuple[Tensor, State]:
        """One time step: x (B, I) -> (y (B, O), new state)."""
        if x.dim() != 2 or x.shape[-1] != self.input_size:
            raise InputError(
                f"{type(self).__name__} expects x of shape (batch, {self.input_size}); "
                f"got {tuple(x.shape)}. For a whole sequence use rnnkit.Recurrent."
            )
        if state is None:
            state = self.initial_state(x.shape[0], device=x.device, dtype=x.dtype)
        return self.step(self.project(x), state)

    # ------------------------------------------------------------------ init
    def reset_parameters(self) -> None:
        """torch.nn's initialisation: every parameter U(-1/sqrt(H), 1/sqrt(H))."""
        bound = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0.0
        for p in self._parameter_tensors():
            nn.init.uniform_(p, -bound, bound)

    @torch.no_grad()
    def init_forget_bias(self, value: float) -> None:
        """Start the gate that keeps the previous state at σ(value) (Jozefowicz et al. 2015; Keras's
        unit_forget_bias is value 1): its block of the first bias in `keep_gate` becomes ±value and of
        the others 0, so the gate's total bias is value; every other entry keeps its initialisation."""
        owner = type(self).__name__
        if self.keep_gate is None:
            raise InputError(f"{owner} has no gate that keeps the previous state, so forget_bias does not apply")
        names, block, sign = self.keep_gate
        biases = [getattr(self, name) for name in names]
        if any(b is None for b in biases):
            raise InputError(f"{owner}: forget_bias needs the gate biases; the cell was built with bias=False")
        rows = slice(block * self.hidden_size, (block + 1) * self.hidden_size)
        biases[0][rows] = sign * value
        for other in biases[1:]:
            other[rows] = 0.0

    @torch.no_grad()
    def init_recurrent_orthogonal(self) -> None:
        """torch.nn.init.orthogonal_ on each H-row gate block of weight_hh (Saxe et al. 2014; Keras's
        recurrent_initializer="orthogonal"), so every gate's recurrent map starts norm-preserving."""
        weight = getattr(self, "weight_hh", None)
        if not isinstance(weight, Tensor):
            raise InputError(f"{type(self).__name__} has no recurrent matrix weight_hh, so an orthogonal "
                             f"recurrent initialisation does not apply")
        for block in weight.split(self.hidden_size):
            nn.init.orthogonal_(block)

    @torch.no_grad()
    def init_recurrent_radius(self, radius: float) -> None:
        """Scale each H-row gate block of weight_hh so that its spectral radius (largest |eigenvalue|) is
        `radius`: above 1 the linearised recurrence h -> W h grows a direction at every step, the
        condition for exploding gradients (Pascanu et al. 2013); 1 with ReLU is IRNN-like (Le et al. 2015)."""
        weight = getattr(self, "weight_hh", None)
        if not isinstance(weight, Tensor):
            raise InputError(f"{type(self).__name__} has no recurrent matrix weight_hh, so scaling the initial "
                             f"recurrent weights does not apply")
        if not (isinstance(radius, (int, float)) and math.isfinite(radius) and radius > 0):
            raise InputError(f"{type(self).__name__}: the spectral radius must be a positive number; got {radius!r}")
        for block in weight.split(self.hidden_size):
            current = float(spectral_radius(block))
            if current == 0.0:
                raise InputError(f"{type(self).__name__}: a block of weight_hh has spectral radius 0 (all its "
                                 f"eigenvalues are 0), so no scaling gives it radius {radius}")
            block.mul_(radius / current)

    def _parameter_tensors(self) -> list:
        """Its own parameters, then those its owner holds for it that are plain parameters there
        (a parametrized or pruned one is computed, not stored: its owner re-initialises the original)."""
        held = [w for w in self.held_weights().values() if isinstance(w, nn.Parameter)]
        return list(self.parameters()) + held

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}"


def check_sizes(owner: str, **sizes: int) -> None:
    """Raise a ValueError naming the argument when a size is not a positive int."""
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputTypeError(f"{owner}: {name} must be an int; got {type(value).__name__} {value!r}")
        if value <= 0:
            raise InputError(f"{owner}: {name} must be positive; got {value}")


def linear(x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
    """x @ weight.T + bias for any leading shape (one GEMM)."""
    return torch.nn.functional.linear(x, weight, bias)


def bias_sum(bias_ih: Optional[Tensor], bias_hh: Optional[Tensor]) -> Optional[Tensor]:
    """b_ih + b_hh, the one bias an input projection can carry when both add to the same gates
    (either may be None: a cell built with bias=False, or a cell with one bias)."""
    if bias_ih is None:
        return bias_hh
    return bias_ih if bias_hh is None else bias_ih + bias_hh


def masked(h: Tensor, mask: Optional[Tensor]) -> Tensor:
    return h if mask is None else h * mask


def spectral_radius(matrix: Tensor) -> Tensor:
    """The largest |eigenvalue| of a square matrix (H, H), computed in float64."""
    return torch.linalg.eigvals(matrix.detach().double()).abs().max()
