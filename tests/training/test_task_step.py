"""The loop hands a task the step it is at (a `step` attribute, set before every batch), so a schedule
that follows training needs no closure back into the trainer; a resumed run continues from the
checkpoint's step."""

from __future__ import annotations

from rnnkit.data.streams import StreamLoader
from rnnkit.models import LanguageModelTask
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
