"""Keep freed memory in the process: glibc malloc settings for RNN training on CPU.

A training step allocates and frees the same few large buffers every call (the
input projection (T, B, G), the saved gates, their gradients: 5–30 MB each at
ordinary sizes). glibc hands buffers of that size back to the kernel when they
are freed (the heap top is trimmed, or the buffer was its own mmap), so every
call page-faults them in again; measured on the 2-core development machine,
this cost 10–25 % of a fused GRU/LSTM training step at B=64, H=256 and made
the step time wander between runs (benchmarks/NOTES.md).

`keep_freed_memory()` sets two malloc options so that such buffers come from the
heap and stay mapped after being freed: the process's resident memory then
stays at its high-water mark instead of shrinking between steps (the trade
every caching allocator makes). It changes the whole process, so the library
never calls it on import; rnnkit's command line and benchmarks do.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

from ..errors import InputError

#: mallopt parameter numbers (glibc malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: the largest mmap threshold glibc accepts on 64-bit (HEAP_MAX_SIZE / 2); bigger blocks are always mmapped
MMAP_THRESHOLD_MAX = 32 * 2**20

_applied = {"done": False}


def keep_freed_memory(mmap_threshold: int = MMAP_THRESHOLD_MAX, trim_threshold: int = 2**30) -> bool:
    """Serve blocks up to `mmap_threshold` bytes from the heap and trim it only past `trim_threshold` free
    bytes. Returns True when applied (glibc on Linux), False where there is no glibc malloc to tune."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    if not 0 < mmap_threshold <= MMAP_THRESHOLD_MAX:
        raise InputError(f"mmap_threshold must be in (0, {MMAP_THRESHOLD_MAX}] bytes (glibc's limit); "
                         f"got {mmap_threshold}")
    if not 0 < trim_threshold < 2**31:
        raise InputError(f"trim_threshold must be in (0, 2**31) bytes; got {trim_threshold}")
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(
            libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold))
    except (OSError, AttributeError):
        return False
    _applied["done"] = ok
    return ok


def applied() -> bool:
    """Whether `keep_freed_memory` has been applied in this process."""
    return _applied["done"]
