"""ConvLSTM / ConvGRU benchmark: forward + backward of one layer over a sequence.

    .venv/bin/python benchmarks/bench_conv.py [--threads 1] [--rounds 7] [--quick]

Variants (same weights, same math — checked before timing):

    reference    rnnkit.ConvLSTM / ConvGRU (the reference backend, what `auto` runs): input
                 convolution hoisted over all T·B frames, the cell's step under autograd
    plain loop   the common PyTorch ConvLSTM: per step one convolution over cat([x_t, h])
                 (4Hc outputs), autograd
    keras-style  Keras ConvLSTM2D's formulation: per step 4 input + 4 recurrent convolutions
                 (one kernel per gate), autograd

torch.nn has no convolutional recurrent layer, so ratios are against the plain loop. (A `conv` backend
with a hand-derived BPTT was measured here too and removed: docs/DESIGN.md.)
Variants run interleaved in rounds (timing.bench_interleaved), median reported.
Results go to benchmarks/results_conv.json and to the conv section of
benchmarks/RESULTS.md (replaced in place, the rest of the file untouched).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Dict

import torch
from torch.nn import functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from timing import bench_interleaved, machine  # noqa: E402

import rnnkit  # noqa: E402

BEGIN, END = "<!-- conv:begin -->", "<!-- conv:end -->"


def plain_loop(layer: rnnkit.ConvLSTM) -> Callable:
    """Per step: conv(cat([x_t, h]), [W_ih | W_hh]) + b, gates, as most PyTorch ConvLSTM code does."""
    cell = layer.cell_at(0)

    def run(x: torch.Tensor) -> torch.Tensor:
        w = torch.cat([cell.weight_ih, cell.weight_hh], dim=1)
        b = cell.bias_ih + cell.bias_hh
        h = x.new_zeros(x.shape[1], cell.hidden_size, *x.shape[3:])
        c = torch.zeros_like(h)
        ys = []
        for x_t in x:
            i, f, g, o = F.conv2d(torch.cat([x_t, h], 1), w, b, padding=cell.padding).chunk(4, 1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            ys.append(h)
        return torch.stack(ys)

    return run


def keras_style(layer: rnnkit.ConvLSTM) -> Callable:
    """Per step and gate: input_conv(x_t, W_x,gate) + recurrent_conv(h, W_h,gate) (Keras ConvLSTM2D)."""
    cell = layer.cell_at(0)

    def run(x: torch.Tensor) -> torch.Tensor:
        wx, wh = cell.weight_ih.chunk(4), cell.weight_hh.chunk(4)
        bx, bh = (cell.bias_ih + cell.bias_hh).chunk(4), [None] * 4
        h = x.new_zeros(x.shape[1], cell.hidden_size, *x.shape[3:])
        c = torch.zeros_like(h)
        ys = []
        for x_t in x:
            i, f, g, o = (F.conv2d(x_t, wx[k], bx[k], padding=cell.padding)
                          + F.conv2d(h, wh[k], bh[k], padding=cell.padding) for k in range(4))
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            ys.append(h)
        return torch.stack(ys)

    return run


def fwd_bwd(fn: Callable, x: torch.Tensor, params) -> Callable[[], None]:
    def go() -> None:
        for p in params:
            p.grad = None
        y = fn(x)
        y = y[0] if isinstance(y, tuple) else y
        y.sum().backward()
    return go


def bench_size(name: str, T: int, B: int, C: int, Hc: int, S: int, k: int, rounds: int) -> Dict:
    torch.manual_seed(0)
    lstm = rnnkit.ConvLSTM(C, Hc, k)
    gru = rnnkit.ConvGRU(C, Hc, k)
    x = torch.randn(T, B, C, S, S)
    loops = {"plain loop": plain_loop(lstm), "keras-style": keras_style(lstm)}
    with torch.no_grad():  # same math: every variant against the reference backend
        lstm.backend = "reference"
        ref = lstm(x)[0]
        for label, fn in loops.items():
            err = float((fn(x) - ref).abs().max())
            assert err < 1e-4, f"{label} disagrees with rnnkit.ConvLSTM by {err}"
    lp, gp = list(lstm.parameters()), list(gru.parameters())

    def with_backend(layer, backend):
        def fn(inp):
            layer.backend = backend
            return layer(inp)
        return fn

    variants = {
        "ConvLSTM reference": fwd_bwd(with_backend(lstm, "reference"), x, lp),
        "ConvLSTM plain loop": fwd_bwd(loops["plain loop"], x, lp),
        "ConvLSTM keras-style": fwd_bwd(loops["keras-style"], x, lp),
        "ConvGRU reference": fwd_bwd(with_backend(gru, "reference"), x, gp),
    }
    timed = bench_interleaved(variants, warmup=1, reps=rounds)
    return {"size": name, "T": T, "B": B, "C": C, "Hc": Hc, "spatial": S, "kernel": k,
            "median_s": {v: r["median"] for v, r in timed.items()},
            "min_s": {v: r["min"] for v, r in timed.items()}}


def write_section(results: Dict, path: Path) -> None:
    lines = [BEGIN, "## ConvLSTM / ConvGRU (benchmarks/bench_conv.py)", "",
             f"Forward + backward of one layer, median of {results['rounds']} interleaved rounds, "
             f"{results['date']}, {results['machine']['cpu']}, torch {results['machine']['torch']}, "
             f"{results['machine']['threads']} thread(s), load average at start {results['machine']['load_average_at_start']} (a shared, busy "
             f"machine: absolute times are pessimistic, ratios are what to read). Speed-up = plain loop time / "
             f"variant time.", "",
             "| size (T, B, C→Hc, S×S, k) | variant | median ms | speed-up vs plain loop |", "|---|---|---|---|"]
    for r in results["sizes"]:
        base = r["median_s"]["ConvLSTM plain loop"]
        label = f"{r['size']} ({r['T']}, {r['B']}, {r['C']}→{r['Hc']}, {r['spatial']}², {r['kernel']})"
        for v, t in r["median_s"].items():
            lines.append(f"| {label} | {v} | {1e3 * t:.1f} | {base / t:.2f}x |")
    lines += ["", "Reproduce: `.venv/bin/python benchmarks/bench_conv.py --threads 1`.", END]
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + "\n".join(lines) + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n" + "\n".join(lines) + "\n"
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="the small size only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sizes = [("small", 10, 4, 8, 16, 16, 3), ("video recipe", 20, 8, 16, 32, 16, 3),
             ("wide", 10, 8, 16, 64, 16, 5)]
    if args.quick:
        sizes = sizes[:1]
    results = {"machine": machine(), "rounds": args.rounds,
               "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
               "sizes": [bench_size(*s, rounds=args.rounds) for s in sizes]}
    for r in results["sizes"]:
        base = r["median_s"]["ConvLSTM plain loop"]
        for v, t in r["median_s"].items():
            print(f"{r['size']:>13} {v:>22}: {1e3 * t:8.1f} ms  {base / t:5.2f}x", flush=True)
    (HERE / "results_conv.json").write_text(json.dumps(results, indent=1))
    write_section(results, HERE / "RESULTS.md")
    print(f"wrote {HERE / 'results_conv.json'} and the conv section of {HERE / 'RESULTS.md'}")


if __name__ == "__main__":
    main()
