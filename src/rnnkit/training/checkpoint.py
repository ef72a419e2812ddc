"""Checkpoints: tensors in safetensors, everything else in JSON; atomic; never executes code.

A checkpoint of step N is two files in the run's `checkpoints/` directory:

    step-0000000N.safetensors   every tensor (model, optimizer moments, RNG, carried state)
    step-0000000N.json          config, vocabulary, optimizer/scheduler/trainer state and
                                the size and SHA-256 of the .safetensors file

Each is written to a temporary file in the same directory, fsynced and renamed;
the JSON goes last and is the commit record: a checkpoint counts only when its
JSON parses, names this format and the tensor file matches its size and hash.
A run killed mid-write leaves at most a `.tmp-*` file or a tensor file without a
JSON, and neither is ever taken for a checkpoint.

Nested state (torch optimizer and scheduler state dicts) is split by `flatten`:
tensors go to the tensor file under dotted keys, the rest stays in JSON with
tuples and integer-keyed dicts spelled out, so loading needs no pickle.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

from ..errors import InputError, InputTypeError

FORMAT = "rnnkit-checkpoint/1"
_NAME = re.compile(r"^step-(\d{8,})\.json$")
PathLike = Union[str, Path]


class CheckpointError(InputError):
    """A checkpoint is missing, incomplete, corrupt or belongs to another model."""


# ----------------------------------------------------------------- nesting
def flatten(obj: Any, prefix: str, tensors: Dict[str, Tensor]) -> Any:
    """JSON-able copy of `obj`; tensors are moved into `tensors` under `prefix`-based keys."""
    if isinstance(obj, Tensor):
        key = prefix
        tensors[key] = obj.detach().cpu().contiguous().clone()
        return {"__tensor__": key}
    if isinstance(obj, tuple):
        return {"__tuple__": [flatten(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [flatten(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj) and "__tensor__" not in obj and "__tuple__" not in obj:
            return {k: flatten(v, f"{prefix}.{k}", tensors) for k, v in obj.items()}
        return {"__items__": [[flatten(k, f"{prefix}.k{i}", tensors), flatten(v, f"{prefix}.{i}", tensors)]
                              for i, (k, v) in enumerate(obj.items())]}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise InputTypeError(f"cannot store a {type(obj).__name__} in a checkpoint (at {prefix!r})")


def unflatten(obj: Any, tensors: Dict[str, Tensor]) -> Any:
    """Inverse of `flatten`."""
    if isinstance(obj, list):
        return [unflatten(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            key = obj["__tensor__"]
            if key not in tensors:
                raise CheckpointError(f"checkpoint JSON refers to tensor {key!r}, which the tensor file lacks")
            return tensors[key]
        if "__tuple__" in obj:
            return tuple(unflatten(v, tensors) for v in obj["__tuple__"])
        if "__items__" in obj:
            return {unflatten(k, tensors): unflatten(v, tensors) for k, v in obj["__items__"]}
        return {k: unflatten(v, tensors) for k, v in obj.items()}
    return obj


# ------------------------------------------------------------------ writing
def _write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a fsynced temporary file in the same directory and a rename.

    On failure (a full disk: ENOSPC) `path` is untouched, the temporary file is removed and the OSError
    names `path` (a failed write() or fsync() names no file of its own)."""
    tmp = path.with_name(f".tmp-{path.name}.{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if err.filename is None or Path(err.filename) == tmp:
            raise OSError(err.errno, err.strerror or str(err), str(path)) from err
        raise


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text_atomic(path: PathLike, text: str) -> None:
    """Replace `path` with `text` atomically (all of it or, on any failure, the old file)."""
    path = Path(path)
    _write_atomic(path, text.encode())
    _fsync_dir(path.parent)


def write_json_atomic(path: PathLike, obj: Any) -> None:
    """Atomic JSON write (for config.json and friends)."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_safetensors_atomic(path: PathLike, tensors: Dict[str, Tensor]) -> None:
    """`tensors` (e.g. a state_dict) as one safetensors file, written atomically. Each is copied: tied
    weights (one tensor under two names) are stored twice, as safetensors requires."""
    _write_atomic(Path(path), st_save({k: v.detach().cpu().clone().contiguous() for k, v in tensors.items()}))


def save_checkpoint(directory: PathLike, step: int, tensors: Dict[str, Tensor], meta: Dict[str, Any]) -> Path:
    """Write checkpoint `step` into `directory`; returns the path of its JSON record."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stem = f"step-{step:08d}"
    flat: Dict[str, Tensor] = {}
    seen = set()
    for k, v in tensors.items():
        v = v.detach().cpu().contiguous()
        ptr = (v.untyped_storage().data_ptr(), v.storage_offset()) if v.numel() else None
        if ptr in seen:  # tied weights share storage; safetensors stores each tensor on its own
            v = v.clone()
        seen.add(ptr)
        flat[k] = v
    blob = st_save(flat)
    tensor_path = directory / f"{stem}.safetensors"
    _write_atomic(tensor_path, blob)
    record = dict(meta)
    record.update(format=FORMAT, step=step, tensors_file=tensor_path.name, tensors_bytes=len(blob),
                  tensors_sha256=hashlib.sha256(blob).hexdigest())
    json_path = directory / f"{stem}.json"
    try:
        _write_atomic(json_path, (json.dumps(record, indent=1) + "\n").encode())
    except OSError:
        tensor_path.unlink(missing_ok=True)  # without its record it is no checkpoint: give its space back
        raise
    _fsync_dir(directory)
    return json_path


def prune_checkpoints(directory: PathLike, keep: int) -> None:
    """Delete all but the `keep` newest complete checkpoints (and stale temporary files)."""
    directory = Path(directory)
    records = list_checkpoints(directory)
    for path in records[:-keep] if keep > 0 else []:
        for p in (path, path.with_suffix(".safetensors")):
            try:
                p.unlink()
            except FileNotFoundError:
                pass
    for tmp in directory.glob(".tmp-*"):
        tmp.unlink(missing_ok=True)


# ------------------------------------------------------------------ reading
def list_checkpoints(directory: PathLike) -> List[Path]:
    """JSON records in `directory`, oldest first (not validated)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def resolve_checkpoint(path: PathLike) -> Path:
    """The JSON record for a checkpoint file (either of its two files), a checkpoints
    directory or a run directory (its newest complete checkpoint)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    if path.is_dir():
        directory = path / "checkpoints" if (path / "checkpoints").is_dir() else path
        for record in reversed(list_checkpoints(directory)):
            try:
                read_checkpoint(record)
                return record
            except CheckpointError:
                continue  # an incomplete newer one: fall back to the previous
        raise CheckpointError(f"no complete checkpoint in {str(path)!r}")
    if path.suffix == ".safetensors":
        path = path.with_suffix(".json")
        if not path.exists():
            raise CheckpointError(f"checkpoint {str(path.with_suffix('.safetensors'))!r} has no JSON record "
                                  f"{path.name!r}: it is incomplete (the run stopped while writing it)")
    return path


def read_checkpoint_meta(path: PathLike) -> Dict[str, Any]:
    """The JSON record of a checkpoint (its run info and counters) without reading its tensors."""
    path = Path(path)
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"checkpoint {str(path)!r} is not a valid JSON record (truncated or corrupt)") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r} is not an rnnkit checkpoint (expected format {FORMAT!r})")
    return meta


def read_checkpoint(path: PathLike) -> Tuple[Dict[str, Any], Dict[str, Tensor]]:
    """(meta, tensors) of a checkpoint record, after checking it is complete and intact."""
    path = Path(path)
    meta = read_checkpoint_meta(path)
    tensor_path = path.parent / str(meta.get("tensors_file", ""))
    try:
        blob = tensor_path.read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        raise CheckpointError(f"checkpoint {str(path)!r}: its tensor file {tensor_path.name!r} is missing") from None
    if len(blob) != meta.get("tensors_bytes") or hashlib.sha256(blob).hexdigest() != meta.get("tensors_sha256"):
        raise CheckpointError(f"checkpoint {str(path)!r}: tensor file {tensor_path.name!r} is truncated or "
                              f"corrupt (size or SHA-256 differs from the record)")
    try:
        tensors = st_load(blob)
    except Exception as err:  # safetensors raises its own error types
        raise CheckpointError(f"checkpoint {str(path)!r}: cannot read tensors ({err})") from None
    return meta, tensors


def load_checkpoint(path: PathLike) -> Tuple[Path, Dict[str, Any], Dict[str, Tensor]]:
    """Resolve `path` (file, checkpoints dir or run dir) and read it: (record path, meta, tensors)."""
    record = resolve_checkpoint(path)
    meta, tensors = read_checkpoint(record)
    return record, meta, tensors


def sub_dict(tensors: Dict[str, Tensor], prefix: str) -> Dict[str, Tensor]:
    """Tensors under `prefix.` with the prefix removed."""
    n = len(prefix) + 1
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def latest_checkpoint(run_dir: PathLike) -> Optional[Path]:
    """Newest complete checkpoint record of a run directory, or None."""
    try:
        return resolve_checkpoint(run_dir)
    except CheckpointError:
        return None
