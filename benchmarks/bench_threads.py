"""Two cores on one recurrence: rnnkit's fused LSTM, GRU and Elman against nn.LSTM / nn.GRU / nn.RNN,
float32, forward+backward, with torch at one and at two intra-op threads.

    .venv/bin/python benchmarks/bench_threads.py              # T=1000, B=8, I=H=64, 7 rounds (prints)
    .venv/bin/python benchmarks/bench_threads.py --grid       # also bench_cells' grid: does a forced split pay there?
    .venv/bin/python benchmarks/bench_threads.py --reps 3     # quicker

At T=1000, B=8, H=64 one step's recurrent product (8 x 64 x 4H) is far too small for BLAS to split, so the
fused kernels split the batch instead: each of torch's threads carries its block of rows through the whole
time loop (common.h: split_batch; rnnkit.backends.set_recurrence_threads). Variants per family, interleaved
in rounds (timing.bench_interleaved: 2 warm-up rounds, then the median), each call setting its threads:
  nn 1t / nn 2t          the torch.nn peer at 1 / 2 threads
  rnnkit 1t              fused kernels, 1 thread
  rnnkit 2t no split     2 threads, set_recurrence_threads(1): what 2 threads gave before the split
  rnnkit 2t split        2 threads, set_recurrence_threads(2): the batch split in two at any size
  rnnkit 2t              2 threads, "auto" (splits only small per-step products: T=1000, B=8, H=64 here)
Targets (issue 19, 2 threads, T=1000, B=8, H=64): LSTM <= 0.6x nn.LSTM, GRU <= 0.25x nn.GRU. Read the
ratios, not the milliseconds: the load average is printed beside them.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, Union

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import rnnkit  # noqa: E402
from rnnkit.backends import set_recurrence_threads  # noqa: E402
from timing import bench_interleaved, machine  # noqa: E402

TARGET_SHAPE = (1000, 8, 64)
GRID = [(100, 32, 128), (100, 64, 256), (200, 16, 512)]  # bench_cells' other shapes (T, B, I=H)
FAMILIES = {"LSTM": (rnnkit.LSTM, nn.LSTM), "GRU": (rnnkit.GRU, nn.GRU), "Elman": (rnnkit.RNN, nn.RNN)}
TARGETS = {"LSTM": 0.6, "GRU": 0.25}


def _timed(layer: nn.Module, x: torch.Tensor, threads: int, split: Union[int, str] = "auto") -> Callable[[], None]:
    def call() -> None:
        torch.set_num_threads(threads)
        set_recurrence_threads(split)
        layer(x)[0].sum().backward()
    return call


def run_family(family: str, shape: Tuple[int, int, int], reps: int) -> Dict[str, dict]:
    T, B, H = shape
    ours_cls, torch_cls = FAMILIES[family]
    torch.manual_seed(0)
    peer = torch_cls(H, H)
    ours = ours_cls(H, H, backend="fused")
    ours.load_state_dict(peer.state_dict(), strict=False)
    x = torch.randn(T, B, H, requires_grad=True)
    variants = {"nn 1t": _timed(peer, x, 1), "nn 2t": _timed(peer, x, 2), "rnnkit 1t": _timed(ours, x, 1),
                "rnnkit 2t no split": _timed(ours, x, 2, 1), "rnnkit 2t split": _timed(ours, x, 2, 2),
                "rnnkit 2t": _timed(ours, x, 2)}
    return bench_interleaved(variants, reps=reps)


def table(results: Dict[Tuple[str, Tuple[int, int, int]], Dict[str, dict]]) -> str:
    names = ["nn 1t", "nn 2t", "rnnkit 1t", "rnnkit 2t no split", "rnnkit 2t split", "rnnkit 2t"]
    lines = ["| family | T, B, H | " + " | ".join(f"{n} ms" for n in names) + " | rnnkit 2t / nn 2t | "
             "split / no split (2t) | rnnkit 1t / nn 1t | target |",
             "|---|---|" + "---|" * (len(names) + 4)]
    for (family, shape), r in results.items():
        ms = {k: v["median"] * 1e3 for k, v in r.items()}
        ratio = ms["rnnkit 2t"] / ms["nn 2t"]
        target = TARGETS.get(family) if shape == TARGET_SHAPE else None
        verdict = "—" if target is None else f"≤ {target}x: {'met' if ratio <= target else 'missed'}"
        lines.append(f"| {family} | {', '.join(map(str, shape))} | " + " | ".join(f"{ms[n]:.1f}" for n in names)
                     + f" | {ratio:.2f}x | {ms['rnnkit 2t split'] / ms['rnnkit 2t no split']:.2f}x | "
                     f"{ms['rnnkit 1t'] / ms['nn 1t']:.2f}x | {verdict} |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=7, help="timed rounds per variant (default 7)")
    parser.add_argument("--families", nargs="+", choices=list(FAMILIES), default=list(FAMILIES))
    parser.add_argument("--grid", action="store_true", help="also time bench_cells' larger shapes")
    args = parser.parse_args(argv)
    shapes = [TARGET_SHAPE] + (GRID if args.grid else [])
    threads = torch.get_num_threads()
    info = machine()
    print(f"# Two cores on one recurrence: float32, fwd+bwd, median of {args.reps}")
    print(f"# {info['cpu']}, {info['logical_cpus']} logical CPUs, torch {info['torch']}, "
          f"load average at start {info['load_average_at_start']}")
    try:
        results = {(family, shape): run_family(family, shape, args.reps)
                   for shape in shapes for family in args.families}
    finally:
        torch.set_num_threads(threads)
        set_recurrence_threads("auto")
    print(table(results))
    print(f"# load average at end {machine()['load_average_at_start']}")
    if os.getloadavg()[0] > (os.cpu_count() or 1):
        print("# the machine was loaded (load average above the CPU count): every 2-thread region waited for "
              "threads held by other jobs; the 2-thread ratios and verdicts mean nothing, rerun on a quiet machine")


if __name__ == "__main__":
    main()
