"""One runner for every application: settings in, a trained `Run` out.

An application is a `Recipe`: its settings class, `prepare` (data, model, task, run info) and
`finish` (the final evaluation, written to OUT/results.md and results.json). The runner does
the rest the same way for all of them:

1. check the run directory (a previous run needs resume or overwrite), fingerprint the data;
2. `prepare` (a resumed run hands over its checkpoint's run info: the same vocabulary);
3. write config.json, train with `rnnkit.training.Trainer`, keeping the weights with the best
   validation score in OUT/best.safetensors;
4. restore the best weights, evaluate the test data, `finish`, and return the `Run`.

`load` rebuilds a `Run` from a run directory or checkpoint for inference (best weights first).
"""

from __future__ import annotations

import gc
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import torch
from torch import nn

from ..errors import InputError, MissingExtraError
from ..training.checkpoint import (CheckpointError, latest_checkpoint, list_checkpoints, read_checkpoint_meta,
                                   read_checkpoint, resolve_checkpoint, sub_dict, write_json_atomic,
                                   write_safetensors_atomic)
from ..training.trainer import PREEMPTED, Trainer, check_run_info
from .rundir import apply_threads, check_new_run, checked_data_fingerprint, open_run_dir, run_device
from .settings import TrainingSettings, setting_name

#: a score of the model on validation data, lower is better (e.g. 1 − SSIM), and its name
Selection = Tuple[str, Callable[[nn.Module], float]]


@dataclass
class Prepared:
    """What an application's `prepare` hands the runner."""

    model: nn.Module
    task: Any
    train_data: Any
    val_data: Any = None
    #: evaluated with the task's loss after training (test_loss and the task's metrics)
    test_data: Any = None
    #: JSON-able, stored in every checkpoint: the model description and what inference needs with it
    info: Dict[str, Any] = field(default_factory=dict)
    #: lines shown before training (what was read, how it was split)
    report: List[str] = field(default_factory=list)
    #: the best weights by this score instead of the validation loss
    select: Optional[Selection] = None
    #: a tiny forward and backward before the clock starts (kernels that compile on first use)
    warm_up: Optional[Callable[[nn.Module, torch.device], None]] = None


@dataclass
class Run:
    """A trained application (from `train`) or one loaded from its run directory (from `load`)."""

    app: str
    model: nn.Module
    info: Dict[str, Any]
    out: Optional[Path] = None
    settings: Optional[TrainingSettings] = None
    #: the training summary: stop reason, step, epoch, elapsed_s, last evaluation, best score
    summary: Dict[str, Any] = field(default_factory=dict)
    #: the final evaluation (results.json)
    results: Dict[str, Any] = field(default_factory=dict)
    #: what the application read from `info` for inference (vocabulary, tokenizers, scaler)
    extras: Dict[str, Any] = field(default_factory=dict)

    @property
    def preempted(self) -> bool:
        """Whether SIGTERM stopped the run (after its checkpoint): it is not finished."""
        return self.summary.get("stop") == PREEMPTED

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


@dataclass
class Recipe:
    """An application as the runner sees it (one per module of `rnnkit.apps`)."""

    name: str
    settings: type
    prepare: Callable[[Any, Optional[Dict[str, Any]], int, int], Prepared]
    finish: Callable[[Run], Dict[str, Any]]
    #: rebuilds the model from info["model"] (for `load` and resume)
    build_model: Callable[[Dict[str, Any]], nn.Module]
    #: reads what inference needs from a run's info into Run.extras (raise KeyError/ValueError if malformed)
    load_extras: Optional[Callable[[Dict[str, Any]], Dict[str, Any]]] = None
    #: trains under torchrun (each process its share of the data)
    distributed: bool = False
    #: the optional dependencies it needs: (extra, command) for `require_extra`
    extra: Optional[str] = None

    def train(self, settings: Optional[TrainingSettings] = None, **changes: Any) -> Run:
        """Train with `settings` (default: the application's defaults), changed by `changes`."""
        s = settings if settings is not None else self.settings(**changes)
        if settings is not None and changes:
            s = settings.replace(**changes)
        if not isinstance(s, self.settings):
            raise InputError(f"{self.name}: settings must be {self.settings.__name__}; got {type(s).__name__}")
        return run(self, s)

    def load(self, path: Union[str, Path], device: Union[str, torch.device] = "cpu") -> Run:
        return load(path, device, recipe=self)


def say(settings: TrainingSettings, line: str, err: bool = False) -> None:
    """One line for the user, unless quiet."""
    if not settings.quiet:
        print(f"rnnkit: {line}", file=sys.stderr if err else sys.stdout, flush=True)


def _precision_words(asked: str, trainer: Trainer) -> str:
    """The training precision as run, and why where "auto" chose it."""
    if asked != "auto":
        return asked
    why = "bfloat16 units here" if trainer.precision == "bf16" else "no bfloat16 units usable here"
    return f"{trainer.precision} (auto: {why})"


def run(recipe: Recipe, s: TrainingSettings) -> Run:
    """Train `recipe` with settings `s` (see the module docstring)."""
    if recipe.extra:
        from .._optional import require_extra
        require_extra(recipe.extra, f"rnnkit train {recipe.name}")
    out = Path(s.out)
    rank, world, device = start_processes(s.device, recipe)
    check_new_run(s, out, is_main=rank == 0)
    record = resume_record(out) if s.resume else None
    if s.resume and record is None:
        say(s, f"nothing to resume in {str(out)!r}; starting a new run", err=True)
    data = checked_data_fingerprint(s, out, resuming=record is not None)
    apply_threads(s)
    # the run info only: the trainer reads (and checks) the tensors when it resumes
    resumed = read_checkpoint_meta(record).get("run") if record is not None else None
    start = initial_run(recipe, s) if record is None else None
    torch.manual_seed(s.seed)  # the same initial weights on every rank
    p = recipe.prepare(s, resumed if start is None else start.info, rank, world)  # a fine-tune keeps its vocabulary
    info = json.loads(json.dumps({"recipe": recipe.name, **p.info}))
    if resumed is not None:
        check_run_info(resumed, info, record)
    if start is not None:
        load_initial_weights(p.model, start, info)
    if p.warm_up is not None:
        p.warm_up(p.model, device)
    elif device.type == "cpu":  # the fused kernels compile on first use: now, not inside max_minutes
        from ..backends import extension
        extension.load()
    if rank == 0:  # everything was checked: only now does the run directory appear
        open_run_dir(out, s, record is not None, {**info, "world_size": world}, data)
    for line in p.report if rank == 0 else ():
        say(s, line)
    if start is not None and rank == 0:
        say(s, f"fine-tuning: starts from the best weights of {s.init_from}, with its vocabulary or tokenizers")
    trainer = Trainer(p.model, p.task, p.train_data, s.train_config(), val_data=p.val_data, out_dir=out,
                      run_info=info, device=device)
    if rank == 0:
        n_params = sum(q.numel() for q in p.model.parameters())
        say(s, f"{recipe.name}: {n_params:,} parameters, {len(p.train_data) if hasattr(p.train_data, '__len__') else '?'}"
               f" batches/epoch, world size {world}, device {device}, {_precision_words(s.precision, trainer)} -> {out}")
    best = BestWeights(out, p.select, record, enabled=rank == 0)
    trainer.add_hook("eval_end", best.offer)
    summary = trainer.fit(resume=record)
    summary["is_main"] = rank == 0
    result = Run(recipe.name, p.model, info, out, s, summary)
    if not result.preempted:
        best.restore(p.model)
        summary["best"] = {best.name: best.value}
        summary["best_eval"] = best.scores or None
        if p.test_data is not None:
            summary["test"] = test_evaluation(trainer, p.test_data, out, rank)
        if rank == 0:
            say(s, f"stopped ({summary['stop']}) at step {summary['step']}, epoch {summary['epoch']}, "
                   f"{summary['elapsed_s']:.0f} s; best {best.name} "
                   f"{'none (no evaluation)' if best.value is None else f'{best.value:.4f}'}"
                   + (" (weights restored from best.safetensors)" if best.saved else ""))
            result.results = recipe.finish(result)
            markdown = write_results(out, result.results)
            say(s, f"results ({out / 'results.md'}, results.json):\n\n{markdown.rstrip()}\n" if markdown
                else f"results: {out / 'results.json'}")
    stop_processes(trainer, world)
    return result


def initial_run(recipe: Recipe, s: TrainingSettings) -> Optional[Run]:
    """The run named by `init_from` (its best weights), or None."""
    if s.init_from is None:
        return None
    try:
        return load(s.init_from, recipe=recipe)
    except CheckpointError as err:
        raise InputError(f"{setting_name('init_from')} {s.init_from!r}: {err}") from None


def load_initial_weights(model: torch.nn.Module, start: Run, info: Dict[str, Any]) -> None:
    """Copy `start`'s weights into `model`; an InputError names the first model setting that differs."""
    theirs, ours = start.info.get("model") or {}, info.get("model") or {}
    differ = [k for k in sorted(set(theirs) | set(ours)) if theirs.get(k) != ours.get(k)]
    if differ:
        k = differ[0]
        raise InputError(f"{setting_name('init_from')} {str(start.out or '')!r}: its model has {k} "
                         f"{theirs.get(k)!r}, this run's {ours.get(k)!r}; a fine-tune keeps the model's shape"
                         + (f" ({len(differ) - 1} more settings differ)" if len(differ) > 1 else ""))
    model.load_state_dict(start.model.state_dict(), strict=True)


def resume_record(out: Path) -> Optional[Path]:
    """The checkpoint a resumed run continues from (None: nothing to resume); CheckpointError when every
    checkpoint there is incomplete or corrupt."""
    record = latest_checkpoint(out)
    if record is None and list_checkpoints(out / "checkpoints"):
        raise CheckpointError(f"resume: no complete checkpoint in {str(out)!r} (every checkpoint there is "
                              f"incomplete or corrupt)")
    return record


def test_evaluation(trainer: Trainer, data: Any, out: Path, rank: int) -> Dict[str, float]:
    """The task's loss and metrics on `data` (test_loss, test_ppl, ...), appended to metrics.jsonl."""
    test = trainer.evaluate(data, prefix="test")
    if rank == 0:
        with open(out / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"kind": "test", "step": trainer.step, "loss": test["test_loss"], **test}) + "\n")
    return test


def write_results(out: Path, results: Dict[str, Any]) -> Optional[str]:
    """OUT/results.json (the numbers) and OUT/results.md (results["markdown"], the table people read, which
    is returned)."""
    markdown = results.pop("markdown", None)
    write_json_atomic(out / "results.json", results)
    if markdown:
        (out / "results.md").write_text(markdown.rstrip() + "\n", encoding="utf-8")
    return markdown


class BestWeights:
    """Keeps the weights with the best validation score in OUT/best.safetensors (and its score in
    OUT/best.json), so that a run that overfits late still reports and ships its best model."""

    def __init__(self, out: Path, select: Optional[Selection], record: Optional[Path], enabled: bool) -> None:
        self.path, self.json = out / "best.safetensors", out / "best.json"
        self.name, self.score = select if select is not None else ("val_loss", None)
        self.enabled = enabled
        self.value: Optional[float] = None
        self.scores: Dict[str, float] = {}  # the validation scores of the kept weights
        if record is not None and self.path.exists() and self.json.exists():  # a resumed run keeps its best
            kept = json.loads(self.json.read_text())
            self.value, self.scores = kept["value"], kept.get("scores", {})

    @property
    def saved(self) -> bool:
        return self.path.exists()

    def offer(self, trainer: Trainer, record: Dict[str, Any]) -> None:
        value = record.get("val_loss") if self.score is None else self.score(trainer.model)
        if self.enabled and value is not None and (self.value is None or value < self.value):
            self.value = value
            self.scores = {k: v for k, v in record.items() if k.startswith("val_")}
            write_safetensors_atomic(self.path, trainer.model.state_dict())
            write_json_atomic(self.json, {"step": trainer.step, self.name: value, "value": value,
                                          "scores": self.scores})

    def restore(self, model: nn.Module) -> None:
        if self.saved:
            model.load_state_dict(read_weights(self.path))


def final_scores(summary: Dict[str, Any]) -> Dict[str, float]:
    """The val_* scores of the weights the run keeps (the best evaluation's; the last one's when no best
    weights were saved) and the test_* scores the runner measured on them."""
    scores = {**(summary.get("best_eval") or summary.get("last_eval") or {}), **(summary.get("test") or {})}
    return {k: v for k, v in scores.items() if k.startswith(("val_", "test_"))}


def read_weights(path: Path) -> Dict[str, torch.Tensor]:
    """The tensors of a safetensors file (best.safetensors)."""
    from safetensors.torch import load as st_load
    return st_load(Path(path).read_bytes())


# ---------------------------------------------------------------------- processes
def start_processes(device: str, recipe: Recipe) -> Tuple[int, int, torch.device]:
    """(rank, world size, device); initialises torch.distributed under torchrun (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = run_device(device)
    if world == 1:
        return 0, 1, dev
    if not recipe.distributed:
        raise InputError(f"{recipe.name} trains in one process; torchrun is supported for the language models")
    import torch.distributed as dist
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    if dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(dev)
    return dist.get_rank(), world, dev


def stop_processes(trainer: Trainer, world: int) -> None:
    """Under torchrun: the DDP wrapper (and its gloo reducer) goes before its process group (torn down
    afterwards, it hung the process now and then: ~1 of 8 two-process runs), then the group."""
    if world > 1:
        import torch.distributed as dist
        del trainer
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()


# ---------------------------------------------------------------------- loading
def load(path: Union[str, Path], device: Union[str, torch.device] = "cpu", recipe: Optional[Recipe] = None,
         extras: bool = True) -> Run:
    """The `Run` of a run directory or checkpoint, in eval mode on `device`; best.safetensors wins.

    Without `recipe`, the application is the one the checkpoint names; `extras=False` skips what only
    inference needs (tokenizers, vocabularies). Never runs code from the file."""
    from . import recipe_of
    record = resolve_checkpoint(path)
    meta = read_checkpoint_meta(record)
    info = meta.get("run") or {}
    name = info.get("recipe")
    if recipe is None:
        recipe = recipe_of(name, record)
    elif name != recipe.name:
        raise CheckpointError(f"checkpoint {str(record)!r} is not a {recipe.name} run (recipe {name!r})")
    try:
        model = recipe.build_model(info["model"])
        extras_ = recipe.load_extras(info) if recipe.load_extras is not None and extras else {}
    except MissingExtraError:
        raise  # an optional package to install (a SentencePiece tokenizer), not a malformed file
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint {str(record)!r} has a malformed model description ({err})") from None
    best = Path(path) / "best.safetensors"
    # the best weights when the run kept them; else the checkpoint's (read, and checked, only then)
    weights = read_weights(best) if best.is_file() else sub_dict(read_checkpoint(record)[1], "model")
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint {str(record)!r} does not fit its own model description: "
                              f"{' '.join(str(err).split()[:30])}") from None
    out = record.parent.parent if record.parent.name == "checkpoints" else None
    summary = {"step": meta.get("step"), "checkpoint": record}
    return Run(name, model.to(torch.device(device)).eval(), info, out, None, summary, extras=extras_)
