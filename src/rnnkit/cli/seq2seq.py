"""Encoder–decoder commands: `rnnkit train seq2seq`, `rnnkit translate`, `rnnkit evaluate`, `rnnkit chat`.

`train seq2seq` takes the common train contract (--data, --out, --seed, --cell,
--hidden-size, --num-layers, --max-steps, --max-minutes, --checkpoint-every,
--resume, --quiet, --config TOML), trains SentencePiece on the training side,
trains the model with the one Trainer and, at the end, scores the held-out test
split with sacrebleu (BLEU, chrF). The run directory gets config.json,
metrics.jsonl, checkpoints/ and the SentencePiece models (spm-source.model,
spm-target.model; one file, spm.model, when shared); every checkpoint carries
the SentencePiece models too.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import click
import torch

from .._optional import pyplot, require, require_extra
from ..data.pairs import EncodedPairs, PairBatches, collate, encode_pairs, load_pair_splits
from ..data.spm import MODEL_TYPES, SentencePieceTokenizer, train_sentencepiece
from ..data.text import DataError, decode_utf8, read_lines, split_lines
from ..models.attention import ATTENTIONS
from ..cells import CELLS
from ..models.decoding import Hypothesis
from ..models.scheduled_sampling import SCHEDULES, SamplingSchedule
from ..models.seq2seq import BRIDGES, Seq2Seq, Seq2SeqConfig, Seq2SeqTask
from ..recipes import repository_data
from ..training.checkpoint import (CheckpointError, _write_atomic, load_checkpoint, read_checkpoint, sub_dict,
                                   write_json_atomic)
from ..training.trainer import PREEMPTED, Trainer
from ._old_options import (INPUT_PATH, NONNEG_INT, POS_FLOAT, POS_INT, PROB, checked_data_fingerprint, exit_preempted,
                      open_run_dir, prepare_run, recipe_options, resolve_run, run_device, run_specs, training_specs)
from ._old_options import TRAIN_KEYS
from ..errors import InputError

DEFAULT_PAIRS = "data/tatoeba-eng-fra"
SEQ2SEQ_DEFAULTS: Dict[str, Any] = dict(
    batch_size=64, bptt=1, optimizer="adam", lr=2e-3, clip_norm=1.0, eval_every=500, checkpoint_every=500,
    max_minutes=9.0,
)
# ε_i's parameter k per schedule when --ss-k is not given (c: linear slope per step)
SS_DEFAULT_K = {"none": 1.0, "linear": 1.0, "exponential": 0.9995, "inverse_sigmoid": 300.0}


SEQ2SEQ_SPECS = [
    ("data", INPUT_PATH, repository_data(DEFAULT_PAIRS), "Pairs: a directory with train.tsv (+ valid.tsv, test.tsv), a .tsv "
                                   "(source<TAB>target[<TAB>...]) or .csv file, or the source side of two aligned "
                                   "files (see --target-data)."),
    ("target_data", INPUT_PATH, None, "Target side, aligned line by line with --data."),
    ("swap", bool, False, "Exchange source and target (e.g. French→English on an English–French corpus)."),
    ("valid_fraction", click.FloatRange(min=0.0, max=0.5), 0.05, "Held out for validation when --data has no split."),
    ("test_fraction", click.FloatRange(min=0.0, max=0.5), 0.05, "Held out for testing when --data has no split."),
    *run_specs("runs/seq2seq", "Run directory (config.json, metrics.jsonl, checkpoints/, SentencePiece models)."),
    ("spm_type", click.Choice(MODEL_TYPES), "bpe", "SentencePiece model type."),
    ("vocab_size", POS_INT, 4000, "SentencePiece vocabulary size (per language unless shared)."),
    ("spm_shared", bool, True, "One SentencePiece model for both languages (trained on both sides)."),
    ("cell", click.Choice(list(CELLS)), "lstm", "Decoder cell (and encoder cell unless --encoder-cell)."),
    ("encoder_cell", click.Choice(list(CELLS)), None, "Encoder cell (default: --cell)."),
    ("hidden_size", POS_INT, 256, "Hidden units (the encoder's output width; split over the two directions)."),
    ("num_layers", POS_INT, 1, "Stacked layers (encoder, and decoder unless --decoder-layers)."),
    ("decoder_layers", POS_INT, None, "Decoder layers (default: --num-layers)."),
    ("embedding_size", POS_INT, 128, "Token embedding size."),
    ("bidirectional", bool, True, "Bidirectional encoder."),
    ("bridge", click.Choice(BRIDGES), "learned", "Encoder final state → decoder initial state."),
    ("attention", click.Choice(ATTENTIONS), "bahdanau", "Attention (none = fixed-size bottleneck)."),
    ("attention_size", NONNEG_INT, 0, "Width of additive attention (0: hidden size)."),
    ("input_feeding", bool, True, "Feed the attentional vector back (Luong attention)."),
    ("dropout", PROB, 0.1, "Dropout on embeddings, between layers and before the output layer."),
    ("max_source_len", POS_INT, 48, "Longest source in tokens (end token included); longer training pairs are "
                                    "dropped, longer inputs to translate are an error."),
    ("max_target_len", POS_INT, 48, "Longest target in tokens (end token included)."),
    ("label_smoothing", click.FloatRange(min=0.0, max=1.0, max_open=True), 0.1, "Label smoothing ε."),
    ("length_normalize", bool, False, "Average each sentence's loss over its length, then over sentences."),
    ("scheduled_sampling", click.Choice(SCHEDULES), "none", "Scheduled sampling schedule (none = teacher forcing)."),
    ("ss_k", float, None, "Schedule parameter k (linear: start; exponential: base < 1; inverse_sigmoid: k >= 1)."),
    ("ss_c", click.FloatRange(min=0.0), 1e-4, "Linear schedule's slope per step."),
    ("ss_min", click.FloatRange(min=0.0, max=1.0), 0.0, "Lowest teacher-forcing probability."),
    ("eval_beam", NONNEG_INT, 5, "Beam size for the final test BLEU (0: greedy)."),
    ("eval_max_sentences", NONNEG_INT, 0, "Score at most this many test sentences at the end (0: all)."),
    ("val_batch_size", POS_INT, 128, "Pairs per validation batch."),
] + [s for s in training_specs(SEQ2SEQ_DEFAULTS) if s[0] not in ("bptt", "bptt_k2", "batch_size")] + [
    ("batch_size", POS_INT, SEQ2SEQ_DEFAULTS["batch_size"], "Sentence pairs per batch."),
]


# ------------------------------------------------------------ tokenizers
def tokenizers_to_json(src: SentencePieceTokenizer, tgt: SentencePieceTokenizer, shared: bool) -> Dict[str, Any]:
    if shared:
        return {"shared": True, "source": {"file": "spm.model", **src.to_json()}}
    return {"shared": False, "source": {"file": "spm-source.model", **src.to_json()},
            "target": {"file": "spm-target.model", **tgt.to_json()}}


def tokenizers_from_json(info: Dict[str, Any], record: Path) -> Tuple[SentencePieceTokenizer, SentencePieceTokenizer]:
    """The SentencePiece models a checkpoint carries; else the run directory's files (checked by SHA-256)."""
    if not isinstance(info, dict) or "source" not in info:
        raise CheckpointError(f"checkpoint {str(record)!r} names no SentencePiece model (not a seq2seq run?)")

    def one(entry: Dict[str, Any]) -> SentencePieceTokenizer:
        if entry.get("model_b64"):
            try:
                return SentencePieceTokenizer.from_json(entry)
            except ValueError as err:
                raise CheckpointError(f"checkpoint {str(record)!r}: {err}") from None
        run_dir = record.parent.parent
        path = run_dir / str(entry.get("file", ""))
        if not path.is_file():
            raise CheckpointError(f"checkpoint {str(record)!r}: its SentencePiece model {entry.get('file')!r} is "
                                  f"missing (not in the checkpoint, not in {str(run_dir)!r})")
        tok = SentencePieceTokenizer.load(path)
        if entry.get("sha256") and tok.sha256 != entry["sha256"]:
            raise CheckpointError(f"{str(path)!r} is not the SentencePiece model checkpoint {str(record)!r} was "
                                  f"trained with (SHA-256 differs)")
        return tok

    src = one(info["source"])
    tgt = src if info.get("shared") else one(info.get("target") or {})
    return src, tgt


def load_seq2seq(path: str, device: torch.device
                 ) -> Tuple[Seq2Seq, SentencePieceTokenizer, SentencePieceTokenizer, Dict[str, Any], Path]:
    """(model in eval mode, source tokenizer, target tokenizer, meta, record) of a seq2seq checkpoint."""
    record, meta, tensors = load_checkpoint(path)
    run = meta.get("run") or {}
    if run.get("recipe") != "seq2seq":
        raise CheckpointError(f"checkpoint {str(record)!r} is not a seq2seq model (recipe {run.get('recipe')!r})")
    try:
        config = Seq2SeqConfig(**run["model"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint {str(record)!r} has a malformed model description ({err})") from None
    src, tgt = tokenizers_from_json(run.get("tokenizers"), record)
    if src.vocab_size != config.source_vocab_size or tgt.vocab_size != config.target_vocab_size:
        raise CheckpointError(f"checkpoint {str(record)!r}: SentencePiece vocabularies ({src.vocab_size}, "
                              f"{tgt.vocab_size}) do not match the model ({config.source_vocab_size}, "
                              f"{config.target_vocab_size})")
    model = Seq2Seq(config)
    try:
        model.load_state_dict(sub_dict(tensors, "model"), strict=True)
    except RuntimeError as err:
        lines = " ".join(l.strip() for l in str(err).strip().splitlines()[:3])
        raise CheckpointError(f"checkpoint {str(record)!r} does not fit its own model description: {lines}") from None
    return model.to(device).eval(), src, tgt, meta, record


# ------------------------------------------------------------- decoding
def decode_options(beam: int, alpha: float, n_best: int, sample: bool, temperature: float, top_k: Optional[int],
                   top_p: Optional[float], max_len: Optional[int], min_len: int, no_repeat_ngram: int,
                   seed: Optional[int] = None) -> Dict[str, Any]:
    if sample:
        g = torch.Generator()
        g.manual_seed(seed if seed is not None else 0)
        opts: Dict[str, Any] = dict(method="sample", temperature=temperature, top_k=top_k, top_p=top_p, generator=g)
    elif beam and beam > 1:
        opts = dict(method="beam", beam_size=beam, alpha=alpha, n_best=min(n_best, beam))
    else:
        opts = dict(method="greedy")
    opts.update(max_len=max_len, min_len=min_len, no_repeat_ngram=no_repeat_ngram)
    return opts


def encode_inputs(lines: Sequence[str], tok: SentencePieceTokenizer, max_source_len: int, origin: str
                  ) -> List[List[int]]:
    """Token ids of every input line; DataError naming the first line that is too long."""
    ids = tok.encode_batch(list(lines))
    for i, s in enumerate(ids, 1):
        if len(s) + 1 > max_source_len:
            raise DataError(f"{origin}:{i}: the source has {len(s)} tokens (+1 end token); this model accepts at "
                            f"most {max_source_len} (max_source_len)")
    return ids


def translate_ids(model: Seq2Seq, sources: Sequence[Sequence[int]], batch_size: int, device: torch.device,
                  options: Dict[str, Any], return_attention: bool = False, progress: bool = False
                  ) -> List[List[Hypothesis]]:
    """Decode every source (batched by length, results in input order)."""
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    out: List[Optional[List[Hypothesis]]] = [None] * len(sources)
    c = model.config
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    it = batches
    if progress:
        from tqdm import tqdm
        it = tqdm(batches, unit="batch", desc="decoding", leave=False)
    for idx in it:
        batch = collate([sources[i] for i in idx], None, pad_id=c.pad_id, bos_id=c.bos_id, eos_id=c.eos_id)
        hyps = model.generate(batch["source"].to(device), batch["source_lengths"].to(device),
                              return_attention=return_attention, **options)
        for i, h in zip(idx, hyps):
            out[i] = h
    return out  # type: ignore[return-value]


def score(hypotheses: Sequence[str], references: Sequence[str]) -> Dict[str, float]:
    """Corpus BLEU and chrF (sacrebleu, default settings: 13a tokenization)."""
    sacrebleu = require("sacrebleu", extra="nlp", purpose="BLEU and chrF")
    bleu = sacrebleu.corpus_bleu(list(hypotheses), [list(references)])
    chrf = sacrebleu.corpus_chrf(list(hypotheses), [list(references)])
    return {"bleu": round(bleu.score, 2), "chrf": round(chrf.score, 2), "sentences": len(hypotheses)}


def evaluate_pairs(model: Seq2Seq, src_tok: SentencePieceTokenizer, tgt_tok: SentencePieceTokenizer, pairs: Sequence,
                   device: torch.device, options: Dict[str, Any], batch_size: int = 64, progress: bool = False
                   ) -> Tuple[Dict[str, float], List[str]]:
    """BLEU/chrF of the model on `pairs` (sources longer than the model's maximum are counted, and scored as
    empty output so that the score is not flattered by leaving them out)."""
    sources = src_tok.encode_batch([p.source for p in pairs])
    fits = [i for i, s in enumerate(sources) if len(s) + 1 <= model.config.max_source_len]
    hyps = translate_ids(model, [sources[i] for i in fits], batch_size, device, options, progress=progress)
    texts = [""] * len(pairs)
    for i, h in zip(fits, hyps):
        texts[i] = tgt_tok.decode(h[0].tokens) if h else ""
    result = score(texts, [p.target for p in pairs])
    result["too_long"] = len(pairs) - len(fits)
    return result, texts


# ---------------------------------------------------------------- train
@click.command("seq2seq")
@recipe_options(SEQ2SEQ_SPECS)
@click.pass_context
def train_seq2seq(ctx: click.Context, **values: Any) -> None:
    """Encoder–decoder with attention (translation, dialogue) on sentence pairs; SentencePiece subwords.

    Default: English→French on the embedded Tatoeba subset (data: www.manythings.org/anki and tatoeba.org,
    CC BY 2.0 FR). Validation: val_loss, val_ppl (teacher-forced); at the end, BLEU and chrF on the test split.
    """
    require_extra("nlp", "rnnkit train seq2seq")
    s, out, record = resolve_run(ctx, values)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise click.UsageError("train seq2seq runs in one process; torchrun is not supported for it yet")
    train_cfg = prepare_run(s, out, TRAIN_KEYS)
    data_fingerprint = checked_data_fingerprint(s, out, resuming=record is not None)
    device = run_device(s["device"])
    kind = s["scheduled_sampling"]
    schedule = SamplingSchedule(kind, s["ss_k"] if s["ss_k"] is not None else SS_DEFAULT_K[kind],
                                s["ss_c"] if kind == "linear" else 0.0, s["ss_min"])
    say = (lambda msg: None) if s["quiet"] else (lambda msg: click.echo(msg, err=True))

    own_splits = [n for n in ("valid", "test") if (Path(s["data"]) / f"{n}.tsv").is_file()]
    for name in ("valid_fraction", "test_fraction"):
        if own_splits and s.explicit(name):
            raise click.BadParameter(f"has no effect: {s['data']} has its own {' and '.join(own_splits)}.tsv, "
                                     f"which are used as they are", param_hint=f"'--{name.replace('_', '-')}'")
    splits = load_pair_splits(s["data"], s["target_data"], valid_fraction=s["valid_fraction"],
                              test_fraction=s["test_fraction"], swap=s["swap"])
    for note in splits.notes:  # which columns became source and target: shown even with --quiet
        click.echo(f"rnnkit: note: {note}", err=True)
    if record is not None:  # the run's own SentencePiece models, never retrained
        meta, _ = read_checkpoint(record)
        src_tok, tgt_tok = tokenizers_from_json(meta.get("run", {}).get("tokenizers"), record)
    else:
        t0 = time.monotonic()
        if s["spm_shared"]:
            src_tok = tgt_tok = train_sentencepiece([p.source for p in splits.train] + [p.target for p in splits.train],
                                                    s["vocab_size"], s["spm_type"])
        else:
            src_tok = train_sentencepiece([p.source for p in splits.train], s["vocab_size"], s["spm_type"])
            tgt_tok = train_sentencepiece([p.target for p in splits.train], s["vocab_size"], s["spm_type"])
        say(f"rnnkit: SentencePiece {s['spm_type']} trained in {time.monotonic() - t0:.1f} s: vocab "
            f"{src_tok.vocab_size}" + ("" if s["spm_shared"] else f" / {tgt_tok.vocab_size}"))
    lens = dict(max_source_len=s["max_source_len"], max_target_len=s["max_target_len"])
    enc_train = encode_pairs(splits.train, src_tok, tgt_tok, **lens)
    enc_valid = encode_pairs(splits.valid, src_tok, tgt_tok, **lens) if splits.valid else None
    say(f"rnnkit: {splits.description}: {len(splits.train)} train / {len(splits.valid)} valid / {len(splits.test)} "
        f"test pairs; {splits.skipped_blank} blank lines skipped; dropped from train: {enc_train.dropped_long} "
        f"longer than {s['max_source_len']}/{s['max_target_len']} tokens, {enc_train.dropped_empty} empty after "
        f"tokenization" + (f"; from valid: {enc_valid.dropped}" if enc_valid is not None else ""))
    ids = dict(pad_id=0, bos_id=2, eos_id=3)
    train_data = PairBatches(enc_train, s["batch_size"], shuffle=True, seed=s["seed"], **ids)
    val_data = (PairBatches(enc_valid, s["val_batch_size"], shuffle=False, **ids)
                if enc_valid is not None and len(enc_valid) else None)
    torch.manual_seed(s["seed"])
    model_cfg = Seq2SeqConfig(
        source_vocab_size=src_tok.vocab_size, target_vocab_size=tgt_tok.vocab_size, cell=s["cell"],
        encoder_cell=s["encoder_cell"], embedding_size=s["embedding_size"], hidden_size=s["hidden_size"],
        num_layers=s["num_layers"], decoder_layers=s["decoder_layers"], bidirectional=s["bidirectional"],
        bridge=s["bridge"], attention=s["attention"], attention_size=s["attention_size"],
        input_feeding=s["input_feeding"], dropout=s["dropout"], **lens)
    model = Seq2Seq(model_cfg)
    tokenizers = tokenizers_to_json(src_tok, tgt_tok, s["spm_shared"])
    run_info = {"recipe": "seq2seq", "model": model_cfg.to_dict(), "tokenizers": tokenizers,
                "schedule": schedule.to_dict()}
    # everything was checked: only now does the run directory appear
    open_run_dir(out, s, record, {"recipe": "seq2seq", "model": model_cfg.to_dict(), "schedule": schedule.to_dict(),
                                  "data": {"train": len(enc_train), "valid": len(enc_valid or []),
                                           "test": len(splits.test), "dropped_long": enc_train.dropped_long,
                                           "dropped_empty": enc_train.dropped_empty,
                                           "blank_lines": splits.skipped_blank}}, data_fingerprint)
    src_tok.save(out / tokenizers["source"]["file"])
    if not s["spm_shared"]:
        tgt_tok.save(out / tokenizers["target"]["file"])
    task = Seq2SeqTask(pad_id=0, label_smoothing=s["label_smoothing"], length_normalize=s["length_normalize"],
                       schedule=schedule)
    trainer = Trainer(model, task, train_data, train_cfg, val_data=val_data, out_dir=out, run_info=run_info,
                      device=device)
    n_params = sum(p.numel() for p in model.parameters())
    say(f"rnnkit: seq2seq {s['encoder_cell'] or s['cell']}→{s['cell']} {s['num_layers']}x{s['hidden_size']} "
        f"attention {s['attention']}, bridge {s['bridge']}, {kind if kind != 'none' else 'teacher forcing'} "
        f"({n_params:,} parameters), {train_data.tokens_per_epoch:,} target tokens/epoch, device {device} -> {out}")
    summary = trainer.fit(resume=record)
    if summary["stop"] == PREEMPTED:
        exit_preempted(ctx, summary, out)
    result = None
    if splits.test:
        test_pairs = splits.test[:s["eval_max_sentences"]] if s["eval_max_sentences"] else splits.test
        options = decode_options(s["eval_beam"], 0.6, 1, False, 1.0, None, None, None, 0, 0)
        t0 = time.monotonic()
        result, hyps = evaluate_pairs(model, src_tok, tgt_tok, test_pairs, device, options, 64,
                                      progress=not s["quiet"])
        result["decode_s"] = round(time.monotonic() - t0, 1)
        result["beam"] = s["eval_beam"]
        with open(out / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"kind": "test", "step": trainer.step, **result}) + "\n")
        write_json_atomic(out / "test_scores.json", {"step": trainer.step, **result})
    if not s["quiet"]:
        last = summary.get("last_eval") or {}
        shown = ", ".join(f"{k}={v:.4f}" for k, v in last.items() if k.startswith("val_"))
        click.echo(f"rnnkit: stopped ({summary['stop']}) at step {summary['step']}, epoch {summary['epoch']}, "
                   f"{summary['elapsed_s']:.0f} s; {shown}"
                   + (f"; test BLEU {result['bleu']:.2f}, chrF {result['chrf']:.2f} on {result['sentences']} "
                      f"sentences (beam {s['eval_beam']})" if result else ""))


# ------------------------------------------------------ translate / chat
DECODE_OPTIONS = [
    click.option("--checkpoint", required=True, help="Checkpoint file or run directory (its latest checkpoint)."),
    click.option("--beam", type=click.IntRange(min=0), default=5, show_default=True,
                 help="Beam size (0 or 1: greedy)."),
    click.option("--alpha", type=click.FloatRange(min=0.0), default=0.6, show_default=True,
                 help="Length penalty exponent ((5+len)/6)^alpha for beam search (0: none)."),
    click.option("--n-best", type=click.IntRange(min=1), default=1, show_default=True,
                 help="Hypotheses printed per input (beam search), tab-separated with scores."),
    click.option("--sample", is_flag=True, help="Sample instead of searching (see --temperature, --top-k, --top-p)."),
    click.option("--temperature", type=click.FloatRange(min=0.0, min_open=True), default=1.0, show_default=True),
    click.option("--top-k", type=click.IntRange(min=1), default=None, help="Sample from the k most likely tokens."),
    click.option("--top-p", type=click.FloatRange(min=0.0, max=1.0, min_open=True), default=None,
                 help="Nucleus sampling."),
    click.option("--seed", type=int, default=0, show_default=True, help="Seed for --sample."),
    click.option("--max-len", type=click.IntRange(min=1), default=None, help="Most output tokens (default: the "
                                                                            "model's max_target_len)."),
    click.option("--min-len", type=click.IntRange(min=0), default=0, show_default=True),
    click.option("--no-repeat-ngram", type=click.IntRange(min=0), default=0, show_default=True,
                 help="Block repeated n-grams of this size (0: off)."),
    click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True),
    click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True),
]


def decode_flags(fn):
    for opt in reversed(DECODE_OPTIONS):
        fn = opt(fn)
    return fn


def _opts(kw: Dict[str, Any]) -> Dict[str, Any]:
    return decode_options(kw["beam"], kw["alpha"], kw["n_best"], kw["sample"], kw["temperature"], kw["top_k"],
                          kw["top_p"], kw["max_len"], kw["min_len"], kw["no_repeat_ngram"], kw["seed"])


def _read_input(path: Optional[str]) -> Tuple[List[str], str]:
    if path is None:
        raw, origin = sys.stdin.buffer.read(), "<stdin>"
        return [line for _, line in split_lines(decode_utf8(raw, origin))], origin
    if not Path(path).is_file():
        raise DataError(f"input file {path!r} does not exist")
    return [line for _, line in read_lines(path)], path


def write_output(path: str, data: bytes) -> None:
    """Write a file the user named, atomically, creating its folder if needed (like --out)."""
    target = Path(path)
    if target.is_dir():  # else the rename of the temporary file would fail, naming that file
        raise InputError(f"output path {path!r} is a folder; expected a file name")
    target.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(target, data)


@click.command()
@decode_flags
@click.option("--input", "input_path", default=None, help="Read sentences from this file (default: stdin).")
@click.option("--output", default=None, help="Write translations here, atomically (default: stdout).")
@click.option("--plot-attention", default=None, help="PNG file: source × target attention map of the first input.")
def translate(input_path: Optional[str], output: Optional[str], plot_attention: Optional[str], **kw: Any) -> None:
    """Translate one sentence per line (stdin or --input); empty lines stay empty.

    Every line is checked (UTF-8, length) before anything is decoded or written.
    """
    require_extra("nlp", "rnnkit translate")
    device = torch.device(kw["device"])
    model, src_tok, tgt_tok, _, _ = load_seq2seq(kw["checkpoint"], device)
    lines, origin = _read_input(input_path)
    keep = [i for i, l in enumerate(lines) if l.strip()]
    ids = encode_inputs([lines[i].strip() for i in keep], src_tok, model.config.max_source_len, origin)
    options = _opts(kw)
    hyps = translate_ids(model, ids, kw["batch_size"], device, options, return_attention=plot_attention is not None)
    texts = [""] * len(lines)
    for i, h in zip(keep, hyps):
        if kw["n_best"] > 1 and options["method"] == "beam":
            texts[i] = "\t".join(f"{tgt_tok.decode(x.tokens)}\t{x.score:.4f}" for x in h)
        else:
            texts[i] = tgt_tok.decode(h[0].tokens) if h else ""
    body = "".join(t + "\n" for t in texts)
    if output:
        write_output(output, body.encode("utf-8"))
    else:
        sys.stdout.write(body)
        sys.stdout.flush()
    if plot_attention:
        if not keep:
            raise DataError("--plot-attention: there is no non-empty input line to draw")
        h = hyps[0][0]
        if h.attention is None:
            raise InputError("--plot-attention: this model has no attention (attention 'none')")
        plot_attention_map(h.attention, [src_tok.id_to_piece(i) for i in ids[0]] + ["</s>"],
                           [tgt_tok.id_to_piece(i) for i in h.tokens] + (["</s>"] if h.finished else []),
                           plot_attention)


def plot_attention_map(weights: torch.Tensor, source: Sequence[str], target: Sequence[str], path: str) -> None:
    """Heat map of attention weights (target rows × source columns) to a PNG file, atomically."""
    import io as _io

    plt = pyplot(extra="nlp", purpose="the attention plot")
    w = weights[:len(target), :len(source)].numpy()
    fig, ax = plt.subplots(figsize=(max(4, 0.45 * len(source) + 1.5), max(3, 0.4 * len(target) + 1.2)))
    ax.imshow(w, cmap="Greys", vmin=0.0, vmax=max(float(w.max()), 1e-6), aspect="auto")
    ax.set_xticks(range(len(source)))
    ax.set_xticklabels(source, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(target)))
    ax.set_yticklabels(target, fontsize=8)
    ax.set_xlabel("source")
    ax.set_ylabel("output")
    fig.tight_layout()
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    write_output(path, buf.getvalue())


@click.command()
@decode_flags
@click.option("--data", default=None, help="Pairs to score (default: the run's own --data).")
@click.option("--split", type=click.Choice(["test", "valid", "train"]), default="test", show_default=True)
@click.option("--limit", type=click.IntRange(min=0), default=0, show_default=True,
              help="Score only the first N pairs (0: all).")
@click.option("--output", default=None, help="Also write the hypotheses here, one per line, atomically.")
def evaluate(data: Optional[str], split: str, limit: int, output: Optional[str], **kw: Any) -> None:
    """BLEU and chrF (sacrebleu) of a seq2seq checkpoint on a held-out split; prints one JSON line."""
    require_extra("nlp", "rnnkit evaluate")
    device = torch.device(kw["device"])
    model, src_tok, tgt_tok, meta, record = load_seq2seq(kw["checkpoint"], device)
    settings: Dict[str, Any] = {}
    cfg_path = record.parent.parent / "config.json"
    if cfg_path.is_file():
        settings = json.loads(cfg_path.read_text()).get("settings") or {}
    if data is None and "data" not in settings:
        raise DataError(f"--data is needed: the run of {str(record)!r} has no config.json naming its data")
    splits = load_pair_splits(data or settings["data"], None if data else settings.get("target_data"),
                              valid_fraction=settings.get("valid_fraction", 0.05),
                              test_fraction=settings.get("test_fraction", 0.05),
                              swap=bool(settings.get("swap")) and data is None)
    pairs = getattr(splits, split)
    if limit:
        pairs = pairs[:limit]
    if not pairs:
        raise DataError(f"the {split} split of {splits.description} is empty")
    t0 = time.monotonic()
    result, hyps = evaluate_pairs(model, src_tok, tgt_tok, pairs, device, _opts(kw), kw["batch_size"])
    result.update(split=split, step=meta.get("step"), decode_s=round(time.monotonic() - t0, 1),
                  method=_opts(kw)["method"], beam=kw["beam"])
    if output:
        write_output(output, "".join(h + "\n" for h in hyps).encode("utf-8"))
    click.echo(json.dumps(result))


@click.command()
@decode_flags
def chat(**kw: Any) -> None:
    """Talk to a seq2seq model: one message per line, its reply below (stdin works too, for scripts)."""
    require_extra("nlp", "rnnkit chat")
    device = torch.device(kw["device"])
    model, src_tok, tgt_tok, _, _ = load_seq2seq(kw["checkpoint"], device)
    options = _opts(kw)
    interactive = sys.stdin.isatty()
    if interactive:
        click.echo("rnnkit chat: type a message, Enter to send, Ctrl-D to quit.", err=True)
    n = 0
    while True:
        if interactive:
            click.echo("> ", nl=False, err=True)
        raw = sys.stdin.buffer.readline()
        if not raw:
            break
        n += 1
        try:
            text = raw.decode("utf-8").strip()
        except UnicodeDecodeError as err:
            raise DataError(f"<stdin>:{n}: not UTF-8 text (byte {err.start} of the line: {err.reason})") from None
        if not text:
            continue
        ids = src_tok.encode(text)
        if len(ids) + 1 > model.config.max_source_len:
            msg = (f"<stdin>:{n}: the message has {len(ids)} tokens (+1 end token); this model accepts at most "
                   f"{model.config.max_source_len}")
            if not interactive:
                raise DataError(msg)
            click.echo(f"rnnkit: {msg}", err=True)
            continue
        h = translate_ids(model, [ids], 1, device, options)[0]
        click.echo(tgt_tok.decode(h[0].tokens) if h else "")


def register(cli: click.Group, train: click.Group) -> None:
    """Add the seq2seq commands to the `rnnkit` group and the `train` group."""
    train.add_command(train_seq2seq)
    for command in (translate, evaluate, chat):
        cli.add_command(command)
