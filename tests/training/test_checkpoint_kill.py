"""Checkpoints survive SIGKILL: mid-training and mid-write, the last complete checkpoint loads,
a partial file is never taken for one, and the resumed run's losses equal the uninterrupted run's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rnnkit.training.checkpoint import (CheckpointError, flatten, latest_checkpoint, load_checkpoint,
                                        read_checkpoint, resolve_checkpoint, save_checkpoint, unflatten)

WORDS = ("the king and queen of night shall speak to thee my lord what say you now good sir "
         "ROMEO JULIET enter exit love death fair sweet").split()


def write_corpus(path: Path, n_lines: int = 600) -> Path:
    g = torch.Generator().manual_seed(0)
    lines = []
    for i in range(n_lines):
        idx = torch.randint(0, len(WORDS), (6,), generator=g).tolist()
        lines.append(("ROMEO:" if i % 3 == 0 else "") + " ".join(WORDS[j] for j in idx))
    path.write_text("\n".join(lines) + "\n")
    return path


def train_args(data: Path, out: Path, steps: int = 30):
    return [sys.executable, "-m", "rnnkit", "train", "charlm", "--data", str(data), "--out", str(out),
            "--hidden-size", "16", "--embedding-size", "8", "--batch-size", "4", "--bptt", "16",
            "--eval-every", "10", "--checkpoint-every", "5", "--max-steps", str(steps), "--quiet",
            "--no-tensorboard", "--threads", "1", "--val-batch-size", "4"]


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def train_losses(run: Path):
    recs = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["kind"], r["step"], r["loss"], r.get("val_loss")) for r in recs]


def assert_same_curve(a, b):
    """Step for step; exact within a process (see test_trainer.test_resume_is_exact), here 1e-6 relative
    because separate processes may pick different (equally correct) backends for the first and second half."""
    assert [x[:2] for x in a] == [x[:2] for x in b]
    for x, y in zip(a, b):
        assert x[2] == pytest.approx(y[2], rel=1e-6), (x, y)
        assert (x[3] is None) == (y[3] is None) and (x[3] is None or x[3] == pytest.approx(y[3], rel=1e-6))


def wait_until(proc: subprocess.Popen, ready, what: str, timeout: float = 240) -> None:
    """Poll `ready()` every 5 ms until it is true; fail if `proc` exits first or `timeout` s pass."""
    deadline = time.time() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"training exited with status {proc.returncode} before {what}")
        if time.time() > deadline:
            pytest.fail(f"training never got to {what}")
        time.sleep(0.005)


def checkpoint_steps(run: Path):
    return [int(p.stem.split("-")[1]) for p in (run / "checkpoints").glob("step-*.json")]


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("ref")
    data = write_corpus(d / "corpus.txt")
    subprocess.run(train_args(data, d / "run"), check=True, env=ENV, timeout=300)
    return data, d / "run"


def test_resume_after_sigkill_mid_training(reference_run, tmp_path):
    data, ref = reference_run
    out = tmp_path / "run"
    # would run for long; killed once it has 2 checkpoints (idle, it makes ~400 steps/s and keeps only the last
    # 3 checkpoints, so poll often and accept any checkpoint at step >= 10)
    args = train_args(data, out, steps=10_000) + ["--max-epochs", "100000"]
    proc = subprocess.Popen(args, env=ENV)
    try:
        wait_until(proc, lambda: max(checkpoint_steps(out), default=0) >= 10, "its second checkpoint")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    record = latest_checkpoint(out)
    assert record is not None
    step = json.loads(record.read_text())["step"]
    assert step >= 10
    # resume up to step 30 (the max_steps override is a command-line value and wins over config.json)
    # (the other settings come from the run's config.json)
    subprocess.run([sys.executable, "-m", "rnnkit", "train", "charlm", "--out", str(out), "--resume",
                    "--max-steps", "30", "--quiet"], check=True, env=ENV, timeout=300)
    saved = json.loads((out / "config.json").read_text())["settings"]
    assert saved["hidden_size"] == 16 and saved["max_steps"] == 30
    if step <= 30:
        assert_same_curve(train_losses(out), train_losses(ref))


KILL_DURING_WRITE = r"""
import os, signal, sys
import rnnkit.training.checkpoint as ck
calls = {"n": 0}
target, which = int(sys.argv[1]), sys.argv[2]
real = ck._write_atomic
def dying_write(path, data):
    if path.suffix == which and path.name.startswith("step-"):
        calls["n"] += 1
        if calls["n"] == target:  # write half of this file, then die as if the machine lost power
            tmp = path.with_name(f".tmp-{path.name}.{os.getpid()}")
            with open(tmp, "wb") as f:
                f.write(data[: len(data) // 2])
                f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
    real(path, data)
ck._write_atomic = dying_write
from rnnkit.cli import main
main(sys.argv[3:])
"""


@pytest.mark.parametrize("which", [".json", ".safetensors"])
def test_sigkill_mid_checkpoint_write(reference_run, tmp_path, which, capsys):
    data, ref = reference_run
    out = tmp_path / "run"
    script = tmp_path / "die.py"
    script.write_text(KILL_DURING_WRITE)
    proc = subprocess.run([sys.executable, str(script), "3", which] + train_args(data, out)[3:], env=ENV,
                          timeout=300)
    assert proc.returncode == -signal.SIGKILL
    ckdir = out / "checkpoints"
    names = sorted(p.name for p in ckdir.iterdir())
    assert any(n.startswith(".tmp-step-00000015") for n in names), names
    assert "step-00000015.json" not in names
    # the partial checkpoint is never taken for one; the previous complete one is
    assert latest_checkpoint(out).name == "step-00000010.json"
    if which == ".json":  # the tensor file of step 15 is complete but has no record: refused by name
        with pytest.raises(CheckpointError, match="incomplete"):
            resolve_checkpoint(ckdir / "step-00000015.safetensors")
    # generate takes the run directory and uses its last complete checkpoint
    from rnnkit.cli import main
    with pytest.raises(SystemExit) as exc:
        main(["generate", "--checkpoint", str(out), "--prime", "ROMEO:", "--length", "20", "--seed", "0"])
        raise SystemExit(0)
    assert exc.value.code in (0, None)
    text = capsys.readouterr().out
    assert text.startswith("ROMEO:") and len(text) >= 26
    # and the resumed run continues exactly
    subprocess.run(train_args(data, out) + ["--resume"], check=True, env=ENV, timeout=300)
    assert_same_curve(train_losses(out), train_losses(ref))
    assert not any(p.name.startswith(".tmp-") for p in ckdir.iterdir())


def test_corrupt_checkpoint_detected(tmp_path):
    save_checkpoint(tmp_path, 1, {"a": torch.ones(3)}, {"note": "first"})
    p2 = save_checkpoint(tmp_path, 2, {"a": torch.arange(1000.0)}, {"note": "second"})
    blob = p2.with_suffix(".safetensors")
    blob.write_bytes(blob.read_bytes()[:-100])  # truncated
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_checkpoint(p2)
    assert latest_checkpoint(tmp_path).name == "step-00000001.json"
    p2.write_text('{"format": "rnnkit-checkp')  # cut JSON
    with pytest.raises(CheckpointError, match="not a valid JSON"):
        read_checkpoint(p2)
    _, meta, tensors = load_checkpoint(tmp_path)
    assert meta["note"] == "first" and torch.equal(tensors["a"], torch.ones(3))
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope")


def test_flatten_roundtrip_of_optimizer_state():
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=0.1, betas=(0.8, 0.9))
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    tensors = {}
    obj = flatten(opt.state_dict(), "optim", tensors)
    text = json.dumps(obj)  # pure JSON, no pickle
    back = unflatten(json.loads(text), tensors)
    opt2 = torch.optim.Adam(torch.nn.Linear(3, 2).parameters(), lr=0.5)
    opt2.load_state_dict(back)
    assert opt2.param_groups[0]["betas"] == (0.8, 0.9)
    for k, v in opt.state_dict()["state"][0].items():
        torch.testing.assert_close(opt2.state_dict()["state"][0][k], v)
