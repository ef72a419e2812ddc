"""Options shared by the `train` recipes, and config resolution: defaults < TOML file < command line.

A recipe declares its options once (name, type, default, help); `recipe_options`
turns them into click options whose --help shows the defaults, and `resolve`
merges the three sources, type-checking TOML values with the same click types.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

import click
from click.core import ParameterSource

from ..errors import InputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # type: ignore[no-redef]

if TYPE_CHECKING:  # for the hints only: this module imports torch and training lazily, inside functions
    import torch

    from ..training.config import TrainConfig

Spec = Tuple[str, Any, Any, str]  # (name, click type, default, help)

POS_INT = click.IntRange(min=1)
NONNEG_INT = click.IntRange(min=0)
POS_FLOAT = click.FloatRange(min=0.0, min_open=True)
PROB = click.FloatRange(min=0.0, max=1.0, max_open=True)


def training_specs(d: Dict[str, Any]) -> List[Spec]:
    """Options every train recipe has (`d` gives the recipe's defaults)."""
    from ..training.config import OPTIMIZERS, SCHEDULES
    return [
        ("seed", int, d.get("seed", 0), "Random seed (model init, dropout)."),
        ("batch_size", POS_INT, d["batch_size"], "Streams per batch (per process under torchrun)."),
        ("bptt", POS_INT, d["bptt"], "Truncated BPTT k1: steps per chunk, one update per chunk."),
        ("bptt_k2", POS_INT, d.get("bptt_k2"), "Truncated BPTT k2 >= k1: steps each update backpropagates "
                                                "(default: k1)."),
        ("optimizer", click.Choice(OPTIMIZERS), d["optimizer"], "Optimizer."),
        ("lr", POS_FLOAT, d["lr"], "Learning rate."),
        ("weight_decay", click.FloatRange(min=0.0), d.get("weight_decay", 0.0), "Weight decay."),
        ("momentum", click.FloatRange(min=0.0), d.get("momentum", 0.0), "Momentum (sgd, rmsprop)."),
        ("schedule", click.Choice(SCHEDULES), d.get("schedule", "constant"), "LR schedule."),
        ("warmup_steps", NONNEG_INT, d.get("warmup_steps", 0), "Linear LR warm-up steps."),
        ("lr_gamma", click.FloatRange(min=0.0, max=1.0, min_open=True), d.get("lr_gamma", 0.5),
         "LR factor for step/plateau/epoch_decay."),
        ("lr_step_size", POS_INT, d.get("lr_step_size", 1000), "Steps between LR drops (schedule=step)."),
        ("lr_decay_after_epochs", NONNEG_INT, d.get("lr_decay_after_epochs", 0),
         "Epochs at full LR before decaying every epoch (schedule=epoch_decay)."),
        ("lr_min", click.FloatRange(min=0.0), d.get("lr_min", 0.0), "Final LR of the cosine schedule."),
        ("plateau_patience", NONNEG_INT, d.get("plateau_patience", 1),
         "Evaluations without improvement before the plateau schedule lowers the LR."),
        ("clip_norm", POS_FLOAT, d.get("clip_norm"), "Clip gradients to this global norm."),
        ("clip_value", POS_FLOAT, d.get("clip_value"), "Clip each gradient element to ±value."),
        ("grad_accum", POS_INT, d.get("grad_accum", 1), "Chunks per optimizer step (gradient accumulation)."),
        ("max_steps", POS_INT, d.get("max_steps"), "Stop after N optimizer steps."),
        ("max_epochs", POS_INT, d.get("max_epochs"), "Stop after N epochs."),
        ("max_minutes", POS_FLOAT, d.get("max_minutes"), "Stop after M minutes of training (evaluation included)."),
        ("eval_every", POS_INT, d.get("eval_every"), "Evaluate every N steps (also at each epoch's end and at the end)."),
        ("checkpoint_every", POS_INT, d.get("checkpoint_every"), "Checkpoint every N steps (also at the end)."),
        ("keep_checkpoints", POS_INT, d.get("keep_checkpoints", 3), "Checkpoints kept."),
        ("early_stop_patience", POS_INT, d.get("early_stop_patience"),
         "Stop after N evaluations without a better validation loss."),
        ("threads", POS_INT, d.get("threads"), "torch CPU threads (default: torch's choice)."),
        ("device", click.Choice(["auto", "cpu", "cuda"]), d.get("device", "auto"), "Device."),
        ("tensorboard", bool, d.get("tensorboard", True), "Write TensorBoard event files under OUT/tensorboard."),
        ("allow_data_change", bool, False, "With --resume: continue even if a data file changed since the run "
                                           "started (OUT/data.json)."),
    ]


def recipe_options(specs: List[Spec]) -> Callable:
    """Decorator adding one click option per spec (bools become --x/--no-x flags)."""

    def decorate(fn: Callable) -> Callable:
        for name, type_, default, help_ in reversed(specs):
            flag = "--" + name.replace("_", "-")
            if type_ is bool:
                fn = click.option(f"{flag}/--no-{name.replace('_', '-')}", name, default=default,
                                  show_default=True, help=help_)(fn)
            else:
                fn = click.option(flag, name, type=type_, default=default, show_default=True, help=help_)(fn)
        return fn

    return decorate


def load_toml(path: Optional[str]) -> Dict[str, Any]:
    if path is None:
        return {}
    p = Path(path)
    if not p.is_file():
        raise click.BadParameter(f"config file {path!r} does not exist", param_hint="'--config'")
    try:
        data = tomllib.loads(p.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise click.BadParameter(f"config file {path!r} is not valid TOML: {err}", param_hint="'--config'")
    return {k.replace("-", "_"): v for k, v in data.items()}


def resolve(ctx: click.Context, values: Dict[str, Any], toml: Dict[str, Any], base: Optional[Dict[str, Any]] = None,
            ignore: Tuple[str, ...] = ()) -> Dict[str, Any]:
    """Settings: command-line values win over the TOML file, which wins over `base`, then the defaults.

    `base` is a resumed run's config.json. Unknown TOML keys are an error.
    """
    params = {p.name: p for p in ctx.command.params}
    unknown = sorted(k for k in toml if k not in params or k in ignore)
    if unknown:
        raise click.BadParameter(f"unknown settings in the config file: {', '.join(unknown)}",
                                 param_hint="'--config'")
    out: Dict[str, Any] = {}
    for name, value in values.items():
        if name in ignore:
            continue
        source = ctx.get_parameter_source(name)
        if source in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT, ParameterSource.PROMPT):
            out[name] = value
        elif name in toml:
            try:
                out[name] = params[name].type_cast_value(ctx, toml[name])
            except click.BadParameter as err:
                raise click.BadParameter(f"{err.message} (in the config file)", param_hint=f"'{name}'") from None
        elif base is not None and name in base:
            out[name] = base[name]
        else:
            out[name] = value
    return out


#: settings never taken from a resumed run's config.json
FLAG_ONLY = ("resume", "quiet", "config", "out", "allow_data_change")


def resolve_run(ctx: click.Context, values: Dict[str, Any]) -> Tuple[Dict[str, Any], Path, Optional[Path]]:
    """Settings of a `train` command: the TOML file, then (with --resume) the run's saved settings, then the
    command line. Returns (settings with "out", run directory, checkpoint to resume from or None)."""
    import json

    from ..training.checkpoint import CheckpointError, latest_checkpoint, list_checkpoints

    toml = load_toml(values.get("config"))
    out = Path(values["out"] if ctx.get_parameter_source("out") == ParameterSource.COMMANDLINE
               else toml.get("out", values["out"]))
    base = None
    record = None
    if values["resume"]:
        record = latest_checkpoint(out)
        if record is not None and (out / "config.json").is_file():
            saved = json.loads((out / "config.json").read_text()).get("settings") or {}
            base = {k: v for k, v in saved.items() if k not in FLAG_ONLY}
        elif record is None and list_checkpoints(out / "checkpoints"):
            raise CheckpointError(f"--resume: no complete checkpoint in {str(out)!r} (every checkpoint there is "
                                  f"incomplete or corrupt)")
    settings = resolve(ctx, values, toml, base, ignore=("config",))
    settings["out"] = str(out)
    return settings, out, record


def prepare_run(values: Dict[str, Any], settings: Dict[str, Any], out: Path, train_keys: Tuple[str, ...]) -> "TrainConfig":
    """The common start of a `train` command after `resolve_run`: returns the TrainConfig made of the settings
    named in `train_keys`, refuses a new run (no --resume) into a directory that already holds checkpoints, and
    applies --threads."""
    import torch

    from ..training.checkpoint import list_checkpoints
    from ..training.config import TrainConfig

    train_cfg = TrainConfig(**{k: settings[k] for k in train_keys if k in settings})
    if not values["resume"] and list_checkpoints(out / "checkpoints"):
        raise click.BadParameter(f"run directory {str(out)!r} already holds checkpoints; pass --resume to "
                                 f"continue it or choose another --out", param_hint="'--out'")
    if settings.get("threads"):
        torch.set_num_threads(settings["threads"])
    return train_cfg


def run_device(device: Optional[str]) -> "torch.device":
    """torch.device for a --device setting: "cuda", "auto" (CUDA when available) or "cpu" (None: cpu).
    Asking for "cuda" without CUDA is an error, not a quiet fall back to the CPU."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for but CUDA is not available")
    return torch.device("cuda" if device in ("cuda", "auto") and torch.cuda.is_available() else "cpu")


#: exit status of a run stopped by SIGTERM (after its checkpoint): 128 + 15, what a shell reports for a process
#: that SIGTERM ended, so a job script's `&&` or a scheduler's requeue rule sees that the run did not finish
PREEMPTED_EXIT = 143


def exit_preempted(ctx: click.Context, summary: Dict[str, Any], out: Path, show: bool = True) -> None:
    """After fit() stopped for SIGTERM: one line saying where the checkpoint is and how to go on; exit 143."""
    import shlex

    if show:
        click.echo(f"rnnkit: {summary['stop']} at step {summary['step']}: checkpoint {summary['checkpoint']}; "
                   f"continue with: {ctx.command_path} --out {shlex.quote(str(out))} --resume", err=True)
    sys.exit(PREEMPTED_EXIT)


def data_paths(settings: Dict[str, Any]) -> List[str]:
    """The data paths a recipe's settings name: --data and every --*-data option (unset ones: shipped data)."""
    return [v for k, v in sorted(settings.items()) if (k == "data" or k.endswith("_data")) and v
            and isinstance(v, str)]


def checked_data_fingerprint(settings: Dict[str, Any], out: Path, resuming: bool) -> Dict[str, Any]:
    """The fingerprint of the run's data files, to be written to OUT/data.json. Resuming, it must match the
    one saved when the run started (unless --allow-data-change): other data would silently train the
    checkpoint on something else than it saw."""
    import json

    from ..training.fingerprint import FORMAT, DataChangedError, data_change, fingerprint

    current = {"format": FORMAT, "files": fingerprint(data_paths(settings), exclude=[out])}
    saved_path = out / "data.json"
    if resuming and saved_path.is_file() and not settings.get("allow_data_change"):
        change = data_change(json.loads(saved_path.read_text()).get("files", {}), current["files"])
        if change:
            raise DataChangedError(f"--resume: since the run in {str(out)!r} started, {change}; put the original "
                                   f"back, or pass --allow-data-change to go on with the new data")
    return current
