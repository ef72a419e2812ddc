"""keep_freed_memory: glibc malloc options for the large per-step buffers."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from rnnkit.backends import allocator


def test_bad_thresholds_are_refused() -> None:
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc only")
    with pytest.raises(ValueError, match="mmap_threshold must be in"):
        allocator.keep_freed_memory(mmap_threshold=allocator.MMAP_THRESHOLD_MAX + 1)
    with pytest.raises(ValueError, match="trim_threshold must be in"):
        allocator.keep_freed_memory(trim_threshold=0)


def test_freed_buffers_stay_mapped() -> None:
    """In a fresh process: without the option a freed 24 MB buffer leaves RSS; with it, RSS keeps it."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc on Linux only")
    probe = (
        "import ctypes, sys\n"
        "from rnnkit.backends import allocator\n"
        "if sys.argv[1] == 'on': assert allocator.keep_freed_memory()\n"
        "libc = ctypes.CDLL('libc.so.6'); libc.malloc.restype = ctypes.c_void_p\n"
        "def rss():\n"
        "    return int(open('/proc/self/statm').read().split()[1]) * 4096\n"
        "n = 24 * 2**20\n"
        "p = libc.malloc(n); ctypes.memset(p, 1, n); libc.free(ctypes.c_void_p(p))\n"
        "before = rss(); q = libc.malloc(n); ctypes.memset(q, 1, n); grown = rss() - before\n"
        "print(grown > n // 2)\n"
    )
    def grows(mode: str) -> bool:
        out = subprocess.run([sys.executable, "-c", probe, mode], capture_output=True, text=True, check=True)
        return out.stdout.strip() == "True"

    assert grows("off"), "without the option the freed buffer should have gone back to the kernel"
    assert not grows("on"), "with keep_freed_memory the second buffer should reuse the first one's pages"
