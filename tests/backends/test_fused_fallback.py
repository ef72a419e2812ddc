"""Without a working compiler: one clear warning, `auto` falls back, the build is not retried."""

from __future__ import annotations

import warnings

import pytest
import torch

import rnnkit
from rnnkit.backends import extension


@pytest.fixture
def fresh_state(monkeypatch):
    """A process that has not tried to build yet (the real state comes back afterwards)."""
    monkeypatch.setattr(extension, "_state", {"loaded": False, "error": None, "warned": False,
                                              "build_seconds": None})
    builds = []
    monkeypatch.setattr(extension, "_build", lambda: builds.append(1))
    return builds


def _forward_twice(layer):
    x = torch.randn(4, 2, 3)
    with pytest.warns(RuntimeWarning) as record:
        layer(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second warning would raise here
        layer(x)
    return [str(w.message) for w in record if issubclass(w.category, RuntimeWarning)]


def test_missing_compiler(fresh_state, monkeypatch) -> None:
    monkeypatch.setenv("CXX", "rnnkit-no-such-compiler")
    layer = rnnkit.PeepholeLSTM(3, 4)  # a cell only fused (or reference) can run
    messages = _forward_twice(layer)
    assert len(messages) == 1 and "'rnnkit-no-such-compiler' not found" in messages[0]
    assert layer.last_backend == "reference"
    assert "rnnkit-no-such-compiler" in layer.last_skipped["fused"]
    assert fresh_state == []  # never tried to build
    layer.backend = "fused"
    with pytest.raises(ValueError, match="rnnkit-no-such-compiler"):
        layer(torch.randn(4, 2, 3))


def test_missing_ninja(fresh_state, monkeypatch) -> None:
    real_which = extension.shutil.which
    monkeypatch.setattr(extension.shutil, "which", lambda name: None if name == "ninja" else real_which(name))
    import builtins

    real_import = builtins.__import__

    def no_ninja(name, *args, **kwargs):
        if name == "ninja":
            raise ImportError("no ninja")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ninja)
    messages = _forward_twice(rnnkit.SRU(3, 3))
    assert len(messages) == 1 and "ninja not found" in messages[0]


def test_failed_build_is_not_retried(fresh_state, monkeypatch) -> None:
    calls = []

    def broken_build():
        calls.append(1)
        raise RuntimeError("Error building extension 'rnnkit_cpu': lstm.cpp:1:1: error: something broke")

    monkeypatch.setattr(extension, "_build", broken_build)
    layer = rnnkit.LayerNormGRU(3, 4)
    messages = _forward_twice(layer)
    assert len(messages) == 1 and "building the C++ kernels failed" in messages[0] and "error: something" in messages[0]
    assert calls == [1]
    assert layer.last_backend == "reference"


def test_stale_build_directories_are_pruned(tmp_path) -> None:
    """Kernel builds of other versions unused for STALE_BUILD_DAYS go; recent ones and our own stay."""
    import os
    import time

    from rnnkit.backends.extension import STALE_BUILD_DAYS, prune_stale_builds

    ours, recent, stale, unrelated = (tmp_path / n for n in ("ext-ours", "ext-recent", "ext-stale", "other"))
    for d in (ours, recent, stale, unrelated):
        d.mkdir()
        (d / "x.so").write_bytes(b"0")
    old = time.time() - (STALE_BUILD_DAYS + 1) * 86400
    for d in (ours, stale, unrelated):
        os.utime(d, (old, old))
    assert prune_stale_builds(keep=ours) == [stale]
    assert ours.is_dir() and recent.is_dir() and unrelated.is_dir() and not stale.exists()
