"""Keras 3 LSTM/GRU weights <-> rnnkit layers, through `.weights.h5` files (h5py only, no TensorFlow).

Keras 3 (`model.save_weights("m.weights.h5")`, keras/src/saving/saving_lib.py) writes one
HDF5 group per saveable object, named by its attribute path, with the object's own
variables as datasets "0", "1", ... under `vars`. A Sequential's recurrent layers hold
their weights in their cell:

    layers/lstm/cell/vars/0     kernel            (I, 4H)   gate blocks i, f, c, o
    layers/lstm/cell/vars/1     recurrent_kernel  (H, 4H)
    layers/lstm/cell/vars/2     bias              (4H,)     (absent with use_bias=False)
    layers/gru_1/cell/vars/0    kernel            (I, 3H)   gate blocks z, r, h
    layers/gru_1/cell/vars/1    recurrent_kernel  (H, 3H)
    layers/gru_1/cell/vars/2    bias              (2, 3H) with reset_after=True (input row, recurrent row),
                                                  (3H,) with reset_after=False (input bias only)
    layers/bidirectional/forward_layer/cell/vars/...   and .../backward_layer/cell/vars/...

The math is the same as rnnkit's once transposed and re-ordered: Keras's LSTM gate
order i, f, c, o is torch's i, f, g, o, with one bias (loaded as bias_ih, bias_hh = 0);
Keras's GRU h = z ⊙ h_{t-1} + (1 − z) ⊙ h̃ is torch's, reset_after=True is rnnkit's
GRU(reset="after") and reset_after=False is GRU(reset="before") without a recurrent
bias. The file holds no configuration, so the Keras layers must use the default
activations (tanh, sigmoid).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .._optional import require
from ..cells import GRUCell, LSTMCell, RecurrentCell
from ..recurrent import Recurrent
from ..errors import InputError

PathLike = Union[str, Path]
VAR_NAMES = ("kernel", "recurrent_kernel", "bias")


class KerasWeightsError(InputError):
    """A .weights.h5 file that does not fit the layer: names the tensor, expected and got."""


def _h5py():
    return require("h5py", extra="deploy", purpose="Keras weight files")


def _natural(path: str) -> Tuple:
    """lstm < lstm_1 < lstm_2 < lstm_10 (h5py lists names alphabetically)."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", path))


def find_recurrent_layers(path: PathLike) -> List[str]:
    """Groups of a Keras weights file that hold a recurrent cell (…/cell/vars with 2 or 3 tensors), in order.

    A Bidirectional layer appears as its forward_layer and backward_layer entries.
    """
    h5py = _h5py()
    found: List[str] = []
    with h5py.File(str(path), "r") as f:
        def visit(name: str, obj) -> None:
            if isinstance(obj, h5py.Group) and name.endswith("cell/vars") and set(obj.keys()) in ({"0", "1"},
                                                                                                 {"0", "1", "2"}):
                found.append(name[: -len("/cell/vars")])
        f.visititems(visit)
    found.sort(key=lambda p: _natural(p.replace("forward_layer", "0").replace("backward_layer", "1")))
    return found


def _family(cell: RecurrentCell, owner: str) -> str:
    if type(cell) is LSTMCell:
        if cell.proj_size:
            raise KerasWeightsError(f"{owner}: Keras LSTM has no output projection; proj_size={cell.proj_size} "
                                    f"cannot be converted (use proj_size=0)")
        return "lstm"
    if type(cell) is GRUCell:
        return "gru"
    raise KerasWeightsError(f"{owner}: Keras converters handle rnnkit.LSTM and rnnkit.GRU (their cells LSTMCell, "
                            f"GRUCell); got {type(cell).__name__}")


def _gru_order(w: np.ndarray, axis: int) -> np.ndarray:
    """Swap the first two gate blocks: Keras z, r, h <-> torch r, z, n (the map is its own inverse)."""
    a, b, c = np.split(w, 3, axis=axis)
    return np.concatenate([b, a, c], axis=axis)


def _read(group, index: int, where: str, expected: Tuple[int, ...]) -> np.ndarray:
    name = f"{where}/cell/vars/{index}"
    array = np.asarray(group[str(index)])
    if tuple(array.shape) != expected:
        raise KerasWeightsError(f"{name} ({VAR_NAMES[index]}): expected shape {expected}, got {tuple(array.shape)}")
    return array.astype(np.float64)


def _cell_paths(layer: Recurrent, layer_paths: Optional[Sequence[str]], available: List[str]) -> List[str]:
    """One Keras group per rnnkit cell (layer-major, forward before reverse)."""
    owner = type(layer).__name__
    paths = list(layer_paths) if layer_paths is not None else available
    if len(paths) != len(layer.cells):
        raise KerasWeightsError(
            f"{owner} has {layer.num_layers} layer(s) × {layer.num_directions} direction(s) = {len(layer.cells)} "
            f"cells but the file has {len(paths)} recurrent layer entries {paths}; pass layer_paths=[...] to pick")
    if layer.bidirectional:
        for i in range(0, len(paths), 2):
            if not (paths[i].endswith("forward_layer") and paths[i + 1].endswith("backward_layer")):
                raise KerasWeightsError(f"{owner} is bidirectional; expected a Keras Bidirectional layer's "
                                        f"forward_layer/backward_layer pair, got {paths[i]!r}, {paths[i + 1]!r}")
    return paths


@torch.no_grad()
def load_keras_weights(layer: Recurrent, path: PathLike, layer_paths: Optional[Sequence[str]] = None) -> None:
    """Copy Keras 3 LSTM/GRU weights from a .weights.h5 file into an rnnkit LSTM/GRU layer (in place).

    layer_paths: the file's groups to read, one per layer and direction (default: every recurrent layer
    the file holds, in order; see `find_recurrent_layers`).
    """
    h5py = _h5py()
    owner = type(layer).__name__
    family = _family(layer.cells[0], owner)
    paths = _cell_paths(layer, layer_paths, find_recurrent_layers(path))
    G = 4 if family == "lstm" else 3
    with h5py.File(str(path), "r") as f:
        for index, (cell, where) in enumerate(zip(layer.cells, paths)):
            if f"{where}/cell/vars" not in f:
                raise KerasWeightsError(f"{path}: no group {where}/cell/vars")
            group = f[f"{where}/cell/vars"]
            I, H = cell.input_size, cell.hidden_size
            kernel = _read(group, 0, where, (I, G * H))
            recurrent = _read(group, 1, where, (H, G * H))
            has_bias = "2" in group
            if has_bias != (cell.bias_ih is not None):
                raise KerasWeightsError(f"{where}: the file {'has' if has_bias else 'has no'} bias but the layer "
                                        f"was built with bias={cell.bias_ih is not None}")
            bias_ih = bias_hh = None
            if family == "lstm":
                if has_bias:
                    bias_ih, bias_hh = _read(group, 2, where, (G * H,)), np.zeros(G * H)
            else:
                kernel, recurrent = _gru_order(kernel, 1), _gru_order(recurrent, 1)
                if has_bias:
                    shape = tuple(group["2"].shape)
                    after = len(shape) == 2
                    if (cell.reset == "after") != after:
                        form = "reset_after=True (bias (2, 3H))" if after else "reset_after=False (bias (3H,))"
                        raise KerasWeightsError(
                            f"{where}/cell/vars/2 (bias) has shape {shape}: a Keras GRU with {form}, but the layer "
                            f"has reset={cell.reset!r}; build rnnkit.GRU(..., reset={'after' if after else 'before'!r})")
                    if after:
                        b = _read(group, 2, where, (2, G * H))
                        bias_ih, bias_hh = _gru_order(b[0], 0), _gru_order(b[1], 0)
                    else:
                        bias_ih, bias_hh = _gru_order(_read(group, 2, where, (G * H,)), 0), np.zeros(G * H)
            values = {"weight_ih": kernel.T, "weight_hh": recurrent.T, "bias_ih": bias_ih, "bias_hh": bias_hh}
            for name, value in values.items():
                if value is None:
                    continue
                target = getattr(cell, name)
                target.copy_(torch.as_tensor(np.ascontiguousarray(value), dtype=target.dtype))


@torch.no_grad()
def save_keras_weights(layer: Recurrent, path: PathLike) -> Path:
    """Write an rnnkit LSTM/GRU layer as a Keras 3 Sequential's .weights.h5 (layers/lstm, layers/lstm_1, …).

    Bidirectional layers become Keras Bidirectional entries. rnnkit.GRU(reset="after") is Keras
    GRU(reset_after=True); reset="before" is reset_after=False, which has no recurrent bias, so a
    nonzero bias_hh is refused. LSTM's two biases are summed into Keras's one.
    """
    h5py = _h5py()
    owner = type(layer).__name__
    family = _family(layer.cells[0], owner)
    path = Path(path)
    if not path.name.endswith(".weights.h5"):
        raise InputError(f"Keras 3 loads weights only from files named *.weights.h5; got {path.name!r}")
    arrays: Dict[str, np.ndarray] = {}
    D = layer.num_directions
    for l in range(layer.num_layers):
        name = (family if not layer.bidirectional else "bidirectional") + (f"_{l}" if l else "")
        for d in range(D):
            cell = layer.cells[l * D + d]
            where = f"layers/{name}" + (("/forward_layer", "/backward_layer")[d] if layer.bidirectional else "")
            w_ih, w_hh = cell.weight_ih.double().numpy(), cell.weight_hh.double().numpy()
            b_ih = cell.bias_ih.double().numpy() if cell.bias_ih is not None else None
            b_hh = cell.bias_hh.double().numpy() if cell.bias_hh is not None else None
            if family == "lstm":
                kernel, recurrent = w_ih.T, w_hh.T
                bias = None if b_ih is None else b_ih + b_hh
            else:
                kernel, recurrent = _gru_order(w_ih.T, 1), _gru_order(w_hh.T, 1)
                bias = None
                if b_ih is not None and cell.reset == "after":
                    bias = np.stack([_gru_order(b_ih, 0), _gru_order(b_hh, 0)])
                elif b_ih is not None:
                    if np.any(b_hh != 0):
                        raise KerasWeightsError(
                            f"{owner}: {layer._flat_key(l * D + d, 'bias_hh')} is nonzero (max |b| = "
                            f"{np.abs(b_hh).max():.3g}), but Keras GRU(reset_after=False) — rnnkit's reset='before' "
                            f"— has no recurrent bias. Alternative: train with reset='after' (Keras reset_after=True) "
                            f"or zero bias_hh")
                    bias = _gru_order(b_ih, 0)
            dtype = np.float32 if cell.weight_ih.dtype != torch.float64 else np.float64
            for i, value in enumerate((kernel, recurrent, bias)):
                if value is not None:
                    arrays[f"{where}/cell/vars/{i}"] = np.ascontiguousarray(value, dtype=dtype)
    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(str(tmp), "w") as f:
        f.create_group("vars")  # Keras writes a (possibly empty) vars group for every saveable object
        for key, value in arrays.items():
            f[key] = value
        for key in list(arrays):
            where = key.rsplit("/cell/vars/", 1)[0]
            for group in (where, where.rsplit("/", 1)[0] if layer.bidirectional else None):
                if group and group.startswith("layers/") and f"{group}/vars" not in f:
                    f.create_group(f"{group}/vars")
    tmp.replace(path)
    return path

