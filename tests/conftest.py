"""Shared fixtures for the core tests; comparison helpers live in tests/helpers.py."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import settings

# The property tests draw the same examples on every run (CI must not pass or fail by luck);
# RNNKIT_HYPOTHESIS=explore draws new ones (and remembers failures in .hypothesis/) for hunting edge cases.
settings.register_profile("reproducible", derandomize=True, database=None)
settings.register_profile("explore")
settings.load_profile("explore" if os.environ.get("RNNKIT_HYPOTHESIS") == "explore" else "reproducible")


@pytest.fixture(autouse=True)
def _seeded() -> None:
    """Every test starts from the same global RNG state, so failures reproduce."""
    torch.manual_seed(0)


def pytest_addoption(parser: pytest.Parser) -> None:
    # the portability matrix (tests/portable_matrix.py) runs the suite as other CPUs would
    parser.addoption("--torch-threads", type=int, default=1,
                     help="intra-op threads per test process (default 1)")
    parser.addoption("--kernel-cpu", default=None,
                     help="compile the fused kernels for this gcc -march (e.g. x86-64-v3) instead of this CPU")


def pytest_configure(config: pytest.Config) -> None:
    # Tiny tensors gain nothing from intra-op threads, and with pytest-xdist's workers on a 2-core machine
    # OpenMP threads oversubscribe the cores: layer_norm alone got ~15x slower. One thread per process,
    # unless the portability matrix asks for more (threads change torch's reduction splits).
    torch.set_num_threads(config.getoption("--torch-threads"))
    from rnnkit.backends import extension

    extension.set_target_cpu(config.getoption("--kernel-cpu"))
    config.addinivalue_line("markers", "gpu: needs a CUDA device; skipped when there is none")
