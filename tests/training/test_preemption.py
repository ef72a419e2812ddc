"""SIGTERM (what clusters and `timeout` send) stops `rnnkit train` at a step boundary with a checkpoint and
exit status 143; the resume command it prints continues with the losses of an uninterrupted run. Under
torchrun a SIGTERM that reaches one worker stops every rank at the same step. The handler is fit()'s own:
installed in the main thread only, with a run directory only, and the caller's is restored after."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import List

import pytest

from rnnkit.training.checkpoint import latest_checkpoint, read_checkpoint
from rnnkit.training.trainer import PREEMPTED

from test_checkpoint_kill import (ENV, assert_same_curve, train_args, train_losses, wait_until,  # noqa: E402
                                  write_corpus)
from test_ddp import args as ddp_args, descendants, kill_torchrun  # noqa: E402  (same directory)
from test_trainer import make_trainer  # noqa: E402

FOREVER = ["--max-steps", "100000", "--max-epochs", "100000"]  # later options win: runs until stopped


def last_step(run: Path) -> int:
    """The last training step in metrics.jsonl (complete lines only: the file is being written)."""
    path = run / "metrics.jsonl"
    lines = path.read_text().splitlines(keepends=True) if path.exists() else []
    return max((json.loads(l)["step"] for l in lines if l.endswith("}\n") and '"train"' in l), default=0)


def preemption_lines(stderr: str) -> List[str]:
    return [l for l in stderr.splitlines() if l.startswith("rnnkit: preempted")]


def test_sigterm_writes_a_checkpoint_and_resume_continues_exactly(tmp_path):
    data = write_corpus(tmp_path / "corpus.txt")
    out = tmp_path / "run"
    proc = subprocess.Popen(train_args(data, out) + FOREVER, env=ENV, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(proc, lambda: last_step(out) >= 3, "step 3")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, err
    record = latest_checkpoint(out)
    stopped = read_checkpoint(record)[0]["step"]
    assert stopped == last_step(out) >= 3  # a checkpoint of the very step it stopped at
    assert preemption_lines(err) == [f"rnnkit: preempted (SIGTERM) at step {stopped}: checkpoint {record}; "
                                     f"continue with: rnnkit train charlm --out {out} --resume"], err
    # run the command it printed, up to a few evaluations and checkpoints past the stop
    end = stopped + 12
    command = shlex.split(preemption_lines(err)[0].split("continue with: ")[1])
    assert command[0] == "rnnkit"
    subprocess.run([sys.executable, "-m", *command, "--max-steps", str(end)], check=True, env=ENV, timeout=300)
    reference = tmp_path / "reference"  # the same settings, never interrupted
    subprocess.run(train_args(data, reference, steps=end), check=True, env=ENV, timeout=300)
    assert last_step(out) == end
    assert_same_curve(train_losses(out), train_losses(reference))


def worker_of_rank(launcher: int, rank: int) -> int:
    for pid in descendants(launcher):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in env and b"LOCAL_RANK=" + str(rank).encode() in env:
            return pid
    pytest.fail(f"no torchrun worker of rank {rank} under process {launcher}")


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the workers through /proc")
def test_sigterm_to_one_torchrun_worker_stops_every_rank_at_the_same_step(tmp_path):
    data = write_corpus(tmp_path / "corpus.txt")
    out = tmp_path / "ddp"
    ddp = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                            "-m", "rnnkit", *ddp_args(data, out, 4), *FOREVER], env=ENV, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_until(ddp, lambda: last_step(out) >= 3, "step 3")
        os.kill(worker_of_rank(ddp.pid, 1), signal.SIGTERM)  # rank 0 only hears of it through the all-reduce
        _, err = ddp.communicate(timeout=120)
    except subprocess.TimeoutExpired:  # the ranks did not agree: one waits in a collective for the other
        err = kill_torchrun(ddp)
        pytest.fail(f"torchrun did not finish within 120 s of the SIGTERM; its stderr ends: {err[-2000:]}")
    finally:
        if ddp.poll() is None:
            kill_torchrun(ddp)
    record = latest_checkpoint(out)
    meta, tensors = read_checkpoint(record)
    stopped = meta["step"]
    assert stopped == last_step(out) >= 3
    assert any(k.startswith("rank0/") for k in tensors) and any(k.startswith("rank1/") for k in tensors)
    assert [l.split(":")[1] for l in preemption_lines(err)] == [" preempted (SIGTERM) at step " + str(stopped)], err
    assert ddp.returncode != 0  # the run did not finish: torchrun reports its workers' status 143 as a failure


def test_handler_lives_only_inside_fit_and_only_in_the_main_thread(tmp_path):
    def previous(signum, frame):  # the caller's own handler: never called while fit() runs
        raise AssertionError("the caller's SIGTERM handler ran inside fit()")

    old = signal.signal(signal.SIGTERM, previous)
    try:
        trainer = make_trainer(tmp_path / "main", steps=12, checkpoint_every=5)
        trainer.add_hook("step_end", lambda tr, rec: tr.step == 3 and os.kill(os.getpid(), signal.SIGTERM))
        summary = trainer.fit()
        assert summary["stop"] == PREEMPTED and summary["step"] == 3
        assert summary["checkpoint"] == latest_checkpoint(tmp_path / "main") and \
            read_checkpoint(summary["checkpoint"])[0]["step"] == 3
        assert signal.getsignal(signal.SIGTERM) is previous  # restored
        # elsewhere Python cannot set handlers; without a run directory there is nothing to save: untouched
        seen = []
        no_dir = make_trainer(None, steps=2)
        no_dir.add_hook("step_end", lambda tr, rec: seen.append(signal.getsignal(signal.SIGTERM)))
        no_dir.fit()
        in_thread = make_trainer(tmp_path / "thread", steps=2)
        in_thread.add_hook("step_end", lambda tr, rec: seen.append(signal.getsignal(signal.SIGTERM)))
        worker = threading.Thread(target=in_thread.fit)
        worker.start()
        worker.join()
        assert seen == [previous] * 4 and in_thread.step == 2
    finally:
        signal.signal(signal.SIGTERM, old)
