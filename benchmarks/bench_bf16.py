"""bfloat16 benchmark: rnnkit's fused LSTM/GRU under `torch.autocast("cpu", dtype=torch.bfloat16)` against
their own float32 time and against torch.nn.LSTM/GRU (oneDNN) in both precisions; the families torch.nn
lacks (layer-norm LSTM/GRU, SRU, minGRU) against their own float32 time only. CPU, one process.

    .venv/bin/python benchmarks/bench_bf16.py                 # H=256 and 512, 1 and 2 threads, 7 rounds
    .venv/bin/python benchmarks/bench_bf16.py --quick         # H=256, 1 thread, 3 rounds
    .venv/bin/python benchmarks/bench_bf16.py --threads 1     # one thread count only
    .venv/bin/python benchmarks/bench_bf16.py --families SRU MinGRU   # some families only

Shapes (T, B, I=H): (100, 64, 256), (100, 64, 512). Every variant runs forward+backward
(`out.float().sum().backward()`, the input requiring grad), interleaved in rounds (timing.bench_interleaved:
2 warm-up rounds, then the median), so machine noise hits all of them alike; read the ratios, not the
milliseconds. It first prints what the CPU offers (torch's CPU capability, the avx512_bf16 / amx_bf16
flags, whether the kernels' bfloat16 step GEMM is on) and prints a skip line instead of timings where
bfloat16 would be emulated (no bfloat16 units): numbers there say nothing about bfloat16 hardware.
glibc malloc keeps freed buffers mapped (keep_freed_memory, as rnnkit's CLI and bench_cells.py do), for
every variant alike.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Callable, Dict, List

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import rnnkit  # noqa: E402
from rnnkit.backends import extension  # noqa: E402
from rnnkit.backends.allocator import keep_freed_memory  # noqa: E402
from timing import bench_interleaved, cpu_flags, machine  # noqa: E402

SHAPES = [(100, 64, 256), (100, 64, 512)]
#: family -> (rnnkit layer, torch.nn peer or None)
FAMILIES = {"LSTM": (rnnkit.LSTM, nn.LSTM), "GRU": (rnnkit.GRU, nn.GRU), "Elman": (rnnkit.RNN, nn.RNN),
            "LayerNormLSTM": (rnnkit.LayerNormLSTM, None),
            "LayerNormGRU": (rnnkit.LayerNormGRU, None), "SRU": (rnnkit.SRU, None), "MinGRU": (rnnkit.MinGRU, None)}


def bf16_flags() -> List[str]:
    """The bfloat16 flags this CPU reports in /proc/cpuinfo (Linux)."""
    return [f for f in cpu_flags() if f in ("avx512_bf16", "amx_bf16", "amx_tile")]


def _fwd_bwd(layer: nn.Module, x: torch.Tensor, autocast: bool) -> Callable[[], None]:
    def run() -> None:
        layer.zero_grad(set_to_none=True)
        x.grad = None
        with torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext():
            out, _ = layer(x)
            out.float().sum().backward()
    return run


def bench_shape(family: str, T: int, B: int, H: int, reps: int) -> Dict[str, float]:
    torch.manual_seed(0)
    ours_cls, nn_cls = FAMILIES[family]
    ours = ours_cls(H, H, backend="fused")
    x = torch.randn(T, B, H, requires_grad=True)
    fns = {"fused fp32": _fwd_bwd(ours, x, False), "fused autocast": _fwd_bwd(ours, x, True)}
    if nn_cls is not None:
        peer = nn_cls(H, H)
        peer.load_state_dict(ours.state_dict())
        fns.update({"nn fp32": _fwd_bwd(peer, x, False), "nn autocast": _fwd_bwd(peer, x, True)})
    return {k: v["median"] for k, v in bench_interleaved(fns, reps=reps).items()}


def report(n: int, family: str, shape: tuple, t: Dict[str, float]) -> str:
    """One result line: medians, then the ratios (the nn ones where the family has a torch.nn peer)."""
    ms = "  ".join(f"{k} {v * 1e3:7.1f}" for k, v in t.items())
    line = f"{n} thr {family:13s} {shape}  {ms}  | fused ac/fp32 {t['fused autocast'] / t['fused fp32']:.2f}"
    if "nn autocast" in t:
        line += (f"  nn ac/fp32 {t['nn autocast'] / t['nn fp32']:.2f}"
                 f"  fused ac / nn ac {t['fused autocast'] / t['nn autocast']:.2f}")
    return line


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="H=256 only, 1 thread, 3 rounds")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts (default 1 2)")
    parser.add_argument("--families", nargs="+", choices=list(FAMILIES), default=list(FAMILIES),
                        help="families to run (default: all)")
    args = parser.parse_args(argv)
    keep_freed_memory()
    info = machine()
    flags = bf16_flags()
    print(f"cpu: {info['cpu']} ({info['logical_cpus']} logical), torch {info['torch']}, "
          f"capability {torch.backends.cpu.get_cpu_capability()}, bf16 flags: {' '.join(flags) or 'none'}; "
          f"load average at start {info['load_average_at_start']}")
    reason = extension.load()
    if reason is not None:
        print(f"bf16: skipped, the fused kernels are unavailable: {reason}")
        return
    if not extension.bf16_step_gemm():
        print("bf16: skipped, this CPU has no bfloat16 units (no avx512_bf16/amx_bf16): bfloat16 would be "
              "emulated, so its timings say nothing about bfloat16 hardware")
        return
    shapes, threads, reps = (SHAPES[:1], [1], 3) if args.quick else (SHAPES, args.threads, 7)
    print("fwd+bwd medians in ms; ratios: autocast/fp32 (own), fused autocast / nn autocast")
    for n in threads:
        torch.set_num_threads(n)
        for family in args.families:
            for T, B, H in shapes:
                print(report(n, family, (T, B, H), bench_shape(family, T, B, H, reps)), flush=True)


if __name__ == "__main__":
    main()
