"""The training loop: truncated BPTT (k1, k2) against hand-computed gradients, exact resume,
gradient accumulation, early stopping, schedules, and a falling loss."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch.nn import functional as F

from rnnkit.data.streams import IGNORE_INDEX, StreamBatch, StreamLoader
from rnnkit.models import LanguageModelTask, LMConfig, RecurrentLM
from rnnkit.training import CheckpointError, TrainConfig, Trainer


def tiny_tokens(n: int = 3000, vocab: int = 7, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # a noisy counter: predictable structure so the loss can fall
    base = torch.arange(n) % vocab
    noise = torch.randint(0, vocab, (n,), generator=g)
    keep = torch.rand(n, generator=g) < 0.8
    return torch.where(keep, base, noise).to(torch.int64)


def make_model(vocab: int = 7, cell: str = "lstm", hidden: int = 12, seed: int = 0, dtype=torch.float32):
    torch.manual_seed(seed)
    return RecurrentLM(LMConfig(vocab_size=vocab, cell=cell, hidden_size=hidden, embedding_size=5)).to(dtype)


def make_trainer(tmp_path=None, steps=12, k1=6, k2=None, batch=3, **cfg):
    tokens = tiny_tokens()
    train = StreamLoader([tokens[:2400]], batch, k1)
    val = StreamLoader([tokens[2400:]], 2, 50)
    model = make_model()
    config = TrainConfig(max_steps=steps, bptt_k2=k2, quiet=True, tensorboard=False, **cfg)
    return Trainer(model, LanguageModelTask(), train, config, val_data=val, out_dir=tmp_path,
                   run_info={"model": model.config.to_dict()})


def manual_window_grads(model, inputs, targets, start, carry_start, k1):
    """Loss on steps [start, start+k1) backpropagated to carry_start, from the state at carry_start
    obtained by running [0, carry_start) from zeros without gradient. inputs, targets: (N, B)."""
    model.zero_grad()
    with torch.no_grad():
        _, state = model(inputs[:carry_start]) if carry_start > 0 else (None, None)
    logits, _ = model(inputs[carry_start:start + k1], state)
    loss = F.cross_entropy(logits[start - carry_start:].flatten(0, 1), targets[start:start + k1].flatten(),
                           reduction="sum")
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("k1,k2", [(5, 5), (5, 8), (5, 10), (5, 13), (4, 6)])
def test_truncated_bptt_gradients_match_hand_computation(k1, k2):
    """Chunk j's update = loss on its k1 steps, backpropagated k2 steps from the carried state."""
    torch.set_default_dtype(torch.float64)
    try:
        model = make_model(dtype=torch.float64)
        tokens = tiny_tokens(201)
        data = StreamLoader([tokens], 4, k1)  # 4 contiguous streams of 50 steps
        assert torch.equal(data.inputs, tokens[:200].view(4, 50))
        assert torch.equal(data.targets, tokens[1:201].view(4, 50))
        inputs, targets = data.inputs.t(), data.targets.t()
        trainer = Trainer(model, LanguageModelTask(), data,
                          TrainConfig(max_steps=1, bptt_k2=k2, quiet=True, tensorboard=False))
        for j, batch in enumerate(data.batches()):
            if j >= 6:
                break
            model.zero_grad()
            loss, count, _ = trainer._run_stream(model, batch)
            loss.backward()
            got = {n: p.grad.clone() for n, p in model.named_parameters()}
            start = j * k1
            carry_start = max(0, start + k1 - k2)
            want_loss, want = manual_window_grads(model, inputs, targets, start, carry_start, k1)
            assert int(count) == 4 * k1
            torch.testing.assert_close(loss.detach(), want_loss, rtol=1e-10, atol=1e-10)
            for n in want:
                torch.testing.assert_close(got[n], want[n], rtol=1e-9, atol=1e-10, msg=f"{n} chunk {j}")
    finally:
        torch.set_default_dtype(torch.float32)


def test_reset_mask_zeroes_state_at_document_start():
    """A stream that starts a new document must not see the previous document's state."""
    doc_a = tiny_tokens(41, seed=3)
    doc_b = tiny_tokens(21, seed=4)
    loader = StreamLoader([doc_a, doc_b], 1, 10)  # one stream: a then b, b starts at a chunk boundary
    chunks = list(loader.batches())
    assert len(chunks) == 6
    assert chunks[4].reset is not None and bool(chunks[4].reset[0])
    assert all(c.reset is None for c in chunks[1:4])
    assert int((chunks[3].targets == IGNORE_INDEX).sum()) == 0
    # the loss of doc b's chunks equals a fresh run on doc b alone
    model = make_model()
    task = LanguageModelTask()
    state = None
    with torch.no_grad():
        for c in chunks[:4]:
            state = task.loss(model, c, state).state
        got = task.loss(model, chunks[4], state).loss_sum
        fresh = task.loss(model, StreamLoader([doc_b], 1, 10).batches().__next__(), None).loss_sum
    torch.testing.assert_close(got, fresh)


def test_loss_falls():
    trainer = make_trainer(steps=60, lr=1e-2)
    summary = trainer.fit()
    assert summary["stop"] == "max_steps"
    assert trainer.history[-1]["val_loss"] < math.log(7) - 0.3


@pytest.mark.parametrize("k2,extra", [(None, {}), (9, {}), (None, dict(schedule="step", warmup_steps=3, lr_step_size=5)),
                                      (None, dict(schedule="cosine", warmup_steps=2))])
def test_resume_is_exact(tmp_path, k2, extra):
    full = make_trainer(tmp_path / "full", steps=16, k2=k2, checkpoint_every=4, eval_every=5, **extra)
    full.fit()
    part = make_trainer(tmp_path / "part", steps=16, k2=k2, checkpoint_every=4, eval_every=5, **extra)

    class Killed(Exception):
        pass

    def kill_at_10(trainer, record):
        if record["step"] == 10:
            raise Killed  # the run dies between checkpoints (same schedule length as the full run)

    part.add_hook("step_end", kill_at_10)
    with pytest.raises(Killed):
        part.fit()
    resumed = make_trainer(tmp_path / "part", steps=16, k2=k2, checkpoint_every=4, eval_every=5, **extra)
    resumed.fit(resume=tmp_path / "part" / "checkpoints" / "step-00000008.json")

    def losses(d):
        return [(r["kind"], r["step"], r["loss"], r.get("val_loss"))
                for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines())]

    assert losses(tmp_path / "part") == losses(tmp_path / "full")


def test_resume_rejects_other_model(tmp_path):
    t = make_trainer(tmp_path, steps=2)
    t.fit()
    other = make_trainer(tmp_path, steps=4)
    other.run_info = {"model": {**other.run_info["model"], "hidden_size": 99}}
    with pytest.raises(CheckpointError, match="hidden_size"):
        other.fit(resume=tmp_path)


def test_gradient_accumulation_matches_one_big_batch():
    """Two accumulated half-batches = one batch holding both (token-mean loss, equal counts)."""
    tokens = tiny_tokens(1200)

    def run(batch, accum, k1):
        model = make_model()
        data = StreamLoader([tokens], batch, k1)
        Trainer(model, LanguageModelTask(), data, TrainConfig(max_steps=3, optimizer="sgd", lr=0.5, grad_accum=accum,
                                                              quiet=True, tensorboard=False)).fit()
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    # accumulation over consecutive chunks of the same streams vs one chunk twice as long is not the same
    # maths; compare against a hand-made equivalent: SGD on the mean of two chunk losses
    model = make_model()
    data = StreamLoader([tokens], 2, 5)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    task, state = LanguageModelTask(), None
    it = data.batches()
    for _ in range(3):
        opt.zero_grad()
        for _ in range(2):
            r = task.loss(model, next(it), state)
            state = tuple(s.detach() for s in r.state)
            (r.loss_sum / r.count / 2).backward()
        opt.step()
    want = torch.cat([p.detach().flatten() for p in model.parameters()])
    torch.testing.assert_close(run(2, 2, 5), want)


def test_early_stopping_and_plateau():
    t = make_trainer(steps=200, eval_every=2, early_stop_patience=2, lr=1e-6, schedule="plateau",
                     plateau_patience=0)
    summary = t.fit()
    assert summary["stop"] == "early_stop"
    assert summary["step"] < 200
    assert t.optimizer.param_groups[0]["lr"] < 1e-6


def test_schedules_and_clipping():
    t = make_trainer(steps=10, schedule="cosine", warmup_steps=3, clip_norm=0.01, clip_value=0.5)
    lrs = []
    t.add_hook("step_end", lambda tr, rec: lrs.append(rec["lr"]))
    t.fit()
    assert lrs[0] < lrs[2] < lrs[3]  # warm-up
    assert lrs[-1] < lrs[4]  # cosine decay
    t2 = make_trainer(steps=3, clip_norm=1e-3)
    norms = []
    t2.add_hook("step_end", lambda tr, rec: norms.append(rec["grad_norm"]))
    t2.fit()
    assert all(n > 1e-3 for n in norms)  # the reported norm is before clipping


@pytest.mark.parametrize("bad,match", [
    (dict(max_steps=0), "max_steps"), (dict(max_steps=None), "at least one"), (dict(max_steps=1, lr=-1), "lr"),
    (dict(max_steps=1, optimizer="adagrad"), "optimizer"), (dict(max_steps=1, grad_accum=0), "grad_accum"),
    (dict(max_steps=1, schedule="plateau", warmup_steps=3), "warmup"),
])
def test_config_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**bad)


def test_full_bptt_batches():
    """Non-stream batches: whole sequences, no state carried (e.g. the adding problem)."""

    class Reg(torch.nn.Module):
        def __init__(self):
            super().__init__()
            from rnnkit import LSTM
            self.rnn, self.head = LSTM(2, 8), torch.nn.Linear(8, 1)

        def forward(self, x):
            return self.head(self.rnn(x)[0][-1])

    class Task:
        def loss(self, model, batch, state):
            from rnnkit.training import LossResult
            x, y = batch
            return LossResult(((model(x) - y) ** 2).sum(), y.numel(), y.shape[0])

    class Data:
        def __len__(self):
            return 4

        def batches(self, epoch=0, start=0):
            for i in range(start, 4):
                g = torch.Generator().manual_seed(1000 * epoch + i)
                x = torch.rand(10, 8, 2, generator=g)
                yield x, x[..., 0].sum(0, keepdim=True).t() / 10

    t = Trainer(Reg(), Task(), Data(), TrainConfig(max_epochs=3, quiet=True, tensorboard=False))
    assert t.fit()["step"] == 12


def test_metrics_jsonl_and_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")  # the [tensorboard] extra (in [test]; a core-only install lacks it)
    t = make_trainer(tmp_path, steps=4, eval_every=2)
    t.config.tensorboard = True
    t.fit()
    recs = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all("step" in r and "loss" in r for r in recs)
    assert [r["step"] for r in recs if r["kind"] == "train"] == [1, 2, 3, 4]
    assert all("val_loss" in r and "val_bpc" in r for r in recs if r["kind"] == "eval")
    events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 100


def test_cosine_follows_torch_by_steps_and_the_clock_by_time():
    t = make_trainer(steps=10, schedule="cosine", lr_min=1e-4)
    lrs = []
    t.add_hook("step_end", lambda tr, rec: lrs.append(rec["lr"]))
    t.fit()
    ref_opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2e-3)
    ref = torch.optim.lr_scheduler.CosineAnnealingLR(ref_opt, T_max=10, eta_min=1e-4)
    want = []
    for _ in range(10):
        want.append(ref_opt.param_groups[0]["lr"])
        ref_opt.step()
        ref.step()
    assert lrs == pytest.approx(want, rel=1e-9)
    # by time: the factor follows elapsed / max_minutes
    t2 = make_trainer(steps=None, max_minutes=1.0, schedule="cosine")
    t2._t0 = None
    t2.elapsed_before = 30.0  # half the budget
    assert t2._cosine_factor() == pytest.approx(0.5)


def test_cpu_clock_drives_the_time_budget_and_time_based_evaluation(monkeypatch):
    """clock="cpu": max_minutes, eval_every_minutes and elapsed_s read the CPU clock (here a fake one
    that advances 10 s per step), not the wall clock, which barely moves in this short run."""
    import time

    from rnnkit.training import trainer as trainer_module

    assert trainer_module.CLOCK_FUNCTIONS == {"wall": time.monotonic, "cpu": time.process_time}
    ticks = [0.0]
    monkeypatch.setitem(trainer_module.CLOCK_FUNCTIONS, "cpu", lambda: ticks[0])
    t = make_trainer(steps=50, max_minutes=1.0, eval_every_minutes=0.5, clock="cpu")
    elapsed = []

    def advance(trainer, record):
        elapsed.append(record["elapsed_s"])
        ticks[0] += 10.0

    t.add_hook("step_end", advance)
    summary = t.fit()
    assert (summary["stop"], summary["step"]) == ("max_minutes", 6)
    assert elapsed == [0.0, 10.0, 20.0, 30.0, 40.0, 50.0]
    assert [(r["step"], r["elapsed_s"]) for r in t.history] == [(3, 30.0), (6, 60.0)]
    wall = make_trainer(steps=8, max_minutes=1.0, eval_every_minutes=0.5, clock="wall")
    wall.add_hook("step_end", advance)
    summary = wall.fit()
    assert (summary["stop"], summary["step"]) == ("max_steps", 8)  # the fake CPU clock is not read
    assert [r["step"] for r in wall.history] == [8]  # only the final evaluation


@pytest.mark.parametrize("bad,match", [(dict(clock="gpu"), "clock must be one of"),
                                       (dict(eval_every_minutes=0), "eval_every_minutes"),
                                       (dict(eval_every_minutes=float("nan")), "eval_every_minutes")])
def test_clock_and_eval_interval_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(max_steps=1, **bad)
