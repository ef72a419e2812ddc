"""Shared plumbing of the application recipes (forecast, classify, tag): settings, run directory, training.

Like `run_recipe` for the language models, but the recipe builds its own model
and task. The weights with the best validation loss are kept beside the
checkpoints (OUT/best.safetensors) and restored before the final evaluation, so
a run that overfits late still reports (and ships) its best model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import click
import torch
from torch import nn

from ..training.checkpoint import (CheckpointError, _write_atomic, load_checkpoint, read_checkpoint, sub_dict,
                                   write_json_atomic)
from ..training.trainer import PREEMPTED, Trainer
from ._old_options import (checked_data_fingerprint, exit_preempted, open_run_dir, prepare_run, resolve_run,
                      run_device, training_specs)

#: TrainConfig fields a recipe may set (the LM recipes' list, without truncated BPTT).
TRAIN_KEYS = ("max_steps", "max_epochs", "max_minutes", "optimizer", "lr", "weight_decay", "momentum", "schedule",
              "warmup_steps", "lr_step_size", "lr_gamma", "lr_min", "lr_decay_after_epochs", "clip_norm",
              "clip_value", "grad_accum", "eval_every", "checkpoint_every", "keep_checkpoints",
              "early_stop_patience", "seed", "quiet", "tensorboard")


def app_training_specs(defaults: Dict[str, Any]) -> list:
    """The shared training options without the truncated-BPTT ones (whole windows/sentences here)."""
    d = dict(defaults)
    d.setdefault("bptt", 1)
    specs = [s for s in training_specs(d) if s[0] not in ("bptt", "bptt_k2")]
    return [(n, t, dv, h.replace("Streams per batch", "Examples per batch")) for n, t, dv, h in specs]


def save_weights(path: Path, model: nn.Module) -> None:
    from safetensors.torch import save as st_save
    _write_atomic(path, st_save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}))


def load_weights(path: Path) -> Dict[str, torch.Tensor]:
    from safetensors.torch import load as st_load
    return st_load(Path(path).read_bytes())


def run_app(ctx: click.Context, recipe: str, values: Dict[str, Any],
            build: Callable[[Dict[str, Any]], Tuple[nn.Module, Any, Any, Any, Dict[str, Any], List[str]]],
            finish: Callable[[nn.Module, Dict[str, Any], Path, Trainer], None], *,
            select: Optional[Callable[[Dict[str, Any]], Tuple[str, Optional[Callable[[nn.Module], float]]]]] = None
            ) -> None:
    """Resolve settings, build (model, task, train_data, val_data, run_info, report lines), train, then `finish`.

    run_info is stored in every checkpoint (and must match on --resume). The best weights are those with
    the lowest validation loss, or, with `select`, the lowest value of the (name, score(model)) it makes
    from the settings (e.g. 1 − SSIM where the loss is not what the user judges the model by).
    """
    s, out, record = resolve_run(ctx, values)
    train_cfg = prepare_run(s, out, TRAIN_KEYS)
    data_fingerprint = checked_data_fingerprint(s, out, resuming=record is not None)
    device = run_device(s.get("device"))
    torch.manual_seed(s["seed"])
    model, task, train_data, val_data, run_info, report = build(s)
    run_info = {"recipe": recipe, **run_info}
    if record is not None:
        meta, _ = read_checkpoint(record)
        from ..training.trainer import check_run_info
        check_run_info(meta.get("run", {}), json.loads(json.dumps(run_info)), record)
    open_run_dir(out, s, record, {"recipe": recipe, **run_info}, data_fingerprint)
    quiet = s["quiet"]
    if not quiet:
        for line in report:
            click.echo(f"rnnkit: {line}")
        n_params = sum(p.numel() for p in model.parameters())
        click.echo(f"rnnkit: {recipe}: {n_params:,} parameters, {len(train_data)} batches/epoch, device {device} "
                   f"-> {out}")
    trainer = Trainer(model, task, train_data, train_cfg, val_data=val_data, out_dir=out,
                      run_info=json.loads(json.dumps(run_info)), device=device)
    best_path = out / "best.safetensors"
    best_name, score = select(s) if select is not None else ("val_loss", None)
    best = {"value": None}
    if record is not None and best_path.exists():  # a resumed run keeps its best weights unless beaten
        if score is None:
            best["value"] = read_checkpoint(record)[0].get("counters", {}).get("best")
        elif (out / "best.json").exists():
            best["value"] = json.loads((out / "best.json").read_text())["value"]

    def keep_best(tr: Trainer, rec: Dict[str, Any]) -> None:
        v = rec.get("val_loss") if score is None else score(tr.model)
        if v is not None and (best["value"] is None or v < best["value"]):
            best["value"] = v
            save_weights(best_path, tr.model)
            if score is not None:
                write_json_atomic(out / "best.json", {"step": tr.step, best_name: v, "value": v})

    trainer.add_hook("eval_end", keep_best)
    summary = trainer.fit(resume=record)
    if summary["stop"] == PREEMPTED:
        exit_preempted(ctx, summary, out)
    if best_path.exists():
        model.load_state_dict(load_weights(best_path))
    if not quiet:
        click.echo(f"rnnkit: stopped ({summary['stop']}) at step {summary['step']}, epoch {summary['epoch']}, "
                   f"{summary['elapsed_s']:.0f} s; best {best_name} {best['value']}"
                   + (" (weights restored from best.safetensors)" if best_path.exists() else ""))
    finish(model, s, out, trainer)


def load_app_model(path: str, recipe: str, what: str, build: Callable[[Dict[str, Any]], nn.Module],
                   device: torch.device, *,
                   check_run: Optional[Callable[[Dict[str, Any]], Any]] = None) -> Tuple[nn.Module, Dict[str, Any]]:
    """(model in eval mode, run info) of a `recipe` run directory or checkpoint; best.safetensors wins.

    `build` makes the model from the run's model description; `what` names it in errors ("a forecaster").
    `check_run`, if given, reads the rest of the run info the caller needs (e.g. a vocabulary) right after
    `build`, so that a bad entry is reported as a malformed description before any weights are read.
    """
    record, meta, tensors = load_checkpoint(path)
    run = meta.get("run") or {}
    if run.get("recipe") != recipe:
        raise CheckpointError(f"checkpoint {str(record)!r} is not {what} (recipe {run.get('recipe')!r})")
    try:
        model = build(run["model"])
        if check_run is not None:
            check_run(run)
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint {str(record)!r} has a malformed model description ({err})") from None
    best = Path(path) / "best.safetensors"
    weights = load_weights(best) if best.is_file() else sub_dict(tensors, "model")
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint {str(record)!r} does not fit its own model description: "
                              f"{' '.join(str(err).split()[:30])}") from None
    return model.to(device).eval(), run
