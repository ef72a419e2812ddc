"""Cell benchmark: rnnkit's backends against torch.nn peers, CPU, fp32, one process.

    .venv/bin/python benchmarks/bench_cells.py            # the full grid, 9 rounds, writes RESULTS.md + JSON
    .venv/bin/python benchmarks/bench_cells.py --quick    # 2 shapes, 3 rounds, fewer peers, prints only

Grid (T, B, I=H): (100,32,128), (100,64,256), (200,16,512), (1000,8,64); 2 threads.
For each shape every variant runs forward alone (no_grad) and forward+backward
(`out.sum().backward()` with the input requiring grad), interleaved in rounds
(timing.bench_interleaved: 2 warm-up rounds, then the median). Ratios are
taken against the torch.nn peer of the same run:

    LSTM-family (fused LSTM, native, peephole, layer-norm LSTM, SRU, minGRU, QRNN) -> nn.LSTM (oneDNN)
    packed LSTM (rnnkit on the same PackedSequence)                          -> nn.LSTM on the PackedSequence
    GRU-family                                                                -> nn.GRU
    Elman                                                                     -> nn.RNN

"floor" is the fraction of the GEMM floor reached: FLOPs ≈ 3·2·T·B·G·H·(I+H) for
fwd+bwd (a third of that forward), G gates, at the torch.mm rate measured in the
same run. Tests never time anything; this script is where speed is measured.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
import rnnkit  # noqa: E402
from rnnkit.backends import extension  # noqa: E402
from rnnkit.backends.allocator import keep_freed_memory  # noqa: E402
from timing import bench_interleaved, gemm_rate, machine  # noqa: E402

GRID = [(100, 32, 128), (100, 64, 256), (200, 16, 512), (1000, 8, 64)]
QUICK_GRID = [(100, 32, 128), (1000, 8, 64)]
HERE = Path(__file__).resolve().parent


class Variant:
    def __init__(self, name: str, peer: Optional[str], gates: int, make: Callable[[], Callable[[], torch.Tensor]],
                 recurrent: bool = True) -> None:
        self.name, self.peer, self.gates, self.make, self.recurrent = name, peer, gates, make, recurrent


def _lstm_cell_loop(cell: nn.LSTMCell, x: torch.Tensor) -> torch.Tensor:
    h = x.new_zeros(x.shape[1], cell.hidden_size)
    c = torch.zeros_like(h)
    outs = []
    for x_t in x.unbind(0):
        h, c = cell(x_t, (h, c))
        outs.append(h)
    return torch.stack(outs)


def variants(T: int, B: int, H: int, quick: bool) -> Tuple[List[Variant], torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    x = torch.randn(T, B, H, requires_grad=True)
    # lengths for the packed comparison: uniform in [T/2, T], the longest row full
    lengths = torch.randint(T // 2, T + 1, (B,))
    lengths[0] = T

    def packed():  # packed anew per call (the packing is part of both timed variants)
        return pack_padded_sequence(x, lengths, enforce_sorted=False)

    def layer(cls, backend: str, like: Optional[nn.Module] = None, **kw) -> nn.Module:
        m = cls(H, H, backend=backend, **kw)
        if like is not None:
            m.load_state_dict(like.state_dict())
        return m

    t_lstm, t_gru, t_rnn = nn.LSTM(H, H), nn.GRU(H, H), nn.RNN(H, H)
    t_cell = nn.LSTMCell(H, H)
    out: List[Variant] = [
        Variant("nn.LSTM (oneDNN)", None, 4, lambda: lambda: t_lstm(x)[0]),
        Variant("nn.GRU", None, 3, lambda: lambda: t_gru(x)[0]),
        Variant("nn.RNN tanh", None, 1, lambda: lambda: t_rnn(x)[0]),
        Variant("nn.LSTM PackedSequence", None, 4, lambda: lambda: t_lstm(packed())[0].data),
    ]
    r_lstm_f = layer(rnnkit.LSTM, "fused", t_lstm)
    r_lstm_a = layer(rnnkit.LSTM, "auto", t_lstm)
    out += [
        Variant("rnnkit LSTM fused", "nn.LSTM (oneDNN)", 4, lambda: lambda: r_lstm_f(x)[0]),
        Variant("rnnkit LSTM auto", "nn.LSTM (oneDNN)", 4, lambda: lambda: r_lstm_a(x)[0]),
        Variant("rnnkit LSTM fused PackedSequence", "nn.LSTM PackedSequence", 4,
                lambda: lambda: r_lstm_f(packed())[0].data),
        Variant("rnnkit GRU fused", "nn.GRU", 3, lambda: (lambda m: lambda: m(x)[0])(layer(rnnkit.GRU, "fused", t_gru))),
        Variant("rnnkit RNN fused", "nn.RNN tanh", 1,
                lambda: (lambda m: lambda: m(x)[0])(layer(rnnkit.RNN, "fused", t_rnn))),
    ]
    if not quick:
        out += [
            Variant("rnnkit GRU reset=before fused", "nn.GRU", 3,
                    lambda: (lambda m: lambda: m(x)[0])(layer(rnnkit.GRU, "fused", reset="before"))),
            Variant("rnnkit PeepholeLSTM fused", "nn.LSTM (oneDNN)", 4,
                    lambda: (lambda m: lambda: m(x)[0])(layer(rnnkit.PeepholeLSTM, "fused"))),
            Variant("rnnkit LayerNormLSTM fused", "nn.LSTM (oneDNN)", 4,
                    lambda: (lambda m: lambda: m(x)[0])(layer(rnnkit.LayerNormLSTM, "fused"))),
            Variant("rnnkit LayerNormGRU fused", "nn.GRU", 3,
                    lambda: (lambda m: lambda: m(x)[0])(layer(rnnkit.LayerNormGRU, "fused"))),
        ]
    out += [
        Variant("rnnkit SRU fused", "nn.LSTM (oneDNN)", 3,
                lambda: (lambda m: lambda: m(x)[0])(layer(rnnkit.SRU, "fused")), recurrent=False),
        Variant("rnnkit MinGRU fused", "nn.LSTM (oneDNN)", 2,
                lambda: (lambda m: lambda: m(x)[0])(layer(rnnkit.MinGRU, "fused")), recurrent=False),
        # QRNN's "gates" count the convolution's taps too (G·k rows of W per input), for the FLOP floor
        Variant("rnnkit QRNN fo k=2 fused", "nn.LSTM (oneDNN)", 3 * 2,
                lambda: (lambda m: lambda: m(x)[0])(layer(rnnkit.QRNN, "fused")), recurrent=False),
    ]
    if not quick:
        out += [
            Variant("rnnkit MinGRU scan", "nn.LSTM (oneDNN)", 2,
                    lambda: (lambda m: lambda: m(x)[0])(layer(rnnkit.MinGRU, "scan")), recurrent=False),
            Variant("rnnkit QRNN fo k=2 scan", "nn.LSTM (oneDNN)", 3 * 2,
                    lambda: (lambda m: lambda: m(x)[0])(layer(rnnkit.QRNN, "scan")), recurrent=False),
            Variant("rnnkit QRNN ifo k=2 scan", "nn.LSTM (oneDNN)", 4 * 2,
                    lambda: (lambda m: lambda: m(x)[0])(layer(rnnkit.QRNN, "scan", pooling="ifo")),
                    recurrent=False),
            Variant("LSTMCell Python loop", "nn.LSTM (oneDNN)", 4, lambda: lambda: _lstm_cell_loop(t_cell, x)),
            Variant("rnnkit LSTM reference", "nn.LSTM (oneDNN)", 4,
                    lambda: (lambda m: lambda: m(x)[0])(layer(rnnkit.LSTM, "reference", t_lstm))),
        ]
        try:  # the sru package, when installed (optional peer)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import sru  # type: ignore

            s = sru.SRU(H, H, num_layers=1)

            def sru_call() -> torch.Tensor:
                with warnings.catch_warnings():  # it warns on every CPU call with grad enabled
                    warnings.simplefilter("ignore")
                    return s(x)[0]

            out.append(Variant("sru package SRU", "nn.LSTM (oneDNN)", 3, lambda: sru_call, recurrent=False))
        except Exception:  # noqa: BLE001 - not installed or fails to build: just not a peer
            pass
    return out, x, lengths


def flops(T: int, B: int, H: int, gates: int, recurrent: bool, fwd_only: bool) -> float:
    """3·2·T·B·G·H·(I+H) fwd+bwd (a third forward); element-wise recurrences have no H·H term."""
    per_pass = 2 * T * B * gates * H * (H + (H if recurrent else 0))
    return per_pass * (1 if fwd_only else 3)


def saved_bytes(fn: Callable[[], torch.Tensor]) -> int:
    """Bytes of distinct storages autograd keeps for backward (training memory beyond inputs/params)."""
    seen: Dict[Tuple[int, torch.dtype], int] = {}

    def pack(t):
        seen[(t.untyped_storage().data_ptr(), t.dtype)] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def run(grid, reps: int, quick: bool) -> dict:
    rate = gemm_rate()
    results = {"machine": machine(), "gemm_gflops": rate / 1e9, "reps": reps, "shapes": []}
    print(f"# torch.mm fp32 rate this run: {rate / 1e9:.0f} GFLOP/s; threads {torch.get_num_threads()}", flush=True)
    for T, B, H in grid:
        vs, x, lengths = variants(T, B, H, quick)
        fns = {v.name: v.make() for v in vs}

        def fwd(f):
            def call():
                with torch.no_grad():
                    f()
            return call

        def fwd_bwd(f):
            def call():
                x.grad = None
                f().sum().backward()
            return call

        t0 = time.perf_counter()
        rf = bench_interleaved({k: fwd(f) for k, f in fns.items()}, reps=reps)
        rb = bench_interleaved({k: fwd_bwd(f) for k, f in fns.items()}, reps=reps)
        mem = {k: saved_bytes(fns[k]) for k in ("nn.LSTM (oneDNN)", "rnnkit LSTM fused", "rnnkit GRU fused",
                                              "nn.GRU")}
        rows = []
        for v in vs:
            row = {"variant": v.name, "peer": v.peer, "fwd_ms": rf[v.name]["median"] * 1e3,
                   "fwd_bwd_ms": rb[v.name]["median"] * 1e3}
            if v.peer:
                row["fwd_ratio"] = rf[v.name]["median"] / rf[v.peer]["median"]
                row["fwd_bwd_ratio"] = rb[v.name]["median"] / rb[v.peer]["median"]
            if "Packed" not in v.name:
                row["floor_fwd_bwd"] = flops(T, B, H, v.gates, v.recurrent, False) / rate / rb[v.name]["median"]
            rows.append(row)
        shape = {"T": T, "B": B, "I": H, "H": H, "lengths_mean": float(lengths.float().mean()), "rows": rows,
                 "saved_bytes": mem, "seconds": time.perf_counter() - t0}
        results["shapes"].append(shape)
        print(table(shape), flush=True)
    return results


def table(shape: dict) -> str:
    T, B, H = shape["T"], shape["B"], shape["H"]
    lines = [f"\n### T={T}, B={B}, I=H={H} (packed rows: mean length {shape['lengths_mean']:.0f})\n",
             "| variant | fwd ms | fwd ratio | fwd+bwd ms | fwd+bwd ratio | peer | GEMM floor reached (fwd+bwd) |",
             "|---|---|---|---|---|---|---|"]
    for r in shape["rows"]:
        ratio_f = f"{r['fwd_ratio']:.2f}x" if "fwd_ratio" in r else "—"
        ratio_b = f"{r['fwd_bwd_ratio']:.2f}x" if "fwd_bwd_ratio" in r else "—"
        floor = f"{100 * r['floor_fwd_bwd']:.0f} %" if "floor_fwd_bwd" in r else "—"
        lines.append(f"| {r['variant']} | {r['fwd_ms']:.2f} | {ratio_f} | {r['fwd_bwd_ms']:.2f} | {ratio_b} | "
                     f"{r['peer'] or '(peer)'} | {floor} |")
    mem = shape["saved_bytes"]
    lines.append(f"\nSaved for backward: nn.LSTM {mem['nn.LSTM (oneDNN)'] / 2**20:.1f} MiB, fused LSTM "
                 f"{mem['rnnkit LSTM fused'] / 2**20:.1f} MiB; nn.GRU {mem['nn.GRU'] / 2**20:.1f} MiB, fused GRU "
                 f"{mem['rnnkit GRU fused'] / 2**20:.1f} MiB.")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 shapes, 3 rounds, fewer peers; no files written")
    parser.add_argument("--reps", type=int, default=None, help="timed rounds per variant (default 9, quick 3)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md", help="markdown report (full runs only)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    # as rnnkit's CLI does: large buffers stay mapped between calls, for every variant alike (NOTES.md)
    results_malloc = keep_freed_memory()
    reason = extension.load()
    if reason is not None:
        print(f"fused kernels unavailable: {reason}", file=sys.stderr)
        sys.exit(1)
    reps = args.reps or (3 if args.quick else 9)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    results = run(QUICK_GRID if args.quick else GRID, reps, args.quick)
    results["started"] = started
    results["keep_freed_memory"] = results_malloc
    if args.quick:
        return
    raw = args.out.with_name("results.json")  # the raw numbers beside the report (benchmarks/ by default)
    raw.write_text(json.dumps(results, indent=1))
    write_markdown(results, args.out)
    print(f"\nwrote {args.out} and {raw}")


def write_markdown(results: dict, path: Path) -> None:
    """Write this run as the block of its CPU in RESULTS.md: a run on another CPU keeps its own block."""
    m = results["machine"]
    head = [
        f"# Cell benchmarks on {m['cpu']} (generated by benchmarks/bench_cells.py)",
        "",
        f"Command: `.venv/bin/python benchmarks/bench_cells.py` (`make bench`), run {results['started']}.",
        f"Machine: {m['cpu']} ({m.get('isa', 'ISA not recorded')}), {m['logical_cpus']} logical CPUs, "
        f"torch {m['torch']}, {m['threads']} threads, "
        f"{m['compiler']}, Python {m['python']}; load average at start {m['load_average_at_start']}.",
        f"fp32; medians of {results['reps']} interleaved rounds after 2 warm-up rounds; torch.mm rate this run "
        f"{results['gemm_gflops']:.0f} GFLOP/s (the yardstick of the floor column).",
        "glibc malloc keeps freed buffers mapped in this process (`rnnkit.backends.allocator.keep_freed_memory`, "
        "as rnnkit's CLI does), for every variant alike." if results.get("keep_freed_memory") else
        "glibc malloc at its defaults (freed large buffers go back to the kernel).",
        "",
        "Ratios are our time / the peer's time in the same process (lower is better). Why targets are missed "
        "and what would close them: [NOTES.md](NOTES.md).",
    ]
    body = [table(s) for s in results["shapes"]]
    key = f"{m['cpu']}, {m.get('isa', 'ISA not recorded')}"
    begin, end = f"{BEGIN[:-4]} {key} -->", f"{END[:-4]} {key} -->"
    section = "\n".join([begin] + head + body + ["", targets_table(results), end]) + "\n"
    path.write_text(_splice(path.read_text() if path.exists() else "", section, begin, end))


# RESULTS.md is shared with the other benchmarks' sections: this script rewrites only the block of the CPU
# it ran on (markers name the CPU and its ISA), and puts a new CPU's block after the others.
BEGIN, END = "<!-- bench_cells.py: begin -->", "<!-- bench_cells.py: end -->"


def _splice(old: str, section: str, begin: str, end: str) -> str:
    """Replace the block between `begin` and `end` in `old`, or add it after the last bench_cells block."""
    if begin in old and end in old:
        start, stop = old.index(begin), old.index(end) + len(end)
        return old[:start] + section.rstrip("\n") + old[stop:]
    last = old.rfind(END[:-4])
    if last < 0:
        return section + ("\n" + old if old.strip() else "")
    stop = old.index("-->", last) + len("-->")
    return old[:stop] + "\n\n" + section.rstrip("\n") + old[stop:]


#: (what, variant, shapes it applies to, bound on the fwd+bwd ratio, peer if not the variant's own)
TARGETS = [
    ("LSTM fixed length (auto)", "rnnkit LSTM auto", lambda T, H: True, 1.00),
    ("LSTM fixed length (fused itself)", "rnnkit LSTM fused", lambda T, H: True, 1.00),
    ("LSTM fixed length (fused) at T=1000, H=64", "rnnkit LSTM fused", lambda T, H: T == 1000, 0.60),
    ("LSTM on PackedSequence vs nn.LSTM on it", "rnnkit LSTM fused PackedSequence", lambda T, H: True, 0.50),
    ("GRU, H >= 128", "rnnkit GRU fused", lambda T, H: H >= 128, 0.75),
    ("GRU at T=1000, H=64", "rnnkit GRU fused", lambda T, H: T == 1000, 0.25),
    ("Elman", "rnnkit RNN fused", lambda T, H: True, 0.80),
    ("peephole LSTM", "rnnkit PeepholeLSTM fused", lambda T, H: True, 1.20),
    ("layer-norm LSTM", "rnnkit LayerNormLSTM fused", lambda T, H: True, 1.20),
    ("SRU vs nn.LSTM", "rnnkit SRU fused", lambda T, H: True, 0.50),
    ("SRU vs the sru package (training) at T=1000", "rnnkit SRU fused", lambda T, H: T == 1000, 0.20,
     "sru package SRU"),
]
GATED = ("rnnkit LSTM fused", "rnnkit GRU fused", "rnnkit PeepholeLSTM fused", "rnnkit LayerNormLSTM fused",
         "rnnkit LayerNormGRU fused", "rnnkit GRU reset=before fused")


def targets_table(results: dict) -> str:
    """The issue's targets against this run: met or missed, by how much."""
    lines = ["## Targets in this run (fwd+bwd)", "",
             "| target | shape T, B, H | bound | measured | met |", "|---|---|---|---|---|"]
    for what, name, applies, bound, *peer in TARGETS:
        for s in results["shapes"]:
            if not applies(s["T"], s["H"]):
                continue
            rows = {r["variant"]: r for r in s["rows"]}
            row = rows.get(name)
            if peer:  # a peer other than the variant's own (absent when its optional package is missing)
                ratio = row["fwd_bwd_ms"] / rows[peer[0]]["fwd_bwd_ms"] if row and peer[0] in rows else None
            else:
                ratio = row.get("fwd_bwd_ratio") if row else None
            if ratio is None:
                if peer:
                    lines.append(f"| {what} | {s['T']}, {s['B']}, {s['H']} | <= {bound:.2f}x | not measured "
                                 f"({peer[0]} not installed: make bench installs it) | — |")
                continue
            verdict = "yes" if ratio <= bound else f"no (+{100 * (ratio / bound - 1):.0f} %)"
            lines.append(f"| {what} | {s['T']}, {s['B']}, {s['H']} | <= {bound:.2f}x | {ratio:.2f}x | {verdict} |")
    for s in results["shapes"]:
        if s["H"] < 256:
            continue
        for r in s["rows"]:
            if r["variant"] in GATED and "floor_fwd_bwd" in r:
                f = r["floor_fwd_bwd"]
                verdict = "yes" if f >= 0.70 else f"no ({100 * f:.0f} % of the floor)"
                lines.append(f"| {r['variant']} >= 70 % of GEMM floor | {s['T']}, {s['B']}, {s['H']} | >= 70 % | "
                             f"{100 * f:.0f} % | {verdict} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
