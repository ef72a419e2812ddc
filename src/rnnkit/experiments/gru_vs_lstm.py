"""GRU against LSTM: parameters, speed and quality on the same char-LM and the same CPU-time budget.

The notes say GRU simplifies the LSTM (two gates instead of three, no cell state), so it is faster
and has fewer parameters. This measures both, and what each learns in the same CPU time (see
`rnnkit.experiments.race` for how).

    rnnkit experiment gru-vs-lstm --help
"""

from __future__ import annotations

from typing import Any, Dict

from ..apps.settings import settings_class
from .race import Contestant, RaceSettings, quality, run_race

CLAIM = ("A GRU is faster than an LSTM and has fewer parameters, for about the same quality (seed 000: GRU "
         "'연산 속도가 빠르다', LSTM '연산속도가 느리다'; seed 003: GRU simplifies the LSTM).")


@settings_class
class GRUvsLSTMSettings(RaceSettings):
    """Settings of `rnnkit experiment gru-vs-lstm`."""

    DEFAULTS = dict(out="runs/gru-vs-lstm")


SETTINGS = GRUvsLSTMSettings

#: "faster" means at most this fraction of the LSTM's time: a smaller difference is within what a shared
#: machine's timings move by
FASTER = 0.95


def faster(gru: Contestant, lstm: Contestant) -> bool:
    return gru.step_ms <= FASTER * lstm.step_ms


def holds(gru: Contestant, lstm: Contestant) -> bool:
    """The claim: the GRU has fewer parameters and a clearly shorter forward+backward."""
    return gru.parameters < lstm.parameters and faster(gru, lstm)


def verdict(gru: Contestant, lstm: Contestant) -> str:
    """The verdict (`holds`) with its numbers; the quality at equal time is reported beside it."""
    return (f"**Verdict: the claim {'holds' if holds(gru, lstm) else 'does not hold'} on this machine.** The GRU "
            f"has {gru.parameters / lstm.parameters:.2f}× the LSTM's parameters and takes "
            f"{gru.step_ms / lstm.step_ms:.2f}× its forward+backward time per batch "
            f"({gru.step_ms:.1f} vs {lstm.step_ms:.1f} ms: {'faster' if faster(gru, lstm) else 'not faster'}); "
            f"{quality(gru, lstm)}.")


def run(s: GRUvsLSTMSettings) -> Dict[str, Any]:
    """The race (see `rnnkit.experiments.race`), gru-vs-lstm.png, the table and the verdict."""
    return run_race(("gru", "lstm"), s, name="gru-vs-lstm", title="GRU vs LSTM", holds=holds, verdict=verdict)
