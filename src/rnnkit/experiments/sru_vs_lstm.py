"""SRU against LSTM on this CPU: training time per step and quality at equal CPU time.

The notes repeat the SRU paper (Lei et al. 2018): SRU trains 5–9× faster than a cuDNN LSTM, because
its recurrence is element-wise (the matrix products take all steps at once). The paper measured on a
GPU; this measures the same ratio on this CPU, rnnkit's SRU against rnnkit's LSTM (which runs torch's
fused oneDNN kernel where it can), and what each learns in the same CPU time (see
`rnnkit.experiments.race`).

    rnnkit experiment sru-vs-lstm --help
"""

from __future__ import annotations

from typing import Any, Dict

from ..apps.settings import settings_class
from .race import Contestant, RaceSettings, quality, run_race

CLAIM = ("SRU trains 5-9x faster than a (cuDNN) LSTM (seed 003, from Lei et al. 2018: "
         "'cuDNN-optimized LSTM보다 5~9배 빠른 속도'), measured here on the CPU.")

#: the smallest speed-up the claim names
CLAIMED_SPEEDUP = 5.0


@settings_class
class SRUvsLSTMSettings(RaceSettings):
    """Settings of `rnnkit experiment sru-vs-lstm`."""

    DEFAULTS = dict(out="runs/sru-vs-lstm")


SETTINGS = SRUvsLSTMSettings


def speedup(sru: Contestant, lstm: Contestant) -> float:
    """The LSTM's forward+backward time over the SRU's (above 1: SRU is faster)."""
    return lstm.step_ms / sru.step_ms


def holds(sru: Contestant, lstm: Contestant) -> bool:
    """The claim: SRU's forward+backward is at least CLAIMED_SPEEDUP times shorter than the LSTM's."""
    return speedup(sru, lstm) >= CLAIMED_SPEEDUP


def verdict(sru: Contestant, lstm: Contestant) -> str:
    """The verdict (`holds`) with its numbers; the quality at equal time is reported beside it."""
    return (f"**Verdict: the claim {'holds' if holds(sru, lstm) else 'does not hold'} on this CPU.** "
            f"SRU's forward+backward per batch is {speedup(sru, lstm):.2f}× as fast as the LSTM's ({sru.step_ms:.1f} "
            f"vs {lstm.step_ms:.1f} ms; the claim is {CLAIMED_SPEEDUP:g}–9×, on a GPU against cuDNN), with "
            f"{sru.parameters / lstm.parameters:.2f}× the parameters; {quality(sru, lstm)}.")


def run(s: SRUvsLSTMSettings) -> Dict[str, Any]:
    """The race (see `rnnkit.experiments.race`), sru-vs-lstm.png, the table and the verdict."""
    return run_race(("sru", "lstm"), s, name="sru-vs-lstm", title="SRU vs LSTM", holds=holds, verdict=verdict)
