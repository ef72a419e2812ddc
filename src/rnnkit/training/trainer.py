"""The training loop: one for every application.

An application brings a model, a data source and a small task:

    class Task(Protocol):
        def loss(self, model, batch, state) -> LossResult   # summed loss, element count, carried state
        def eval_metrics(self, loss: float) -> dict          # optional, e.g. {"bpc": loss / ln 2}
        step: int                                            # optional: the loop keeps it at its optimizer step

The loop (`Trainer.fit`) is forward, loss, backward, clip, step, log, evaluate, checkpoint, stop. The
rest is done by collaborators, each in its own module with the state_dict() checkpoints are built from:

    stream.StreamCarry          the truncated-BPTT state and context one chunk hands to the next
    loggers                     metrics.jsonl, TensorBoard and the progress bar, subscribed to step/eval records
    checkpointer.Checkpointer   the run's checkpoints (checkpoint.py's atomic safetensors + JSON) and resume
    distributed.Distribution    DistributedDataParallel and the collectives that keep every rank in step
    preemption.SigtermRequest   SIGTERM as a request to stop at the next step boundary
    optim                       the optimizer and learning-rate schedule a TrainConfig names

Preemption: while `fit()` runs in the main thread of a trainer with a run
directory, SIGTERM (what clusters and `timeout` send) asks the loop to stop at
the next step boundary: it writes a checkpoint of that step (the full state, as
the periodic ones) and returns with stop reason PREEMPTED; `fit(resume=...)`
then continues with the losses of an uninterrupted run. Under DDP every rank
stops at the same step. The previous SIGTERM handler is restored when fit() returns.

Data: any object with `batches(epoch, start) -> Iterator[batch]` (the batches of
one epoch, from index `start`, so a resumed run continues mid-epoch) and
optionally `__len__` (batches per epoch). Batches that are `StreamBatch` chunks
are consecutive pieces of parallel streams: the final state of one chunk is
detached and carried into the next (truncated BPTT(k1, k2), see stream.py). Any other batch is a
complete sequence: full BPTT, no state carried.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from ..data.streams import StreamBatch
from ..errors import InputError, InputTypeError
from .checkpointer import Checkpointer, check_run_info
from .config import TrainConfig, resolved_precision
from .distributed import Distribution
from .loggers import JsonlLog, Logger, ProgressBar, TensorBoardLog
from .optim import build_optimizer, build_scheduler
from .preemption import SigtermRequest
from .stream import StreamCarry, detach_state, map_tensors
from .task import LossResult, State, Task, TrainingError

# the loop's own names, and those applications and the CLI import from here
__all__ = ["Trainer", "PREEMPTED", "HOOK_NAMES", "CLOCK_FUNCTIONS", "LossResult", "Task", "State", "TrainingError",
           "detach_state", "check_run_info"]

Hook = Callable[..., None]
HOOK_NAMES = ("step_end", "eval_end", "checkpoint", "fit_end")
#: TrainConfig.clock -> the clock it reads (seconds; only differences are used)
CLOCK_FUNCTIONS: Dict[str, Callable[[], float]] = {"wall": time.monotonic, "cpu": time.process_time}
#: fit()'s stop reason when SIGTERM stopped it (after a checkpoint of the last step)
PREEMPTED = "preempted (SIGTERM)"


@dataclass
class _Accumulation:
    """Micro-batches summed since the last optimizer step (gradient accumulation)."""

    micro: int = 0
    loss: float = 0.0
    count: float = 0.0

    def add(self, loss: float, count: float) -> None:
        self.micro, self.loss, self.count = self.micro + 1, self.loss + loss, self.count + count

    def take(self) -> Tuple[float, float]:
        """(summed loss, element count) of the micro-batches; starts a new accumulation."""
        taken = (self.loss, self.count)
        self.micro, self.loss, self.count = 0, 0.0, 0.0
        return taken


class Trainer:
    """Fit `model` on `train_data` through `task`.

    Args:
        model: the nn.Module whose parameters are trained (moved to `device`).
        task: see the module docstring.
        train_data, val_data: data sources (see the module docstring); val_data optional.
        config: TrainConfig.
        out_dir: run directory for metrics.jsonl, tensorboard/ and checkpoints/;
            None: nothing is written.
        run_info: JSON-able description stored in every checkpoint (model
            config, vocabulary, data); a resumed run must match it.
        device: where the model and batches live (default: the model's).
    """

    def __init__(self, model: nn.Module, task: Task, train_data: Any, config: TrainConfig, *,
                 val_data: Any = None, out_dir: Optional[Union[str, Path]] = None,
                 run_info: Optional[Dict[str, Any]] = None, device: Optional[torch.device] = None) -> None:
        if not isinstance(config, TrainConfig):
            raise InputTypeError(f"Trainer: config must be a TrainConfig; got {type(config).__name__}")
        if not hasattr(train_data, "batches"):
            raise InputTypeError("Trainer: train_data must have a batches(epoch, start) method")
        if not any(p.requires_grad for p in model.parameters()):
            raise InputError("Trainer: the model has no trainable parameters")
        self.config, self.task = config, task
        self.train_data, self.val_data = train_data, val_data
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.run_info = run_info or {}
        self.device = device if device is not None else next(model.parameters()).device
        self.model = model.to(self.device)
        # collaborators
        self.distribution = Distribution(self.device)
        self.dist, self.rank = self.distribution.dist, self.distribution.rank
        self.world_size, self.is_main = self.distribution.world_size, self.distribution.is_main
        self.train_model: nn.Module = self.distribution.wrap(self.model)
        self.stream = StreamCarry(task, config.bptt_k2)
        self.checkpointer = Checkpointer(self.out_dir / "checkpoints" if self.out_dir is not None else None,
                                         config.keep_checkpoints, self.distribution)
        self.metrics_log = JsonlLog(self.out_dir / "metrics.jsonl" if self.out_dir is not None and self.is_main
                                    else None, config.log_every)
        self.sigterm = SigtermRequest()
        self.hooks: Dict[str, List[Hook]] = {name: [] for name in HOOK_NAMES}
        self._loggers: List[Logger] = []
        # counters (all restored on resume)
        self.step = 0
        self.epoch = 0
        self.batch_index = 0  # batches of the current epoch already consumed
        self.tokens = 0
        self.elapsed_before = 0.0
        self.best: Optional[float] = None
        self.bad_evals = 0
        self.last_eval_step = -1
        self._last_train_loss: Optional[float] = None
        self._clock = CLOCK_FUNCTIONS[config.clock]
        self._t0: Optional[float] = None  # the clock's reading when this process's fit() started
        self._next_eval_time = math.inf  # clock reading (elapsed()) of the next time-based evaluation
        self._accumulated = _Accumulation()
        self.last_checkpoint_step = -1
        self.last_checkpoint: Optional[Path] = None  # record of the newest checkpoint this process wrote
        self.history: List[Dict[str, Any]] = []  # eval records of this process
        self.total_steps = self._total_steps()
        self.precision = resolved_precision(config.precision, self.device)  # "auto" resolved for this device
        if config.schedule == "cosine" and self.total_steps is None and config.max_minutes is None:
            raise InputError("schedule 'cosine' needs max_steps, max_minutes, or max_epochs with data of known "
                             "length (the length of the cosine)")
        self.optimizer = build_optimizer((p for p in self.model.parameters() if p.requires_grad), config)
        # _epoch_scheduler: stepped at epoch ends (epoch_decay), not after every optimizer step
        self.scheduler, self._epoch_scheduler = build_scheduler(self.optimizer, config,
                                                                lambda: self._cosine_factor())

    # ---------------------------------------------------------------- fit
    def fit(self, resume: Optional[Union[str, Path]] = None) -> Dict[str, Any]:
        """Train until a limit is reached; returns a summary (step, epoch, last eval, stop reason, the
        newest checkpoint's record). Stop reason PREEMPTED: SIGTERM arrived (see the module docstring).

        `resume`: a checkpoint or run directory to continue from (exactly: same
        losses step for step as an uninterrupted run with the same seed).
        """
        c = self.config
        self._start(resume)  # restore or seed, open the loggers, start the clocks
        stop: Optional[str] = None
        try:
            with self.sigterm.catching(enabled=self.out_dir is not None):
                while stop is None:
                    stop = self._epoch_or_step_limit()
                    if stop:
                        break
                    for batch in self.train_data.batches(self.epoch, self.batch_index):
                        self.batch_index += 1
                        last_micro = self._accumulated.micro + 1 == c.grad_accum
                        self._backward(batch, sync=last_micro)
                        if not last_micro:
                            continue
                        record = self._with_rates(self._optimizer_step(*self._accumulated.take()))
                        self._log(record)
                        self._fire("step_end", record)
                        if (c.eval_every and self.step % c.eval_every == 0) or self._eval_time_due():
                            stop = self._evaluate_and_track() or stop
                        stop = stop or self._time_or_step_limit() or self._preempted()
                        if c.checkpoint_every and self.step % c.checkpoint_every == 0:
                            self.save(self._clock() - self._t0)
                        if stop:
                            break
                    else:  # the epoch is exhausted
                        stop = self._end_epoch()
                # preempted: no evaluation (the grace period is short, and the uninterrupted run has none here)
                if self.val_data is not None and self.last_eval_step != self.step and stop != PREEMPTED:
                    self._evaluate_and_track()
                if self.out_dir is not None and self.last_checkpoint_step != self.step:
                    self.save(self._clock() - self._t0)
        finally:
            self._close_loggers()
        summary = {"step": self.step, "epoch": self.epoch, "stop": stop, "tokens": self.tokens,
                   "elapsed_s": self.elapsed(), "checkpoint": self.last_checkpoint,
                   "last_eval": self.history[-1] if self.history else None}
        self._fire("fit_end", summary)
        return summary

    def _start(self, resume: Optional[Union[str, Path]]) -> None:
        if resume is not None:
            self.load(resume)
        else:
            torch.manual_seed(self.config.seed + self.rank)
        self._open_loggers(resumed=resume is not None)
        self._t0 = self._clock()
        self._wall0 = time.monotonic()  # tokens/s is a throughput: always per wall-clock second
        self._tokens_at_start = self.tokens
        if self.config.eval_every_minutes is not None:
            self._next_eval_time = self._next_eval_boundary(self.elapsed_before)
        self._accumulated = _Accumulation()
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)

    def _backward(self, batch: Any, sync: bool) -> None:
        """Loss of one micro-batch, backpropagated with the scale that makes the update the mean over all
        ranks and micro-batches (gradients are all-reduced only when `sync`)."""
        c = self.config
        with self.distribution.no_sync(self.train_model, sync):
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
                loss_sum, count, sequences = self._batch_loss(self.train_model, batch)
            g_sum, g_count, g_seq = self.distribution.all_sum(float(loss_sum.detach()), float(count), float(sequences))
            denom = g_count if c.loss_normalization == "token" else g_seq
            if denom > 0:
                (loss_sum * (self.world_size / (denom * c.grad_accum))).backward()
        self._accumulated.add(g_sum, g_count)

    def _batch_loss(self, model: nn.Module, batch: Any) -> Tuple[Tensor, Tensor, int]:
        if hasattr(self.task, "step"):
            self.task.step = self.step  # e.g. scheduled sampling follows the optimizer step
        if isinstance(batch, StreamBatch):
            return self._run_stream(model, batch.to(self.device))
        r = self.task.loss(model, map_tensors(lambda t: t.to(self.device), batch), None)
        return r.loss_sum, torch.as_tensor(r.count, dtype=torch.float32, device=self.device), r.sequences

    def _run_stream(self, model: nn.Module, batch: StreamBatch) -> Tuple[Tensor, Tensor, int]:
        """Truncated BPTT over one chunk: (loss_sum, count, sequences); moves the stream carry on."""
        return self.stream.run(self.model, model, batch, self.device)

    def _optimizer_step(self, loss_sum: float, count: float) -> Dict[str, Any]:
        c = self.config
        if c.clip_value is not None:
            torch.nn.utils.clip_grad_value_(self.model.parameters(), c.clip_value)
        params = [p for p in self.model.parameters() if p.grad is not None]
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, c.clip_norm if c.clip_norm else math.inf))
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        if self.scheduler is not None and not self._epoch_scheduler and not isinstance(
                self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step()
        self.tokens += int(count)
        loss = loss_sum / count if count else float("nan")
        if not math.isfinite(loss):
            raise TrainingError(f"the training loss became {loss} at step {self.step}; lower the learning rate "
                                f"or clip gradients (clip_norm)")
        return {"kind": "train", "step": self.step, "epoch": self.epoch, "loss": loss, "lr": lr,
                "grad_norm": grad_norm, "tokens": self.tokens}

    def _with_rates(self, record: Dict[str, Any]) -> Dict[str, Any]:
        """`record` with this process's tokens per wall-clock second and the training time so far."""
        record["tokens_per_s"] = (self.tokens - self._tokens_at_start) / max(time.monotonic() - self._wall0, 1e-9)
        record["elapsed_s"] = self.elapsed()
        return record

    def _end_epoch(self) -> Optional[str]:
        """Close the epoch: a last (partial) accumulation still updates, the streams start over, an
        evaluation unless this step had one; returns the stop reason, if any."""
        if self._accumulated.micro:
            self._log(self._optimizer_step(*self._accumulated.take()))
        self.epoch += 1
        self.batch_index = 0
        self.stream.reset()
        stop = None
        if self.val_data is not None and self.last_eval_step != self.step:
            stop = self._evaluate_and_track()
        if self._epoch_scheduler:
            self.scheduler.step()  # epoch_decay
        return stop or self._time_or_step_limit()

    # ------------------------------------------------------------ budgets
    def elapsed(self) -> float:
        """Seconds of training so far on `config.clock`, earlier (resumed-from) runs included."""
        return self.elapsed_before + (self._clock() - self._t0 if self._t0 is not None else 0.0)

    def _total_steps(self) -> Optional[int]:
        """Optimizer steps the run is set to take: max_steps, else max_epochs × batches per epoch (None when
        neither is known; max_minutes may still end it sooner)."""
        c = self.config
        if c.max_steps is not None:
            return c.max_steps
        if c.max_epochs is not None and _len(self.train_data):
            return c.max_epochs * -(-_len(self.train_data) // c.grad_accum)
        return None

    def _cosine_factor(self) -> float:
        c = self.config
        progress = 0.0
        if self.total_steps is not None:
            progress = (self.step - c.warmup_steps) / max(1, self.total_steps - c.warmup_steps)
        if c.max_minutes is not None:
            progress = max(progress, self.elapsed() / (60.0 * c.max_minutes))
        floor = c.lr_min / c.lr
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, max(0.0, progress))))

    def _epoch_or_step_limit(self) -> Optional[str]:
        c = self.config
        if c.max_epochs is not None and self.epoch >= c.max_epochs:
            return "max_epochs"
        if c.max_steps is not None and self.step >= c.max_steps:
            return "max_steps"
        return None

    def _time_or_step_limit(self) -> Optional[str]:
        c = self.config
        if c.max_steps is not None and self.step >= c.max_steps:
            return "max_steps"
        if c.max_minutes is not None and self.distribution.any_rank(self.elapsed() >= 60.0 * c.max_minutes):
            return "max_minutes"
        return None

    def _preempted(self) -> Optional[str]:
        """PREEMPTED once SIGTERM has reached any rank: every rank must stop at the same step."""
        return PREEMPTED if self.distribution.any_rank(self.sigterm.requested) else None

    def _next_eval_boundary(self, elapsed: float) -> float:
        """The first multiple of `eval_every_minutes` after `elapsed` seconds."""
        period = 60.0 * self.config.eval_every_minutes
        return (math.floor(elapsed / period) + 1) * period

    def _eval_time_due(self) -> bool:
        """True when `eval_every_minutes` of the clock have passed since the last time-based evaluation
        (the same answer on every rank: an evaluation is a collective under DDP)."""
        if self.config.eval_every_minutes is None or self.val_data is None:
            return False
        due = self.distribution.any_rank(self.elapsed() >= self._next_eval_time)
        if due:
            self._next_eval_time = self._next_eval_boundary(self.elapsed())
        return due

    # ----------------------------------------------------------- evaluate
    @torch.no_grad()
    def evaluate(self, data: Any = None, prefix: str = "val") -> Dict[str, float]:
        """Mean loss per element over one pass of `data` (default: val_data), plus the
        task's derived metrics, keys prefixed with `prefix`_ (e.g. val_loss, val_bpc)."""
        data = self.val_data if data is None else data
        was_training = self.model.training
        self.model.eval()
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        count = torch.zeros((), dtype=torch.float64, device=self.device)
        sums: Dict[str, Tensor] = {}  # the task's per-element quantities (LossResult.sums)
        state = None
        try:
            for batch in data.batches(0, 0):
                if isinstance(batch, StreamBatch):
                    r = self.task.loss(self.model, batch.to(self.device), state)
                    state = r.state
                else:
                    r = self.task.loss(self.model, map_tensors(lambda t: t.to(self.device), batch), None)
                total += r.loss_sum.double()
                count += float(r.count)
                for name, value in (r.sums or {}).items():
                    sums[name] = sums.get(name, 0.0) + torch.as_tensor(value, dtype=torch.float64)
        finally:
            self.model.train(was_training)
        s, n, *summed = self.distribution.all_sum(float(total), float(count), *(float(v) for v in sums.values()))
        loss = s / n if n else float("nan")
        metrics = {f"{prefix}_loss": loss}
        metrics.update({f"{prefix}_{name}": (v / n if n else float("nan")) for name, v in zip(sums, summed)})
        extra = getattr(self.task, "eval_metrics", None)
        if extra is not None:
            metrics.update({f"{prefix}_{k}": v for k, v in extra(loss).items()})
        return metrics

    def _evaluate_and_track(self) -> Optional[str]:
        if self.val_data is None:
            return None
        c = self.config
        elapsed = self.elapsed()  # before the evaluation: the time the evaluated weights had trained
        metrics = self.evaluate()
        self.last_eval_step = self.step
        record = {"kind": "eval", "step": self.step, "epoch": self.epoch, "elapsed_s": elapsed,
                  "loss": self._last_train_loss, **metrics}
        self.history.append(record)
        self._log(record)
        self._fire("eval_end", record)
        value = metrics.get(c.early_stop_metric)
        if value is None:
            raise InputError(f"early_stop_metric {c.early_stop_metric!r} is not among the evaluation metrics "
                             f"{sorted(metrics)}")
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(value)
        if self.best is None or value < self.best:
            self.best, self.bad_evals = value, 0
        else:
            self.bad_evals += 1
        if c.early_stop_patience and self.bad_evals >= c.early_stop_patience:
            return "early_stop"
        return None

    # ------------------------------------------------------ hooks, logging
    def add_hook(self, name: str, fn: Hook) -> None:
        """Call `fn(trainer, record)` at `name` (one of HOOK_NAMES)."""
        if name not in self.hooks:
            raise InputError(f"hook must be one of {HOOK_NAMES}; got {name!r}")
        self.hooks[name].append(fn)

    def _fire(self, name: str, *args: Any) -> None:
        for fn in self.hooks[name]:
            fn(self, *args)

    def _open_loggers(self, resumed: bool) -> None:
        """The subscribers of step and eval records: rank 0 only; files only with a run directory."""
        self._loggers = []
        if not self.is_main:
            return
        if not self.config.quiet:
            minutes = self.config.max_minutes
            self._loggers.append(ProgressBar(self.total_steps, self.step, 60.0 * minutes if minutes else None))
        if self.out_dir is not None:
            self.metrics_log.open(resumed)
            self._loggers.append(self.metrics_log)
            if self.config.tensorboard:
                self._loggers.append(TensorBoardLog(self.out_dir / "tensorboard", self.step if resumed else None))

    def _close_loggers(self) -> None:
        for logger in self._loggers:
            logger.close()
        self._loggers = []

    def _log(self, record: Dict[str, Any]) -> None:
        if record["kind"] == "train":
            self._last_train_loss = record["loss"]
        for logger in self._loggers:
            (logger.train if record["kind"] == "train" else logger.eval)(record)

    # -------------------------------------------------------- checkpoints
    def _counters(self, elapsed: float) -> Dict[str, Any]:
        return {"step": self.step, "epoch": self.epoch, "batch_index": self.batch_index, "tokens": self.tokens,
                "elapsed_s": self.elapsed_before + elapsed, "best": self.best, "bad_evals": self.bad_evals,
                "last_eval_step": self.last_eval_step, "last_train_loss": self._last_train_loss,
                **self.metrics_log.state_dict()}

    def _load_counters(self, n: Dict[str, Any]) -> None:
        self.step, self.epoch, self.batch_index = n["step"], n["epoch"], n["batch_index"]
        self.tokens, self.elapsed_before, self.best = n["tokens"], n["elapsed_s"], n["best"]
        self.bad_evals, self.last_eval_step = n["bad_evals"], n["last_eval_step"]
        self._last_train_loss = n.get("last_train_loss")
        self.metrics_log.load_state_dict(n)

    def state_tensors_and_meta(self, elapsed: float) -> Tuple[Dict[str, Tensor], Dict[str, Any]]:
        """A checkpoint's (tensors, JSON record): `elapsed` seconds of this process's fit() so far."""
        local = {**self.stream.state_dict(), "rng": torch.get_rng_state()}  # this rank's
        if torch.cuda.is_available() and self.device.type == "cuda":
            local["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        meta = {"run": self.run_info, "train_config": self.config.to_dict(), "counters": self._counters(elapsed),
                "history": self.history}
        return self.checkpointer.assemble(self.model, self.optimizer, self.scheduler, local, meta)

    def save(self, elapsed: float = 0.0) -> Optional[Path]:
        """Write a checkpoint of the current step (rank 0 writes; every rank takes part)."""
        if self.out_dir is None:
            return None
        path = self.checkpointer.save(self.step, *self.state_tensors_and_meta(elapsed))
        if path is not None:
            self.last_checkpoint = path
            self._fire("checkpoint", path)
        self.last_checkpoint_step = self.step
        return path

    def load(self, source: Union[str, Path]) -> Path:
        """Restore everything from a checkpoint (file or run directory); returns its record path."""
        record, meta, tensors = self.checkpointer.load(source, self.run_info)
        local = self.checkpointer.restore(record, meta, tensors, self.model, self.optimizer, self.scheduler)
        self._load_counters(meta["counters"])
        self.last_checkpoint_step, self.last_checkpoint = self.step, record
        self.history = list(meta.get("history", []))
        self.stream.load_state_dict(local, self.device)
        torch.set_rng_state(local["rng"])
        if "cuda_rng" in local and self.device.type == "cuda":
            torch.cuda.set_rng_state(local["cuda_rng"], self.device)
        return record


def _len(data: Any) -> Optional[int]:
    try:
        return len(data)
    except TypeError:
        return None
