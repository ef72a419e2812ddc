"""The sequence layer: any cell over time, stacked, bidirectional, variable lengths.

`Recurrent(cell)` maps a sequence (T, B, I) — (B, T, I) with batch_first — to
(outputs, final_state) exactly as torch.nn.RNN/LSTM/GRU do: outputs are the last
layer's y_t for every step, (T, B, D·O); the final state is one (L·D, B, S_k)
tensor per state tensor of the cell (a tuple if the cell has several, as LSTM's
(h_n, c_n)). L = num_layers, D = 2 if bidirectional else 1.

Parameters live in the cells (`self.cells[layer * D + direction]`); the layer's
state_dict uses torch.nn's flat names (`weight_ih_l0`, `bias_hh_l1_reverse`), so
a torch.nn.LSTM state_dict loads unchanged. A layer class with `torch_names = True`
(the drop-ins rnnkit.RNN/LSTM/GRU) holds the parameters itself under those names
instead, so torch's utilities that find a parameter by name (prune, parametrize,
weight_norm, setattr) work on it; its cells read them from the layer.
"""

from __future__ import annotations

import copy
import math
from typing import Callable, Dict, List, Optional, Tuple, Union

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from . import flat_names
from .backends import registry
from .backends.base import RunSpec, Zoneout, zoneout_step
from .backends.step import inference_step, stack_layers, step_kernel
from .cells.base import RecurrentCell, State
from .errors import InputError, InputTypeError
from .input_layout import Lengths, normalise_input, split_state
from .regularisation import Regularisation, regularisation_attributes

CellFactory = Callable[[int], RecurrentCell]


@regularisation_attributes  # layer.dropout, layer.zoneout_hidden, ...: read from layer.regularisation
class Recurrent(nn.Module):
    """Run any cell over a sequence.

    Args:
        cell: a cell (used for layer 0; further layers and the reverse direction
            get deep copies with fresh parameters, which needs their input size
            to equal the cell's) or a factory `input_size -> cell`.
        num_layers: stacked layers L; layer l > 0 reads the D·O outputs of layer l−1.
        bidirectional: add a reverse direction per layer (D = 2). With lengths,
            the reverse direction starts at each sequence's own last valid step.
        batch_first: input and output are (B, T, ·) instead of (T, B, ·); states
            stay (L·D, B, S) as in torch.
        dropout: torch's inter-layer dropout on every layer's outputs but the last.
        input_dropout, output_dropout: variational dropout on the layer's input
            and output sequence, one mask per sequence shared over time.
        recurrent_dropout: variational dropout on h_{t-1} where it enters W_hh
            (one mask per sequence; the carried state is not dropped).
        zoneout_hidden, zoneout_cell: zoneout (Krueger et al. 2016) on the state
            tensors named "h" and "c": each unit keeps its previous value with
            this probability. In eval() the expectation p·s_{t-1} + (1−p)·s̃_t is
            used, as in the paper.
        weight_dropout: DropConnect on weight_hh (Wan et al. 2013; AWD-LSTM),
            one mask per forward call.
        backend: "auto" (fastest correct backend) or a registered name, e.g. "reference".
        input_size: the features of x_t; required with a factory, checked with a cell.

    Every dropout is active only in train(); zoneout is deterministic in eval().
    The seven probabilities are held as one frozen `layer.regularisation`
    (rnnkit.regularisation.Regularisation); `layer.dropout` etc. read it, and
    setting one replaces it, checked again.
    """

    #: hold the cells' parameters on the layer under torch.nn's names (weight_hh_l0, ...). Each forward
    #: reads every one of them once (a parametrization is computed, a pruning mask applied, once per
    #: call, as torch.nn.RNNBase does) and hands them to the backend, so the fast backends still run.
    torch_names: bool = False

    def __init__(
        self,
        cell: Union[RecurrentCell, CellFactory],
        num_layers: int = 1,
        *,
        bidirectional: bool = False,
        batch_first: bool = False,
        dropout: float = 0.0,
        input_dropout: float = 0.0,
        output_dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        zoneout_hidden: float = 0.0,
        zoneout_cell: float = 0.0,
        weight_dropout: float = 0.0,
        backend: str = "auto",
        input_size: Optional[int] = None,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
            raise InputError(f"{owner}: num_layers must be an int >= 1; got {num_layers!r}")
        for name, flag in (("bidirectional", bidirectional), ("batch_first", batch_first)):
            if not isinstance(flag, bool):
                raise InputTypeError(f"{owner}: {name} must be a bool; got {flag!r}")
        registry.check_name(backend)
        self.num_layers = num_layers
        self.bidirectional = bidirectional
        self.num_directions = 2 if bidirectional else 1
        self.batch_first = batch_first
        regularisation = Regularisation(dropout, input_dropout, output_dropout, recurrent_dropout, zoneout_hidden,
                                        zoneout_cell, weight_dropout, owner=owner)
        self.backend = backend
        self.cells = nn.ModuleList(self._build_cells(cell, input_size))
        first = self.cells[0]
        self.input_size = first.input_size
        self.hidden_size = first.hidden_size
        self.output_size = first.output_size
        if self.torch_names:
            for index, cell in enumerate(self.cells):
                cell.hand_parameters_to(self, {param: self._flat_key(index, param)
                                               for param, _ in cell.named_parameters(recurse=False)})
        else:
            flat_names.register_hooks(self)
        regularisation.check_cell(first)
        #: the dropout and zoneout probabilities; each is also an attribute (layer.dropout, ...).
        self.regularisation = regularisation
        #: name of the backend that ran the last forward (e.g. "reference").
        self.last_backend: Optional[str] = None
        #: why `auto` passed over faster backends in the last forward, by backend.
        self.last_skipped: Dict[str, str] = {}

    # ----------------------------------------------------------- construction
    def _build_cells(self, cell: Union[RecurrentCell, CellFactory], input_size: Optional[int]) -> List[RecurrentCell]:
        """One cell per layer and direction; layer l > 0 reads D·O features."""
        owner = type(self).__name__
        if isinstance(cell, RecurrentCell):
            if input_size is not None and input_size != cell.input_size:
                raise InputError(f"{owner}: input_size={input_size} disagrees with the cell's {cell.input_size}")
            template = cell

            def make(size: int, first: bool) -> RecurrentCell:
                if first:
                    return template
                if size != template.input_size:
                    raise InputError(
                        f"{owner}: layer 1 and above read {size} features but the cell takes {template.input_size}; "
                        f"pass a factory `lambda input_size: Cell(input_size, ...)` with input_size=... instead")
                fresh = copy.deepcopy(template)
                fresh.reset_parameters()
                return fresh

            input_size = template.input_size
        elif callable(cell) and not isinstance(cell, nn.Module):
            if input_size is None:
                raise InputTypeError(f"{owner}: a cell factory needs input_size=")

            def make(size: int, first: bool) -> RecurrentCell:
                made = cell(size)
                if not isinstance(made, RecurrentCell):
                    raise InputTypeError(f"{owner}: the cell factory must return a RecurrentCell; "
                                    f"got {type(made).__name__}")
                if made.input_size != size:
                    raise InputError(f"{owner}: the cell factory was asked for a cell reading {size} features; "
                                     f"got one with input_size={made.input_size}. Pass the factory's argument on "
                                     f"(lambda input_size: Cell(input_size, ...))")
                return made
        else:
            raise InputTypeError(f"{owner}: cell must be a RecurrentCell (subclass rnnkit.RecurrentCell) or a factory "
                            f"input_size -> cell; got {type(cell).__name__}")
        cells: List[RecurrentCell] = []
        size = input_size
        for layer in range(self.num_layers):
            for direction in range(self.num_directions):
                cells.append(make(size, layer == 0 and direction == 0))
            size = self.num_directions * cells[-1].output_size
        return cells

    # --------------------------------------------------------------- helpers
    @property
    def state_sizes(self) -> Tuple[int, ...]:
        return self.cells[0].state_sizes

    def cell_at(self, layer: int, direction: int = 0) -> RecurrentCell:
        return self.cells[layer * self.num_directions + direction]

    def _flat_key(self, index: int, param: str) -> str:
        layer, direction = divmod(index, self.num_directions)
        return f"{param}_l{layer}" + ("_reverse" if direction else "")

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            found = "cells" in self._modules and not self.torch_names and flat_names.cell_index(self, name)
            if found:  # (with torch_names those are the layer's own)
                cell = self.cells[found[0]]
                if hasattr(cell, found[1]):
                    return getattr(cell, found[1])
            raise

    @property
    def all_weights(self) -> List[List[Tensor]]:
        """Parameters per layer and direction, as torch.nn.RNNBase.all_weights."""
        return [list(cell.parameters()) + list(cell.held_weights().values()) for cell in self.cells]

    def flatten_parameters(self) -> None:
        """No-op, for code written against torch.nn (rnnkit keeps no flat copy)."""

    def reset_parameters(self) -> None:
        """Draw every cell's parameters afresh (each cell's own initialisation), as torch.nn.RNNBase does;
        with torch_names exactly torch's: U(−1/√H, 1/√H) on every parameter, parametrized originals too."""
        if not self.torch_names:
            for cell in self.cells:
                cell.reset_parameters()
            return
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def initial_state(self, batch_size: int, *, device=None, dtype=None) -> State:
        """Zero state in the layer's layout: (L·D, B, S_k) per state tensor."""
        parts = tuple(torch.zeros(self.num_layers * self.num_directions, batch_size, s,
                                  device=device if device is not None else self._param_device(),
                                  dtype=dtype if dtype is not None else self._param_dtype())
                      for s in self.state_sizes)
        return parts if len(parts) > 1 else parts[0]

    def _first_parameter(self) -> Optional[Tensor]:
        """next(self.parameters()): the layer's own first where it holds them (torch names), read without
        building parameters()'s generator (step asks once per token)."""
        for p in self._parameters.values():
            if p is not None:
                return p
        return next(self.parameters(), None)

    def _param_device(self) -> Optional[torch.device]:
        p = self._first_parameter()
        return p.device if p is not None else None

    def _param_dtype(self) -> Optional[torch.dtype]:
        p = self._first_parameter()
        return p.dtype if p is not None else None

    # --------------------------------------------------------------- forward
    def forward(
        self,
        input: Union[Tensor, PackedSequence],
        state: Optional[State] = None,
        *,
        lengths: Optional[Lengths] = None,
        mask: Optional[Tensor] = None,
        padding_side: str = "right",
    ) -> Tuple[Union[Tensor, PackedSequence], State]:
        """Run the stack over a sequence.

        Args:
            input: (T, B, I), or (B, T, I) with batch_first, or (T, I) unbatched,
                or a PackedSequence (then the output is one too).
            state: initial state, (L·D, B, S_k) per state tensor ((L·D, S_k)
                unbatched); zeros when None.
            lengths: (B,) valid steps per sequence, 1 ≤ lengths[b] ≤ T, on any device.
            mask: (B, T) bool, True on valid steps (a contiguous run at the
                `padding_side` end); turned into `lengths`.
            padding_side: "right" (valid steps first) or "left" (valid steps last).

        Returns:
            outputs (T, B, D·O) (batch_first: (B, T, D·O)), zero at padded
            positions; final state (L·D, B, S_k) per state tensor, each row's
            state after its last valid step.
        """
        x, lengths, layout = normalise_input(input, lengths=lengths, mask=mask, padding_side=padding_side,
                                             batch_first=self.batch_first, owner=type(self).__name__,
                                             check=self._check_input)  # x (T, B, I) right-padded
        states = self._check_state(state, x.shape[1], x, layout.unbatched)
        out, final = self._run_to_longest(x, states, lengths)
        output, final = layout.restore(out, final)
        return output, self.cells[0].pack_state(final)

    def step(self, x_t: Tensor, state: Optional[State] = None) -> Tuple[Tensor, State]:
        """One time step of the whole stack, for streaming inference.

            state = layer.initial_state(batch)
            y_t, state = layer.step(x_t, state)      # once per arriving x_t

        Args:
            x_t: (B, I), one time step of every sequence in the batch.
            state: (L, B, S_k) per state tensor, as forward() takes and returns it
                (a tuple for cells with several, e.g. LSTM's (h, c)); zeros when None.

        Returns:
            y_t (B, O), the last layer's output, and the new state (L, B, S_k).

        Stepping a sequence through `step` gives forward()'s outputs and final
        state step for step. Unidirectional layers only (a reverse direction needs
        the end of the sequence first). Stochastic regularisation cannot be
        stepped (its masks are drawn per sequence), so in train() a layer with any
        dropout or zoneout raises; in eval() zoneout uses its expectation, as in
        forward(). Cells that are exactly torch's step in one compiled call (backends/step.py; under
        torch.no_grad without Python checks: the kernels check, the checks below only name a mismatch).
        """
        cells = tuple(self.cells)
        reg = self.regularisation
        if not (self.bidirectional or reg.zoneout_hidden or reg.zoneout_cell or (self.training and reg.active())):
            quick = inference_step(cells, x_t, state)  # None where it does not apply, or on any mismatch
            if quick is not None:
                return quick[0], cells[0].pack_state(quick[1])
        self._check_step_input(x_t, cells[0])
        states = self._check_state(state, x_t.shape[0], x_t.unsqueeze(0), unbatched=False)
        x = x_t
        finals: List[Tuple[Tensor, ...]] = []
        for cell, old in zip(cells, states):
            x, new = self._step_cell(cell, x, old)
            finals.append(new)
        return x, cells[0].pack_state(stack_layers(finals))

    def _check_step_input(self, x_t: Tensor, first: RecurrentCell) -> None:
        """step's checks of the layer (unidirectional, nothing stochastic in train mode) and of x_t."""
        owner = type(self).__name__
        if self.bidirectional:
            raise InputError(f"{owner}.step needs a unidirectional layer: the reverse direction of a bidirectional "
                             f"layer starts at the end of the sequence, which a stream has not seen yet. Run "
                             f"forward() over the whole sequence instead.")
        if self.training and self.regularisation.active():
            raise InputError(f"{owner}.step cannot draw per-sequence masks for "
                             f"{', '.join(self.regularisation.active())} one step at a time; call .eval() for "
                             f"inference (or train with forward())")
        if not isinstance(x_t, Tensor):
            raise InputTypeError(f"{owner}.step expects x_t to be a Tensor; got {type(x_t).__name__}")
        fd = first.feature_dims
        if x_t.dim() != 1 + fd or x_t.shape[-fd] != self.input_size:
            raise InputError(f"{owner}.step expects x_t of shape (batch, {self.input_size}), one time step; "
                             f"got {tuple(x_t.shape)}. For a whole sequence call the layer: layer(x, state).")
        p = self._first_parameter()
        if p is not None and x_t.dtype != p.dtype:
            raise InputTypeError(f"{owner}.step expects x_t of dtype {p.dtype} (the parameters' dtype); got {x_t.dtype}")
        if p is not None and x_t.device != p.device:
            raise InputError(f"{owner}.step expects x_t on {p.device} (where the parameters are); got {x_t.device}")

    def _step_cell(self, cell: RecurrentCell, x: Tensor, old: Tuple[Tensor, ...]) -> Tuple[Tensor, Tuple[Tensor, ...]]:
        """One layer's step: torch's one-step kernel where the cell is exactly torch's and no zoneout
        applies, else the cell's own project and step (then eval zoneout's expectation)."""
        keeps = self.regularisation.zoneout(cell, x, training=False)  # eval: the expectation p, or None
        zoneout = any(keep is not None for keep in keeps)
        kernel = None if zoneout else step_kernel(cell)
        if kernel is not None:
            return kernel(cell, x, old)
        with cell.using_weights(cell.held_weights()):  # a parametrized weight computed once per call
            y, new = cell.step(cell.project(x), cell.pack_state(old))
        new = cell.unpack_state(new)
        if zoneout:
            y, new = zoneout_step(cell, y, new, old, keeps)
        return y, new

    def _run_to_longest(self, x: Tensor, states: Tuple[Tuple[Tensor, ...], ...],
                        lengths: Optional[Tensor]) -> Tuple[Tensor, Tuple[Tensor, ...]]:
        """As _run_stack, without the masked loop when every row is full and without the steps past the
        longest row (zero outputs there)."""
        # Under torch.compile / torch.export these two shortcuts would read tensor values on the host
        # (a graph break); the masked loop over all T steps gives the same numbers.
        T = x.shape[0]
        compiling = torch.compiler.is_compiling()
        if lengths is not None and not compiling and bool((lengths == T).all()):
            lengths = None  # every row is full: the masked loop is not needed
        T_run = T if lengths is None or compiling else int(lengths.max())
        out, final = self._run_stack(x[:T_run], states, lengths)
        if T_run < T:
            out = torch.cat([out, out.new_zeros(T - T_run, *out.shape[1:])])
        return _in_autocast_dtype(out, final)

    def _run_stack(self, x: Tensor, states: Tuple[Tuple[Tensor, ...], ...],
                   lengths: Optional[Tensor]) -> Tuple[Tensor, Tuple[Tensor, ...]]:
        """x (T, B, I) right-padded -> (outputs (T, B, D·O), final (L·D, B, S_k) per state tensor)."""
        D, regularisation = self.num_directions, self.regularisation
        x = regularisation.drop_input(x, self.training)
        finals: List[Tuple[Tensor, ...]] = []
        names: List[str] = []
        for layer in range(self.num_layers):
            outs = []
            for direction in range(D):
                index = layer * D + direction
                cell = self.cells[index]
                inputs = x if direction == 0 else _reverse_padded(x, lengths)
                spec = RunSpec(cell=cell, inputs=inputs, state=states[index], lengths=lengths,
                               weights=self._dropped_weights(cell, cell.held_weights()),
                               recurrent_mask=self._recurrent_mask(cell, x),
                               zoneout=self._zoneout(cell, x))
                backend, self.last_skipped = registry.select(self.backend, spec)
                names.append(backend.name)
                y, final = backend.run(spec)
                outs.append(y if direction == 0 else _reverse_padded(y, lengths))
                finals.append(final)
            x = outs[0] if D == 1 else torch.cat(outs, dim=2)  # (T, B, D·O, *spatial)
            if layer < self.num_layers - 1:
                x = regularisation.drop_between_layers(x, self.training)
        x = regularisation.drop_output(x, self.training)
        self.last_backend = names[0] if len(set(names)) == 1 else ",".join(names)
        stacked = tuple(torch.stack([f[k] for f in finals]) for k in range(len(self.state_sizes)))
        return x, stacked

    # ------------------------------------------------------- regularisation
    # The masks, drawn by self.regularisation; methods of the layer so that a test can watch them.
    def _dropped_weights(self, cell: RecurrentCell, weights: Dict[str, Tensor]) -> Dict[str, Tensor]:
        return self.regularisation.dropped_weights(cell, weights, self.training)

    def _recurrent_mask(self, cell: RecurrentCell, x: Tensor) -> Optional[Tensor]:
        return self.regularisation.recurrent_mask(cell, x, self.training)

    def _zoneout(self, cell: RecurrentCell, x: Tensor) -> Tuple[Zoneout, ...]:
        return self.regularisation.zoneout(cell, x, self.training)

    # ------------------------------------------------------------ validation
    def _check_input(self, input: Tensor) -> bool:
        """Raise unless `input` has the layer's features, dtype and device and at least one step and row;
        return whether it is unbatched."""
        owner = type(self).__name__
        if not isinstance(input, Tensor):
            raise InputTypeError(f"{owner} expects input to be a Tensor or PackedSequence; got {type(input).__name__}")
        fd = self.cells[0].feature_dims
        layout = "(batch, time, features)" if self.batch_first else "(time, batch, features)"
        if input.dim() not in (1 + fd, 2 + fd):
            raise InputError(f"{owner} expects input of rank {2 + fd} {layout} or {1 + fd} (time, features) "
                             f"unbatched; got shape {tuple(input.shape)}. For a single step, call the cell: "
                             f"cell(x, state).")
        if fd == 1 and input.shape[-1] != self.input_size:
            raise InputError(f"{owner} expects input with {self.input_size} features in the last dimension; "
                             f"got shape {tuple(input.shape)}")
        if fd > 1 and input.shape[-fd] != self.input_size:  # (…, C, *spatial): channels lead the feature axes
            raise InputError(f"{owner} expects input with {self.input_size} channels in dimension "
                             f"{input.dim() - fd} (the first of {fd} feature axes); got shape {tuple(input.shape)}")
        p_dtype, p_device = self._param_dtype(), self._param_device()
        if not input.is_floating_point():
            raise InputTypeError(f"{owner} expects floating-point input ({p_dtype}); got {input.dtype}")
        if p_dtype is not None and input.dtype != p_dtype:
            raise InputTypeError(f"{owner} expects input of dtype {p_dtype} (the parameters' dtype); got {input.dtype}. "
                            f"Convert one of them with .to(dtype).")
        if p_device is not None and input.device != p_device:
            raise InputError(f"{owner} expects input on {p_device} (where the parameters are); got {input.device}")
        unbatched = input.dim() == 1 + fd
        T = input.shape[0] if (unbatched or not self.batch_first) else input.shape[1]
        B = 1 if unbatched else (input.shape[0] if self.batch_first else input.shape[1])
        if T == 0:
            raise InputError(f"{owner} expects at least one time step; got input of shape {tuple(input.shape)}")
        if B == 0:
            raise InputError(f"{owner} got an empty batch (batch size 0), input of shape {tuple(input.shape)}")
        return unbatched

    def _check_state(self, state: Optional[State], B: int, x: Tensor,
                     unbatched: bool) -> Tuple[Tuple[Tensor, ...], ...]:
        """Split the user's state into one tuple of (B, S_k) tensors per layer and direction."""
        first = next(iter(self.cells))  # (ModuleList indexing is slow; step calls this once per token)
        return split_state(state, B, x, unbatched, self.num_layers * self.num_directions, first.state_sizes,
                           first.state_names, type(self).__name__)

    def extra_repr(self) -> str:
        parts = [f"num_layers={self.num_layers}"]
        for name in ("bidirectional", "batch_first"):
            if getattr(self, name):
                parts.append(f"{name}=True")
        if self.regularisation.active():
            parts.append(str(self.regularisation))
        parts.append(f"backend={self.backend!r}")
        return ", ".join(parts)


# ------------------------------------------------------------------ helpers
def _in_autocast_dtype(out: Tensor, final: Tuple[Tensor, ...]) -> Tuple[Tensor, Tuple[Tensor, ...]]:
    """Under autocast, float32 results in the autocast dtype, as torch's RNN modules and the fused kernels
    give them: the backends whose loop computes in float32 (reference, scan) return the same dtypes."""
    device = out.device.type
    if out.dtype != torch.float32 or not torch.is_autocast_enabled(device):
        return out, final
    low = torch.get_autocast_dtype(device)
    return out.to(low), tuple(f.to(low) if f.dtype == torch.float32 else f for f in final)


def _reverse_padded(x: Tensor, lengths: Optional[Tensor]) -> Tensor:
    """Reverse each row's valid prefix in time; padded steps stay where they are."""
    if lengths is None:
        return x.flip(0)
    T = x.shape[0]
    t = torch.arange(T, device=x.device)[:, None]  # (T, 1)
    index = torch.where(t < lengths[None, :], lengths[None, :] - 1 - t, t)  # (T, B)
    return x.gather(0, index.view(T, -1, *([1] * (x.dim() - 2))).expand_as(x))
