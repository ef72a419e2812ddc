"""The study notes' claims as experiments anyone can rerun: `rnnkit experiment NAME` or, from Python,
`rnnkit.experiments.run("NAME", ...)`.

An experiment is a module of this package with:

- `CLAIM`: the claim it tests, one sentence, naming the seed note it comes from;
- a settings class (`rnnkit.apps.settings`: `@settings_class`, inheriting `ExperimentSettings`), from
  which the command's options are made;
- `run(settings) -> dict`: trains and measures on the shared Trainer, writes its PNG(s) into
  `settings.out`, and returns its numbers plus a "markdown" entry (the table and the verdict: whether
  the claim held on this machine, said plainly either way).

`run_experiment` writes OUT/results.json and OUT/results.md, and shows the markdown.

    >>> from rnnkit import experiments
    >>> "adding" in experiments.EXPERIMENTS
    True
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any, Dict, Iterable, Optional, Tuple

from ..apps.settings import Settings, setting, settings_class
from ..errors import InputError

#: name -> module of this package (imported on first use)
EXPERIMENTS: Dict[str, str] = {
    "adding": "adding",
    "depth": "depth",
    "direction": "direction",
    "exposure-bias": "exposure_bias",
    "exploding": "exploding",
    "gru-vs-lstm": "gru_vs_lstm",
    "sru-vs-lstm": "sru_vs_lstm",
}


@settings_class
class ExperimentSettings(Settings):
    """What every experiment has: where it writes, its seed, what it shows, its threads."""

    out: str = setting("runs/experiment", "Directory for the plot(s), results.md and results.json.")
    seed: int = setting(0, "Random seed (initialisation, data).")
    threads: int = setting(1, "torch CPU threads (small per-step products gain little from a second one).", min=1)
    quiet: bool = setting(False, "No progress bars.")


def comma_list(value: str, known: Iterable[str], setting: str = "cells") -> Tuple[str, ...]:
    """The names in the comma-separated `value`; InputError unless there are some, all of them `known`."""
    known = tuple(known)
    names = tuple(v.strip() for v in value.split(",") if v.strip())
    if not names or any(n not in known for n in names):
        raise InputError(f"{setting} must list some of {','.join(known)}; got {value!r}")
    return names


def module(name: str) -> ModuleType:
    """The module of experiment `name`."""
    if name not in EXPERIMENTS:
        raise InputError(f"unknown experiment {name!r}; expected one of {', '.join(EXPERIMENTS)}")
    return importlib.import_module(f"{__name__}.{EXPERIMENTS[name]}")


def run(name: str, settings: Optional[ExperimentSettings] = None, **changes: Any) -> Dict[str, Any]:
    """Run experiment `name` with `settings` (default: its defaults), changed by `changes`."""
    mod = module(name)
    s = settings if settings is not None else mod.SETTINGS(**changes)
    if settings is not None and changes:
        s = settings.replace(**changes)
    return run_experiment(mod, s)


def run_experiment(mod: ModuleType, s: ExperimentSettings) -> Dict[str, Any]:
    """Run `mod` with settings `s` in s.threads threads; write and show its results."""
    import torch

    from ..apps.runner import write_results
    out = Path(s.out)
    out.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(s.threads)
    try:
        results = mod.run(s)
    finally:
        torch.set_num_threads(threads)
    shown = dict(results)
    markdown = write_results(out, shown)
    if markdown and not s.quiet:
        print(f"\n{markdown.rstrip()}\n\nresults: {out / 'results.md'}, {out / 'results.json'}", flush=True)
    return results
