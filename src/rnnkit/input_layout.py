"""Every input form of the sequence layer turned into one, and back.

`normalise_input` takes what a caller may hand `Recurrent` — a (T, B, I) or
(B, T, I) tensor, an unbatched (T, I) one, a PackedSequence, lengths or a mask,
right or left padding — and returns the one form the layer runs: time-major
(T, B, I), right-padded, with (B,) int64 lengths or None. With it comes an
`InputLayout`, whose `restore` gives the outputs and final state back in the
caller's layout.

torch's pad_packed_sequence / pack_padded_sequence read batch_sizes on the host
(.tolist(), output shapes from values), which breaks torch.compile graphs; the
packing here indexes with tensor ops, its shapes from T = len(batch_sizes),
B = len(sorted_indices) and N = len(data) only.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence

from .errors import InputError, InputTypeError

Lengths = Union[Tensor, Sequence[int]]


class InputLayout(NamedTuple):
    """What `normalise_input` changed: enough to give the outputs back as the caller laid out the input."""

    packed: Optional[PackedSequence] = None  # the caller's pack: its batch_sizes and batch order
    unbatched: bool = False                  # (T, I) in, (T, O) out, states without the batch axis
    batch_first: bool = False                # (B, T, ·) in and out
    left_lengths: Optional[Tensor] = None    # left-padded rows' lengths: valid steps go back to the end

    def restore(self, out: Tensor, final: Tuple[Tensor, ...]
                ) -> Tuple[Union[Tensor, PackedSequence], Tuple[Tensor, ...]]:
        """out (T, B, O) right-padded and final (L·D, B, S_k) per state tensor -> the caller's layout."""
        if self.left_lengths is not None:
            out = _shift_left_padding(out, self.left_lengths, to_right=False)
        if self.packed is not None:
            return _repack_packed(out, self.packed), final
        if self.unbatched:
            return out.squeeze(1), tuple(s.squeeze(1) for s in final)
        return (out.transpose(0, 1) if self.batch_first else out), final


def normalise_input(input: Union[Tensor, PackedSequence], *, lengths: Optional[Lengths], mask: Optional[Tensor],
                    padding_side: str, batch_first: bool, owner: str,
                    check: Callable[[Tensor], bool]) -> Tuple[Tensor, Optional[Tensor], InputLayout]:
    """The caller's input -> (x (T, B, ...) right-padded, lengths (B,) int64 or None, how to undo it).

    `check(tensor)` validates a tensor as the layer expects it (features, dtype, device; it raises
    otherwise) and says whether it is unbatched; `owner` starts every error message.

    >>> x = torch.randn(2, 5, 3)  # (B, T, I), the valid steps of row 1 at the end
    >>> xt, lengths, layout = normalise_input(x, lengths=[5, 2], mask=None, padding_side="left",
    ...                                       batch_first=True, owner="demo", check=lambda t: t.dim() == 2)
    >>> xt.shape, lengths.tolist(), torch.equal(xt[:2, 1], x[1, 3:])
    (torch.Size([5, 2, 3]), [5, 2], True)
    >>> torch.equal(layout.restore(xt, ())[0], x)
    True
    """
    if isinstance(input, PackedSequence):
        if lengths is not None or mask is not None:
            raise InputError(f"{owner}: a PackedSequence carries its own lengths; do not pass lengths= or mask=")
        x, unpacked_lengths = _unpack_packed(input)  # tensor ops only: no graph break under torch.compile
        check(input.data)  # features, dtype, device: (N, I) reads as unbatched
        return x, unpacked_lengths.to(x.device), InputLayout(packed=input)
    unbatched = check(input)
    x = input.unsqueeze(1) if unbatched else (input.transpose(0, 1) if batch_first else input)
    if padding_side not in ("right", "left"):
        raise InputError(f"{owner}: padding_side must be 'right' or 'left'; got {padding_side!r}")
    if unbatched and (lengths is not None or mask is not None):
        raise InputError(f"{owner}: lengths= and mask= need batched input (T, B, I); got unbatched "
                         f"input of shape {tuple(input.shape)}")
    checked = check_lengths(owner, x, lengths, mask, padding_side)
    left = checked if checked is not None and padding_side == "left" else None
    if left is not None:
        x = _shift_left_padding(x, left, to_right=True)
    return x, checked, InputLayout(unbatched=unbatched, batch_first=batch_first and not unbatched, left_lengths=left)


def check_lengths(owner: str, x: Tensor, lengths: Optional[Lengths], mask: Optional[Tensor],
                  padding_side: str) -> Optional[Tensor]:
    """lengths= or mask= for x (T, B, ...) -> (B,) int64 lengths on x's device, each in [1, T]; or None."""
    T, B = x.shape[0], x.shape[1]
    if mask is not None:
        if lengths is not None:
            raise InputError(f"{owner}: pass lengths= or mask=, not both")
        lengths = _mask_to_lengths(owner, mask, T, B, padding_side)
    if lengths is None:
        return None
    if not isinstance(lengths, Tensor):
        try:
            lengths = torch.as_tensor(lengths)
        except (TypeError, ValueError) as err:
            raise InputTypeError(f"{owner}: lengths must be a 1-D integer tensor or sequence; got {lengths!r}") from err
    if lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
        raise InputTypeError(f"{owner}: lengths must hold integers; got dtype {lengths.dtype}")
    if lengths.dim() != 1 or lengths.shape[0] != B:
        raise InputError(f"{owner}: lengths must have shape ({B},), one length per sequence in the batch; "
                         f"got shape {tuple(lengths.shape)}")
    lengths = lengths.to(device=x.device, dtype=torch.int64)
    if torch.compiler.is_compiling():  # same check without reading values on the host (no graph break)
        torch._assert_async(((lengths >= 1) & (lengths <= T)).all(),
                            f"{owner}: every length must be in [1, {T}] (the input has {T} time steps)")
        return lengths
    low, high = int(lengths.min()), int(lengths.max())
    if low < 1 or high > T:
        raise InputError(f"{owner}: every entry of lengths must be in [1, {T}] (the input has {T} time steps); "
                         f"got min {low}, max {high}")
    return lengths


def _mask_to_lengths(owner: str, mask: Tensor, T: int, B: int, padding_side: str) -> Tensor:
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        got = mask.dtype if isinstance(mask, Tensor) else type(mask).__name__
        raise InputTypeError(f"{owner}: mask must be a bool tensor of shape ({B}, {T}); got {got}")
    if tuple(mask.shape) != (B, T):
        raise InputError(f"{owner}: mask must have shape (batch, time) = ({B}, {T}); got {tuple(mask.shape)}")
    lengths = mask.sum(dim=1)
    if bool((lengths == 0).any()):
        raise InputError(f"{owner}: mask must mark at least one valid (True) step in every row; rows "
                         f"{(lengths == 0).nonzero().flatten().tolist()} have none")
    t = torch.arange(T, device=mask.device)[None, :]
    expected = t < lengths[:, None] if padding_side == "right" else t >= (T - lengths)[:, None]
    if not bool((expected == mask).all()):
        raise InputError(f"{owner}: mask must mark one contiguous run of valid steps at the {padding_side} "
                         f"side of each row (padding_side={padding_side!r})")
    return lengths


def _shift_left_padding(x: Tensor, lengths: Tensor, to_right: bool) -> Tensor:
    """Move each row's valid steps from the end to the start (to_right) or back."""
    T = x.shape[0]
    t = torch.arange(T, device=x.device)[:, None]
    shift = (T - lengths)[None, :]  # (1, B)
    index = (t + shift) % T if to_right else (t - shift) % T
    return x.gather(0, index.view(T, -1, *([1] * (x.dim() - 2))).expand_as(x))


def _unpack_packed(packed: PackedSequence) -> Tuple[Tensor, Tensor]:
    """A PackedSequence -> (x (T, B, *F) right-padded with zeros, lengths (B,) int64), in the caller's batch order."""
    data, sorted_indices, unsorted_indices = packed.data, packed.sorted_indices, packed.unsorted_indices
    batch_sizes = packed.batch_sizes.to(data.device)
    T = batch_sizes.shape[0]
    # enforce_sorted=True packs carry no sorted_indices: then B is a value (traced as a data-dependent size)
    B = sorted_indices.shape[0] if sorted_indices is not None else int(packed.batch_sizes[0])
    b = torch.arange(B, device=data.device)
    valid = b[None, :] < batch_sizes[:, None]  # (T, B), sorted order
    index = torch.where(valid, (torch.cumsum(batch_sizes, 0) - batch_sizes)[:, None] + b[None, :], 0)
    x = data[index.reshape(-1)].reshape(T, B, *data.shape[1:])
    x = torch.where(valid.reshape(T, B, *([1] * (data.dim() - 1))), x, 0)
    lengths = valid.sum(0)
    if unsorted_indices is not None:
        x, lengths = x.index_select(1, unsorted_indices), lengths.index_select(0, unsorted_indices)
    return x, lengths


def _repack_packed(out: Tensor, like: PackedSequence) -> PackedSequence:
    """out (T, B, *F) in the caller's batch order -> a PackedSequence with `like`'s batch_sizes and indices."""
    T, B = out.shape[0], out.shape[1]
    if like.sorted_indices is not None:
        out = out.index_select(1, like.sorted_indices)
    batch_sizes = like.batch_sizes.to(out.device)
    ends = torch.cumsum(batch_sizes, 0)
    n = torch.arange(like.data.shape[0], device=out.device)  # packed row n is step t, sorted row b
    t = torch.searchsorted(ends, n, right=True)
    b = n - (ends - batch_sizes)[t]
    data = out.reshape(T * B, *out.shape[2:])[t * B + b]
    return PackedSequence(data, like.batch_sizes, like.sorted_indices, like.unsorted_indices)


def split_state(state: Any, B: int, x: Tensor, unbatched: bool, LD: int, sizes: Sequence[int],
                names: Sequence[str], owner: str) -> Tuple[Tuple[Tensor, ...], ...]:
    """A layer's initial state (None: zeros) checked and split into one tuple of (B, S_k) tensors per
    layer and direction (LD of them); `sizes` and `names` are the cell's state sizes and names."""
    n = len(sizes)
    spatial = tuple(x.shape[3:])  # cells with feature_dims > 1 keep the input's trailing axes in their state
    if state is None:
        zeros = tuple(x.new_zeros(LD, B, s, *spatial) for s in sizes)
        return tuple(tuple(z[k] for z in zeros) for k in range(LD))
    parts = state if isinstance(state, (tuple, list)) else (state,)
    if n == 1 and isinstance(state, (tuple, list)):
        raise InputTypeError(f"{owner} expects the initial state as one tensor ({names[0]}); got a "
                             f"{type(state).__name__} of {len(state)}")
    if len(parts) != n:
        raise InputTypeError(f"{owner} expects the initial state as a tuple of {n} tensors {names}; got "
                             f"{'a single tensor' if isinstance(state, Tensor) else f'{len(parts)} items'}")
    checked = []
    for name, part, size in zip(names, parts, sizes):
        if not isinstance(part, Tensor):
            raise InputTypeError(f"{owner}: initial state {name} must be a Tensor; got {type(part).__name__}")
        expected = ((LD, size) if unbatched else (LD, B, size)) + spatial
        if tuple(part.shape) != expected:
            hint = ("(num_layers * num_directions, batch, size) — states are never batch-first, "
                    "as in torch.nn" if not unbatched else "(num_layers * num_directions, size) for unbatched input")
            raise InputError(f"{owner}: initial state {name} must have shape {expected} {hint}; "
                             f"got {tuple(part.shape)}")
        if part.dtype != x.dtype and autocast_pair(x, part):
            part = part.to(x.dtype)  # a state carried out of an autocast run comes back in its dtype
        elif part.dtype != x.dtype:
            raise InputTypeError(f"{owner}: initial state {name} must have dtype {x.dtype} like the input; "
                                 f"got {part.dtype}")
        if part.device != x.device:
            raise InputError(f"{owner}: initial state {name} must be on {x.device} like the input; "
                             f"got {part.device}")
        checked.append(part.unsqueeze(1) if unbatched else part)
    return tuple(tuple(c[k] for c in checked) for k in range(LD))


def autocast_pair(x: Tensor, state: Tensor) -> bool:
    """Whether autocast is on for x's device and x and the state are float32 and the autocast dtype (in
    either order): a truncated-BPTT carry under autocast hands back the previous chunk's bfloat16 state."""
    device = x.device.type
    if not torch.is_autocast_enabled(device):
        return False
    return {x.dtype, state.dtype} <= {torch.float32, torch.get_autocast_dtype(device)}
