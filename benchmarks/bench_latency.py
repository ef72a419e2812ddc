"""Inference latency at batch 1: per-token time of rnnkit's step API against torch.nn.LSTMCell/GRUCell
stepping and against onnxruntime running rnnkit's exported graph one step at a time, and the char-LM
sampling rate in characters per second. CPU, one process.

    .venv/bin/python benchmarks/bench_latency.py              # H=256 and 512, 7 rounds of 200 steps
    .venv/bin/python benchmarks/bench_latency.py --quick      # H=256, 3 rounds
    .venv/bin/python benchmarks/bench_latency.py --threads 2  # two intra-op threads (default 1)

Per token (batch 1, input size = hidden size, eval mode, no autograd):
  rnnkit step   layer.step(x_t, state) on rnnkit.LSTM / rnnkit.GRU (one layer), state fed back
  torch cell    nn.LSTMCell / nn.GRUCell(x_t, state) with the same weights
  onnxruntime   rnnkit.export_onnx(layer, initial_state=True), session.run on a (1, 1, H) input with the
                state fed back (numpy in, numpy out)
Generation: rnnkit.models.char_lm.sample (what `rnnkit charlm generate` runs) on the demo model's size
(LSTM 1x256, embedding 64, vocabulary 65), freshly initialised (speed does not depend on the weights),
temperature 0.8, top_k None; characters per second.

Variants run interleaved in rounds (timing.bench_interleaved: 2 warm-up rounds, then the median), so
machine noise hits all of them alike; read the ratios. Targets (issue 19): step API <= 1.0x the torch
cell's per-step time; generation >= 2,000 chars/s.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Callable, Dict

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import rnnkit  # noqa: E402
from rnnkit.models.char_lm import LMConfig, RecurrentLM, sample  # noqa: E402
from timing import bench_interleaved, machine  # noqa: E402

STEPS = 200  # tokens per timed call
FAMILIES = {"LSTM": (rnnkit.LSTM, nn.LSTMCell), "GRU": (rnnkit.GRU, nn.GRUCell)}


def _rnnkit_steps(layer: nn.Module, xs: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        state = layer.initial_state(1)
        with torch.no_grad():
            for x in xs:
                _, state = layer.step(x, state)
    return run


def _torch_cell_steps(cell: nn.Module, xs: torch.Tensor, lstm: bool) -> Callable[[], None]:
    def run() -> None:
        h = torch.zeros(1, cell.hidden_size)
        state = (h, h) if lstm else h
        with torch.no_grad():
            for x in xs:
                state = cell(x, state)
    return run


def _onnx_steps(layer: nn.Module, xs: torch.Tensor, lstm: bool, folder: Path) -> Callable[[], None]:
    import onnxruntime as ort

    path = rnnkit.export_onnx(layer, folder / "layer.onnx", initial_state=True)
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    inputs = [x.view(1, 1, -1).numpy() for x in xs]
    zeros = torch.zeros(1, 1, layer.hidden_size).numpy()

    def run() -> None:
        state = [zeros, zeros] if lstm else [zeros]
        for x in inputs:
            _, *state = session.run(None, dict(zip(names, [x, *state])))
    return run


def _copy_weights(layer: nn.Module, cell: nn.Module) -> None:
    """rnnkit's one-layer weights into the torch cell (same names and layout, suffix _l0 dropped)."""
    cell.load_state_dict({k[:-3]: v for k, v in layer.state_dict().items()})


def bench_step(family: str, H: int, reps: int, folder: Path) -> Dict[str, float]:
    """Median seconds per token of each variant."""
    torch.manual_seed(0)
    layer_cls, cell_cls = FAMILIES[family]
    layer, cell = layer_cls(H, H).eval(), cell_cls(H, H).eval()
    _copy_weights(layer, cell)
    xs = torch.randn(STEPS, 1, H)
    lstm = family == "LSTM"
    fns = {"rnnkit step": _rnnkit_steps(layer, xs), "torch cell": _torch_cell_steps(cell, xs, lstm),
           "onnxruntime": _onnx_steps(layer, xs, lstm, folder)}
    return {k: v["median"] / STEPS for k, v in bench_interleaved(fns, reps=reps).items()}


def bench_generate(reps: int, length: int = 500) -> float:
    """Median characters per second of char-LM sampling at the demo model's size."""
    torch.manual_seed(0)
    model = RecurrentLM(LMConfig(vocab_size=65, cell="lstm", hidden_size=256, num_layers=1, embedding_size=64))
    prime = [0, 1, 2]

    def run() -> None:
        generator = torch.Generator().manual_seed(1)
        for _ in sample(model, prime, length, temperature=0.8, generator=generator):
            pass
    return length / bench_interleaved({"generate": run}, reps=reps)["generate"]["median"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="H=256 only, 3 rounds")
    parser.add_argument("--threads", type=int, default=1,
                        help="intra-op threads for torch and onnxruntime (default 1: a batch-1 step is too small "
                             "to split, and a second thread's wake-up costs more than it saves)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    info = machine()
    print(f"cpu: {info['cpu']} ({info['logical_cpus']} logical), torch {info['torch']}, threads {info['threads']}, "
          f"capability {torch.backends.cpu.get_cpu_capability()}; load average at start "
          f"{info['load_average_at_start']}")
    sizes, reps = ([256], 3) if args.quick else ([256, 512], 7)
    print(f"per-token medians in microseconds (batch 1, {STEPS} steps per round, {reps} rounds); "
          f"ratios to the torch cell")
    with tempfile.TemporaryDirectory() as tmp:
        for family in FAMILIES:
            for H in sizes:
                t = bench_step(family, H, reps, Path(tmp))
                ms = "  ".join(f"{k} {v * 1e6:6.1f}" for k, v in t.items())
                print(f"{family:4s} H={H}  {ms}  | rnnkit/torch {t['rnnkit step'] / t['torch cell']:.2f}  "
                      f"onnxruntime/torch {t['onnxruntime'] / t['torch cell']:.2f}", flush=True)
    print(f"generate (LSTM 1x256, embedding 64, vocabulary 65): {bench_generate(reps):,.0f} chars/s")


if __name__ == "__main__":
    main()
