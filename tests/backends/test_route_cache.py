"""The per-step GEMM route measured at first use (common.h: StepGemm::measured_route, RouteCache): each
float32 shape is timed once per process (or read from the per-machine file), forcing a route skips the
measurement, float64 stays on BLAS, and a corrupt route file is ignored."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest
import torch

import rnnkit
from rnnkit.backends import extension


@pytest.fixture(autouse=True)
def fresh_routes() -> Iterator[None]:
    """Kernels loaded, no measured routes, the auto route; restored after."""
    reason = extension.load()
    if reason is not None:
        pytest.skip(f"fused kernels unavailable: {reason}")
    extension.clear_route_cache()
    yield
    rnnkit.backends.set_step_gemm("auto")
    extension.clear_route_cache()


def _run_gru(hidden: int, dtype: torch.dtype = torch.float32, batch: int = 3) -> torch.Tensor:
    torch.manual_seed(0)
    layer = rnnkit.GRU(4, hidden, backend="fused").to(dtype)
    return layer(torch.randn(5, batch, 4, dtype=dtype))[0]


def test_first_use_measures_once_per_shape() -> None:
    before = extension.route_measurements()
    _run_gru(9)
    measured = extension.route_measurements() - before
    assert measured >= 1  # the recurrent product's shape was timed
    _run_gru(9)
    assert extension.route_measurements() - before == measured  # second run: read from the cache
    _run_gru(10)
    assert extension.route_measurements() - before > measured  # a new shape is timed again


def test_forced_route_and_float64_skip_the_measurement() -> None:
    before = extension.route_measurements()
    rnnkit.backends.set_step_gemm("small")
    _run_gru(11)
    rnnkit.backends.set_step_gemm("auto")
    _run_gru(11, torch.float64)
    assert extension.route_measurements() == before


def test_routes_saved_and_loaded_through_the_file(tmp_path: Path) -> None:
    _run_gru(12)
    path = tmp_path / "routes.json"
    extension.save_route_cache(path)
    saved = json.loads(path.read_text())["routes"]
    assert saved and all(len(entry) == 5 for entry in saved)
    extension.clear_route_cache()
    assert extension.load_route_cache(path) == len(saved)
    before = extension.route_measurements()
    _run_gru(12)
    assert extension.route_measurements() == before  # the file's entries were used, nothing timed
    assert list(tmp_path.iterdir()) == [path]  # written atomically: no temporary file left behind


@pytest.mark.parametrize("content", ["{not json", '{"identity": 3, "routes": 5}', "[]",
                                     '{"identity": "x", "routes": [[1, 2]]}'])
def test_corrupt_route_file_is_ignored(tmp_path: Path, content: str) -> None:
    path = tmp_path / "routes.json"
    path.write_text(content)
    assert extension.load_route_cache(path) == 0
    before = extension.route_measurements()
    expected = _run_gru(13)
    assert extension.route_measurements() > before  # measured as if there were no file
    extension.save_route_cache(path)  # and the corrupt file is replaced by a good one
    assert extension.load_route_cache(path) >= 1
    assert torch.equal(_run_gru(13), expected)


def test_entries_of_another_machine_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "routes.json"
    path.write_text(json.dumps({"identity": "some other CPU | torch 0.0", "routes": [[3, 36, 12, 1, 2]]}))
    assert extension.load_route_cache(path) == 0


def test_isa_settings_get_their_own_route_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """Routes timed with MKL/oneDNN limited to an older ISA must not serve the full-ISA process (or back)."""
    for name in extension.ISA_SETTINGS:  # make test-portable runs this file with some of them set
        monkeypatch.delenv(name, raising=False)
    default = extension.route_cache_path()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert extension.route_cache_path() != default
