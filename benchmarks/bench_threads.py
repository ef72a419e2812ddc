"""Two cores on one recurrence: rnnkit's fused LSTM, GRU and Elman against nn.LSTM / nn.GRU / nn.RNN at
T=1000, B=8, I=H=64, float32, forward+backward, with torch at one and at two intra-op threads.

    .venv/bin/python benchmarks/bench_threads.py            # 7 rounds (prints; the lead copies into RESULTS.md)
    .venv/bin/python benchmarks/bench_threads.py --reps 3   # quicker

At this shape one step's recurrent product (8 x 64 x 4H) is far too small for BLAS to split, so the fused
kernels split the batch instead: each of torch's threads carries its block of rows through the whole time
loop (common.h: split_batch; rnnkit.backends.set_recurrence_threads). Variants per family, interleaved in
rounds (timing.bench_interleaved: 2 warm-up rounds, then the median), each call setting its thread count:
  nn 1t / nn 2t                     the torch.nn peer at 1 / 2 threads
  rnnkit 1t                         fused kernels, 1 thread
  rnnkit 2t no split                fused kernels, 2 threads, set_recurrence_threads(1) (what 2 threads gave before)
  rnnkit 2t                         fused kernels, 2 threads, auto (the batch split in two)
Targets (issue 19, 2 threads): LSTM <= 0.6x nn.LSTM, GRU <= 0.25x nn.GRU. Read the ratios, not the
milliseconds: the load average is printed beside them.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import rnnkit  # noqa: E402
from rnnkit.backends import set_recurrence_threads  # noqa: E402
from timing import bench_interleaved, machine  # noqa: E402

T, B, H = 1000, 8, 64
FAMILIES = {"LSTM": (rnnkit.LSTM, nn.LSTM), "GRU": (rnnkit.GRU, nn.GRU), "Elman": (rnnkit.RNN, nn.RNN)}
TARGETS = {"LSTM": 0.6, "GRU": 0.25}


def _timed(layer: nn.Module, x: torch.Tensor, threads: int, split: str = "auto") -> Callable[[], None]:
    def call() -> None:
        torch.set_num_threads(threads)
        set_recurrence_threads(1 if split == "off" else "auto")
        layer(x)[0].sum().backward()
    return call


def run_family(family: str, reps: int) -> Dict[str, dict]:
    ours_cls, torch_cls = FAMILIES[family]
    torch.manual_seed(0)
    peer = torch_cls(H, H)
    ours = ours_cls(H, H, backend="fused")
    ours.load_state_dict(peer.state_dict(), strict=False)
    x = torch.randn(T, B, H, requires_grad=True)
    variants = {"nn 1t": _timed(peer, x, 1), "nn 2t": _timed(peer, x, 2), "rnnkit 1t": _timed(ours, x, 1),
                "rnnkit 2t no split": _timed(ours, x, 2, "off"), "rnnkit 2t": _timed(ours, x, 2)}
    return bench_interleaved(variants, reps=reps)


def table(results: Dict[str, Dict[str, dict]]) -> str:
    lines = ["| family | nn 1t ms | nn 2t ms | rnnkit 1t ms | rnnkit 2t no split ms | rnnkit 2t ms | "
             "rnnkit 2t / nn 2t | 1t / nn 1t | 2t speed-up (split vs 1t) | target |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for family, r in results.items():
        ms = {k: v["median"] * 1e3 for k, v in r.items()}
        target = TARGETS.get(family)
        verdict = "—" if target is None else f"≤ {target}x: {'met' if ms['rnnkit 2t'] / ms['nn 2t'] <= target else 'missed'}"
        lines.append(f"| {family} | {ms['nn 1t']:.1f} | {ms['nn 2t']:.1f} | {ms['rnnkit 1t']:.1f} | "
                     f"{ms['rnnkit 2t no split']:.1f} | {ms['rnnkit 2t']:.1f} | {ms['rnnkit 2t'] / ms['nn 2t']:.2f}x | "
                     f"{ms['rnnkit 1t'] / ms['nn 1t']:.2f}x | {ms['rnnkit 1t'] / ms['rnnkit 2t']:.2f}x | {verdict} |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=7, help="timed rounds per variant (default 7)")
    parser.add_argument("--families", nargs="+", choices=list(FAMILIES), default=list(FAMILIES))
    args = parser.parse_args(argv)
    threads = torch.get_num_threads()
    info = machine()
    print(f"# Two cores on one recurrence: T={T}, B={B}, I=H={H}, float32, fwd+bwd, median of {args.reps}")
    print(f"# {info['cpu']}, {info['logical_cpus']} logical CPUs, torch {info['torch']}, "
          f"load average at start {info['load_average_at_start']}")
    try:
        results = {family: run_family(family, args.reps) for family in args.families}
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
