"""The applications, each a module callable from Python; the `rnnkit` command line is a thin layer over them.

Each module has a typed settings class (defaults declared once; the command-line options are made from
its fields), `train(settings) -> Run`, `load(run_dir) -> Run` and its inference functions:

========  ==========================  ==================================================
module    settings                    inference
========  ==========================  ==================================================
charlm    CharLMSettings              generate
wordlm    WordLMSettings              generate
seq2seq   Seq2SeqSettings             translate, evaluate
forecast  ForecastSettings            forecast, backtest
classify  ClassifySettings            predict, predict_proba, evaluate
tag       TagSettings                 predict, evaluate
video     VideoSettings               predict
clips     ClipSettings                predict, example_clips
caption   CaptionSettings             caption
adding    AddingSettings              (an experiment: its results table)
========  ==========================  ==================================================

    >>> from rnnkit.apps import charlm
    >>> charlm.CharLMSettings().hidden_size
    256

A run directory loads back into the application it came from:

    >>> import rnnkit
    >>> run = rnnkit.load("runs/charlm")                     # doctest: +SKIP
    >>> "".join(rnnkit.apps.charlm.generate(run, "ROMEO:", 200))  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any, Optional, Union

import torch

from ..errors import InputError
from .runner import Recipe, Run

#: the applications, in the order `rnnkit train --help` lists them
APPS = ("charlm", "wordlm", "seq2seq", "forecast", "classify", "tag", "video", "clips", "caption", "adding")

__all__ = ["APPS", "Recipe", "Run", "load", "module", "recipe_of", *APPS]


def module(name: str) -> ModuleType:
    """The module of application `name` (imported on first use: each pulls its own dependencies)."""
    if name not in APPS:
        raise InputError(f"unknown application {name!r}; expected one of {', '.join(APPS)}")
    return importlib.import_module(f"{__name__}.{name}")


def recipe_of(name: Optional[str], record: Any = None) -> Recipe:
    """The Recipe of application `name`; a CheckpointError naming `record` if it is not one."""
    if name not in APPS:
        from ..training.checkpoint import CheckpointError
        raise CheckpointError(f"checkpoint {str(record)!r} is not a run of an rnnkit application (recipe {name!r})")
    return module(name).RECIPE


def load(path: Union[str, Path], device: Union[str, torch.device] = "cpu") -> Run:
    """The trained application in a run directory (or checkpoint), ready for inference; best weights first."""
    from .runner import load as load_run
    return load_run(path, device)


def __getattr__(name: str) -> Any:
    if name in APPS:
        return module(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
