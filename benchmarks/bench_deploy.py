"""Deployment benchmarks: compiled vs eager vs torch.nn.LSTM, streaming step latency, onnxruntime, int8.

    .venv/bin/python benchmarks/bench_deploy.py               # full run (~3 min on 2 cores): writes
                                                              # RESULTS_deploy.md, deploy.json and the
                                                              # "Deploy" section of RESULTS.md
    .venv/bin/python benchmarks/bench_deploy.py --quick       # small shapes, 3 rounds, no files
    .venv/bin/python benchmarks/bench_deploy.py --checkpoint runs/charlm   # int8 accuracy on your model

Questions, one table each (medians of interleaved rounds, one process, see timing.py):

1. LSTM grid (T, B, I=H) = (100, 32, 128), (100, 64, 256), (200, 16, 512), (1000, 8, 64), forward
   (inference) and forward+backward: torch.nn.LSTM, rnnkit eager (`auto`, which runs torch's oneDNN
   kernel when no lengths are given), rnnkit eager on the fused kernels (`backend="fused"`), rnnkit under
   torch.compile (inductor, fullgraph=True; `auto` runs the fused custom ops there) — ratios against
   torch.nn.LSTM and against the fused eager run (what compiling itself adds or saves).
2. Streaming: per-step latency of `Recurrent.step` against a torch.nn.LSTMCell loop, a T=1 call of
   each layer, and the exported ONNX file stepped in onnxruntime with its state fed back.
3. The same sequence through onnxruntime (float32 and dynamic int8) against PyTorch.
4. int8 accuracy: a char-LM (trained here for --train-steps on tinyshakespeare unless --checkpoint
   names one) evaluated in bits per character on the held-out tail, float32 vs int8 onnxruntime.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from timing import bench_interleaved, machine  # noqa: E402

import rnnkit  # noqa: E402
from rnnkit.export import export_onnx, quantize_onnx  # noqa: E402
from rnnkit.export.quantize import bits_per_token  # noqa: E402
from rnnkit.recipes import TINYSHAKESPEARE  # noqa: E402

# (T, B, I, H): the LSTM grid (I = H), the same shapes as bench_cells.py's. Each shape costs an
# inductor compile (forward, and forward+backward): one to two minutes on 2 busy cores.
GRID = [(100, 32, 128, 128), (100, 64, 256, 256), (200, 16, 512, 512), (1000, 8, 64, 64)]
QUICK_GRID = [(16, 4, 16, 32)]
START, END = "<!-- bench_deploy:start -->", "<!-- bench_deploy:end -->"


def _ms(x: float) -> str:
    return f"{x * 1e3:.3f}"


def lstm_grid(grid, reps: int) -> List[dict]:
    """Forward and forward+backward of a 1-layer LSTM: nn.LSTM, rnnkit eager (auto, fused), rnnkit compiled."""
    rows = []
    for T, B, I, H in grid:
        torch.manual_seed(0)
        ref = torch.nn.LSTM(I, H)
        ours = rnnkit.LSTM(I, H)
        ours.load_state_dict(ref.state_dict())
        fused = rnnkit.LSTM(I, H, backend="fused")
        fused.load_state_dict(ref.state_dict())
        x = torch.randn(T, B, I)
        t0 = time.perf_counter()
        compiled = torch.compile(ours, fullgraph=True)
        with torch.no_grad():
            compiled(x)
        compile_s = time.perf_counter() - t0
        ours(x)
        eager_backend = ours.last_backend

        def infer(m):
            def f():
                with torch.no_grad():
                    m(x)
            return f

        def train(m):
            xg = x.clone().requires_grad_()

            def f():
                y, _ = m(xg)
                y.sum().backward()
            return f

        fwd = bench_interleaved({"torch.nn.LSTM": infer(ref), "rnnkit eager": infer(ours),
                                 "rnnkit eager fused": infer(fused), "rnnkit compiled": infer(compiled)}, reps=reps)
        t1 = time.perf_counter()
        train_copy = copy.deepcopy(ours)  # its own module, so the two compiled forwards share no cache
        compiled_train = torch.compile(train_copy, fullgraph=True)
        train(compiled_train)()
        train(compiled_train)()  # AOT backward compiles lazily on first backward
        compile_train_s = time.perf_counter() - t1
        bwd = bench_interleaved({"torch.nn.LSTM": train(ref), "rnnkit eager": train(ours),
                                 "rnnkit eager fused": train(fused), "rnnkit compiled": train(compiled_train)},
                                reps=reps)
        rows.append({"shape": {"T": T, "B": B, "I": I, "H": H}, "eager_backend": eager_backend,
                     "compile_seconds": {"forward": compile_s, "train": compile_train_s},
                     "forward": {k: v["median"] for k, v in fwd.items()},
                     "train": {k: v["median"] for k, v in bwd.items()}})
        print(f"LSTM T={T} B={B} I={I} H={H}: fwd " + ", ".join(f"{k} {_ms(v['median'])} ms" for k, v in fwd.items())
              + " | fwd+bwd " + ", ".join(f"{k} {_ms(v['median'])} ms" for k, v in bwd.items()), flush=True)
    return rows


def step_latency(H: int, layers: int, steps: int, reps: int, tmp: Path) -> dict:
    """Per-step latency, batch 1, state carried: seconds per step."""
    import onnxruntime as ort

    torch.manual_seed(0)
    I = H
    ours = rnnkit.LSTM(I, H, num_layers=layers).eval()
    ref = torch.nn.LSTM(I, H, num_layers=layers).eval()
    ref.load_state_dict(ours.state_dict())
    cells = [torch.nn.LSTMCell(I, H) for _ in range(layers)]
    for l, cell in enumerate(cells):
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, name).data.copy_(getattr(ours, f"{name}_l{l}"))
    xs = torch.randn(steps, 1, I)
    path = export_onnx(ours, tmp / f"step_{H}_{layers}.onnx", initial_state=True)
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    xs_np = xs.numpy()

    @torch.no_grad()
    def cell_loop():
        state = [(torch.zeros(1, H), torch.zeros(1, H)) for _ in cells]
        for x in xs:
            for l, cell in enumerate(cells):
                state[l] = cell(x, state[l])
                x = state[l][0]

    @torch.no_grad()
    def rnnkit_step():
        state = ours.initial_state(1)
        for x in xs:
            _, state = ours.step(x, state)

    def layer_t1(m):
        @torch.no_grad()
        def f():
            state = None
            for x in xs:
                _, state = m(x[None], state)
        return f

    def onnx_t1():
        h = np.zeros((layers, 1, H), np.float32)
        c = np.zeros_like(h)
        for x in xs_np:
            _, h, c = session.run(None, {"input": x[None], "h0": h, "c0": c})

    result = bench_interleaved({"torch.nn.LSTMCell loop": cell_loop, "rnnkit LSTM.step": rnnkit_step,
                                "torch.nn.LSTM T=1 call": layer_t1(ref), "rnnkit LSTM T=1 call": layer_t1(ours),
                                "onnxruntime T=1 run": onnx_t1}, reps=reps)
    per_step = {k: v["median"] / steps for k, v in result.items()}
    print(f"step latency H={H} layers={layers}: " + ", ".join(f"{k} {v * 1e6:.1f} us" for k, v in per_step.items()),
          flush=True)
    return {"H": H, "layers": layers, "per_step_seconds": per_step}


def onnx_sequence(T: int, B: int, H: int, reps: int, tmp: Path) -> dict:
    import onnxruntime as ort

    torch.manual_seed(0)
    ours = rnnkit.LSTM(H, H, num_layers=2).eval()
    ref = torch.nn.LSTM(H, H, num_layers=2).eval()
    ref.load_state_dict(ours.state_dict())
    fp32 = export_onnx(ours, tmp / "seq.onnx", lengths=True, initial_state=True)
    int8 = quantize_onnx(fp32, tmp / "seq.int8.onnx")
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    sessions = {k: ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"])
                for k, p in (("fp32", fp32), ("int8", int8))}
    x = torch.randn(T, B, H)
    feeds = {"input": x.numpy(), "lengths": np.full((B,), T, np.int64),
             "h0": np.zeros((2, B, H), np.float32), "c0": np.zeros((2, B, H), np.float32)}

    def torch_run(m):
        def f():
            with torch.no_grad():
                m(x)
        return f

    result = bench_interleaved({"torch.nn.LSTM": torch_run(ref), "rnnkit eager": torch_run(ours),
                                "onnxruntime fp32": lambda: sessions["fp32"].run(None, feeds),
                                "onnxruntime int8": lambda: sessions["int8"].run(None, feeds)}, reps=reps)
    with torch.no_grad():
        want = ours(x)[0].numpy()
    error = {k: float(np.abs(s.run(None, feeds)[0] - want).max()) for k, s in sessions.items()}
    print(f"sequence T={T} B={B} H={H} 2 layers: " + ", ".join(f"{k} {_ms(v['median'])} ms"
                                                               for k, v in result.items()), error, flush=True)
    return {"T": T, "B": B, "H": H, "layers": 2, "seconds": {k: v["median"] for k, v in result.items()},
            "max_abs_error_vs_pytorch": error,
            "file_bytes": {"fp32": fp32.stat().st_size, "int8": int8.stat().st_size}}


def int8_accuracy(checkpoint: Optional[str], train_steps: int, tmp: Path, quick: bool) -> dict:
    """bpc of a char-LM on the held-out tail: PyTorch, onnxruntime fp32, onnxruntime int8."""
    from rnnkit.cli import main as cli_main
    from rnnkit.cli.loading import load_language_model

    text_path = TINYSHAKESPEARE
    if checkpoint is None:
        run = tmp / "charlm"
        t0 = time.perf_counter()
        cli_main(["train", "charlm", "--data", str(text_path), "--out", str(run), "--quiet", "--no-tensorboard",
                  "--hidden-size", "64" if quick else "128", "--num-layers", "2", "--bptt", "64",
                  "--batch-size", "16", "--threads", str(torch.get_num_threads()), "--max-steps", str(train_steps), "--eval-every", str(train_steps)])
        print(f"trained a char-LM for {train_steps} steps in {time.perf_counter() - t0:.0f} s", flush=True)
        checkpoint = str(run)
    model, vocab, _ = load_language_model(checkpoint, torch.device("cpu"))
    model = model.float()
    text = text_path.read_text(encoding="utf-8")
    tail = text[int(len(text) * 0.9):][: 20000 if quick else 100000]
    tokens = vocab.encode(tail, what="held-out text")
    fp32 = export_onnx(model, tmp / "lm.onnx", initial_state=True)  # bits_per_token carries the state
    int8 = quantize_onnx(fp32, tmp / "lm.int8.onnx")
    result = {"checkpoint": checkpoint, "config": model.config.to_dict(), "tokens": int(tokens.numel()),
              "bpc": {"onnxruntime fp32": bits_per_token(fp32, tokens), "onnxruntime int8": bits_per_token(int8, tokens)},
              "file_bytes": {"fp32": fp32.stat().st_size, "int8": int8.stat().st_size}}
    print("char-LM held-out bpc:", result["bpc"], result["file_bytes"], flush=True)
    return result


def write_markdown(results: dict) -> str:
    m = results["machine"]
    lines = [
        START,
        "## Deploy (generated by benchmarks/bench_deploy.py)",
        "",
        f"Command: `{results['command']}`, run {results['started']}; {m['cpu']}, {m['logical_cpus']} logical CPUs, {m['threads']} torch threads, "
        f"torch {m['torch']}, onnxruntime {results['onnxruntime']}; load average at start {m['load_average_at_start']} "
        f"(a shared machine: ratios are steadier than absolute times). Medians of {results['reps']} interleaved rounds.",
        "",
        "### LSTM grid: torch.compile vs eager vs torch.nn.LSTM (1 layer, float32, ms)",
        "",
        "`auto` eager runs torch's oneDNN kernel here (no lengths: the `eager backend` column); compiled, `auto` "
        "runs the fused custom ops, so `compiled/fused` is what compiling adds to the same kernels. Compile "
        "seconds as measured in this process: inductor's on-disk cache from earlier runs may serve part of them.",
        "",
        "| T | B | I | H | eager backend | nn.LSTM fwd | rnnkit auto fwd | rnnkit fused fwd | rnnkit compiled fwd "
        "| compiled/nn | compiled/fused | nn.LSTM fwd+bwd | rnnkit auto fwd+bwd | rnnkit fused fwd+bwd "
        "| rnnkit compiled fwd+bwd | compiled/nn | compiled/fused | compile s (fwd, train) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["lstm_grid"]:
        s, f, t = r["shape"], r["forward"], r["train"]
        cells = [f"{s['T']} | {s['B']} | {s['I']} | {s['H']} | {r['eager_backend']}"]
        for d in (f, t):
            cells += [_ms(d[k]) for k in ("torch.nn.LSTM", "rnnkit eager", "rnnkit eager fused", "rnnkit compiled")]
            cells += [f"{d['rnnkit compiled'] / d['torch.nn.LSTM']:.2f}",
                      f"{d['rnnkit compiled'] / d['rnnkit eager fused']:.2f}"]
        cells.append(f"{r['compile_seconds']['forward']:.0f}, {r['compile_seconds']['train']:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "### Streaming: per-step latency, batch 1, state carried (µs per step)", ""]
    names = list(results["step_latency"][0]["per_step_seconds"])
    lines.append("| H | layers | " + " | ".join(names) + " |")
    lines.append("|---|---|" + "---|" * len(names))
    for r in results["step_latency"]:
        lines.append(f"| {r['H']} | {r['layers']} | " + " | ".join(f"{r['per_step_seconds'][n] * 1e6:.1f}"
                                                                     for n in names) + " |")
    s = results["onnx_sequence"]
    lines += ["", f"### A sequence through onnxruntime (2-layer LSTM, T={s['T']}, B={s['B']}, H={s['H']}, ms)", "",
              "| " + " | ".join(s["seconds"]) + " | max abs error fp32 | max abs error int8 |",
              "|" + "---|" * (len(s["seconds"]) + 2),
              "| " + " | ".join(_ms(v) for v in s["seconds"].values()) +
              f" | {s['max_abs_error_vs_pytorch']['fp32']:.1e} | {s['max_abs_error_vs_pytorch']['int8']:.1e} |"]
    a = results.get("int8_accuracy")
    if a:
        c = a["config"]
        lines += ["", "### Dynamic int8 quantisation: char-LM accuracy", "",
                  f"{c['cell']} {c['num_layers']}×{c['hidden_size']}, embedding {c['embedding_size']}, checkpoint "
                  f"`{Path(a['checkpoint']).name}`; bits per character on {a['tokens']} held-out characters of "
                  f"tinyshakespeare (last 10%), state carried over windows of 128.", "",
                  "| | bpc | file bytes |", "|---|---|---|",
                  f"| onnxruntime fp32 | {a['bpc']['onnxruntime fp32']:.4f} | {a['file_bytes']['fp32']} |",
                  f"| onnxruntime int8 | {a['bpc']['onnxruntime int8']:.4f} | {a['file_bytes']['int8']} |",
                  f"| change | {a['bpc']['onnxruntime int8'] - a['bpc']['onnxruntime fp32']:+.4f} | "
                  f"{a['file_bytes']['int8'] / a['file_bytes']['fp32']:.2f}× |"]
    lines.append(END)
    return "\n".join(lines) + "\n"


def _insert_section(path: Path, section: str) -> None:
    """Replace the section between the markers in RESULTS.md, or append it."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if START in text and END in text:
        text = text[: text.index(START)] + section + text[text.index(END) + len(END) + 1:]
    else:
        text = text + ("\n" if text and not text.endswith("\n\n") else "") + section
    path.write_text(text, encoding="utf-8")


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small shapes, 3 rounds; no files written")
    parser.add_argument("--reps", type=int, default=None, help="timed rounds (default 7, quick 3)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch and onnxruntime threads (default 1: on a shared, loaded machine OpenMP "
                             "barriers between 2 threads cost milliseconds per call)")
    parser.add_argument("--checkpoint", default=None, help="char-LM checkpoint for the int8 accuracy table")
    parser.add_argument("--train-steps", type=int, default=1000, help="steps to train a char-LM when no --checkpoint")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    import onnxruntime as ort

    reps = args.reps or (3 if args.quick else 7)
    results: Dict[str, object] = {"started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                  "machine": machine(), "onnxruntime": ort.__version__, "reps": reps,
                                  "command": " ".join([".venv/bin/python benchmarks/bench_deploy.py"]
                                                      + list(sys.argv[1:] if argv is None else argv))}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        results["lstm_grid"] = lstm_grid(QUICK_GRID if args.quick else GRID, reps)
        results["step_latency"] = [step_latency(H, L, 20 if args.quick else 100, reps, tmp)
                                   for H, L in ([(32, 1)] if args.quick else [(128, 1), (256, 2)])]
        results["onnx_sequence"] = onnx_sequence(16 if args.quick else 128, 4 if args.quick else 16,
                                                 32 if args.quick else 256, reps, tmp)
        results["int8_accuracy"] = int8_accuracy(args.checkpoint, 20 if args.quick else args.train_steps, tmp,
                                                 args.quick)
    section = write_markdown(results)
    print(section)
    if args.quick:
        return
    (HERE / "deploy.json").write_text(json.dumps(results, indent=1))
    (HERE / "RESULTS_deploy.md").write_text(section.replace(START + "\n", "").replace(END + "\n", ""))
    _insert_section(HERE / "RESULTS.md", section)
    print(f"wrote {HERE / 'RESULTS_deploy.md'}, {HERE / 'deploy.json'} and the Deploy section of RESULTS.md")


if __name__ == "__main__":
    main()
