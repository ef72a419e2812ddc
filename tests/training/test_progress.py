"""The training progress bar: steps when the run has a step count, the clock when it has only a time budget."""

from __future__ import annotations

from rnnkit.training.loggers import ProgressBar


def test_a_time_budget_without_steps_fills_the_progress_bar_with_the_clock():
    """max_minutes alone: the bar's total is the budget in seconds, its position the elapsed time (capped),
    and the step count rides in the postfix; with a step count the bar counts steps as before."""
    bar = ProgressBar(None, 0, seconds=90.0)
    bar.train({"step": 7, "loss": 1.0, "elapsed_s": 30.4})
    assert (bar._bar.total, bar._bar.n, bar._bar.unit) == (90, 30.4, "s")
    bar.train({"step": 9, "loss": 1.0, "elapsed_s": 95.0})
    assert bar._bar.n == 90 and "step=9" in str(bar._bar.postfix)
    bar.close()
    steps = ProgressBar(200, 0, seconds=90.0)
    steps.train({"step": 7, "loss": 1.0, "elapsed_s": 30.4})
    assert (steps._bar.total, steps._bar.n, steps._bar.unit) == (200, 7, "step")
    steps.close()
