"""The loop hands a task the step it is at (a `step` attribute, set before every batch), so a schedule
that follows training needs no closure back into the trainer; a resumed run continues from the
checkpoint's step."""

from __future__ import annotations

from rnnkit.data.streams import StreamLoader
import torch

from rnnkit.models import LanguageModelTask
from rnnkit.models.char_lm import reset_rows
from rnnkit.training import TrainConfig, Trainer

from test_trainer import make_model, tiny_tokens  # noqa: E402  (same directory)


class StepRecordingTask(LanguageModelTask):
    """The language-model loss; records the step the loop reports at each training batch."""

    def __init__(self) -> None:
        super().__init__()
        self.step = -1
        self.seen: list = []

    def loss(self, model, batch, state):
        if model.training:
            self.seen.append(self.step)
        return super().loss(model, batch, state)


def make_trainer(run_dir, task, steps):
    data = StreamLoader([tiny_tokens(600)], 3, 6)
    config = TrainConfig(max_steps=steps, grad_accum=2, checkpoint_every=2, quiet=True, tensorboard=False)
    return Trainer(make_model(), task, data, config, out_dir=run_dir)


def test_task_sees_the_loop_step_and_a_resumed_run_continues_it(tmp_path):
    task = StepRecordingTask()
    make_trainer(tmp_path, task, steps=3).fit()
    assert task.seen == [0, 0, 1, 1, 2, 2]  # two micro-batches per optimizer step
    task = StepRecordingTask()
    make_trainer(tmp_path, task, steps=4).fit(resume=tmp_path / "checkpoints" / "step-00000002.json")
    assert task.seen == [2, 2, 3, 3]


class AccuracyTask(LanguageModelTask):
    """The language-model loss, plus the correctly predicted next tokens in evaluation (LossResult.sums)."""

    def loss(self, model, batch, state):
        sums = None if model.training else correct_and_count(model, batch, state)[0]
        r = super().loss(model, batch, state)
        r.sums = sums
        return r


def correct_and_count(model, batch, state):
    logits, _ = model(batch.inputs, reset_rows(state, batch.reset))
    correct = (logits.argmax(-1) == batch.targets).sum()
    return {"accuracy": correct, "one": batch.targets.numel()}, int(correct), batch.targets.numel()


def test_evaluation_reports_a_task_s_sums_as_means_over_the_pass():
    """val_<name> = the name's sum over every evaluation batch / the summed count, beside val_loss."""
    tokens = tiny_tokens(600)
    val = StreamLoader([tokens[300:]], 2, 25)
    trainer = Trainer(make_model(), AccuracyTask(), StreamLoader([tokens[:300]], 3, 6), TrainConfig(
        max_steps=1, quiet=True, tensorboard=False), val_data=val)
    metrics = trainer.evaluate()
    assert metrics["val_one"] == 1.0 and "val_bpc" in metrics  # every target counted once
    model, correct, count, state = trainer.model.eval(), 0, 0, None
    with torch.no_grad():
        for batch in val.batches(0, 0):
            _, right, n = correct_and_count(model, batch, state)
            _, state = model(batch.inputs, reset_rows(state, batch.reset))
            correct, count = correct + right, count + n
    assert metrics["val_accuracy"] == correct / count and 0 < correct < count
