"""`rnnkit train <recipe>`: char-level and word-level language models.

Every recipe takes --data, --out, --seed, --cell, --hidden-size, --num-layers,
--max-steps, --max-minutes, --checkpoint-every, --resume, --quiet and a --config
TOML file (command-line values win). The run directory gets config.json (the
resolved settings), metrics.jsonl, tensorboard/ and checkpoints/.

Under torchrun (WORLD_SIZE > 1) each process trains on its block of streams with
DistributedDataParallel (gloo on CPU, NCCL on CUDA); --batch-size is per process.
"""

from __future__ import annotations

import gc
import json
import os
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import click
import torch

from ..data.streams import StreamLoader
from ..data.text import DataError, load_char_corpus, load_word_corpus, vocab_from_json
from ..cells import CELLS
from ..models.char_lm import LanguageModelTask, LMConfig, RecurrentLM
from ..recipes import TINYSHAKESPEARE
from ..training.trainer import PREEMPTED, Trainer
from .options import (INPUT_PATH, NONNEG_INT, POS_FLOAT, POS_INT, PROB, Spec, checked_data_fingerprint,
                      exit_preempted, open_run_dir, prepare_run, recipe_options, resolve_run, run_device, run_specs,
                      training_specs)


CHARLM_DEFAULTS: Dict[str, Any] = dict(
    batch_size=32, bptt=128, optimizer="adam", lr=2e-3, clip_norm=5.0, eval_every=200, checkpoint_every=500,
    max_epochs=10,
)
WORDLM_DEFAULTS: Dict[str, Any] = dict(
    batch_size=20, bptt=20, optimizer="sgd", lr=1.0, clip_norm=5.0, schedule="epoch_decay", lr_gamma=0.5,
    lr_decay_after_epochs=4, max_epochs=13, checkpoint_every=1000,
)


def common_specs(data_default: Optional[str], out_default: str, model: Dict[str, Any]) -> list:
    return [
        ("data", INPUT_PATH, data_default, "Training data."),
        *run_specs(out_default, "Run directory (config.json, metrics.jsonl, checkpoints/)."),
        ("cell", click.Choice(list(CELLS)), model["cell"], "Recurrent cell."),
        ("hidden_size", POS_INT, model["hidden_size"], "Hidden units per layer."),
        ("num_layers", POS_INT, model["num_layers"], "Stacked layers."),
        ("dropout", PROB, model["dropout"], "Dropout on non-recurrent connections."),
    ]




@click.group()
def train() -> None:
    """Train a model (recipes: charlm, wordlm)."""


# ---------------------------------------------------------------- charlm
CHARLM_SPECS = common_specs(str(TINYSHAKESPEARE), "runs/charlm", dict(cell="lstm", hidden_size=256, num_layers=1,
                                                                dropout=0.0)) + [
    ("embedding_size", NONNEG_INT, 64, "Character embedding size (0 = one-hot input)."),
    ("val_fraction", click.FloatRange(min=0.0, max=0.5, min_open=True), 0.1,
     "Last fraction of each file held out for validation."),
    ("val_batch_size", POS_INT, 32, "Streams used for validation."),
] + training_specs(CHARLM_DEFAULTS)


@train.command("charlm")
@recipe_options(CHARLM_SPECS)
@click.pass_context
def charlm(ctx: click.Context, **values: Any) -> None:
    """Character-level language model (Karpathy's char-rnn) on a text file or a directory of them.

    Validation: bits per character (val_bpc) on the last --val-fraction of each file.
    """
    run_recipe(ctx, "charlm", values, _build_charlm)


def _build_charlm(s: Dict[str, Any], vocab_json: Optional[dict], rank: int, world: int):
    vocab = vocab_from_json(vocab_json) if vocab_json else None
    corpus = load_char_corpus(s["data"], s["val_fraction"], vocab)
    model_cfg = LMConfig(vocab_size=len(corpus.vocab), cell=s["cell"], hidden_size=s["hidden_size"],
                         num_layers=s["num_layers"], embedding_size=s["embedding_size"], dropout=s["dropout"])
    train_data = StreamLoader(corpus.train, s["batch_size"], s["bptt"], rank=rank, world_size=world,
                              source=f"the training part of {s['data']!r}", batch_option="--batch-size")
    val_data = (StreamLoader(corpus.valid, s["val_batch_size"], 512, rank=rank, world_size=world,
                             source=f"the validation part (last {s['val_fraction']:.0%}) of {s['data']!r}",
                             batch_option="--val-batch-size")
                if corpus.valid else None)
    return model_cfg, corpus.vocab, LanguageModelTask("char"), train_data, val_data, None


# ---------------------------------------------------------------- wordlm
WORDLM_SPECS = common_specs(None, "runs/wordlm", dict(cell="lstm", hidden_size=200, num_layers=2,
                                                      dropout=0.0)) + [
    ("init_range", POS_FLOAT, 0.1,
     "Initialise every parameter U(-r, r)."),
    ("tie_weights", bool, False, "Share the embedding and output matrices."),
    ("loss_normalization", click.Choice(["token", "sequence"]), "sequence",
     "token: mean per word; sequence: summed over steps, averaged over the batch (Zaremba)."),
    ("val_batch_size", POS_INT, 10, "Streams used for validation and test."),
] + training_specs(WORDLM_DEFAULTS)


@train.command("wordlm")
@recipe_options(WORDLM_SPECS)
@click.pass_context
def wordlm(ctx: click.Context, **values: Any) -> None:
    """Word-level language model (Zaremba et al. 2014) on DIR/{train,valid,test}.txt (PTB layout).

    <eos> ends every line; the vocabulary comes from train.txt; validation and
    test report perplexity (val_ppl, test_ppl).
    """
    run_recipe(ctx, "wordlm", values, _build_wordlm)


def _build_wordlm(s: Dict[str, Any], vocab_json: Optional[dict], rank: int, world: int):
    if not s.get("data"):
        raise DataError("wordlm needs --data DIR holding train.txt, valid.txt and test.txt")
    vocab = vocab_from_json(vocab_json) if vocab_json else None
    corpus = load_word_corpus(s["data"], vocab)
    model_cfg = LMConfig(vocab_size=len(corpus.vocab), cell=s["cell"], hidden_size=s["hidden_size"],
                         num_layers=s["num_layers"], embedding_size=s["hidden_size"], dropout=s["dropout"],
                         tie_weights=s["tie_weights"], init_range=s["init_range"])

    def streams(split: str, batch_option: str, bptt: int) -> StreamLoader:
        return StreamLoader([getattr(corpus, split)], s[batch_option[2:].replace("-", "_")], bptt, rank=rank,
                            world_size=world, source=str(Path(s["data"]) / f"{split}.txt"), batch_option=batch_option)

    train_data = streams("train", "--batch-size", s["bptt"])
    val_data, test_data = streams("valid", "--val-batch-size", 512), streams("test", "--val-batch-size", 512)
    return model_cfg, corpus.vocab, LanguageModelTask("word"), train_data, val_data, test_data


# ---------------------------------------------------------------- shared
TRAIN_KEYS = ("max_steps", "max_epochs", "max_minutes", "optimizer", "lr", "weight_decay", "momentum", "schedule",
              "warmup_steps", "lr_step_size", "lr_gamma", "lr_min", "lr_decay_after_epochs", "plateau_patience",
              "clip_norm", "clip_value", "grad_accum", "bptt_k2", "eval_every", "checkpoint_every", "keep_checkpoints",
              "early_stop_patience", "seed", "quiet", "tensorboard", "loss_normalization")


def _distributed(device: str) -> tuple:
    """(rank, world_size, torch.device); initialises torch.distributed under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    use_cuda = run_device(device).type == "cuda"
    if world > 1:
        import torch.distributed as dist
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        rank = dist.get_rank()
        local = int(os.environ.get("LOCAL_RANK", "0"))
        dev = torch.device("cuda", local) if use_cuda else torch.device("cpu")
        if use_cuda:
            torch.cuda.set_device(dev)
        return rank, world, dev
    return 0, 1, torch.device("cuda" if use_cuda else "cpu")


def _warm_up(model: RecurrentLM, device: torch.device) -> None:
    """One tiny forward and backward before the clock starts: a backend that compiles its kernels on
    first use (rnnkit's fused CPU backend) does it now, not inside --max-minutes. Changes nothing:
    eval mode (no dropout draws), gradients discarded, no optimizer step."""
    model.to(device).eval()
    logits, _ = model(torch.zeros(2, 1, dtype=torch.int64, device=device))
    logits.sum().backward()
    model.zero_grad(set_to_none=True)
    model.train()


def run_recipe(ctx: click.Context, recipe: str, values: Dict[str, Any], build: Callable) -> None:
    s, out, record = resolve_run(ctx, values)
    if s.get("bptt_k2") is not None and s["bptt_k2"] < s["bptt"]:
        default = "" if s.explicit("bptt") else ", the default; set --bptt to at most k2"
        raise click.BadParameter(f"k2 must be >= k1 (--bptt {s['bptt']}{default}); got {s['bptt_k2']}",
                                 param_hint="'--bptt-k2'")
    train_cfg = prepare_run(s, out, TRAIN_KEYS)
    if s["resume"] and record is None and not s["quiet"]:
        click.echo(f"rnnkit: nothing to resume in {str(out)!r}; starting a new run", err=True)
    data_fingerprint = checked_data_fingerprint(s, out, resuming=record is not None)
    rank, world, device = _distributed(s["device"])
    vocab_json = None
    if record is not None:
        from ..training.checkpoint import read_checkpoint
        meta, _ = read_checkpoint(record)
        vocab_json = meta.get("run", {}).get("vocab")
    torch.manual_seed(s["seed"])  # the same initial weights on every rank
    model_cfg, vocab, task, train_data, val_data, test_data = build(s, vocab_json, rank, world)
    model = RecurrentLM(model_cfg)
    _warm_up(model, device)
    run_info = {"recipe": recipe, "model": model_cfg.to_dict(), "vocab": vocab.to_json()}
    if rank == 0:  # everything was checked: only now does the run directory appear
        open_run_dir(out, s, record, {"recipe": recipe, "model": model_cfg.to_dict(), "world_size": world,
                                      "vocab_size": len(vocab)}, data_fingerprint)
    trainer = Trainer(model, task, train_data, train_cfg, val_data=val_data, out_dir=out, run_info=run_info,
                      device=device)
    if rank == 0 and not s["quiet"]:
        n_params = sum(p.numel() for p in model.parameters())
        click.echo(f"rnnkit: {recipe} {s['cell']} {s['num_layers']}x{s['hidden_size']} ({n_params:,} parameters), "
                   f"vocab {len(vocab)}, {train_data.tokens_per_epoch:,} train tokens/epoch on this process, "
                   f"world size {world}, device {device} -> {out}")
    summary = trainer.fit(resume=record)
    preempted = summary["stop"] == PREEMPTED  # the grace period is short: no test evaluation, no summary
    if test_data is not None and not preempted:
        test = trainer.evaluate(test_data, prefix="test")
        if rank == 0:
            with open(out / "metrics.jsonl", "a") as f:
                f.write(json.dumps({"kind": "test", "step": trainer.step, "loss": test["test_loss"], **test}) + "\n")
            summary["test"] = test
    if rank == 0 and not s["quiet"] and not preempted:
        last = summary.get("last_eval") or {}
        shown = ", ".join(f"{k}={v:.4f}" for k, v in last.items() if k.startswith("val_"))
        click.echo(f"rnnkit: stopped ({summary['stop']}) at step {summary['step']}, epoch {summary['epoch']}, "
                   f"{summary['elapsed_s']:.0f} s; {shown}"
                   + ("; " + ", ".join(f"{k}={v:.4f}" for k, v in summary["test"].items()) if "test" in summary
                      else ""))
    if world > 1:
        import torch.distributed as dist
        # the DDP wrapper (and its gloo reducer) must go before its process group: torn down afterwards, at
        # this function's return, it hung the process now and then (seen in ~1 of 8 two-process runs)
        del trainer
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()
    if preempted:
        exit_preempted(ctx, summary, out, show=rank == 0)
