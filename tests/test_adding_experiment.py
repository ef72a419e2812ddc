"""The adding-problem experiment: its task, its training through the shared Trainer, a short run end
to end, and its command line."""

from __future__ import annotations

import json

import pytest
import torch

from rnnkit.data.synthetic import ADDING_BASELINE_MSE
from rnnkit.experiments import adding
from rnnkit.experiments.adding import AddingConfig, AddingExperimentSettings, AddingModel, AddingTask, train_cell
from rnnkit.errors import InputError
from rnnkit.training import TrainConfig, Trainer


def test_model_reads_out_the_last_step():
    torch.manual_seed(0)
    model = AddingModel("lstm", 8)
    x = torch.rand(12, 3, 2)
    out, _ = model.rnn(x)
    torch.testing.assert_close(model(x), model.head(out[-1]))
    assert model(x).shape == (3, 1)


def test_model_rejects_unknown_cell():
    with pytest.raises(ValueError, match="cell must be one of"):
        AddingModel("transformer", 8)


def test_task_loss_is_mse_and_heldout_set_is_fixed():
    task = AddingTask(10, 4, seed=0, eval_size=50, eval_chunk=25)
    constant = torch.nn.Module()
    constant.forward = lambda x: torch.ones(x.shape[1], 1)  # predict 1.0 everywhere
    x, y = next(task.train_data.batches(0, 0))
    assert (x.shape, y.shape) == ((10, 4, 2), (4, 1))
    result = task.loss(constant, (x, y), None)
    assert result.loss_sum.item() / result.count == pytest.approx(((y - 1) ** 2).mean().item())
    heldout = list(task.heldout.batches(0, 0))
    assert [b[0].shape for b in heldout] == [(10, 25, 2)] * 2
    again = AddingTask(10, 4, seed=5, eval_size=50, eval_chunk=25)
    for (xa, _), (xb, _) in zip(heldout, again.heldout.batches(0, 0)):
        torch.testing.assert_close(xa, xb)  # same held-out set whatever the training seed
    assert not torch.equal(x, next(again.train_data.batches(0, 0))[0])  # but other training batches
    with pytest.raises(ValueError, match="eval_size"):
        AddingTask(10, 4, seed=0, eval_size=30, eval_chunk=25)


def test_gru_learns_a_short_adding_problem():
    """A few hundred steps at T = 8 take a GRU far below the predict-1.0 baseline."""
    config = AddingConfig(cells=("gru",), seq_len=8, hidden_size=16, batch_size=32, learning_rate=1e-2,
                          seconds_per_cell=120.0, max_steps=300, eval_every=1000.0)
    curve = train_cell("gru", config, progress=False)
    assert curve.steps == [0, 300]  # the initial and the final evaluation (eval_every exceeds the run)
    assert curve.mse[0] > ADDING_BASELINE_MSE  # the untrained model is worse than the baseline
    assert curve.final < 0.3 * ADDING_BASELINE_MSE


def test_run_writes_table_plot_and_results(tmp_path, capsys):
    config = AddingConfig(cells=("rnn", "sru"), seq_len=6, hidden_size=4, batch_size=4,
                          seconds_per_cell=60.0, max_steps=3, out=str(tmp_path / "out"))
    results = adding.compare(config, progress=False)
    for title in ("Elman RNN", "SRU", "predict 1.0", "0.1667"):
        assert title in results["markdown"]
    png = (tmp_path / "out" / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert [c["cell"] for c in results["curves"]] == ["rnn", "sru"]
    assert all(c["steps"][-1] == 3 for c in results["curves"])


def test_cells_train_through_the_shared_trainer(monkeypatch):
    """Every optimizer step of the experiment is the Trainer's, with the experiment's settings, and the
    curve is the Trainer's evaluation history (fails if the experiment grows its own loop again)."""
    steps, configs, histories = [], [], []
    optimizer_step, fit = Trainer._optimizer_step, Trainer.fit

    def counting_step(self, *args, **kwargs):
        steps.append(self.step)
        return optimizer_step(self, *args, **kwargs)

    def recording_fit(self, *args, **kwargs):
        configs.append(self.config)
        summary = fit(self, *args, **kwargs)
        histories.append(list(self.history))
        return summary

    monkeypatch.setattr(Trainer, "_optimizer_step", counting_step)
    monkeypatch.setattr(Trainer, "fit", recording_fit)
    config = AddingConfig(cells=("lstm",), seq_len=5, hidden_size=4, batch_size=3, learning_rate=3e-3, clip=0.5,
                          seconds_per_cell=90.0, max_steps=7, eval_every=1000.0, clock="cpu")
    curve = train_cell("lstm", config, progress=False)
    assert steps == list(range(7))
    [used] = configs
    assert isinstance(used, TrainConfig)
    assert (used.max_steps, used.max_minutes, used.lr, used.clip_norm, used.clock) == (7, 1.5, 3e-3, 0.5, "cpu")
    assert used.eval_every_minutes == pytest.approx(1000.0 / 60)
    [history] = histories
    assert curve.steps[1:] == [r["step"] for r in history] == [7]
    assert curve.mse[1:] == [r["val_mse"] for r in history]
    assert curve.seconds[1:] == [r["elapsed_s"] for r in history]


def test_time_budget_stops_each_cell(monkeypatch):
    """With no step limit the run ends by its time budget (a fake clock: 1 s per optimizer step)."""
    from rnnkit.training import trainer as trainer_module

    ticks = [0.0]
    monkeypatch.setitem(trainer_module.CLOCK_FUNCTIONS, "cpu", lambda: ticks[0])
    optimizer_step = Trainer._optimizer_step

    def tick(self, *args, **kwargs):
        ticks[0] += 1.0
        return optimizer_step(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "_optimizer_step", tick)
    config = AddingConfig(cells=("gru",), seq_len=5, hidden_size=4, batch_size=3, seconds_per_cell=6.0,
                          eval_every=2.0, clock="cpu")
    curve = train_cell("gru", config, progress=False)
    assert curve.steps == [0, 2, 4, 6]
    assert curve.seconds == [0.0, 2.0, 4.0, 6.0]


def test_settings_defaults_and_the_command_line(tmp_path, capsys):
    from rnnkit.cli import main
    s = AddingExperimentSettings()
    assert s.seq_len >= 100 and s.cell_names() == ("rnn", "lstm", "peephole", "gru", "sru")
    main(["experiment", "adding", "--seq-len", "6", "--cells", "gru, lstm", "--seconds-per-cell", "30",
          "--max-steps", "2", "--hidden-size", "4", "--batch-size", "4", "--out", str(tmp_path / "x"), "--quiet"])
    results = json.loads((tmp_path / "x" / "results.json").read_text())
    assert [c["cell"] for c in results["curves"]] == ["gru", "lstm"] and results["config"]["seq_len"] == 6
    assert "GRU" in (tmp_path / "x" / "results.md").read_text()
    main(["experiment", "--list"])
    assert "adding" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["--cells", "gru,transformer"], ["--seq-len", "1"], ["--seq-len", "0"],
                                  ["--seconds-per-cell", "-1"], ["--clip", "-2"], ["--cells", ""]])
def test_cli_rejects_bad_options(argv, capsys):
    from rnnkit.cli import main
    with pytest.raises(SystemExit) as exit_info:
        main(["experiment", "adding", *argv])
    assert exit_info.value.code == 2
    assert "error" in capsys.readouterr().err
