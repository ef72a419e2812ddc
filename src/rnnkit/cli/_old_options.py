"""Options shared by the `train` recipes, and config resolution: defaults < TOML file < command line.

A recipe declares its options once (name, type, default, help); `recipe_options`
turns them into click options whose --help shows the defaults, and `resolve`
merges the three sources, type-checking TOML values with the same click types.
"""

from __future__ import annotations

import os
import sys
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

import click
from click.core import ParameterSource

from ..errors import InputError
from ..recipes import find_recipe, is_recipe, missing_data, recipe_names

if TYPE_CHECKING:  # for the hints only: this module imports torch and training lazily, inside functions
    import torch

    from ..training.config import TrainConfig

Spec = Tuple[str, Any, Any, str]  # (name, click type, default, help)

POS_INT = click.IntRange(min=1)
NONNEG_INT = click.IntRange(min=0)
POS_FLOAT = click.FloatRange(min=0.0, min_open=True)
PROB = click.FloatRange(min=0.0, max=1.0, max_open=True)


class InputPath(click.Path):
    """A file or folder a command reads. Given in a config file, it is relative to that file's folder."""

    def __init__(self) -> None:
        super().__init__(path_type=str)


INPUT_PATH = InputPath()
#: every train command's --config
CONFIG_SPEC: Spec = ("config", str, None, "TOML file, or the name of a packaged recipe (e.g. charlm-demo), with "
                                         "settings; command-line options win.")


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


def load_toml(path: Optional[str], ctx: click.Context) -> Dict[str, Any]:
    """The settings of --config: a TOML file, or the name of a packaged recipe (an existing file wins).

    Inputs it names (INPUT_PATH options) resolve against the file's folder, so the config works from any
    directory; --out stays relative to the working directory (a packaged recipe must not write into the
    package). A packaged recipe whose input is not installed, and not replaced on the command line, is
    an error saying where to get it.
    """
    if path is None:
        return {}
    p = Path(path) if Path(path).is_file() else find_recipe(path)
    if p is None:
        raise click.BadParameter(f"config file {path!r} does not exist, nor is it a packaged recipe "
                                 f"({', '.join(recipe_names())})", param_hint="'--config'")
    try:
        data = tomllib.loads(p.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise click.BadParameter(f"config file {path!r} is not valid TOML: {err}", param_hint="'--config'")
    settings = {k.replace("-", "_"): v for k, v in data.items()}
    inputs = sorted(q.name for q in ctx.command.params if isinstance(q.type, InputPath) and q.name in settings)
    for name in inputs:
        if isinstance(settings[name], str):  # "/abs" stays absolute: Path("dir") / "/abs" is "/abs"
            settings[name] = os.path.normpath(p.resolve().parent / settings[name])
            if (is_recipe(p) and ctx.get_parameter_source(name) != ParameterSource.COMMANDLINE
                    and not Path(settings[name]).exists()):
                raise missing_data(p, settings[name], "--" + name.replace("_", "-"))
    return settings


class Settings(dict):
    """Resolved settings of one command; `sources[name]` says where each came from: "user" (the command
    line), "config" (the TOML file; on --resume also the run's own config.json) or "default"."""

    def __init__(self) -> None:
        super().__init__()
        self.sources: Dict[str, str] = {}

    def explicit(self, name: str) -> bool:
        """Whether the user chose this setting (command line or config file), as opposed to its default."""
        return self.sources.get(name, "default") != "default"


#: the training budgets: naming any of them drops the defaults of the others (see `explicit_limits_win`)
BUDGETS = ("max_steps", "max_epochs", "max_minutes")

#: setting -> (the setting it needs, the values with which it acts): naming it while the other switches it
#: off is an error (typically the other is a default the user did not think of: --momentum with adam)
ACTS_ONLY_WITH: Dict[str, Tuple[str, Tuple[Any, ...]]] = {
    "momentum": ("optimizer", ("sgd", "rmsprop")),
    "lr_gamma": ("schedule", ("step", "plateau", "epoch_decay")),
    "lr_step_size": ("schedule", ("step",)),
    "lr_min": ("schedule", ("cosine",)),
    "lr_decay_after_epochs": ("schedule", ("epoch_decay",)),
    "plateau_patience": ("schedule", ("plateau",)),
    "ss_k": ("scheduled_sampling", ("linear", "exponential", "inverse_sigmoid")),
    "ss_c": ("scheduled_sampling", ("linear",)),
    "ss_min": ("scheduled_sampling", ("linear", "exponential", "inverse_sigmoid")),
    "quantiles": ("head", ("quantile",)),
    "level": ("head", ("gaussian",)),
    "teacher_forcing": ("mode", ("autoregressive", "seq2seq")),
    "machines": ("format", ("kaggle-ipasn",)),
}


def resolve(ctx: click.Context, values: Dict[str, Any], toml: Dict[str, Any], base: Optional[Dict[str, Any]] = None,
            ignore: Tuple[str, ...] = (), base_sources: Optional[Dict[str, str]] = None) -> Settings:
    """Settings: command-line values win over the TOML file, which wins over `base`, then the defaults.

    `base` is a resumed run's config.json settings and `base_sources` where they came from then (a value
    that was a default stays one). Unknown TOML keys are an error. Then explicit settings win over defaults:
    `explicit_limits_win`, `check_acts_only_with`.
    """
    params = {p.name: p for p in ctx.command.params}
    unknown = sorted(k for k in toml if k not in params or k in ignore)
    if unknown:
        raise click.BadParameter(f"unknown settings in the config file: {', '.join(unknown)}",
                                 param_hint="'--config'")
    out = Settings()
    for name, value in values.items():
        if name in ignore:
            continue
        source = ctx.get_parameter_source(name)
        if source in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT, ParameterSource.PROMPT):
            out[name], out.sources[name] = value, "user"
        elif name in toml:
            try:
                out[name] = params[name].type_cast_value(ctx, toml[name])
            except click.BadParameter as err:
                raise click.BadParameter(f"{err.message} (in the config file)", param_hint=f"'{name}'") from None
            out.sources[name] = "config"
        elif base is not None and name in base:
            out[name] = base[name]
            out.sources[name] = (base_sources or {}).get(name, "config")
        else:
            out[name], out.sources[name] = value, "default"
    explicit_limits_win(out)
    check_acts_only_with(out, params)
    return out


def explicit_limits_win(s: Settings) -> None:
    """When the user names one or more budgets (max_steps, max_epochs, max_minutes), the defaults of the
    budgets they did not name, and of early stopping, are dropped: `--max-steps 200` must not end at a
    default `--max-epochs 10`, nor at a default patience. (Naming only a patience keeps the default budget.)"""
    if any(s.explicit(k) for k in BUDGETS if k in s):
        for k in BUDGETS + ("early_stop_patience",):
            if k in s and not s.explicit(k):
                s[k] = None


def check_acts_only_with(s: Settings, params: Dict[str, click.Parameter]) -> None:
    """A setting the user named that another setting switches off is an error, not a silent no-op."""
    for name, (needs, acting) in ACTS_ONLY_WITH.items():
        if name in s and needs in s and s.explicit(name) and s[needs] not in acting:
            other = params[needs].opts[0] if needs in params else needs
            how = "the default" if not s.explicit(needs) else "as set"
            raise click.UsageError(
                f"{params[name].opts[0] if name in params else name} has no effect with {other} {s[needs]} "
                f"({how}); it acts only with {other} {' or '.join(map(str, acting))}: set that too, or leave "
                f"it out")


#: settings never taken from a resumed run's config.json
FLAG_ONLY = ("resume", "overwrite", "quiet", "config", "out", "allow_data_change")
#: what every train recipe writes into its run directory; one of them there means a previous run
RUN_MARKERS = ("config.json", "data.json", "metrics.jsonl", "tensorboard", "checkpoints", "best.safetensors",
               "best.json")


def run_specs(out_default: str, out_help: str) -> List[Spec]:
    """The run-directory options every train recipe has."""
    return [
        ("out", str, out_default, out_help),
        CONFIG_SPEC,
        ("resume", bool, False, "Continue the run in --out from its latest complete checkpoint."),
        ("overwrite", bool, False, "Delete a previous run's files in --out (config, metrics, TensorBoard events, "
                                   "checkpoints, best weights) before starting a new run there."),
        ("quiet", bool, False, "No progress bar or summaries."),
    ]


def resolve_run(ctx: click.Context, values: Dict[str, Any]) -> Tuple[Settings, Path, Optional[Path]]:
    """Settings of a `train` command: the TOML file, then (with --resume) the run's saved settings, then the
    command line. Returns (settings with "out", run directory, checkpoint to resume from or None)."""
    import json

    from ..training.checkpoint import CheckpointError, latest_checkpoint, list_checkpoints

    toml = load_toml(values.get("config"), ctx)
    out = Path(values["out"] if ctx.get_parameter_source("out") == ParameterSource.COMMANDLINE
               else toml.get("out", values["out"]))
    resume = values["resume"] if ctx.get_parameter_source("resume") == ParameterSource.COMMANDLINE \
        else bool(toml.get("resume", values["resume"]))
    base = base_sources = None
    record = None
    if resume:
        check_run_dir(out)
        record = latest_checkpoint(out)
        if record is not None and (out / "config.json").is_file():
            saved = json.loads((out / "config.json").read_text())
            base = {k: v for k, v in (saved.get("settings") or {}).items() if k not in FLAG_ONLY}
            base_sources = saved.get("sources")
        elif record is None and list_checkpoints(out / "checkpoints"):
            raise CheckpointError(f"--resume: no complete checkpoint in {str(out)!r} (every checkpoint there is "
                                  f"incomplete or corrupt)")
    settings = resolve(ctx, values, toml, base, ignore=("config",), base_sources=base_sources)
    settings["out"] = str(out)
    return settings, out, record


def check_run_dir(out: Path) -> None:
    """--out must be a directory (or not exist yet)."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {str(out)!r} is a file, not a directory; choose another --out")


def previous_run(out: Path) -> List[str]:
    """The names in `out` that a previous run left (RUN_MARKERS that exist)."""
    return [name for name in RUN_MARKERS if (out / name).exists()]


def prepare_run(settings: Settings, out: Path, train_keys: Tuple[str, ...]) -> "TrainConfig":
    """The common start of a `train` command after `resolve_run`: returns the TrainConfig made of the settings
    named in `train_keys`, refuses a new run (no --resume) into a directory that holds a previous run unless
    --overwrite, and applies --threads."""
    import torch

    from ..training.config import TrainConfig

    train_cfg = TrainConfig(**{k: settings[k] for k in train_keys if k in settings})
    check_run_dir(out)
    # under torchrun only rank 0 looks: it writes config.json, possibly before a slower rank gets here
    left = previous_run(out) if int(os.environ.get("RANK", "0")) == 0 else []
    if settings.get("resume") and settings.get("overwrite"):
        raise click.BadParameter("--resume continues the run in --out and --overwrite deletes it; choose one",
                                 param_hint="'--overwrite'")
    if left and not settings.get("resume") and not settings.get("overwrite"):
        raise InputError(f"--out {str(out)!r} holds a previous run ({', '.join(left)}); choose a new --out, pass "
                         f"--resume to continue it, or --overwrite to delete its files and start again")
    threads = settings.get("threads")
    if threads and (settings.explicit("threads") or not os.environ.get("OMP_NUM_THREADS")):
        torch.set_num_threads(threads)  # a default never overrides the OMP_NUM_THREADS a user exported
    return train_cfg


def open_run_dir(out: Path, settings: Settings, record: Optional[Path], config: Dict[str, Any],
                 data: Dict[str, Any]) -> None:
    """Create the run directory once everything was checked and write config.json (`config` plus the
    settings and where each came from) and data.json (`data`: the data files' fingerprint, see
    `checked_data_fingerprint`). A new run first deletes what a previous run left: with --overwrite,
    or with --resume when there was no checkpoint to resume (its logs belong to steps that are lost)."""
    import shutil

    from ..training.checkpoint import write_json_atomic

    if record is None:
        for name in previous_run(out):
            path = out / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "config.json", {**config, "settings": dict(settings), "sources": settings.sources})
    write_json_atomic(out / "data.json", data)


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


TRAIN_KEYS = ("max_steps", "max_epochs", "max_minutes", "optimizer", "lr", "weight_decay", "momentum", "schedule",
              "warmup_steps", "lr_step_size", "lr_gamma", "lr_min", "lr_decay_after_epochs", "plateau_patience",
              "clip_norm", "clip_value", "grad_accum", "bptt_k2", "eval_every", "checkpoint_every", "keep_checkpoints",
              "early_stop_patience", "seed", "quiet", "tensorboard", "loss_normalization")
