"""Char-LM training throughput: rnnkit (auto backend) vs torch.nn.LSTM with a plain loop.

    .venv/bin/python benchmarks/bench_charlm.py [--hidden-size 256] [--batch-size 32] [--bptt 128]
                                                [--threads 2] [--rounds 21]

Both variants train the same model (embedding 64 → 1-layer LSTM → linear over the
65 characters of tinyshakespeare) on the same real chunks with Adam:

  rnnkit: RecurrentLM + LanguageModelTask, one step of the shared Trainer's
          truncated-BPTT path (state carried and detached, clipping, optimizer);
  torch:  nn.Embedding + nn.LSTM + nn.Linear in a hand-written loop doing the
          same work (carry, cross-entropy sum / count, clip_grad_norm_, Adam).

Variants run interleaved in rounds (timing.bench_interleaved), median of --rounds
reported as tokens/s. Results go to benchmarks/results_charlm.json and to the
char-LM section of benchmarks/RESULTS.md (replaced in place, the rest untouched).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from timing import bench_interleaved, machine  # noqa: E402

from rnnkit.data.streams import StreamLoader  # noqa: E402
from rnnkit.data.text import load_char_corpus  # noqa: E402
from rnnkit.models import LanguageModelTask, LMConfig, RecurrentLM  # noqa: E402
from rnnkit.recipes import TINYSHAKESPEARE  # noqa: E402
from rnnkit.training import TrainConfig, Trainer  # noqa: E402

SECTION_START = "<!-- bench_charlm:start -->"
SECTION_END = "<!-- bench_charlm:end -->"


class TorchLM(nn.Module):
    def __init__(self, vocab: int, embedding: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, embedding)
        self.rnn = nn.LSTM(embedding, hidden, layers)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, x, state=None):
        y, state = self.rnn(self.embedding(x), state)
        return self.head(y), state


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hidden-size", type=int, default=256)
    p.add_argument("--num-layers", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--bptt", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=21)
    p.add_argument("--no-write", action="store_true", help="Print only; do not update the results files.")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    corpus = load_char_corpus(TINYSHAKESPEARE)
    V = len(corpus.vocab)
    loader = StreamLoader(corpus.train, args.batch_size, args.bptt)
    tokens_per_step = args.batch_size * args.bptt

    # rnnkit: the Trainer's own step
    model = RecurrentLM(LMConfig(vocab_size=V, hidden_size=args.hidden_size, num_layers=args.num_layers,
                                 embedding_size=64))
    trainer = Trainer(model, LanguageModelTask(), loader,
                      TrainConfig(max_steps=1, lr=2e-3, clip_norm=5.0, quiet=True, tensorboard=False))
    r_batches = loader.batches()

    def rnnkit_step() -> None:
        batch = next(r_batches)
        loss_sum, count, _ = trainer._run_stream(model, batch)
        (loss_sum / count).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        trainer.optimizer.step()
        trainer.optimizer.zero_grad(set_to_none=True)

    # torch.nn: the same work by hand
    ref = TorchLM(V, 64, args.hidden_size, args.num_layers)
    opt = torch.optim.Adam(ref.parameters(), lr=2e-3)
    t_batches = loader.batches()
    carry = {"state": None}

    def torch_step() -> None:
        batch = next(t_batches)
        logits, state = ref(batch.inputs, carry["state"])
        carry["state"] = tuple(s.detach() for s in state)
        loss = F.cross_entropy(logits.flatten(0, 1), batch.targets.flatten(), reduction="sum") / batch.targets.numel()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(ref.parameters(), 5.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    result = bench_interleaved({"rnnkit": rnnkit_step, "torch.nn": torch_step}, warmup=2, reps=args.rounds)
    rates = {k: tokens_per_step / v["median"] for k, v in result.items()}
    info = {"machine": machine(), "backend": model.rnn.last_backend, "config": vars(args),
            "tokens_per_step": tokens_per_step,
            "median_s": {k: v["median"] for k, v in result.items()}, "tokens_per_s": rates,
            "ratio_rnnkit_over_torch": rates["rnnkit"] / rates["torch.nn"]}
    line = (f"char-LM training, LSTM 1x{args.hidden_size} (layers {args.num_layers}), batch {args.batch_size} x "
            f"bptt {args.bptt}, {args.threads} threads: rnnkit ({model.rnn.last_backend}) "
            f"{rates['rnnkit']:,.0f} tok/s, torch.nn.LSTM {rates['torch.nn']:,.0f} tok/s, "
            f"ratio {info['ratio_rnnkit_over_torch']:.2f} (median of {args.rounds} interleaved rounds; "
            f"load average at start {info['machine']['load_average_at_start']})")
    load = float(info["machine"]["load_average_at_start"].split()[0]) if info["machine"][
        "load_average_at_start"] != "n/a" else 0.0
    if load > (torch.get_num_threads() or 1):
        line += (f". WARNING: the machine was busy with other work (load {load:.0f} on "
                 f"{info['machine']['logical_cpus']} CPUs): the absolute rates are far below an idle machine's; "
                 f"only the ratio is meaningful")
    print(line)
    if args.no_write:
        return
    (HERE / "results_charlm.json").write_text(json.dumps(info, indent=2) + "\n")
    results = HERE / "RESULTS.md"
    text = results.read_text() if results.exists() else "# Benchmark results\n"
    section = (f"{SECTION_START}\n## Char-LM training throughput (benchmarks/bench_charlm.py)\n\n"
               f"{line}.\n\nCPU: {info['machine']['cpu']}, torch {info['machine']['torch']}. "
               f"Raw numbers: benchmarks/results_charlm.json.\n{SECTION_END}")
    if SECTION_START in text and SECTION_END in text:
        head, rest = text.split(SECTION_START, 1)
        text = head + section + rest.split(SECTION_END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    results.write_text(text)


if __name__ == "__main__":
    main()
