"""Seq2seq benchmark: decoding throughput (batched vs one sentence at a time) and training tokens/s vs torch.nn.

    .venv/bin/python benchmarks/bench_seq2seq.py [--checkpoint runs/seq2seq-eng-fra] [--threads 1] [--rounds 7]

Decoding: sentences/s of greedy and beam-5 search over the first N test sources of
data/tatoeba-eng-fra, batched (64 sentences per call, rnnkit.models.decoding) and
in a per-sentence loop (the same search called with one sentence at a time).
With --checkpoint, the trained model decodes (realistic output lengths); without
one, a randomly initialised model decodes with a fixed max_len.

Training: target tokens/s of one optimizer step (forward, backward, Adam) on the
same real batches for (a) rnnkit's Seq2Seq (rnnkit encoder layer + rnnkit
LSTMCell decoder) and (b) the same architecture on torch.nn.LSTM (packed,
bidirectional encoder) and torch.nn.LSTMCell (decoder): same sizes, same
Bahdanau attention module, same output layer.

Variants run interleaved in rounds (timing.bench_interleaved), median reported.
Results go to benchmarks/results_seq2seq.json and to the seq2seq section of
benchmarks/RESULTS.md (replaced in place, the rest of the file untouched).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Dict, List

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from timing import bench_interleaved, machine  # noqa: E402

from rnnkit.data.pairs import PairBatches, collate, encode_pairs, load_pair_splits  # noqa: E402
from rnnkit.data.spm import train_sentencepiece  # noqa: E402
from rnnkit.models.attention import Attention  # noqa: E402
from rnnkit.models.seq2seq import Seq2Seq, Seq2SeqConfig, Seq2SeqTask  # noqa: E402

BEGIN, END = "<!-- seq2seq:begin -->", "<!-- seq2seq:end -->"


class TorchSeq2Seq(nn.Module):
    """The same encoder–decoder as Seq2Seq(attention="bahdanau", bridge="learned"), on torch.nn.LSTM/LSTMCell."""

    def __init__(self, c: Seq2SeqConfig) -> None:
        super().__init__()
        self.c = c
        H = c.decoder_size  # the bidirectional encoder's output: hidden_size per direction
        self.source_embedding = nn.Embedding(c.source_vocab_size, c.embedding_size, padding_idx=0)
        self.target_embedding = nn.Embedding(c.target_vocab_size, c.embedding_size, padding_idx=0)
        self.encoder = nn.LSTM(c.embedding_size, c.hidden_size, bidirectional=True, batch_first=True)
        self.cell = nn.LSTMCell(c.embedding_size + H, H)
        self.attention = Attention("bahdanau", H, H)
        self.combine = nn.Linear(2 * H, H)
        self.bridge = nn.Linear(2 * H, 2 * H)
        self.head = nn.Linear(H, c.target_vocab_size)
        self.drop = nn.Dropout(c.dropout)

    def forward(self, source, source_lengths, target_in, teacher_forcing: float = 1.0):
        B, S = source.shape
        packed = pack_padded_sequence(self.drop(self.source_embedding(source)), source_lengths.cpu(),
                                      batch_first=True, enforce_sorted=False)
        out, (h, c) = self.encoder(packed)
        memory, _ = pad_packed_sequence(out, batch_first=True, total_length=S)
        mask = torch.arange(S).unsqueeze(0) < source_lengths.unsqueeze(1)
        top = torch.cat([h[0], h[1], c[0], c[1]], -1)  # (B, 4·H/2)
        h, c = torch.tanh(self.bridge(top)).chunk(2, -1)
        keys = self.attention.keys(memory)
        outs = []
        for t in range(target_in.shape[1]):
            ctx, _ = self.attention(h, keys, memory, mask)
            x = torch.cat([self.drop(self.target_embedding(target_in[:, t])), ctx], -1)
            h, c = self.cell(x, (h, c))
            outs.append(torch.tanh(self.combine(torch.cat([ctx, h], -1))))
        return self.head(self.drop(torch.stack(outs, 1))), None


def train_step_fn(model: nn.Module, batches: List[Dict[str, torch.Tensor]]):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    task = Seq2SeqTask(label_smoothing=0.1)
    model.train()
    state = {"i": 0}

    def run():
        batch = batches[state["i"] % len(batches)]
        state["i"] += 1
        r = task.loss(model, batch, None)
        (r.loss_sum / r.count).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default=None, help="A trained seq2seq run (else random weights).")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--sentences", type=int, default=128, help="Test sources decoded per round (batched).")
    ap.add_argument("--loop-sentences", type=int, default=32, help="Sources decoded one at a time per round.")
    ap.add_argument("--no-write", action="store_true", help="Print only.")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    splits = load_pair_splits(ROOT / "data" / "tatoeba-eng-fra")
    if args.checkpoint:
        from rnnkit.apps import seq2seq
        run = seq2seq.load(args.checkpoint)
        model, (src_tok, tgt_tok) = run.model, seq2seq.tokenizers(run)
        cfg = model.config
        max_len = None
    else:
        src_tok = tgt_tok = train_sentencepiece([p.source for p in splits.train] + [p.target for p in splits.train],
                                                4000, "bpe")
        cfg = Seq2SeqConfig(src_tok.vocab_size, tgt_tok.vocab_size, hidden_size=128, embedding_size=128,
                            attention="bahdanau", max_source_len=48, max_target_len=48)
        model = Seq2Seq(cfg)
        max_len = 20
    model.eval()
    sources = [s for s in src_tok.encode_batch([p.source for p in splits.test[:args.sentences]])
               if len(s) + 1 <= cfg.max_source_len]
    loop_sources = sources[:args.loop_sentences]

    def batched(method: str, srcs, bs: int = 64):
        def run():
            for i in range(0, len(srcs), bs):
                b = collate(srcs[i:i + bs], None, pad_id=0, bos_id=2, eos_id=3)
                model.generate(b["source"], b["source_lengths"], method=method, beam_size=5, alpha=0.6,
                               max_len=max_len)
        return run

    def one_by_one(method: str, srcs):
        def run():
            for s in srcs:
                b = collate([s], None, pad_id=0, bos_id=2, eos_id=3)
                model.generate(b["source"], b["source_lengths"], method=method, beam_size=5, alpha=0.6,
                               max_len=max_len)
        return run

    t0 = time.time()
    dec = bench_interleaved({
        "greedy batched": batched("greedy", sources), "greedy per sentence": one_by_one("greedy", loop_sources),
        "beam5 batched": batched("beam", sources), "beam5 per sentence": one_by_one("beam", loop_sources),
    }, warmup=1, reps=args.rounds)
    decode = {}
    for k, v in dec.items():
        n = len(sources) if "batched" in k else len(loop_sources)
        decode[k] = {"sentences": n, "median_s": v["median"], "sentences_per_s": n / v["median"]}
    print(f"decoding ({time.time() - t0:.0f} s):")
    for k, v in decode.items():
        print(f"  {k:22s} {v['sentences_per_s']:8.1f} sentences/s  ({v['sentences']} sentences, median "
              f"{v['median_s']:.3f} s)")

    # training throughput: same batches, same sizes
    enc = encode_pairs(splits.train[:2000], src_tok, tgt_tok, max_source_len=cfg.max_source_len,
                       max_target_len=cfg.max_target_len)
    batches = list(PairBatches(enc, 64, pad_id=0, bos_id=2, eos_id=3, seed=0).batches(0))[:8]
    tokens = [int((b["target_out"] != 0).sum()) for b in batches]
    train_cfg = Seq2SeqConfig(cfg.source_vocab_size, cfg.target_vocab_size, hidden_size=cfg.hidden_size,
                              embedding_size=cfg.embedding_size, attention="bahdanau", bridge="learned",
                              dropout=0.1, max_source_len=cfg.max_source_len, max_target_len=cfg.max_target_len)
    torch.manual_seed(0)
    ours = Seq2Seq(train_cfg)
    torch.manual_seed(0)
    theirs = TorchSeq2Seq(train_cfg)
    n_ours = sum(p.numel() for p in ours.parameters())
    n_theirs = sum(p.numel() for p in theirs.parameters())
    # one round = all 8 batches, so both variants see the same tokens
    fo, ft = train_step_fn(ours, batches), train_step_fn(theirs, batches)
    t0 = time.time()
    tr = bench_interleaved({"rnnkit Seq2Seq": lambda: [fo() for _ in batches],
                            "torch.nn.LSTM + LSTMCell": lambda: [ft() for _ in batches]},
                           warmup=1, reps=max(3, args.rounds // 2))
    train = {k: {"median_s": v["median"], "tokens_per_s": sum(tokens) / v["median"]} for k, v in tr.items()}
    ratio = train["rnnkit Seq2Seq"]["tokens_per_s"] / train["torch.nn.LSTM + LSTMCell"]["tokens_per_s"]
    print(f"training ({time.time() - t0:.0f} s), {len(batches)} batches of 64 pairs, {sum(tokens)} target tokens, "
          f"parameters {n_ours:,} (rnnkit) vs {n_theirs:,} (torch.nn):")
    for k, v in train.items():
        print(f"  {k:26s} {v['tokens_per_s']:8.0f} target tokens/s")
    print(f"  ratio rnnkit / torch.nn: {ratio:.2f}")
    encoder_backend = ours.encoder.last_backend
    results = {"machine": machine(), "threads": args.threads, "rounds": args.rounds,
               # the decoder's width (the bidirectional encoder's output), what earlier rounds recorded
               "model": {"hidden_size": cfg.decoder_size, "embedding_size": cfg.embedding_size,
                         "vocab": [cfg.source_vocab_size, cfg.target_vocab_size], "attention": cfg.attention,
                         "checkpoint": args.checkpoint, "max_len": max_len},
               "decode": decode, "train": train, "train_ratio": ratio, "encoder_backend": encoder_backend}
    if args.no_write:
        return
    (HERE / "results_seq2seq.json").write_text(json.dumps(results, indent=1) + "\n")
    write_section(results, HERE / "RESULTS.md")
    print(f"wrote {HERE / 'results_seq2seq.json'} and the seq2seq section of {HERE / 'RESULTS.md'}")


def write_section(r: dict, path: Path) -> None:
    m = r["machine"]
    d, t = r["decode"], r["train"]
    lines = [BEGIN, "## Seq2seq: decoding and training throughput (`benchmarks/bench_seq2seq.py`)", "",
             f"{m['cpu']}, {m['logical_cpus']} logical CPUs, load average at start {m['load_average_at_start']} "
             f"(the machine was shared with other jobs: absolute numbers are pessimistic, ratios within a round "
             f"are fairer), torch {m['torch']}, {r['threads']} thread(s), median of {r['rounds']} interleaved "
             f"rounds. Model: hidden {r['model']['hidden_size']}, embedding {r['model']['embedding_size']}, "
             f"vocab {r['model']['vocab'][0]}, {r['model']['attention']} attention, "
             + (f"trained checkpoint `{r['model']['checkpoint']}`" if r['model']['checkpoint']
                else f"random weights, max_len {r['model']['max_len']}") + ".", "",
             "| decoding (Tatoeba eng-fra test sources) | sentences/s | batched / per-sentence |",
             "| --- | ---: | ---: |"]
    for method in ("greedy", "beam5"):
        b, s = d[f"{method} batched"], d[f"{method} per sentence"]
        lines.append(f"| {method}, batched (64 per call) | {b['sentences_per_s']:.1f} | "
                     f"{b['sentences_per_s'] / s['sentences_per_s']:.1f}x |")
        lines.append(f"| {method}, one sentence at a time | {s['sentences_per_s']:.1f} | 1.0x |")
    lines += ["", "| training step (fwd + bwd + Adam), batches of 64 pairs | target tokens/s | vs torch.nn |",
              "| --- | ---: | ---: |"]
    base = t["torch.nn.LSTM + LSTMCell"]["tokens_per_s"]
    for k, v in t.items():
        lines.append(f"| {k} | {v['tokens_per_s']:.0f} | {v['tokens_per_s'] / base:.2f} |")
    lines += ["", f"rnnkit's encoder ran on the `{r['encoder_backend']}` backend; both decoders step one token at "
                  f"a time in Python (attention and input feeding make every step depend on the last).", END]
    section = "\n".join(lines) + "\n"
    text = path.read_text() if path.exists() else ""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + section + rest.split(END, 1)[1].lstrip("\n")
    else:
        text = (text.rstrip("\n") + "\n\n" if text else "") + section
    path.write_text(text)


if __name__ == "__main__":
    main()
