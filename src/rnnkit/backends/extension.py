"""Builds and loads rnnkit's C++ kernels (src/rnnkit/csrc) on first use.

The kernels are compiled with `torch.utils.cpp_extension.load` the first time
a fused backend needs them, into a cache directory keyed by a hash of the
sources, the torch version, the compiler flags and the CPU (the code is built
with -march=native, so a cache shared between different machines must not mix
binaries). Later processes load the cached library in well under a second.

If the build cannot run (no C++ compiler, no ninja) or fails, `load()` returns
the reason instead of raising; the first failure is reported with one
`warnings.warn` per process and never retried in that process, so `auto` can
fall back to the reference backend at the cost of one line.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import hashlib
import json
import logging
import os
import platform
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import List, Optional, Union

import torch

from ..errors import InputError

try:
    import fcntl
except ImportError:  # not POSIX: no flock; torch's own lock file is all there is
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("rnnkit")

CSRC = Path(__file__).resolve().parent.parent / "csrc"
#: translation units, one per cell family; common.h is shared.
SOURCES = ("lstm.cpp", "gru.cpp", "elman.cpp", "layernorm.cpp", "elementwise.cpp", "step.cpp")

#: how long a process waits for another one's build before falling back to the reference backend
BUILD_WAIT_SECONDS = 180.0
#: build directories of other kernel versions unused for this long are removed when a build loads
STALE_BUILD_DAYS = 14.0

_state: dict = {"loaded": False, "error": None, "warned": False, "build_seconds": None, "march": None,
                "step_gemm": "auto", "recurrence_threads": 0, "library": None}
#: the recurrent GEMM's routes inside the kernels (common.h: GemmRoute); auto measures each shape once
STEP_GEMM_ROUTES = {"auto": -1, "blas": 0, "onednn": 1, "small": 2}


def set_step_gemm(route: str) -> None:
    """Force the route of the kernels' per-step recurrent GEMM: "blas", "onednn" (float32, where torch
    has it) or "small" (the hand-written kernel for tiny products), or "auto" (the default: float32 shapes
    take the route timed fastest at their first use on this machine (route_cache_path()), float64 BLAS, and
    bfloat16 recurrent weights in bfloat16 where the CPU has bfloat16 units; a forced route widens them
    to float32).

    For tests and benchmarks: every route computes the same product in its own summation order.

    >>> from rnnkit.backends import set_step_gemm
    >>> set_step_gemm("auto")
    """
    if route not in STEP_GEMM_ROUTES:
        raise InputError(f"set_step_gemm: route must be one of {', '.join(STEP_GEMM_ROUTES)}; got {route!r}")
    _state["step_gemm"] = route
    if _state["library"] is not None:
        _state["library"].rnnkit_set_step_gemm(STEP_GEMM_ROUTES[route])


def set_recurrence_threads(threads: Union[int, str]) -> None:
    """How many threads share one recurrence (LSTM, GRU, Elman kernels): each takes a block of the batch
    rows through the whole time loop, in one parallel region of torch's intra-op pool. "auto" (the default)
    splits between torch.get_num_threads() threads where one step's recurrent product is small (e.g. B=8,
    H=64), too small for BLAS to split itself; 1 never splits; n >= 2 always splits into n row blocks
    (at most one per row; more blocks than torch threads run in turn). For tests and benchmarks.

    >>> from rnnkit.backends import set_recurrence_threads
    >>> set_recurrence_threads("auto")
    """
    if threads == "auto":
        code = 0
    elif isinstance(threads, int) and not isinstance(threads, bool) and threads >= 1:
        code = threads
    else:
        raise InputError(f"set_recurrence_threads: threads must be \"auto\" or an integer >= 1; got {threads!r}")
    _state["recurrence_threads"] = code
    if _state["library"] is not None:
        _state["library"].rnnkit_set_recurrence_threads(code)


def recurrence_blocks(batch: int, step_gemm_size: int) -> Optional[int]:
    """How many row blocks (threads) a fused time loop over `batch` rows whose per-step recurrent product is
    `step_gemm_size` = rows x n x k (LSTM: batch x 4H x H) runs in now; None where the kernels are unavailable.

    >>> from rnnkit.backends import extension
    >>> extension.recurrence_blocks(1, 64) in (None, 1)
    True
    """
    if load() is not None:
        return None
    return int(_state["library"].rnnkit_recurrence_blocks(ctypes.c_int64(batch), ctypes.c_int64(step_gemm_size)))


def route_cache_path() -> Path:
    """The file of measured step-GEMM routes for this CPU model, torch version and ISA settings (under
    cache_root()); delete it to measure again."""
    return cache_root() / f"step-gemm-routes-{hashlib.sha256(_route_identity().encode()).hexdigest()[:16]}.json"


#: settings that change which instructions BLAS/oneDNN/ATen use, and so which step-GEMM route wins
ISA_SETTINGS = ("MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")


def _route_identity() -> str:
    isa = ", ".join(f"{name}={os.environ[name]}" for name in ISA_SETTINGS if os.environ.get(name))
    return f"{_cpu_model()} | torch {torch.__version__}" + (f" | {isa}" if isa else "")


def _cpu_model() -> str:
    return next((ln.split(":", 1)[1].strip() for ln in _cpu_fingerprint().splitlines()
                 if ln.startswith("model name")), platform.processor() or platform.machine())


def _library_routes() -> List[List[int]]:
    lib = _state["library"]
    count = lib.rnnkit_route_cache_entries(None, ctypes.c_int64(0))
    buf = (ctypes.c_int64 * (5 * count))()
    lib.rnnkit_route_cache_entries(buf, ctypes.c_int64(count))
    return [list(buf[5 * i:5 * i + 5]) for i in range(count)]


def _read_routes(path: Path) -> List[List[int]]:
    """The entries of a route file; [] where it is missing, unreadable, corrupt or from another machine."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        routes = data["routes"] if data.get("identity") == _route_identity() else []
        if not all(isinstance(r, list) and len(r) == 5 and all(type(v) is int and v >= 0 for v in r)
                   and r[4] in STEP_GEMM_ROUTES.values() for r in routes):
            raise ValueError("malformed entry")
        return routes
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as err:
        if path.exists():
            log.info("rnnkit: ignoring the step-GEMM route cache %s (%s)", path, err)
        return []


def load_route_cache(path: Optional[Path] = None) -> int:
    """Preload the kernels' measured step-GEMM routes from `path` (default route_cache_path()), so shapes
    measured by an earlier process on this machine are not timed again; an unreadable or corrupt file is
    ignored. Returns the number of entries loaded.

    >>> from rnnkit.backends import extension
    >>> extension.load_route_cache() >= 0
    True
    """
    if load() is not None:
        return 0
    return _preload_routes(path or route_cache_path())


def _preload_routes(path: Path) -> int:
    routes = _read_routes(path)
    for entry in routes:
        _state["library"].rnnkit_route_cache_put(*(ctypes.c_int64(v) for v in entry))
    return len(routes)


def save_route_cache(path: Optional[Path] = None) -> None:
    """Write the routes measured so far (merged with the file's) to `path` (default route_cache_path()),
    atomically: a temporary file in the same folder renamed over it. Runs at exit once the kernels measured."""
    if _state["library"] is None:
        return
    path = path or route_cache_path()
    merged = {tuple(r[:4]): r for r in _read_routes(path)}
    merged.update({tuple(r[:4]): r for r in _library_routes()})
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"identity": _route_identity(), "routes": sorted(merged.values())}, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _save_route_cache_at_exit() -> None:
    if _state["library"] is not None and _state["library"].rnnkit_route_measurements() > 0:
        try:
            save_route_cache()
        except OSError as err:
            log.info("rnnkit: could not save the step-GEMM route cache: %s", err)


def route_measurements() -> int:
    """How many step-GEMM shapes the kernels have timed in this process (0 before they are loaded)."""
    return 0 if _state["library"] is None else int(_state["library"].rnnkit_route_measurements())


def clear_route_cache() -> None:
    """Forget the measured routes of this process (tests, benchmarks); the file is left alone."""
    if _state["library"] is not None:
        _state["library"].rnnkit_route_cache_clear()


def bf16_step_gemm() -> bool:
    """Whether the kernels run a bfloat16 recurrent weight's per-step GEMM in bfloat16 on this CPU (oneDNN's
    brgemm on AMX or AVX512-BF16, float32 accumulation) under the "auto" route; False where the kernels are
    unavailable, or where bfloat16 would be emulated (the weight is then widened to float32 once).

    >>> from rnnkit.backends import extension
    >>> isinstance(extension.bf16_step_gemm(), bool)
    True
    """
    if load() is not None:
        return False
    return bool(_state["library"].rnnkit_bf16_step_gemm())


def set_target_cpu(march: Optional[str]) -> None:
    """Compile the kernels for `march` (a gcc -march value such as "x86-64-v2" or "x86-64-v3")
    instead of this machine's own CPU (None, the default: -march=native / -mcpu=native).

    For checking numbers on other CPUs from this one: an older ISA changes which vector
    instructions, and so which summation orders, the kernels use. Call before the first
    fused run in the process; the build is cached per target like any other.

    >>> from rnnkit.backends import extension
    >>> extension.set_target_cpu(None)  # the default: this machine's CPU
    """
    if _state["loaded"] and march != _state["march"]:
        raise InputError(f"set_target_cpu({march!r}): the kernels are already loaded for "
                         f"{_state['march'] or 'native'}; call it before the first fused run")
    _state["march"] = march


def cache_root() -> Path:
    """Where compiled kernels live: $XDG_CACHE_HOME/rnnkit (default ~/.cache/rnnkit)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "rnnkit"


def _cpu_fingerprint() -> str:
    """The CPU's model name and feature flags (what -march=native compiles for)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            lines = [ln for ln in f if ln.startswith(("model name", "flags", "Features", "CPU part"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return platform.processor() or platform.machine()


def _has_fortran_blas() -> bool:
    """True if libtorch_cpu exports sgemm_/dgemm_ (MKL on x86-64 wheels)."""
    lib = Path(torch.__file__).parent / "lib" / ("libtorch_cpu" + (".dylib" if platform.system() == "Darwin"
                                                                       else ".so"))
    try:
        handle = ctypes.CDLL(str(lib))
        return hasattr(handle, "sgemm_") and hasattr(handle, "dgemm_")
    except OSError:
        return False


def _flags() -> tuple[List[str], List[str]]:
    cflags = ["-O3", "-std=c++17", "-fopenmp-simd", "-DTORCH_ASSERT_ONLY_METHOD_OPERATORS"]
    ldflags: List[str] = []
    if _state["march"] is not None:
        cflags.append(f"-march={_state['march']}")
    elif platform.machine() in ("x86_64", "AMD64", "aarch64", "arm64"):
        cflags.append("-march=native" if platform.machine() in ("x86_64", "AMD64") else "-mcpu=native")
    # -ffast-math lets GCC call glibc's vectorised expf/tanhf (libmvec) from the
    # `omp simd` gate loops; it is a compile flag only (never passed to the link
    # step, so crtfastmath's flush-to-zero does not leak into the process).
    cflags.append("-ffast-math")
    if ctypes.util.find_library("mvec"):
        ldflags.append("-lmvec")
    if _has_fortran_blas():
        cflags.append("-DRNNKIT_HAVE_FORTRAN_BLAS")
    if _shares_torch_openmp():
        # at::parallel_for is a header template: without -fopenmp it runs serially in our code. Linking
        # -fopenmp resolves to the libgomp.so.1 torch already loaded (same soname), so the kernels'
        # parallel regions use torch's own OpenMP pool and its torch.set_num_threads setting.
        cflags.append("-fopenmp")
        ldflags.append("-fopenmp")
    return cflags, ldflags


def _shares_torch_openmp() -> bool:
    """True where torch's intra-op pool is GNU OpenMP loaded as libgomp.so.1 (Linux wheels), so the kernels
    can join it."""
    if platform.system() != "Linux" or "ATen parallel backend: OpenMP" not in torch.__config__.parallel_info():
        return False
    return (Path(torch.__file__).parent / "lib" / "libgomp.so.1").exists()


def _ninja_dir() -> Optional[str]:
    """The folder of a ninja binary: "" when one is on PATH, the `ninja` pip package's, or None."""
    if shutil.which("ninja") is not None:
        return ""
    try:  # the `ninja` pip package puts its binary next to the interpreter
        import ninja  # type: ignore
    except ImportError:
        return None
    return ninja.BIN_DIR if Path(ninja.BIN_DIR, "ninja").exists() else None


def _missing_tool() -> Optional[str]:
    """Name the missing build tool, or None when a compiler and ninja are found."""
    cxx = os.environ.get("CXX", "c++")
    if shutil.which(cxx) is None:
        return f"no C++ compiler: {cxx!r} not found on PATH (install g++ or clang, or set CXX)"
    if _ninja_dir() is None:
        return "ninja not found (pip install ninja)"
    return None


@contextlib.contextmanager
def _ninja_on_path():
    """torch's builder runs `ninja` from PATH: put the pip package's folder there for the build only."""
    folder, saved = _ninja_dir(), os.environ.get("PATH", "")
    if folder:
        os.environ["PATH"] = folder + os.pathsep + saved
    try:
        yield
    finally:
        os.environ["PATH"] = saved


def build_key() -> str:
    cflags, ldflags = _flags()
    h = hashlib.sha256()
    for name in ("common.h",) + SOURCES:
        h.update(name.encode())
        h.update((CSRC / name).read_bytes())
    h.update(torch.__version__.encode())
    h.update(" ".join(cflags + ldflags).encode())
    h.update(_cpu_fingerprint().encode())
    return h.hexdigest()[:16]


# torch.compile runs this once while tracing and keeps its result as a constant: building or loading
# the library (file system calls) would otherwise be a graph break in the first compiled forward.
@torch.compiler.assume_constant_result
def load() -> Optional[str]:
    """Load the kernels (building them if needed). None on success, else why not."""
    if _state["loaded"]:
        return None
    if _state["error"] is not None:
        return _state["error"]
    # the operator schemas must exist before the kernels register against them
    from . import fused_ops  # noqa: F401

    reason = _missing_tool()
    if reason is None:
        try:
            _build()
            _state["loaded"] = True
            return None
        except Exception as err:  # any build or load failure: report it, do not retry
            lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
            first_error = next((ln for ln in lines if "error" in ln.lower()), lines[-1] if lines else "")
            reason = (f"building the C++ kernels failed ({type(err).__name__}: {first_error}); "
                      f"build directory: {cache_root()}")
    _state["error"] = reason
    if not _state["warned"]:
        _state["warned"] = True
        warnings.warn(f"rnnkit: fast CPU kernels unavailable, falling back to the reference backend — {reason}",
                      RuntimeWarning, stacklevel=3)
    return reason


def _build() -> None:
    from torch.utils.cpp_extension import load as cpp_load

    key = build_key()
    directory = cache_root() / f"ext-{key}"
    directory.mkdir(parents=True, exist_ok=True)
    name = f"rnnkit_cpu_{key}"
    fresh = not any(directory.glob(f"{name}*.so"))
    if fresh:
        log.warning("rnnkit: compiling the fused CPU kernels once into %s (about a minute)", directory)
    cflags, ldflags = _flags()
    start = time.perf_counter()
    # torch's builder guards the directory with a plain `lock` file and waits forever while it exists; a
    # build killed mid-way (Ctrl-C, SIGKILL, OOM) leaves it behind and every later process would hang. An
    # flock is released by the kernel when its holder dies, so whoever holds ours knows that any `lock`
    # file it finds is stale.
    with open(directory / "build.flock", "w") as guard:
        if fcntl is not None:
            _wait_for_flock(guard, directory)
            (directory / "lock").unlink(missing_ok=True)
        sources = _stable_sources(directory)
        with _ninja_on_path():
            cpp_load(name=name, sources=[str(sources / s) for s in SOURCES], extra_cflags=cflags,
                     extra_ldflags=ldflags, extra_include_paths=[str(sources)], build_directory=str(directory),
                     is_python_module=False, verbose=False)
    _state["build_seconds"] = time.perf_counter() - start
    _state["library"] = ctypes.CDLL(str(directory / f"{name}.so"))  # the handle torch loaded it with
    _state["library"].rnnkit_set_step_gemm(STEP_GEMM_ROUTES[_state["step_gemm"]])
    _state["library"].rnnkit_set_recurrence_threads(_state["recurrence_threads"])
    _state["library"].rnnkit_recurrence_blocks.restype = ctypes.c_int64
    _state["library"].rnnkit_route_measurements.restype = ctypes.c_int64
    _state["library"].rnnkit_route_cache_entries.restype = ctypes.c_int64
    _preload_routes(route_cache_path())
    atexit.register(_save_route_cache_at_exit)
    if fresh:
        log.warning("rnnkit: kernels built in %.1f s", _state["build_seconds"])
    os.utime(directory)  # "last used": what prune_stale_builds reads, here and in other checkouts
    prune_stale_builds(keep=directory)


def step_gemm_route() -> Optional[str]:
    """The route the loaded kernels were told to take (None before they are loaded)."""
    if _state["library"] is None:
        return None
    code = _state["library"].rnnkit_step_gemm()
    return next(name for name, value in STEP_GEMM_ROUTES.items() if value == code)


def _stable_sources(directory: Path) -> Path:
    """The kernel sources copied into the build directory, built from there: torch's builder records source
    paths, so two checkouts of the same sources (same key) building from their own paths would each make it
    rebuild. The key hashes the contents, so copies already there are the same files."""
    target = directory / "src"
    target.mkdir(exist_ok=True)
    for name in ("common.h",) + SOURCES:
        if not (target / name).exists():
            shutil.copyfile(CSRC / name, target / name)
    return target


def prune_stale_builds(keep: Path, max_age_days: float = STALE_BUILD_DAYS) -> List[Path]:
    """Remove the sibling `ext-*` build directories (other sources, torch versions or CPUs) that no process
    has loaded for `max_age_days`; every load marks its own directory as used. Returns what was removed."""
    cutoff = time.time() - max_age_days * 86400
    removed = []
    for other in keep.parent.glob("ext-*"):
        try:
            if other != keep and other.is_dir() and other.stat().st_mtime < cutoff:
                shutil.rmtree(other)
                removed.append(other)
        except OSError:  # another process removing it, or no permission: not ours to insist on
            continue
    return removed


def _wait_for_flock(guard, directory: Path, timeout_s: float = BUILD_WAIT_SECONDS) -> None:
    """Take the build lock, or raise after `timeout_s` so that `auto` falls back instead of hanging."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fcntl.flock(guard, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"another process has been building the kernels in {directory} for over "
                                   f"{timeout_s:.0f} s") from None
            time.sleep(0.2)


def status() -> dict:
    """What happened so far: loaded, error (reason or None), build_seconds."""
    return {k: _state[k] for k in ("loaded", "error", "build_seconds")}
