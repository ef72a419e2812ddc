"""torchrun + DistributedDataParallel (gloo, 2 CPU processes) gives the loss curve of one process
with the doubled batch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

from test_checkpoint_kill import write_corpus  # noqa: E402  (same directory)

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def args(data, out, batch):
    return ["train", "charlm", "--data", str(data), "--out", str(out), "--hidden-size", "16", "--embedding-size",
            "8", "--batch-size", str(batch), "--bptt", "16", "--bptt-k2", "24", "--max-steps", "8",
            "--eval-every", "4", "--checkpoint-every", "4", "--quiet", "--no-tensorboard", "--threads", "1",
            "--val-batch-size", str(batch // 2), "--clip-norm", "0.5"]  # both per process, as under torchrun


def curve(run):
    return [(r["kind"], r["step"], r["loss"], r.get("val_loss"))
            for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]


def descendants(pid: int) -> List[int]:
    """The processes under `pid`, from /proc (torchrun starts each worker in a session of its own)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
        for child in children:
            found += [child, *descendants(child)]
    return found


def kill_torchrun(launcher: subprocess.Popen) -> str:
    """SIGKILL the launcher and every worker (they hold its pipes open); returns the launcher's stderr."""
    for pid in [*descendants(launcher.pid), launcher.pid]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return launcher.communicate()[1]


def test_torchrun_two_processes_equal_one_process_with_doubled_batch(tmp_path):
    data = write_corpus(tmp_path / "corpus.txt")
    subprocess.run([sys.executable, "-m", "rnnkit", *args(data, tmp_path / "single", 8)], check=True, env=ENV,
                   timeout=300)
    ddp = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                            "-m", "rnnkit", *args(data, tmp_path / "ddp", 4)], env=ENV, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, err = ddp.communicate(timeout=300)
    except subprocess.TimeoutExpired:  # kill the launcher and both workers: no orphan may outlive the test
        err = kill_torchrun(ddp)
        pytest.fail(f"torchrun did not finish in 300 s; its stderr ends: {err[-2000:]}")
    assert ddp.returncode == 0, err[-3000:]
    single, multi = curve(tmp_path / "single"), curve(tmp_path / "ddp")
    assert [x[:2] for x in single] == [x[:2] for x in multi]
    assert len(single) == 8 + 2
    for a, b in zip(single, multi):
        assert a[2] == pytest.approx(b[2], rel=1e-5, abs=1e-6), (a, b)
        if a[3] is not None:
            assert a[3] == pytest.approx(b[3], rel=1e-5, abs=1e-6), (a, b)
    cfg = json.loads((tmp_path / "ddp" / "config.json").read_text())
    assert cfg["world_size"] == 2
