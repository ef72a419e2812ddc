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


def pytest_configure(config: pytest.Config) -> None:
    # Tiny tensors gain nothing from intra-op threads, and with pytest-xdist's workers on a 2-core machine
    # OpenMP threads oversubscribe the cores: layer_norm alone got ~15x slower. One thread per process.
    torch.set_num_threads(1)
    config.addinivalue_line("markers", "gpu: needs a CUDA device; skipped when there is none")
