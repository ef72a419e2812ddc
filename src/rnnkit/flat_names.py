"""torch.nn's flat parameter names for `Recurrent`'s state_dict (`weight_ih_l0`, `bias_hh_l1_reverse`).

The parameters live in the cells (`cells.{layer * D + direction}.{param}`); these hooks rename them
on the way out of state_dict() and back on the way into load_state_dict(), and name missing or
mis-sized parameters in load errors as the caller knows them, so a torch.nn.LSTM state_dict loads
unchanged. (Layers with `torch_names = True` hold the parameters under these names themselves.) The
layer's `_flat_key(index, param)` gives a cell parameter's flat name.
"""

from __future__ import annotations

import re
from typing import Optional, Tuple

from torch import nn

_FLAT_NAME = re.compile(r"^(?P<param>[A-Za-z0-9_]+?)_l(?P<layer>\d+)(?P<reverse>_reverse)?$")
_CELL_KEY = re.compile(r"(?P<head>^|\.)cells\.(?P<index>\d+)\.(?P<param>[A-Za-z0-9_]+)$")


def cell_index(module: nn.Module, name: str) -> Optional[Tuple[int, str]]:
    """A flat name -> (index of the cell in module.cells, the cell's parameter name), or None when `name`
    is no flat name or names a layer or direction `module` does not have."""
    match = _FLAT_NAME.match(name)
    if not match:
        return None
    layer, direction = int(match["layer"]), 1 if match["reverse"] else 0
    if layer >= module.num_layers or direction >= module.num_directions:
        return None
    return layer * module.num_directions + direction, match["param"]


def register_hooks(module: nn.Module) -> None:
    """Give `module`'s state_dict and load_state_dict torch.nn's flat names."""
    if hasattr(module, "register_state_dict_post_hook"):  # torch >= 2.5
        module.register_state_dict_post_hook(_state_dict_to_flat_names)
        module.register_load_state_dict_pre_hook(_state_dict_from_flat_names)
    else:  # torch 2.4: the same hooks under their older, private names
        module._register_state_dict_hook(_state_dict_to_flat_names)
        module._register_load_state_dict_pre_hook(_state_dict_from_flat_names, with_module=True)
    module.register_load_state_dict_post_hook(_report_flat_names)


def _state_dict_to_flat_names(module: nn.Module, state_dict, prefix: str, local_metadata) -> None:
    items = list(state_dict.items())
    for key, _ in items:
        if key.startswith(prefix + "cells."):
            del state_dict[key]
    for key, value in items:
        if key.startswith(prefix + "cells."):
            index, param = key[len(prefix) + len("cells."):].split(".", 1)
            name = module._flat_key(int(index), param) if "." not in param else key
            state_dict[prefix + name] = value
        elif key in state_dict:  # keep order for keys that are not ours
            state_dict[key] = state_dict.pop(key)


def _state_dict_from_flat_names(module: nn.Module, state_dict, prefix: str, local_metadata, strict,
                                missing_keys, unexpected_keys, error_msgs) -> None:
    # the cells report size mismatches under their own keys (cells.2.weight_hh); _report_flat_names renames them
    module.__dict__["_load_messages"] = (prefix, error_msgs)
    for key in list(state_dict.keys()):
        if not key.startswith(prefix):
            continue
        found = cell_index(module, key[len(prefix):])
        if found:
            state_dict[f"{prefix}cells.{found[0]}.{found[1]}"] = state_dict.pop(key)


def _report_flat_names(module: nn.Module, incompatible_keys) -> None:
    """Name missing parameters as the caller knows them (weight_hh_l1, not cells.1.weight_hh)."""

    def rename(key: str) -> str:
        match = _CELL_KEY.search(key)
        if not match or "." in match["param"]:
            return key
        flat = module._flat_key(int(match["index"]), match["param"])
        return key[: match.start()] + match["head"] + flat

    incompatible_keys.missing_keys[:] = [rename(k) for k in incompatible_keys.missing_keys]
    prefix, error_msgs = module.__dict__.pop("_load_messages", ("", []))
    cell_key = re.compile(re.escape(prefix) + r"cells\.(\d+)\.([A-Za-z0-9_]+)\b")
    error_msgs[:] = [cell_key.sub(lambda m: prefix + module._flat_key(int(m[1]), m[2]), msg) for msg in error_msgs]
