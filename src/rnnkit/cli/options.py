"""Command-line options made from the applications' settings classes, and where each setting comes from.

`settings_options(cls)` turns every field of a settings dataclass (`rnnkit.apps.settings`) into a click
option: its type, range, choices, default and help are the field's. `resolve_run` merges the sources
of a `train` command: defaults < TOML file (`--config`) < the resumed run's config.json < command line,
type-checking TOML values with the same click types, and keeps where each came from.
"""

from __future__ import annotations

import os
import shlex
import sys
import tomllib
from dataclasses import MISSING, Field, fields
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import click
from click.core import ParameterSource

from ..apps.settings import RunSettings, Settings, base_type
from ..recipes import find_recipe, is_recipe, missing_data, recipe_names

#: settings never taken from a resumed run's config.json
FLAG_ONLY = ("resume", "overwrite", "quiet", "out", "allow_data_change")
#: exit status of a run stopped by SIGTERM (after its checkpoint): 128 + 15, what a shell reports for a process
#: that SIGTERM ended, so a job script's `&&` or a scheduler's requeue rule sees that the run did not finish
PREEMPTED_EXIT = 143


class InputPath(click.Path):
    """A file or folder a command reads. Given in a config file, it is relative to that file's folder."""

    def __init__(self) -> None:
        super().__init__(path_type=str)


def option_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def click_type(f: Field, hint: Any) -> Any:
    """The click type of a settings field: its choices, its range, or its plain type."""
    kind, _ = base_type(hint)
    meta = f.metadata
    if meta.get("path"):
        return InputPath()
    if meta.get("choices"):
        return click.Choice([str(c) for c in meta["choices"]])
    if kind in (int, float) and (meta.get("min") is not None or meta.get("max") is not None):
        cls = click.IntRange if kind is int else click.FloatRange
        return cls(min=meta.get("min"), max=meta.get("max"), min_open=meta.get("min_open", False),
                   max_open=meta.get("max_open", False))
    return kind


def settings_options(cls: type) -> List[click.Option]:
    """One click option per field of `cls` (bools as --x/--no-x), the application's own fields first."""
    depth: Dict[str, int] = {}  # how far down the class hierarchy each field is first declared
    for i, base in enumerate(reversed(cls.__mro__)):
        for name in base.__dict__.get("__annotations__", {}):
            depth.setdefault(name, i)
    options = []
    for f in sorted(fields(cls), key=lambda f: -depth.get(f.name, 0)):
        if not f.metadata.get("cli", True):
            continue
        default = None if f.default is MISSING else f.default
        flag = option_name(f.name)
        if base_type(cls.TYPES[f.name])[0] is bool:
            decls = [f"{flag}/--no-{flag[2:]}", f.name]
            options.append(click.Option(decls, default=default, show_default=True, help=f.metadata["help"]))
        else:
            options.append(click.Option([flag, f.name], type=click_type(f, cls.TYPES[f.name]), default=default,
                                        show_default=True, help=f.metadata["help"]))
    return options


def config_option() -> click.Option:
    return click.Option(["--config"], default=None, help="TOML file, or the name of a packaged recipe (e.g. "
                                                         "charlm-demo), with settings; command-line options win.")


def load_toml(path: Optional[str], ctx: click.Context) -> Dict[str, Any]:
    """The settings of --config: a TOML file, or the name of a packaged recipe (an existing file wins).

    Inputs it names (path settings) resolve against the file's folder, so the config works from any
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
                raise missing_data(p, settings[name], option_name(name))
    return settings


def resolve(ctx: click.Context, cls: type, values: Dict[str, Any], toml: Dict[str, Any],
            base: Optional[Dict[str, Any]] = None, base_sources: Optional[Dict[str, str]] = None) -> Settings:
    """Settings of class `cls`: command-line values win over the TOML file, which wins over `base` (a
    resumed run's config.json settings; `base_sources` says where they came from then, so that a default
    stays one), then the defaults. Unknown TOML keys are an error."""
    params = {p.name: p for p in ctx.command.params if p.name != "config"}
    unknown = sorted(k for k in toml if k not in params)
    if unknown:
        raise click.BadParameter(f"unknown settings in the config file: {', '.join(unknown)}",
                                 param_hint="'--config'")
    chosen: Dict[str, Any] = {}
    sources: Dict[str, str] = {}
    for name in params:
        if ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT):
            chosen[name], sources[name] = values[name], "user"
        elif name in toml:
            try:
                chosen[name] = params[name].type_cast_value(ctx, toml[name])
            except click.BadParameter as err:
                raise click.BadParameter(f"{err.message} (in the config file)", param_hint=f"'{name}'") from None
            sources[name] = "config"
        elif base is not None and name in base:
            chosen[name], sources[name] = base[name], (base_sources or {}).get(name, "config")
    return cls.create(chosen, sources)


def resolve_run(ctx: click.Context, cls: type, values: Dict[str, Any]) -> RunSettings:
    """Settings of a `train` command: the TOML file, then (with --resume) the run's saved settings, then the
    command line."""
    from ..apps.rundir import check_run_dir, saved_settings
    from ..apps.runner import resume_record

    toml = load_toml(values.pop("config", None), ctx)
    given = {name: values[name] if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE
             else toml.get(name, values[name]) for name in ("out", "resume")}
    out = Path(given["out"])
    base = base_sources = None
    if given["resume"]:
        check_run_dir(out)
        saved = saved_settings(out) if resume_record(out) is not None else None
        if saved is not None:
            base = {k: v for k, v in (saved.get("settings") or {}).items() if k not in FLAG_ONLY}
            base_sources = saved.get("sources")
    return resolve(ctx, cls, values, toml, base, base_sources)


def exit_preempted(ctx: click.Context, summary: Dict[str, Any], out: Path, show: bool = True) -> None:
    """After training stopped for SIGTERM: one line saying where the checkpoint is and how to go on; exit 143."""
    if show:
        click.echo(f"rnnkit: {summary['stop']} at step {summary['step']}: checkpoint {summary['checkpoint']}; "
                   f"continue with: {ctx.command_path} --out {shlex.quote(str(out))} --resume", err=True)
    sys.exit(PREEMPTED_EXIT)


# ---------------------------------------------------------------------- the inference commands' options
def checkpoint_option(fn: Callable) -> Callable:
    """--checkpoint: a run directory (its best weights) or a checkpoint file."""
    return click.option("--checkpoint", required=True, help="Run directory (its best weights, best.safetensors) "
                                                            "or a checkpoint file (.json or .safetensors).")(fn)


def device_option(fn: Callable) -> Callable:
    """--device, with the same choices and default as training."""
    return click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
                        help="Device: auto (CUDA when available), cpu or cuda.")(fn)


def out_option(default: str, what: str) -> Callable:
    """--out: always a directory (created if needed); `what` it receives."""
    return click.option("--out", default=default, show_default=True, help=f"Directory for {what} (created if "
                                                                          f"needed).")
