"""The run directory of a training run: refusing to mix runs, config.json, data.json, the device.

A run directory holds one run: config.json (the settings and where each came from), data.json (the
data files' fingerprint), metrics.jsonl, tensorboard/, checkpoints/, best.safetensors and the
application's results. A new run into a directory that holds a previous one is refused unless the
user asks to resume it or to overwrite it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from ..errors import InputError
from ..training.checkpoint import write_json_atomic
from .settings import RunSettings, is_path_setting, setting_name

#: what every training run writes into its run directory; one of them there means a previous run
RUN_MARKERS = ("config.json", "data.json", "metrics.jsonl", "tensorboard", "checkpoints", "best.safetensors",
               "best.json", "results.md", "results.json", "calibration.json")


def check_run_dir(out: Path) -> None:
    """`out` must be a directory (or not exist yet)."""
    if out.exists() and not out.is_dir():
        out_ = setting_name("out")
        raise InputError(f"{out_} {str(out)!r} is a file, not a directory; choose another {out_}")


def previous_run(out: Path) -> List[str]:
    """The names in `out` that a previous run left (RUN_MARKERS that exist)."""
    return [name for name in RUN_MARKERS if (out / name).exists()]


def check_new_run(settings: RunSettings, out: Path, is_main: bool) -> None:
    """Refuse to start a new run (no resume) into a directory that holds a previous run, unless overwrite."""
    check_run_dir(out)
    out_, resume, overwrite = setting_name("out"), setting_name("resume"), setting_name("overwrite")
    if settings.resume and settings.overwrite:
        raise InputError(f"{resume} continues the run in {out_} and {overwrite} deletes it; choose one")
    # under torchrun only rank 0 looks: it writes config.json, possibly before a slower rank gets here
    left = previous_run(out) if is_main else []
    if left and not settings.resume and not settings.overwrite:
        raise InputError(f"{out_} {str(out)!r} holds a previous run ({', '.join(left)}); choose a new {out_}, "
                         f"pass {resume} to continue it, or {overwrite} to delete its files and start again")


def apply_threads(settings: RunSettings) -> None:
    """torch's thread count from `threads`; a default never overrides the OMP_NUM_THREADS a user exported."""
    if settings.threads and (settings.explicit("threads") or not os.environ.get("OMP_NUM_THREADS")):
        torch.set_num_threads(settings.threads)


def open_run_dir(out: Path, settings: RunSettings, resumed: bool, config: Dict[str, Any],
                 data: Dict[str, Any]) -> None:
    """Create the run directory once everything was checked and write config.json (`config` plus the
    settings and where each came from) and data.json. A new run first deletes what a previous run left:
    with overwrite, or with resume when there was no checkpoint to resume (its logs belong to lost steps)."""
    if not resumed:
        for name in previous_run(out):
            path = out / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "config.json", {**config, "settings": settings.to_dict(), "sources": settings.sources})
    write_json_atomic(out / "data.json", data)


def saved_settings(out: Path) -> Optional[Dict[str, Any]]:
    """The config.json of the run in `out` ({"settings": ..., "sources": ...}), or None."""
    path = out / "config.json"
    return json.loads(path.read_text()) if path.is_file() else None


def run_device(device: Optional[str]) -> torch.device:
    """torch.device for a `device` setting: "cuda", "auto" (CUDA when available) or "cpu" (None: cpu).
    Asking for "cuda" without CUDA is an error, not a quiet fall back to the CPU."""
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError(f"{setting_name('device')} cuda was asked for but CUDA is not available")
    return torch.device("cuda" if device in ("cuda", "auto") and torch.cuda.is_available() else "cpu")


def data_paths(settings: RunSettings) -> List[str]:
    """The data paths the settings name: `data`, every `*_data` and every path setting that is set."""
    from dataclasses import fields
    return [getattr(settings, f.name) for f in sorted(fields(settings), key=lambda f: f.name)
            if is_path_setting(f) and isinstance(getattr(settings, f.name), str) and getattr(settings, f.name)]


def checked_data_fingerprint(settings: RunSettings, out: Path, resuming: bool) -> Dict[str, Any]:
    """The fingerprint of the run's data files, for OUT/data.json. Resuming, it must match the one saved
    when the run started (unless allow_data_change): other data would silently train on something else."""
    from ..training.fingerprint import FORMAT, DataChangedError, data_change, fingerprint

    current = {"format": FORMAT, "files": fingerprint(data_paths(settings), exclude=[out])}
    saved_path = out / "data.json"
    if resuming and saved_path.is_file() and not settings.allow_data_change:
        change = data_change(json.loads(saved_path.read_text()).get("files", {}), current["files"])
        if change:
            raise DataChangedError(f"{setting_name('resume')}: since the run in {str(out)!r} started, {change}; put "
                                   f"the original back, or pass {setting_name('allow_data_change')} to go on with "
                                   f"the new data")
    return current
