"""Backend registry: which backends exist and which one `auto` picks.

`auto` walks the backends in priority order and takes the first whose
`accepts(spec)` returns None; the reference backend accepts everything, so it
is the last resort. A backend named explicitly that cannot run raises with its
reason.
"""

from __future__ import annotations

import logging
from typing import Dict, List, Optional, Tuple

import torch

from .base import Backend, RunSpec
from .reference import ReferenceBackend
from ..errors import InputError

log = logging.getLogger("rnnkit")

_BACKENDS: Dict[str, Backend] = {}
_PRIORITY: Dict[str, int] = {}
_logged_reasons: set = set()


def register(backend: Backend, priority: int) -> None:
    """Make `backend` available by name; `auto` prefers higher priority."""
    _BACKENDS[backend.name] = backend
    _PRIORITY[backend.name] = priority


def available() -> List[str]:
    """Backend names, `auto`'s order first."""
    return sorted(_BACKENDS, key=lambda n: -_PRIORITY[n])


def _auto_priority(name: str, spec: RunSpec) -> int:
    """The registered priority, unless the backend ranks itself per configuration
    (`auto_priority(spec, registered)`, e.g. native wins only some configurations)."""
    rank = getattr(_BACKENDS[name], "auto_priority", None)
    return _PRIORITY[name] if rank is None else rank(spec, _PRIORITY[name])


def check_name(name: str) -> None:
    if name != "auto" and name not in _BACKENDS:
        raise InputError(f"backend must be 'auto' or one of {available()}; got {name!r}")


def select(name: str, spec: RunSpec) -> Tuple[Backend, Dict[str, str]]:
    """The backend to run `spec` with, and why the ones above it were passed over."""
    check_name(name)
    if name != "auto":
        backend = _BACKENDS[name]
        reason = backend.accepts(spec)
        if reason is not None:
            raise InputError(f"backend {name!r} cannot run this configuration: {reason}")
        return backend, {}
    skipped: Dict[str, str] = {}
    for candidate in sorted(_BACKENDS, key=lambda n: -_auto_priority(n, spec)):
        backend = _BACKENDS[candidate]
        reason = backend.accepts(spec)
        if reason is None:
            return backend, skipped
        skipped[candidate] = reason
        # (not while torch.compile traces: a logging call there is a graph break)
        if (candidate, reason) not in _logged_reasons and not torch.compiler.is_compiling():
            _logged_reasons.add((candidate, reason))
            log.info("rnnkit: backend %r skipped: %s", candidate, reason)
    raise RuntimeError("no backend accepted the configuration")  # unreachable: reference accepts all


register(ReferenceBackend(), priority=0)
