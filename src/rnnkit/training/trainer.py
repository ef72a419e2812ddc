"""The training loop: one for every application.

An application brings a model, a data source and a small task:

    class Task(Protocol):
        def loss(self, model, batch, state) -> LossResult   # summed loss, element count, carried state
        def eval_metrics(self, loss: float) -> dict          # optional, e.g. {"bpc": loss / ln 2}

The trainer owns everything else: optimizer, LR schedule, clipping, gradient
accumulation, (truncated) BPTT state carry, evaluation, early stopping,
checkpoints, resume, logging (JSONL, TensorBoard, tqdm) and data parallelism
(DistributedDataParallel when torch.distributed is initialised).

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
detached and carried into the next (truncated BPTT). Any other batch is a
complete sequence: full BPTT, no state carried.

Truncated BPTT(k1, k2): each chunk holds k1 new steps (one update per chunk);
the update backpropagates through the last k2 >= k1 steps. For k2 > k1 the
trainer keeps the previous k2 − k1 steps of input as context, re-runs them from
the state carried at the window's start, takes the loss on the k1 new steps
only, and carries the (detached) state at the start of the next window. Resets
(`StreamBatch.reset`) are applied by the task at the chunk boundaries where
they occur.
"""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Protocol, Tuple, Union

import torch
from torch import Tensor, nn

from .._optional import require
from ..data.streams import StreamBatch
from . import checkpoint as ckpt
from .config import TrainConfig
from ..errors import InputError, InputTypeError

State = Any
Hook = Callable[..., None]
HOOK_NAMES = ("step_end", "eval_end", "checkpoint", "fit_end")
#: TrainConfig.clock -> the clock it reads (seconds; only differences are used)
CLOCK_FUNCTIONS: Dict[str, Callable[[], float]] = {"wall": time.monotonic, "cpu": time.process_time}
#: fit()'s stop reason when SIGTERM stopped it (after a checkpoint of the last step)
PREEMPTED = "preempted (SIGTERM)"


@dataclass
class LossResult:
    """What a task returns for one batch.

    loss_sum:  scalar tensor, the loss summed over every predicted element (nats).
    count:     number of predicted elements in the sum (0 for context-only chunks).
    sequences: number of sequences/streams in the batch (for "sequence" normalization).
    state:     the state to carry into the next chunk (stream tasks), else None.
    """

    loss_sum: Tensor
    count: Union[int, Tensor]
    sequences: int
    state: State = None


class Task(Protocol):
    def loss(self, model: nn.Module, batch: Any, state: State) -> LossResult: ...


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss became NaN)."""


def detach_state(state: State) -> State:
    """The same nesting of tensors, cut from the graph (the carried state must not
    drag the previous chunk's graph into this chunk's backward)."""
    if isinstance(state, Tensor):
        return state.detach()
    if isinstance(state, (tuple, list)):
        return type(state)(detach_state(s) for s in state)
    return state


def _dist():
    import torch.distributed as dist
    return dist if dist.is_available() and dist.is_initialized() else None


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
        self.config = config
        self.task = task
        self.train_data, self.val_data = train_data, val_data
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.run_info = run_info or {}
        self.device = device if device is not None else next(model.parameters()).device
        self.model = model.to(self.device)
        self.dist = _dist()
        self.rank = self.dist.get_rank() if self.dist else 0
        self.world_size = self.dist.get_world_size() if self.dist else 1
        self.is_main = self.rank == 0
        if self.dist:
            from torch.nn.parallel import DistributedDataParallel
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model: nn.Module = DistributedDataParallel(self.model, device_ids=ids)
        else:
            self.train_model = self.model
        self.hooks: Dict[str, List[Hook]] = {name: [] for name in HOOK_NAMES}
        # counters (all restored on resume)
        self.step = 0
        self.epoch = 0
        self.batch_index = 0  # batches of the current epoch already consumed
        self.tokens = 0
        self.elapsed_before = 0.0
        self.best: Optional[float] = None
        self.bad_evals = 0
        self.last_eval_step = -1
        self._clock = CLOCK_FUNCTIONS[config.clock]
        self._next_eval_time = math.inf  # clock reading (elapsed()) of the next time-based evaluation
        self.last_checkpoint_step = -1
        self.last_checkpoint: Optional[Path] = None  # record of the newest checkpoint this process wrote
        self._sigterm = False  # set by the SIGTERM handler that fit() installs
        self.metrics_lines = 0  # lines of metrics.jsonl written up to now (a resumed run keeps exactly these)
        self.history: List[Dict[str, Any]] = []  # eval records of this process
        self._reset_streams()
        self.total_steps = self._total_steps()
        if config.schedule == "cosine" and self.total_steps is None and config.max_minutes is None:
            raise InputError("schedule 'cosine' needs max_steps, max_minutes, or max_epochs with data of known "
                             "length (the length of the cosine)")
        self.optimizer = self._build_optimizer()
        self.scheduler = self._build_scheduler()
        self._metrics_file = None
        self._tb = None

    # ------------------------------------------------------------ building
    def _build_optimizer(self) -> torch.optim.Optimizer:
        c = self.config
        params = [p for p in self.model.parameters() if p.requires_grad]
        if c.optimizer == "adam":
            return torch.optim.Adam(params, lr=c.lr, betas=c.betas, weight_decay=c.weight_decay)
        if c.optimizer == "adamw":
            return torch.optim.AdamW(params, lr=c.lr, betas=c.betas, weight_decay=c.weight_decay)
        if c.optimizer == "sgd":
            return torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)
        return torch.optim.RMSprop(params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)

    def _build_scheduler(self):
        c, opt = self.config, self.optimizer
        S = torch.optim.lr_scheduler
        main = None
        if c.schedule == "cosine":
            # Cosine over whichever budget runs out first: steps (max_steps) or wall time (max_minutes),
            # so a time-limited run ends at lr_min on a fast and on a slow machine alike. With
            # max_steps only, this is torch's CosineAnnealingLR curve.
            main = S.LambdaLR(opt, lambda _: self._cosine_factor())
        elif c.schedule == "step":
            main = S.StepLR(opt, step_size=c.lr_step_size, gamma=c.lr_gamma)
        elif c.schedule == "plateau":
            return S.ReduceLROnPlateau(opt, factor=c.lr_gamma, patience=c.plateau_patience)
        elif c.schedule == "epoch_decay":
            gamma, after = c.lr_gamma, c.lr_decay_after_epochs
            # stepped once per epoch: epoch e (0-based) runs at lr · gamma^max(0, e − after + 1)
            self._epoch_scheduler = True
            return S.LambdaLR(opt, lambda e: gamma ** max(0, e - after + 1))
        if c.warmup_steps:
            warm = S.LinearLR(opt, start_factor=1.0 / (c.warmup_steps + 1), end_factor=1.0,
                              total_iters=c.warmup_steps)
            main = main or S.ConstantLR(opt, factor=1.0, total_iters=0)
            return S.SequentialLR(opt, [warm, main], milestones=[c.warmup_steps])
        return main

    _epoch_scheduler = False  # stepped at epoch ends (epoch_decay), not after every optimizer step
    _t0: Optional[float] = None  # the clock's reading when this process's fit() started

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

    def add_hook(self, name: str, fn: Hook) -> None:
        """Call `fn(trainer, record)` at `name` (one of HOOK_NAMES)."""
        if name not in self.hooks:
            raise InputError(f"hook must be one of {HOOK_NAMES}; got {name!r}")
        self.hooks[name].append(fn)

    def _fire(self, name: str, *args: Any) -> None:
        for fn in self.hooks[name]:
            fn(self, *args)

    # ------------------------------------------------------------- streams
    def _reset_streams(self) -> None:
        """Forget the carried state and context (start of an epoch)."""
        self._carry: State = None
        self._carry_pos = 0  # stream position where the carried state belongs
        self._pos = 0  # stream position of the next chunk's first step
        self._context: List[Tuple[int, StreamBatch]] = []

    def _run_stream(self, model: nn.Module, batch: StreamBatch) -> Tuple[Tensor, Tensor, int]:
        """Truncated BPTT over one chunk: (loss_sum, count, sequences); updates the carry."""
        k1 = len(batch)
        k2 = max(self.config.bptt_k2 or k1, k1)
        start, end = self._pos, self._pos + k1
        next_carry_pos = min(end, max(self._carry_pos, end + k1 - k2))
        pieces: List[Tuple[int, StreamBatch, bool]] = []  # (position, steps, take loss)
        for pos, chunk in self._context:  # context steps [carry_pos, start), no loss
            a, b = max(self._carry_pos, pos), pos + len(chunk)
            if b > a:
                pieces.append((a, chunk.slice(a - pos, b - pos, with_targets=False), False))
        pieces.append((start, batch, True))
        split: List[Tuple[int, StreamBatch, bool]] = []
        for pos, piece, loss in pieces:  # cut where the next window starts
            if pos < next_carry_pos < pos + len(piece):
                cut = next_carry_pos - pos
                split += [(pos, piece.slice(0, cut, with_targets=loss), loss),
                          (next_carry_pos, piece.slice(cut, len(piece), with_targets=loss), loss)]
            else:
                split.append((pos, piece, loss))
        state, new_carry, found = self._carry, None, False
        loss_sum: Tensor = torch.zeros((), device=self.device)
        count: Tensor = torch.zeros((), device=self.device)
        sequences = batch.batch_size
        for i, (pos, piece, _) in enumerate(split):
            if pos == next_carry_pos and not found:
                new_carry, found = detach_state(state), True
            # Only the last piece goes through the (possibly DDP-wrapped) training model: DDP expects one
            # forward per backward, and the gradient of earlier pieces reaches the same parameters anyway.
            result = self.task.loss(model if i == len(split) - 1 else self.model, piece, state)
            state = result.state
            loss_sum = loss_sum + result.loss_sum
            count = count + result.count
        if not found:  # next window starts at the end of this chunk
            new_carry = detach_state(state)
        self._carry, self._carry_pos, self._pos = new_carry, next_carry_pos, end
        keep_from = next_carry_pos
        self._context = [(p, c) for p, c in self._context + [(start, StreamBatch(batch.inputs, None, batch.reset))]
                         if p + len(c) > keep_from] if k2 > k1 else []
        return loss_sum, count, sequences

    def _batch_loss(self, model: nn.Module, batch: Any) -> Tuple[Tensor, Tensor, int]:
        if isinstance(batch, StreamBatch):
            return self._run_stream(model, batch.to(self.device))
        batch = _to_device(batch, self.device)
        r = self.task.loss(model, batch, None)
        return r.loss_sum, torch.as_tensor(r.count, dtype=torch.float32, device=self.device), r.sequences

    def _all_sum(self, *values: float) -> List[float]:
        if not self.dist:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        self.dist.all_reduce(t)
        return t.tolist()

    # ---------------------------------------------------------------- fit
    def fit(self, resume: Optional[Union[str, Path]] = None) -> Dict[str, Any]:
        """Train until a limit is reached; returns a summary (step, epoch, last eval, stop reason, the
        newest checkpoint's record). Stop reason PREEMPTED: SIGTERM arrived (see the module docstring).

        `resume`: a checkpoint or run directory to continue from (exactly: same
        losses step for step as an uninterrupted run with the same seed).
        """
        c = self.config
        if resume is not None:
            self.load(resume)
        else:
            torch.manual_seed(c.seed + self.rank)
        self._open_logs(resumed=resume is not None)
        t0 = self._t0 = self._clock()
        wall0 = time.monotonic()  # tokens/s is a throughput: always per wall-clock second
        if c.eval_every_minutes is not None:
            self._next_eval_time = self._next_eval_boundary(self.elapsed_before)
        tokens_at_start = self.tokens
        bar = None
        if self.is_main and not c.quiet:
            from tqdm import tqdm
            bar = tqdm(total=self.total_steps, initial=self.step, unit="step", dynamic_ncols=True, leave=True)
        stop: Optional[str] = None
        micro = 0
        acc_loss = acc_count = 0.0
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        restore_sigterm = self._catch_sigterm()
        try:
            while stop is None:
                if c.max_epochs is not None and self.epoch >= c.max_epochs:
                    stop = "max_epochs"
                    break
                if c.max_steps is not None and self.step >= c.max_steps:
                    stop = "max_steps"
                    break
                for batch in self.train_data.batches(self.epoch, self.batch_index):
                    self.batch_index += 1
                    last_micro = micro + 1 == c.grad_accum
                    sync = self.dist is None or last_micro
                    ctx = self.train_model.no_sync() if not sync else _nullcontext()
                    with ctx:
                        loss_sum, count, sequences = self._batch_loss(self.train_model, batch)
                        g_sum, g_count, g_seq = self._all_sum(float(loss_sum.detach()), float(count),
                                                              float(sequences))
                        denom = g_count if c.loss_normalization == "token" else g_seq
                        if denom > 0:
                            scaled = loss_sum * (self.world_size / (denom * c.grad_accum))
                            scaled.backward()
                    acc_loss += g_sum
                    acc_count += g_count
                    micro += 1
                    if not last_micro:
                        continue
                    micro = 0
                    record = self._optimizer_step(acc_loss, acc_count)
                    acc_loss = acc_count = 0.0
                    record["tokens_per_s"] = (self.tokens - tokens_at_start) / max(time.monotonic() - wall0, 1e-9)
                    record["elapsed_s"] = self.elapsed()
                    self._log(record, bar)
                    self._fire("step_end", record)
                    if (c.eval_every and self.step % c.eval_every == 0) or self._eval_time_due():
                        stop = self._evaluate_and_track() or stop
                    stop = stop or self._time_or_step_limit() or self._preempted()
                    if c.checkpoint_every and self.step % c.checkpoint_every == 0:
                        self.save(self._clock() - t0)
                    if stop:
                        break
                else:  # the epoch is exhausted
                    if micro:  # a partial accumulation at the epoch's end still updates
                        micro = 0
                        self._log(self._optimizer_step(acc_loss, acc_count), bar)
                        acc_loss = acc_count = 0.0
                    self.epoch += 1
                    self.batch_index = 0
                    self._reset_streams()
                    if self.val_data is not None and self.last_eval_step != self.step:
                        stop = self._evaluate_and_track() or stop
                    if self._epoch_scheduler:
                        self.scheduler.step()  # epoch_decay
                    stop = stop or self._time_or_step_limit()
            # preempted: no evaluation (the grace period is short, and the uninterrupted run has none here)
            if self.val_data is not None and self.last_eval_step != self.step and stop != PREEMPTED:
                self._evaluate_and_track()
            if self.out_dir is not None and self.last_checkpoint_step != self.step:
                self.save(self._clock() - t0)
        finally:
            restore_sigterm()
            if bar is not None:
                bar.close()
            self._close_logs()
        summary = {"step": self.step, "epoch": self.epoch, "stop": stop, "tokens": self.tokens,
                   "elapsed_s": self.elapsed(), "checkpoint": self.last_checkpoint,
                   "last_eval": self.history[-1] if self.history else None}
        self._fire("fit_end", summary)
        return summary

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

    def _any_rank(self, flag: bool) -> bool:
        """`flag` if any rank raises it: clock-driven decisions must agree on every rank under DDP."""
        if not self.dist:
            return flag
        t = torch.tensor([float(flag)], device=self.device)
        self.dist.all_reduce(t, op=self.dist.ReduceOp.MAX)
        return bool(t.item())

    def _catch_sigterm(self) -> Callable[[], None]:
        """Make SIGTERM a request to stop at the next step boundary; returns the function that restores the
        previous handler. Only with a run directory to checkpoint into, and only in the main thread (the only
        one Python lets set handlers): otherwise SIGTERM keeps its handler."""
        self._sigterm = False
        if self.out_dir is None or threading.current_thread() is not threading.main_thread():
            return lambda: None

        def request_stop(signum: int, frame: Any) -> None:
            self._sigterm = True

        previous = signal.signal(signal.SIGTERM, request_stop)
        # None: the previous handler was not set from Python; the default is the closest we can restore
        return lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)

    def _preempted(self) -> Optional[str]:
        """PREEMPTED once SIGTERM has reached any rank: every rank must stop at the same step."""
        return PREEMPTED if self._any_rank(self._sigterm) else None

    def _time_or_step_limit(self) -> Optional[str]:
        c = self.config
        if c.max_steps is not None and self.step >= c.max_steps:
            return "max_steps"
        if c.max_minutes is not None and self._any_rank(self.elapsed() >= 60.0 * c.max_minutes):
            return "max_minutes"
        return None

    def _next_eval_boundary(self, elapsed: float) -> float:
        """The first multiple of `eval_every_minutes` after `elapsed` seconds."""
        period = 60.0 * self.config.eval_every_minutes
        return (math.floor(elapsed / period) + 1) * period

    def _eval_time_due(self) -> bool:
        """True when `eval_every_minutes` of the clock have passed since the last time-based evaluation
        (the same answer on every rank: an evaluation is a collective under DDP)."""
        if self.config.eval_every_minutes is None or self.val_data is None:
            return False
        due = self._any_rank(self.elapsed() >= self._next_eval_time)
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
        state = None
        try:
            for batch in data.batches(0, 0):
                if isinstance(batch, StreamBatch):
                    r = self.task.loss(self.model, batch.to(self.device), state)
                    state = r.state
                else:
                    r = self.task.loss(self.model, _to_device(batch, self.device), None)
                total += r.loss_sum.double()
                count += float(r.count)
        finally:
            self.model.train(was_training)
        s, n = self._all_sum(float(total), float(count))
        loss = s / n if n else float("nan")
        metrics = {f"{prefix}_loss": loss}
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
        self._log(record, None)
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

    _last_train_loss: Optional[float] = None

    # ------------------------------------------------------------ logging
    def _open_logs(self, resumed: bool) -> None:
        if self.out_dir is None or not self.is_main:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / "metrics.jsonl"
        if resumed and path.exists():
            # keep only what the resumed checkpoint had seen: lines past it came from the lost tail of the run
            kept = path.read_text().splitlines()[:self.metrics_lines]
            ckpt._write_atomic(path, "".join(k + "\n" for k in kept).encode())
        elif not resumed:
            path.write_text("")
        self._metrics_file = open(path, "a", buffering=1)
        if self.config.tensorboard:
            try:
                require("tensorboard", extra="tensorboard", purpose="TensorBoard logging")
                from torch.utils.tensorboard import SummaryWriter
                self._tb = SummaryWriter(str(self.out_dir / "tensorboard"),
                                         purge_step=self.step + 1 if resumed else None)
            except Exception as err:  # tensorboard missing or broken: metrics.jsonl still has everything
                print(f"rnnkit: {err}; logging to metrics.jsonl only")
                self._tb = None

    def _close_logs(self) -> None:
        if self._metrics_file is not None:
            self._metrics_file.close()
            self._metrics_file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def _log(self, record: Dict[str, Any], bar: Any) -> None:
        if record["kind"] == "train":
            self._last_train_loss = record["loss"]
        if not self.is_main:
            return
        if bar is not None and record["kind"] == "train":
            bar.update(record["step"] - bar.n)
            bar.set_postfix(loss=f"{record['loss']:.4f}", tok_s=f"{record.get('tokens_per_s', 0):.0f}",
                            refresh=False)
        if record["kind"] == "eval" and bar is not None:
            shown = ", ".join(f"{k}={v:.4f}" for k, v in record.items()
                              if k.startswith("val_") and isinstance(v, float))
            bar.write(f"step {record['step']}: {shown}")
        if self._metrics_file is not None and (record["kind"] == "eval" or record["step"] % self.config.log_every == 0):
            self._metrics_file.write(json.dumps(record) + "\n")
            self.metrics_lines += 1
        if self._tb is not None:
            for k, v in record.items():
                if k not in ("kind", "step", "epoch") and isinstance(v, (int, float)) and v is not None:
                    tag = f"eval/{k}" if record["kind"] == "eval" else f"train/{k}"
                    self._tb.add_scalar(tag, v, record["step"])

    # -------------------------------------------------------- checkpoints
    def _local_state(self) -> Tuple[Any, Dict[str, Tensor]]:
        """This rank's stream state (carry, context) and RNG, as (JSON, tensors)."""
        tensors: Dict[str, Tensor] = {}
        context = [{"pos": p, "inputs": b.inputs,
                    "reset": b.reset if b.reset is not None else torch.zeros(b.batch_size, dtype=torch.bool),
                    "has_reset": b.reset is not None} for p, b in self._context]
        obj = {"carry": self._carry, "carry_pos": self._carry_pos, "pos": self._pos, "context": context,
               "rng": torch.get_rng_state()}
        if torch.cuda.is_available() and self.device.type == "cuda":
            obj["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        return ckpt.flatten(obj, "local", tensors), tensors

    def state_tensors_and_meta(self, elapsed: float) -> Tuple[Dict[str, Tensor], Dict[str, Any]]:
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        opt_json = ckpt.flatten(self.optimizer.state_dict(), "optim", tensors)
        local_json, local_tensors = self._local_state()
        names = sorted(local_tensors)
        if self.dist:  # every rank's stream state goes into rank 0's file
            for name in names:
                t = local_tensors[name].to(self.device)
                parts = [torch.empty_like(t) for _ in range(self.world_size)]
                self.dist.all_gather(parts, t)
                for r, p in enumerate(parts):
                    tensors[f"rank{r}/{name}"] = p.cpu()
        else:
            for name in names:
                tensors[f"rank0/{name}"] = local_tensors[name]
        meta = {
            "run": self.run_info,
            "train_config": self.config.to_dict(),
            "optimizer": opt_json,
            "scheduler": ckpt.flatten(self.scheduler.state_dict(), "sched", tensors) if self.scheduler else None,
            "local": local_json,
            "counters": {"step": self.step, "epoch": self.epoch, "batch_index": self.batch_index,
                         "tokens": self.tokens, "elapsed_s": self.elapsed_before + elapsed, "best": self.best,
                         "bad_evals": self.bad_evals, "last_eval_step": self.last_eval_step,
                         "last_train_loss": self._last_train_loss,
                         "metrics_lines": self.metrics_lines},
            "world_size": self.world_size,
            "history": self.history,
        }
        return tensors, meta

    def save(self, elapsed: float = 0.0) -> Optional[Path]:
        """Write a checkpoint of the current step (rank 0 writes; every rank takes part)."""
        if self.out_dir is None:
            return None
        tensors, meta = self.state_tensors_and_meta(elapsed)
        path = None
        if self.is_main:
            directory = self.out_dir / "checkpoints"
            path = self.last_checkpoint = ckpt.save_checkpoint(directory, self.step, tensors, meta)
            ckpt.prune_checkpoints(directory, self.config.keep_checkpoints)
            self._fire("checkpoint", path)
        if self.dist:
            self.dist.barrier()
        self.last_checkpoint_step = self.step
        return path

    def load(self, source: Union[str, Path]) -> Path:
        """Restore everything from a checkpoint (file or run directory); returns its record path."""
        record, meta, tensors = ckpt.load_checkpoint(source)
        check_run_info(meta.get("run", {}), self.run_info, record)
        if meta.get("world_size", 1) != self.world_size:
            raise ckpt.CheckpointError(f"checkpoint {str(record)!r} was written by {meta.get('world_size')} "
                                       f"processes; resume it with the same number (got {self.world_size})")
        try:
            self.model.load_state_dict(ckpt.sub_dict(tensors, "model"), strict=True)
        except RuntimeError as err:
            first = str(err).strip().splitlines()
            raise ckpt.CheckpointError(f"checkpoint {str(record)!r} does not fit this model: "
                                       f"{' '.join(l.strip() for l in first[:3])}") from None
        self.optimizer.load_state_dict(ckpt.unflatten(meta["optimizer"], tensors))
        if self.scheduler is not None and meta.get("scheduler") is not None:
            self.scheduler.load_state_dict(ckpt.unflatten(meta["scheduler"], tensors))
        n = meta["counters"]
        self.step, self.epoch, self.batch_index = n["step"], n["epoch"], n["batch_index"]
        self.tokens, self.elapsed_before, self.best = n["tokens"], n["elapsed_s"], n["best"]
        self.bad_evals, self.last_eval_step = n["bad_evals"], n["last_eval_step"]
        self._last_train_loss = n.get("last_train_loss")
        self.metrics_lines = n.get("metrics_lines", 0)
        self.last_checkpoint_step, self.last_checkpoint = self.step, record
        self.history = list(meta.get("history", []))
        mine = {k[len(f"rank{self.rank}/"):]: v for k, v in tensors.items() if k.startswith(f"rank{self.rank}/")}
        local = ckpt.unflatten(meta["local"], mine)
        self._carry = _state_to(local["carry"], self.device)
        self._carry_pos, self._pos = local["carry_pos"], local["pos"]
        self._context = [(c["pos"], StreamBatch(c["inputs"], None, c["reset"] if c["has_reset"] else None))
                         for c in local["context"]]
        torch.set_rng_state(local["rng"])
        if "cuda_rng" in local and self.device.type == "cuda":
            torch.cuda.set_rng_state(local["cuda_rng"], self.device)
        return record


def check_run_info(saved: Dict[str, Any], current: Dict[str, Any], record: Path) -> None:
    """Raise CheckpointError naming the first setting in which a checkpoint's run differs."""
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key), current.get(key)
        if a == b:
            continue
        what, av, bv = key, a, b
        if isinstance(a, dict) and isinstance(b, dict):
            for sub in sorted(set(a) | set(b)):
                if a.get(sub) != b.get(sub):
                    what = f"{key}.{sub}"
                    av, bv = a.get(sub), b.get(sub)
                    break
        if isinstance(av, list) and isinstance(bv, list):
            first = next((i for i, (x, y) in enumerate(zip(av, bv)) if x != y), None)
            if len(av) == len(bv) and first is not None:  # e.g. a vocabulary: name the first entry that differs
                what, av, bv = f"{what}[{first}]", av[first], bv[first]
            else:
                av, bv = f"{len(av)} entries", f"{len(bv)} entries"
        raise ckpt.CheckpointError(f"checkpoint {str(record)!r} belongs to another model or data: its {what} is "
                                   f"{_short(av)}, this run's is {_short(bv)}")


def _short(v: Any) -> str:
    s = json.dumps(v) if not isinstance(v, str) else repr(v)
    return s if len(s) < 80 else s[:77] + "..."


def _len(data: Any) -> Optional[int]:
    try:
        return len(data)
    except TypeError:
        return None


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, Tensor):
        return batch.to(device)
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    return batch


def _state_to(state: State, device: torch.device) -> State:
    if isinstance(state, Tensor):
        return state.to(device)
    if isinstance(state, (tuple, list)):
        return type(state)(_state_to(s, device) for s in state)
    return state


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False
