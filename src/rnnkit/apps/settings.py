"""Typed settings of the applications: one frozen dataclass per application, every default declared once.

A field is declared with `setting(default, help, ...)`: its type hint, range, choices and help text are
all the command line needs (`rnnkit.cli.options` makes the click options from them), and construction
checks them, so that a notebook user gets the same errors as the command line:

    >>> from rnnkit.apps.charlm import CharLMSettings
    >>> CharLMSettings(hidden_size=0)
    Traceback (most recent call last):
    ...
    rnnkit.errors.InputError: CharLMSettings: hidden_size must be an int >= 1; got 0

Explicit settings win over defaults: the fields given to the constructor are "user" settings, the
others "default" (`sources`). Naming one budget (max_steps, max_epochs, max_minutes) drops the default
of the others and of early stopping, and a setting the user named that another switches off (momentum
with adam) is an error:

    >>> s = CharLMSettings(max_steps=200)
    >>> s.max_steps, s.max_epochs
    (200, None)
    >>> CharLMSettings(momentum=0.9)
    Traceback (most recent call last):
    ...
    rnnkit.errors.InputError: momentum has no effect with optimizer adam (the default); it acts only with optimizer sgd or rmsprop: set that too, or leave it out

An application changes inherited defaults in its `DEFAULTS` mapping (the field keeps its help and
checks), so `batch_size` is declared once for all of them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
import typing
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Dict, Iterator, Mapping, Optional, Sequence, Tuple, Type, TypeVar

from ..errors import InputError

if typing.TYPE_CHECKING:
    from ..training.config import TrainConfig

S = TypeVar("S", bound="Settings")

#: where a setting came from: the command line or a constructor argument, a config file (or the resumed
#: run's config.json), or the field's default
SOURCES = ("user", "config", "default")
#: the training budgets: naming any of them drops the defaults of the others (see `Settings`)
BUDGETS = ("max_steps", "max_epochs", "max_minutes")


_OPTION_NAMES = False


@contextlib.contextmanager
def option_names() -> Iterator[None]:
    """Inside, messages name settings as command-line options ("--batch-size"), not as Python names
    ("batch_size"): the command line runs its commands inside."""
    global _OPTION_NAMES
    before, _OPTION_NAMES = _OPTION_NAMES, True
    try:
        yield
    finally:
        _OPTION_NAMES = before


def setting_name(name: str) -> str:
    """How messages name the setting or argument `name`: "batch_size" in Python, "--batch-size" on the
    command line (see `option_names`)."""
    return "--" + name.replace("_", "-") if _OPTION_NAMES else name


def setting(default: Any, help: str, *, choices: Optional[Sequence[Any]] = None, min: Optional[float] = None,
            max: Optional[float] = None, min_open: bool = False, max_open: bool = False, path: bool = False,
            acts_with: Optional[Tuple[str, Tuple[Any, ...]]] = None, cli: bool = True) -> Any:
    """A settings field. `choices`, `min`/`max` (open with `min_open`/`max_open`) are checked at
    construction; `path`: a file or folder read, relative to the config file that names it; `acts_with`
    = (other setting, its values with which this one acts); `cli=False`: not a command-line option."""
    meta = dict(help=help, choices=tuple(choices) if choices is not None else None, min=min, max=max,
                min_open=min_open, max_open=max_open, path=path, acts_with=acts_with, cli=cli)
    return field(default=default, metadata=meta)


def is_path_setting(f: dataclasses.Field) -> bool:
    """A file or folder setting: declared with path=True, or named `data` / `*_data`."""
    return bool(f.metadata.get("path")) or f.name == "data" or f.name.endswith("_data")


def base_type(hint: Any) -> Tuple[type, bool]:
    """(the type, whether None is allowed) of a field's type hint: Optional[int] -> (int, True)."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) is typing.Union and type(None) in args:
        return next(a for a in args if a is not type(None)), True
    return hint, False


def settings_class(cls: Type[S]) -> Type[S]:
    """Make `cls` a frozen, keyword-only settings dataclass; its `DEFAULTS` change inherited defaults.

    The constructor records which fields were given (their source is "user", see `Settings.create` for
    others), then checks every field and the rules between them.
    """
    annotations = cls.__dict__.get("__annotations__")
    if annotations is None:
        annotations = {}
        cls.__annotations__ = annotations
    inherited = {f.name: f for base in cls.__mro__[1:] for f in getattr(base, "__dataclass_fields__", {}).values()}
    hints = typing.get_type_hints(cls)
    for name, value in cls.__dict__.get("DEFAULTS", {}).items():
        if name not in inherited:
            raise TypeError(f"{cls.__name__}.DEFAULTS: no inherited setting {name!r}")
        setattr(cls, name, field(default=value, metadata=inherited[name].metadata))
        annotations.setdefault(name, hints[name])
    cls = dataclass(frozen=True, kw_only=True)(cls)
    cls.TYPES = typing.get_type_hints(cls)  # the hints resolved once (this package writes them as strings)
    init = cls.__init__

    @functools.wraps(init)
    def __init__(self: Settings, **values: Any) -> None:
        init(self, **values)
        object.__setattr__(self, "_sources", {f.name: "user" if f.name in values else "default"
                                              for f in fields(self)})
        self._validate()

    cls.__init__ = __init__  # type: ignore[method-assign]
    return cls


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Base of every settings class: construction checks, sources, and the rules between settings."""

    DEFAULTS: ClassVar[Mapping[str, Any]] = {}
    TYPES: ClassVar[Dict[str, Any]] = {}

    @classmethod
    def create(cls: Type[S], values: Mapping[str, Any], sources: Mapping[str, str]) -> S:
        """Settings whose values came from several places: `sources[name]` is "user", "config" or "default"
        (a resumed run's default stays a default, and so stays droppable). Unknown names are an error."""
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise InputError(f"{cls.__name__}: unknown settings {', '.join(unknown)}")
        self = cls.__new__(cls)
        for f in fields(cls):
            object.__setattr__(self, f.name, values[f.name] if f.name in values else f.default)
        object.__setattr__(self, "_sources", {f.name: sources.get(f.name, "user") if f.name in values else "default"
                                              for f in fields(cls)})
        self._validate()
        return self

    @property
    def sources(self) -> Dict[str, str]:
        """Where each setting came from: "user", "config" or "default"."""
        return dict(self._sources)  # type: ignore[attr-defined]

    def explicit(self, name: str) -> bool:
        """Whether the user chose this setting (constructor, command line or config file)."""
        return self._sources.get(name, "default") != "default"  # type: ignore[attr-defined]

    def to_dict(self) -> Dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def replace(self: S, **changes: Any) -> S:
        """A copy with `changes` (named by the user); the other settings keep their sources."""
        sources = {**self._sources, **{k: "user" for k in changes}}  # type: ignore[attr-defined]
        return type(self).create({**self.to_dict(), **changes}, sources)

    # ------------------------------------------------------------------ checks
    def _validate(self) -> None:
        for f in fields(self):
            check_field(type(self).__name__, f, self.TYPES[f.name], getattr(self, f.name))
            if is_path_setting(f) and isinstance(getattr(self, f.name), (str, os.PathLike)):
                # absolute from here on: the run's config.json and checkpoint record them, and inference,
                # export and resume read them from another folder than the one training started in
                object.__setattr__(self, f.name, os.path.abspath(os.fspath(getattr(self, f.name))))
        if any(self.explicit(k) for k in BUDGETS if hasattr(self, k)):
            for k in BUDGETS + ("early_stop_patience",):
                if hasattr(self, k) and not self.explicit(k):
                    object.__setattr__(self, k, None)
        sources = self._sources  # type: ignore[attr-defined]
        for f in fields(self):
            acts = f.metadata.get("acts_with")
            # a config file's value that the command line's choice of the other setting leaves idle is no error:
            # `--config zaremba-small --schedule constant` drops the recipe's lr_gamma with its schedule
            overridden = acts and sources.get(f.name) == "config" and sources.get(acts[0]) == "user"
            if acts and self.explicit(f.name) and not overridden and getattr(self, acts[0]) not in acts[1]:
                other, values = acts
                how = "as set" if self.explicit(other) else "the default"
                this, other = setting_name(f.name), setting_name(other)
                raise InputError(f"{this} has no effect with {other} {getattr(self, acts[0])} ({how}); it acts "
                                 f"only with {other} {' or '.join(map(str, values))}: set that too, or leave it out")
        self.check()

    def check(self) -> None:
        """Rules between this application's settings (override; raise InputError)."""


def check_field(owner: str, f: dataclasses.Field, hint: Any, value: Any) -> None:
    """InputError unless `value` fits the field's type `hint`, choices and range."""
    kind, optional = base_type(hint)
    if value is None:
        if optional:
            return
        raise InputError(f"{owner}: {setting_name(f.name)} must be set; got None")
    meta = f.metadata
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    else:
        ok = isinstance(value, kind) if isinstance(kind, type) else True
    if not ok:
        raise InputError(f"{owner}: {setting_name(f.name)} must be {_a(kind)}; got {value!r}")
    if meta.get("choices") and value not in meta["choices"]:
        raise InputError(f"{owner}: {setting_name(f.name)} must be one of {', '.join(map(str, meta['choices']))}; got {value!r}")
    low, high = meta.get("min"), meta.get("max")
    if (low is not None and (value < low or (meta["min_open"] and value == low))) or \
            (high is not None and (value > high or (meta["max_open"] and value == high))):
        raise InputError(f"{owner}: {setting_name(f.name)} must be {_a(kind)} {describe_range(meta)}; got {value!r}")


def describe_range(meta: Mapping[str, Any]) -> str:
    """"in [0, 1)", ">= 1", "> 0" for a field's range."""
    low, high = meta.get("min"), meta.get("max")
    if low is not None and high is not None:
        return f"in {'(' if meta['min_open'] else '['}{low:g}, {high:g}{')' if meta['max_open'] else ']'}"
    if low is not None:
        return f"{'>' if meta['min_open'] else '>='} {low:g}"
    return f"{'<' if meta['max_open'] else '<='} {high:g}"


def _a(kind: Any) -> str:
    names = {bool: "true or false", int: "an int", float: "a number", str: "a string"}
    return names.get(kind, getattr(kind, "__name__", str(kind)))


# ---------------------------------------------------------------------- what every application has
DEVICES = ("auto", "cpu", "cuda")


@settings_class
class RunSettings(Settings):
    """The run: where it writes, how it starts, what it shows. `out` is always a run directory."""

    out: str = setting("runs/run", "Run directory: config.json, metrics.jsonl, checkpoints/, best.safetensors, "
                                   "results.md/json and the application's plots.")
    resume: bool = setting(False, "Continue the run in --out from its latest complete checkpoint.")
    overwrite: bool = setting(False, "Delete a previous run's files in --out (config, metrics, TensorBoard "
                                     "events, checkpoints, best weights) before starting a new run there.")
    init_from: Optional[str] = setting(None, "Fine-tune: start from the best weights of this run (directory or "
                                             "checkpoint, relative to the working directory) instead of random "
                                             "ones; its vocabulary or tokenizers are kept, and the model must have "
                                             "its shape.")
    allow_data_change: bool = setting(False, "With --resume: continue even if a data file changed since the run "
                                             "started (OUT/data.json).")
    quiet: bool = setting(False, "No progress bar or summaries.")
    seed: int = setting(0, "Random seed (model init, dropout, data order).")
    device: str = setting("auto", "Device: auto (CUDA when available), cpu or cuda.", choices=DEVICES)
    threads: Optional[int] = setting(None, "torch CPU threads (default: torch's choice, or OMP_NUM_THREADS).",
                                     min=1)
    tensorboard: bool = setting(True, "Write TensorBoard event files under OUT/tensorboard.")


@settings_class
class TrainingSettings(RunSettings):
    """The optimisation every application shares (see `rnnkit.training.TrainConfig`)."""

    batch_size: int = setting(32, "Examples per batch (streams per batch for the language models).", min=1)
    optimizer: str = setting("adam", "Optimizer.", choices=("adam", "adamw", "sgd", "rmsprop"))
    lr: float = setting(2e-3, "Learning rate.", min=0, min_open=True)
    weight_decay: float = setting(0.0, "Weight decay.", min=0)
    momentum: float = setting(0.0, "Momentum (sgd, rmsprop).", min=0, acts_with=("optimizer", ("sgd", "rmsprop")))
    schedule: str = setting("constant", "LR schedule.", choices=("constant", "cosine", "step", "plateau",
                                                                 "epoch_decay"))
    warmup_steps: int = setting(0, "Linear LR warm-up steps.", min=0)
    lr_gamma: float = setting(0.5, "LR factor for step/plateau/epoch_decay.", min=0, max=1, min_open=True,
                              acts_with=("schedule", ("step", "plateau", "epoch_decay")))
    lr_step_size: int = setting(1000, "Steps between LR drops (schedule=step).", min=1,
                                acts_with=("schedule", ("step",)))
    lr_decay_after_epochs: int = setting(0, "Epochs at full LR before decaying every epoch (schedule=epoch_decay).",
                                         min=0, acts_with=("schedule", ("epoch_decay",)))
    lr_min: float = setting(0.0, "Final LR of the cosine schedule.", min=0, acts_with=("schedule", ("cosine",)))
    plateau_patience: int = setting(1, "Evaluations without improvement before the plateau schedule lowers the LR.",
                                    min=0, acts_with=("schedule", ("plateau",)))
    clip_norm: Optional[float] = setting(None, "Clip gradients to this global norm.", min=0, min_open=True)
    clip_value: Optional[float] = setting(None, "Clip each gradient element to ±value.", min=0, min_open=True)
    grad_accum: int = setting(1, "Batches per optimizer step (gradient accumulation).", min=1)
    max_steps: Optional[int] = setting(None, "Stop after N optimizer steps.", min=1)
    max_epochs: Optional[int] = setting(None, "Stop after N epochs.", min=1)
    max_minutes: Optional[float] = setting(None, "Stop after M minutes of training (evaluation included).", min=0,
                                           min_open=True)
    eval_every: Optional[int] = setting(None, "Evaluate every N steps (also at each epoch's end and at the end).",
                                        min=1)
    checkpoint_every: Optional[int] = setting(None, "Checkpoint every N steps (also at the end).", min=1)
    keep_checkpoints: int = setting(3, "Checkpoints kept.", min=1)
    early_stop_patience: Optional[int] = setting(None, "Stop after N evaluations without a better validation score.",
                                                 min=1)
    precision: str = setting("fp32", "Training forward in fp32, or bf16 (torch.autocast: bfloat16 matrix products "
                                     "with float32 accumulation, fast where the CPU has AMX or AVX512-BF16; "
                                     "evaluation stays fp32), or auto: bf16 on such a CPU, else fp32.",
                             choices=("fp32", "bf16", "auto"))

    def check(self) -> None:
        if not any(getattr(self, k) is not None for k in BUDGETS + ("early_stop_patience",)):
            raise InputError(f"{type(self).__name__}: no budget: set {', '.join(map(setting_name, BUDGETS))}")

    def train_config(self, **extra: Any) -> "TrainConfig":
        """The TrainConfig made of the settings it has a field for (and `extra`)."""
        from ..training.config import TrainConfig
        names = {f.name for f in fields(TrainConfig)}
        return TrainConfig(**{k: v for k, v in self.to_dict().items() if k in names}, **extra)


@settings_class
class StreamSettings(TrainingSettings):
    """Truncated BPTT over long streams (the language models)."""

    bptt: int = setting(128, "Truncated BPTT k1: steps per chunk, one update per chunk.", min=1)
    bptt_k2: Optional[int] = setting(None, "Truncated BPTT k2 >= k1: steps each update backpropagates "
                                           "(default: k1).", min=1)

    def check(self) -> None:
        super().check()
        if self.bptt_k2 is not None and self.bptt_k2 < self.bptt:
            k1, k2 = setting_name("bptt"), setting_name("bptt_k2")
            default = "" if self.explicit("bptt") else f", the default; set {k1} to at most k2"
            raise InputError(f"{k2}: k2 must be >= k1 ({k1} {self.bptt}{default}); got {self.bptt_k2}")
