"""The adding-problem experiment: its task, a short run end to end, and its command line."""

from __future__ import annotations

import json

import pytest
import torch

from rnnkit.data.synthetic import ADDING_BASELINE_MSE
from rnnkit.experiments import adding
from rnnkit.experiments.adding import AddingConfig, AddingModel, AddingTask, parse_args, train_cell


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
    task = AddingTask(10, 4, seed=0, eval_size=50)
    constant = torch.nn.Module()
    constant.forward = lambda x: torch.ones(x.shape[1], 1)  # predict 1.0 everywhere
    x, y = task.batch()
    assert task.loss(constant, (x, y)).item() == pytest.approx(((y - 1) ** 2).mean().item())
    again = AddingTask(10, 4, seed=5, eval_size=50)
    torch.testing.assert_close(task.eval_x, again.eval_x)  # same held-out set whatever the training seed
    assert task.evaluate(constant) == pytest.approx(((task.eval_y - 1) ** 2).mean().item(), rel=1e-5)


def test_gru_learns_a_short_adding_problem():
    """A few hundred steps at T = 8 take a GRU far below the predict-1.0 baseline."""
    config = AddingConfig(cells=("gru",), seq_len=8, hidden_size=16, batch_size=32, learning_rate=1e-2,
                          seconds_per_cell=120.0, max_steps=300, eval_every=1000.0)
    curve = train_cell("gru", config, progress=False)
    assert curve.steps[-1] == 300
    assert curve.mse[0] > ADDING_BASELINE_MSE  # the untrained model is worse than the baseline
    assert curve.final < 0.3 * ADDING_BASELINE_MSE


def test_run_writes_table_plot_and_results(tmp_path, capsys):
    config = AddingConfig(cells=("rnn", "sru"), seq_len=6, hidden_size=4, batch_size=4,
                          seconds_per_cell=60.0, max_steps=3, out=str(tmp_path / "out"))
    curves = adding.run(config, progress=False)
    printed = capsys.readouterr().out
    for title in ("Elman RNN", "SRU", "predict 1.0", "0.1667"):
        assert title in printed
    png = (tmp_path / "out" / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [c["cell"] for c in results["curves"]] == ["rnn", "sru"]
    assert results["curves"][0]["mse"] == curves[0].mse
    assert all(c.steps[-1] == 3 for c in curves)


def test_cli_defaults_and_parsing():
    config = parse_args([])
    assert config.seq_len >= 100 and config.cells == ("rnn", "lstm", "peephole", "gru", "sru")
    config = parse_args(["--T", "150", "--cells", "gru, lstm", "--seconds-per-cell", "5", "--out", "x"])
    assert (config.seq_len, config.cells, config.seconds_per_cell, config.out) == (150, ("gru", "lstm"), 5.0, "x")


@pytest.mark.parametrize("argv", [["--cells", "gru,transformer"], ["--T", "1"], ["--T", "0"],
                                  ["--seconds-per-cell", "-1"], ["--clip", "-2"], ["--cells", ""]])
def test_cli_rejects_bad_options(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)
    assert exit_info.value.code == 2
    assert "error" in capsys.readouterr().err


def test_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    text = capsys.readouterr().out
    assert "--seconds-per-cell" in text and "(default: 60.0)" in text
