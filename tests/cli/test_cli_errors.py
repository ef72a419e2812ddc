"""Bad input to `rnnkit`: one line naming the problem, exit status != 0, no traceback, no run files."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from helpers import cli_outcome
from rnnkit.cli import main

SMALL = ["--hidden-size", "8", "--embedding-size", "4", "--batch-size", "2", "--bptt", "8", "--quiet",
         "--no-tensorboard", "--max-steps", "2", "--val-batch-size", "2"]


run_cli = cli_outcome  # (exit status, stdout, stderr); 0 when the command returned without exiting


def corpus(tmp_path: Path) -> Path:
    p = tmp_path / "tiny.txt"
    p.write_text("First Citizen:\nBefore we proceed any further, hear me speak.\n" * 40)
    return p


def assert_one_line_error(code, err, *needles):
    assert code not in (0, None)
    lines = [l for l in err.strip().splitlines() if l.strip()]
    assert "Traceback" not in err
    assert len(lines) <= 3, err  # click's usage errors add "Usage:" and "Try ... --help" lines
    for n in needles:
        assert n.lower() in err.lower(), err


@pytest.mark.parametrize("setup,needles", [
    ("missing", ["does not exist"]),
    ("empty", ["is empty"]),
    ("binary", ["binary"]),
    ("emptydir", ["no text files"]),
])
def test_bad_corpus(tmp_path, capsys, setup, needles):
    path = tmp_path / "corpus.txt"
    if setup == "empty":
        path.write_text("")
    elif setup == "binary":
        path.write_bytes(bytes(range(256)) * 10)
    elif setup == "emptydir":
        path = tmp_path / "dir"
        path.mkdir()
    out = tmp_path / "run"
    code, _, err = run_cli(["train", "charlm", "--data", path, "--out", out, *SMALL], capsys)
    assert_one_line_error(code, err, *needles, str(path.name))
    assert not out.exists()  # nothing half-written


@pytest.mark.parametrize("args,needles", [
    (["--cell", "lstmm"], ["--cell", "lstmm"]),
    (["--hidden-size", "0"], ["--hidden-size", "0"]),
    (["--num-layers", "-1"], ["--num-layers"]),
    (["--batch-size", "0"], ["--batch-size"]),
    (["--bptt", "10", "--bptt-k2", "5"], ["k2", "k1"]),
    (["--lr", "-1"], ["--lr"]),
    (["--dropout", "1.5"], ["--dropout"]),
])
def test_bad_settings(tmp_path, capsys, args, needles):
    out = tmp_path / "run"
    code, _, err = run_cli(["train", "charlm", "--data", corpus(tmp_path), "--out", out, *SMALL, *args], capsys)
    assert_one_line_error(code, err, *needles)
    assert not out.exists()


def test_bad_toml(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text("hidden_size = 0\n")
    code, _, err = run_cli(["train", "charlm", "--data", corpus(tmp_path), "--out", tmp_path / "r", "--config", cfg,
                            "--quiet"], capsys)
    assert_one_line_error(code, err, "hidden_size")
    cfg.write_text("hiden_size = 3\n")
    code, _, err = run_cli(["train", "charlm", "--data", corpus(tmp_path), "--out", tmp_path / "r", "--config", cfg,
                            "--quiet"], capsys)
    assert_one_line_error(code, err, "hiden_size")
    assert not (tmp_path / "r").exists()


@pytest.fixture
def trained(tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        main(["train", "charlm", "--data", str(corpus(tmp_path)), "--out", str(out), *SMALL])
        raise SystemExit(0)
    assert exc.value.code in (0, None)
    capsys.readouterr()
    return out


def test_checkpoint_problems(trained, tmp_path, capsys):
    ck = trained / "checkpoints" / "step-00000002.json"
    assert ck.exists()
    # resume with another model shape
    code, _, err = run_cli(["train", "charlm", "--out", trained, "--resume", "--hidden-size", "16", "--quiet",
                            "--max-steps", "4"], capsys)
    assert_one_line_error(code, err, "another model", "hidden_size")
    # resume on other data: refused as such, and with --allow-data-change, for its vocabulary
    other = tmp_path / "other.txt"
    other.write_text("zzzz qqqq xxxx\n" * 50)
    resume_other = ["train", "charlm", "--out", trained, "--resume", "--data", other, "--quiet", "--max-steps", "4"]
    code, _, err = run_cli(resume_other, capsys)
    assert_one_line_error(code, err, "other.txt", "other data", "--allow-data-change")
    code, _, err = run_cli([*resume_other, "--allow-data-change"], capsys)
    assert_one_line_error(code, err, "other.txt", "vocabulary")
    # a fresh run into a directory that holds checkpoints
    code, _, err = run_cli(["train", "charlm", "--data", corpus(tmp_path), "--out", trained, *SMALL], capsys)
    assert_one_line_error(code, err, "--resume")
    # generate: prime outside the vocabulary, truncated checkpoint, not a checkpoint
    code, _, err = run_cli(["generate", "--checkpoint", trained, "--prime", "Ω", "--length", "3"], capsys)
    assert_one_line_error(code, err, "vocabulary")
    blob = ck.with_suffix(".safetensors")
    blob.write_bytes(blob.read_bytes()[:100])
    code, _, err = run_cli(["generate", "--checkpoint", ck, "--length", "3"], capsys)
    assert_one_line_error(code, err, "truncated or corrupt")
    code, _, err = run_cli(["generate", "--checkpoint", tmp_path / "other.txt", "--length", "3"], capsys)
    assert_one_line_error(code, err, "not a valid JSON")
    code, _, err = run_cli(["generate", "--checkpoint", tmp_path / "nothing", "--length", "3"], capsys)
    assert_one_line_error(code, err, "does not exist")


def test_checkpoint_of_another_model_refused_by_generate(trained, capsys):
    ck = trained / "checkpoints" / "step-00000002.json"
    meta = json.loads(ck.read_text())
    meta["run"]["model"]["hidden_size"] = 32  # the record says one shape, the tensors hold another
    ck.write_text(json.dumps(meta))
    code, _, err = run_cli(["generate", "--checkpoint", ck, "--length", "3"], capsys)
    assert_one_line_error(code, err, "does not fit")


def test_debug_shows_traceback(tmp_path):
    with pytest.raises(Exception, match="does not exist"):
        main(["--debug", "train", "charlm", "--data", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "r"),
              "--quiet", "--max-steps", "1"])


def test_directory_corpus_trains(tmp_path, capsys):
    d = tmp_path / "texts"
    d.mkdir()
    (d / "a.txt").write_text("To be, or not to be, that is the question.\n" * 20)
    (d / "b.md").write_text("Now is the winter of our discontent.\n" * 20)
    (d / "skip.bin").write_bytes(b"\x00\x01")
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        main(["train", "charlm", "--data", str(d), "--out", str(out), *SMALL])
        raise SystemExit(0)
    assert exc.value.code in (0, None), capsys.readouterr().err
    recs = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs if r["kind"] == "train"] == [1, 2]
    assert any("val_bpc" in r for r in recs)


# ------------------------------------------------------------------ the run directory (--out)
def test_out_that_is_a_file(tmp_path, capsys):
    """Was a Python traceback (FileExistsError from mkdir, deep in the run)."""
    out = tmp_path / "notes.txt"
    out.write_text("mine\n")
    code, _, err = run_cli(["train", "charlm", "--data", corpus(tmp_path), "--out", out, *SMALL], capsys)
    assert_one_line_error(code, err, "notes.txt", "is a file, not a directory")
    assert out.read_text() == "mine\n"


def previous_run_without_checkpoints(out: Path) -> None:
    """What a run that stopped before its first checkpoint leaves: config.json, metrics.jsonl, events."""
    (out / "tensorboard").mkdir(parents=True)
    (out / "tensorboard" / "events.out.tfevents.old").write_bytes(b"old run")
    (out / "config.json").write_text('{"recipe": "charlm", "settings": {}}')
    (out / "metrics.jsonl").write_text('{"kind": "train", "step": 1, "loss": 9.0}\n')


def test_out_with_a_previous_run_is_refused_then_overwritten(tmp_path, capsys):
    """Was silent: config.json and metrics.jsonl replaced, TensorBoard events appended to the old run's."""
    out = tmp_path / "run"
    previous_run_without_checkpoints(out)
    code, _, err = run_cli(["train", "charlm", "--data", corpus(tmp_path), "--out", out, *SMALL], capsys)
    assert_one_line_error(code, err, "holds a previous run", "config.json", "--resume", "--overwrite", "new --out")
    assert (out / "tensorboard" / "events.out.tfevents.old").exists()
    assert "9.0" in (out / "metrics.jsonl").read_text()
    code, _, err = run_cli(["train", "charlm", "--data", corpus(tmp_path), "--out", out, "--overwrite",
                            *[a for a in SMALL if a != "--no-tensorboard"]], capsys)
    assert code in (0, None), err
    assert not (out / "tensorboard" / "events.out.tfevents.old").exists()  # the old run's events are gone
    assert "9.0" not in (out / "metrics.jsonl").read_text()
    assert json.loads((out / "config.json").read_text())["settings"]["overwrite"] is True
    code, _, err = run_cli(["train", "charlm", "--out", out, "--resume", "--overwrite", "--quiet"], capsys)
    assert_one_line_error(code, err, "--resume", "--overwrite")


def test_resume_with_nothing_to_resume_starts_clean(tmp_path, capsys):
    out = tmp_path / "run"
    previous_run_without_checkpoints(out)
    code, _, err = run_cli(["train", "charlm", "--data", corpus(tmp_path), "--out", out, "--resume", *SMALL],
                           capsys)
    assert code in (0, None), err
    assert not (out / "tensorboard" / "events.out.tfevents.old").exists()
    assert "9.0" not in (out / "metrics.jsonl").read_text()


def test_empty_existing_out_is_fine(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "README").write_text("not rnnkit's\n")  # other files are neither a previous run nor touched
    code, _, err = run_cli(["train", "charlm", "--data", corpus(tmp_path), "--out", out, *SMALL], capsys)
    assert code in (0, None), err
    assert (out / "config.json").is_file() and (out / "README").read_text() == "not rnnkit's\n"


@pytest.mark.parametrize("recipe", ["charlm", "wordlm", "seq2seq", "forecast", "classify", "tag", "video", "caption"])
def test_missing_data_named_in_one_line(tmp_path, capsys, recipe):
    """Every train recipe: --data naming nothing stops with one line naming the path, before any run file."""
    missing = tmp_path / "no-such" / "data.txt"
    out = tmp_path / "run"
    code, _, err = run_cli(["train", recipe, "--data", missing, "--out", out, "--max-steps", "1"], capsys)
    assert_one_line_error(code, err, "no-such")
    assert "Traceback" not in err
    assert not (out / "config.json").exists()
