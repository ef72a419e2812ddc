"""Faults around a run: a full disk while a checkpoint is written (ENOSPC), and data files that change
between a run and its resume. Each gives one `rnnkit: error:` line and leaves the run resumable."""

from __future__ import annotations

import errno
import hashlib
import json
import math
from pathlib import Path

import pytest
from safetensors.torch import load_file

import rnnkit.training.checkpoint as ck
from rnnkit.cli import main
from rnnkit.training.checkpoint import latest_checkpoint, load_checkpoint
from rnnkit.training.fingerprint import data_change, fingerprint

from test_cli_errors import SMALL, assert_one_line_error, corpus, run_cli  # noqa: E402  (same directory)


def train_ok(args, capsys) -> None:
    main([str(a) for a in args])  # returns when the run succeeds (an error exits)
    capsys.readouterr()


# ------------------------------------------------------------------ ENOSPC
class FullDiskFile:
    """A file whose write() stores the first half of the data and then fails as a full disk does
    (OSError ENOSPC, naming no file: the OS error of write(2) has none)."""

    def __init__(self, f) -> None:
        self._f = f

    def write(self, data: bytes) -> int:
        self._f.write(data[: len(data) // 2])
        self._f.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()
        return False


def fill_disk_at(monkeypatch, name: str) -> None:
    """From now on, writing the checkpoint file `name` (e.g. step-00000004.json) finds the disk full."""
    def open_(path, mode="r", *args, **kwargs):
        f = open(path, mode, *args, **kwargs)
        return FullDiskFile(f) if Path(path).name.startswith(f".tmp-{name}.") else f
    monkeypatch.setattr(ck, "open", open_, raising=False)  # the module's global shadows the builtin


@pytest.mark.parametrize("suffix", [".safetensors", ".json"])
def test_full_disk_during_checkpoint_keeps_the_previous_one(tmp_path, capsys, monkeypatch, suffix):
    data = corpus(tmp_path)
    args = ["train", "charlm", "--data", data, *SMALL, "--checkpoint-every", "2", "--keep-checkpoints", "1"]
    reference = tmp_path / "reference"  # the same run, stopped at step 2 on a disk with room
    train_ok([*args, "--out", reference], capsys)
    out = tmp_path / "run"
    fill_disk_at(monkeypatch, f"step-00000004{suffix}")
    code, _, err = run_cli([*args, "--out", out, "--max-steps", "4"], capsys)
    target = out / "checkpoints" / f"step-00000004{suffix}"
    assert_one_line_error(code, err, "no space left", str(target), "earlier checkpoints are intact")
    # nothing of the failed checkpoint is left: no temporary file, no tensor file without its record
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000002.json",
                                                                        "step-00000002.safetensors"]
    # the previous checkpoint is complete (size and SHA-256 checked) and holds what the reference run saved
    record, meta, tensors = load_checkpoint(out)
    assert record.name == "step-00000002.json" and meta["step"] == 2
    want = load_file(reference / "checkpoints" / "step-00000002.safetensors")
    assert sorted(tensors) == sorted(want)
    for k in want:
        assert tensors[k].equal(want[k]), k
    # and the run goes on from it once there is room again
    monkeypatch.undo()
    train_ok(["train", "charlm", "--out", out, "--resume", "--max-steps", "4", "--quiet"], capsys)
    assert latest_checkpoint(out).name == "step-00000004.json"


def test_atomic_write_failure_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    path = tmp_path / "config.json"
    ck.write_json_atomic(path, {"old": True})
    fill_disk_at(monkeypatch, "config.json")
    with pytest.raises(OSError) as exc:
        ck.write_json_atomic(path, {"new": True})
    assert exc.value.errno == errno.ENOSPC and exc.value.filename == str(path)
    assert json.loads(path.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


# ------------------------------------------------------- changed data files
def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def swap_last_two_characters(path: Path) -> None:
    text = path.read_text()  # ends "...speak.\n" or "...,12.794\n"
    path.write_text(text[:-3] + text[-2] + text[-3] + "\n")


def swap_first_two_lines(path: Path) -> None:
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join([lines[1], lines[0], *lines[2:]]))


# Each case: (data file, train command, an edit keeping the size, the characters and the vocabulary, so
# that only the fingerprint can tell; classify rebuilds its vocabulary from the data on resume)
def charlm_case(tmp_path: Path):
    data = corpus(tmp_path)
    return data, ["train", "charlm", "--data", data, *SMALL, "--checkpoint-every", "1"], swap_last_two_characters


def forecast_case(tmp_path: Path):
    data = tmp_path / "series.csv"
    rows = [f"2024-01-{1 + i // 24:02d} {i % 24:02d}:00,{10 + 5 * math.sin(i / 24 * 2 * math.pi):.3f}"
            for i in range(240)]
    data.write_text("time,value\n" + "\n".join(rows) + "\n")
    return data, ["train", "forecast", "--data", data, "--lookback", "24", "--horizon", "6", "--hidden-size", "8",
                  "--batch-size", "8", "--baselines", "naive", "--max-steps", "2", "--checkpoint-every", "1",
                  "--quiet", "--no-tensorboard"], swap_last_two_characters


def classify_case(tmp_path: Path):
    data = tmp_path / "reviews.tsv"
    data.write_text("".join(f"pos\tgood great fine film {i}\n" if i % 2 else f"neg\tbad awful poor film {i}\n"
                            for i in range(40)))
    return data, ["train", "classify", "--data", data, "--tokenizer", "word", "--min-count", "1",
                  "--embedding-size", "8", "--hidden-size", "8", "--batch-size", "8", "--max-steps", "2",
                  "--checkpoint-every", "1", "--quiet", "--no-tensorboard"], swap_first_two_lines


@pytest.mark.parametrize("case", [charlm_case, forecast_case, classify_case], ids=["charlm", "forecast", "classify"])
def test_changed_data_refused_on_resume_unless_allowed(tmp_path, capsys, case):
    data, args, change = case(tmp_path)
    out = tmp_path / "run"
    train_ok([*args, "--out", out], capsys)
    saved = json.loads((out / "data.json").read_text())["files"]
    assert saved == {str(data.resolve()): {"bytes": data.stat().st_size, "sha256": sha256(data)}}
    change(data)
    resume = [*args[:2], "--out", out, "--resume", "--max-steps", "3", "--quiet"]
    code, _, err = run_cli(resume, capsys)
    assert_one_line_error(code, err, str(data.resolve()), "changed", "--allow-data-change")
    assert latest_checkpoint(out).name == "step-00000002.json"  # refused before any step
    assert json.loads((out / "data.json").read_text())["files"] == saved
    train_ok([*resume, "--allow-data-change"], capsys)
    assert latest_checkpoint(out).name == "step-00000003.json"
    # the run's data is now the new file: the next resume needs no flag
    assert json.loads((out / "data.json").read_text())["files"][str(data.resolve())]["sha256"] == sha256(data)
    train_ok([*resume[:-3], "--max-steps", "4", "--quiet"], capsys)
    assert latest_checkpoint(out).name == "step-00000004.json"


def test_fingerprint_of_a_directory(tmp_path):
    data = tmp_path / "texts"
    (data / "more").mkdir(parents=True)
    (data / "a.txt").write_text("alpha\n")
    (data / "more" / "b.txt").write_text("beta\n")
    (data / ".hidden").write_text("editor state\n")
    run = data / "run"  # a run directory inside the data folder is not data
    (run / "checkpoints").mkdir(parents=True)
    (run / "metrics.jsonl").write_text("{}\n")
    before = fingerprint([data], exclude=[run])
    assert sorted(Path(p).relative_to(data).as_posix() for p in before) == ["a.txt", "more/b.txt"]
    (run / "metrics.jsonl").write_text("{}\n{}\n")
    (data / ".hidden").write_text("other editor state\n")
    assert data_change(before, fingerprint([data], exclude=[run])) is None
    moved = tmp_path / "moved"
    data.rename(moved)  # the same files elsewhere: moved, not changed
    assert data_change(before, fingerprint([moved], exclude=[moved / "run"])) is None
    (moved / "more" / "c.txt").write_text("gamma\n")
    assert "c.txt' is new" in data_change(before, fingerprint([moved], exclude=[moved / "run"]))
    (moved / "more" / "c.txt").unlink()
    (moved / "a.txt").write_text("ALPHA\n")
    assert "holds other data" in data_change(before, fingerprint([moved], exclude=[moved / "run"]))
    # two files that trade contents (train and test swapped) have changed, though no content is new
    here = fingerprint([moved], exclude=[moved / "run"])
    (moved / "a.txt").write_text("beta\n")
    (moved / "more" / "b.txt").write_text("ALPHA\n")
    assert "a.txt' changed" in data_change(here, fingerprint([moved], exclude=[moved / "run"]))
