"""Fingerprints of a run's data files: a resumed run must train on the data its checkpoint saw.

A run directory's `data.json` holds the size and SHA-256 of every file the run's
data paths name (a directory stands for every file under it, hidden ones and the
run directory itself excepted). On resume the same paths are fingerprinted again
and `data_change` says in words what differs, naming the file.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Union

from ..errors import InputError

FORMAT = "rnnkit-data/1"
PathLike = Union[str, Path]
Fingerprint = Dict[str, Dict[str, Any]]  # absolute file path -> {"bytes": size, "sha256": hex digest}


class DataChangedError(InputError):
    """A resumed run's data differs from the data the run started on."""


def _files(path: Path, exclude: List[Path]) -> List[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        return []  # missing: the recipe's loader reports it in its own words
    found = []
    for p in sorted(path.rglob("*")):
        parts = p.relative_to(path).parts
        if p.is_file() and not any(part.startswith(".") for part in parts) and \
                not any(p == e or e in p.parents for e in exclude):
            found.append(p)
    return found


def fingerprint(paths: Iterable[PathLike], *, exclude: Iterable[PathLike] = ()) -> Fingerprint:
    """Size and SHA-256 of each file in `paths` (directories: every non-hidden file under them, except
    those under `exclude`, e.g. a run directory kept inside the data folder). Missing paths are skipped."""
    skip = [Path(e).resolve() for e in exclude]
    out: Fingerprint = {}
    for path in paths:
        for f in _files(Path(path).resolve(), skip):
            with open(f, "rb") as handle:
                digest = hashlib.file_digest(handle, "sha256").hexdigest()
            out[str(f)] = {"bytes": f.stat().st_size, "sha256": digest}
    return out


def data_change(saved: Fingerprint, current: Fingerprint) -> Optional[str]:
    """None when `current` holds the data of `saved`; else the first difference in words, naming the file.
    A file found under another path with the same contents was moved, not changed; a path that holds
    other contents than before has changed (even if they are another file's: train and test swapped)."""
    changed = [name for name in saved if name in current and current[name] != saved[name]]
    if changed:
        old, now = saved[changed[0]], current[changed[0]]
        return (f"data file {changed[0]!r} changed ({old['bytes']:,} → {now['bytes']:,} bytes, SHA-256 "
                f"{old['sha256'][:12]}… → {now['sha256'][:12]}…)")
    gone = {name: v["sha256"] for name, v in saved.items() if name not in current}
    new = {name: v["sha256"] for name, v in current.items() if name not in saved}
    if sorted(gone.values()) == sorted(new.values()):
        return None  # the same files, moved
    gone_data = [name for name, h in gone.items() if h not in new.values()]
    new_data = [name for name, h in new.items() if h not in gone.values()]
    if gone_data and new_data:
        return f"the run read data file {gone_data[0]!r}, this one reads {new_data[0]!r}, which holds other data"
    if gone_data:
        return f"data file {gone_data[0]!r} is gone (or no longer among the data paths)"
    return f"data file {new_data[0]!r} is new (the run did not read it when it started)"
