"""Shared timing helpers for the benchmarks: interleaved rounds, medians, machine description."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time
from typing import Callable, Dict, List

import torch


def bench_interleaved(fns: Dict[str, Callable[[], object]], warmup: int = 2, reps: int = 7) -> Dict[str, dict]:
    """Run every variant once per round, interleaved, so machine noise hits all of them alike.

    Returns per variant: median and min seconds and the raw times.
    """
    for _ in range(warmup):
        for f in fns.values():
            f()
    times: Dict[str, List[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    return {k: {"median": statistics.median(v), "min": min(v), "times": v} for k, v in times.items()}


def gemm_rate(n: int = 1024, reps: int = 5) -> float:
    """Best fp32 torch.mm rate in FLOP/s for an n x n x n product (the floor's yardstick, measured now)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    c = torch.empty(n, n)
    torch.mm(a, b, out=c)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b, out=c)
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best


def cpu_flags() -> List[str]:
    """The ISA flags that decide rnnkit's and torch's kernel routes, as this CPU reports them (Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        flags = []
    return [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]


def machine() -> Dict[str, str]:
    cpu = platform.processor() or platform.machine()
    fields: Dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
                if not line.strip():
                    break  # the first processor is enough
    except OSError:
        pass
    cpu = fields.get("model name", cpu)
    if "cpu family" in fields and "model" in fields:  # a hypervisor may show only "AMD EPYC": which generation
        cpu += f" (family {fields['cpu family']}, model {fields['model']})"
    try:
        load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        load = "n/a"
    try:
        gxx = subprocess.run(["c++", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    except (OSError, IndexError):
        gxx = "n/a"
    isa = f"torch capability {torch.backends.cpu.get_cpu_capability()}; flags {' '.join(cpu_flags()) or 'none'}"
    return {"cpu": cpu, "isa": isa, "logical_cpus": str(os.cpu_count()), "torch": torch.__version__,
            "threads": str(torch.get_num_threads()), "compiler": gxx, "load_average_at_start": load,
            "python": platform.python_version()}
