"""Data: synthetic tasks, corpora and batching. Nothing here downloads."""

from .synthetic import ADDING_BASELINE_MSE, adding_problem, copy_task, copy_task_baseline

__all__ = ["ADDING_BASELINE_MSE", "adding_problem", "copy_task", "copy_task_baseline"]
