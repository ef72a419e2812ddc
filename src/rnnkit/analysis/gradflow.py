"""Gradient flow through time and gate statistics, for any cell, read-only.

For a layer's first cell and an input sequence x (T, B, I), `gradient_flow`
steps the cell by hand (its own `project` and `step`, so the numbers are the
model's), keeps every state s_t, takes the loss L_T of the last step and returns

    ||∂L_T/∂s_t||  for t = 0 … T−1, one curve per state tensor (h; and c for LSTMs),

the norm over units, averaged over the batch. A vanishing gradient shows as a
curve that falls by orders of magnitude towards t = 0: the loss at T cannot
teach the network anything about inputs that far back.

`gate_activations` reconstructs the gates of the same run from the cell's
parameters (LSTM i, f, g, o; GRU r, z; SRU f, r; minGRU z) and returns their mean
over batch and units per step. Nothing here changes a parameter.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor
from torch.nn import functional as F

from ..cells import (ElmanCell, GRUCell, LayerNormLSTMCell, LSTMCell, MinGRUCell, PeepholeLSTMCell,
                     RecurrentCell, SRUCell)
from ..cells.base import linear
from .._optional import pyplot


def gradient_flow(cell: RecurrentCell, x: Tensor, readout: Callable[[Tensor], Tensor],
                  state=None) -> Dict[str, Tensor]:
    """||∂L_T/∂s_t|| per step for every state tensor of `cell`.

    x: (T, B, I). readout: maps the last output y_T (B, O) to the scalar loss L_T.
    Returns {state name: (T,) tensor}, entry t for the state after step t.
    """
    T, B = x.shape[0], x.shape[1]
    if state is None:
        state = cell.initial_state(B, device=x.device, dtype=x.dtype)
    kept: List[Tuple[Tensor, ...]] = []
    u = cell.project(x).unbind(0)  # T × (B, K); unbind, as indexing u[t] would make backward O(T²)
    y = None
    for t in range(T):
        y, state = cell.step(u[t], state)
        parts = cell.unpack_state(state)
        for p in parts:
            p.retain_grad()
        kept.append(parts)
    params = [p for p in cell.parameters()]
    before = [p.grad for p in params]
    loss = readout(y)
    loss.backward()
    for p, g in zip(params, before):  # read-only: leave the parameters' gradients as they were
        p.grad = g
    out: Dict[str, Tensor] = {}
    for k, name in enumerate(cell.state_names):
        norms = [(s[k].grad if s[k].grad is not None else torch.zeros_like(s[k])).norm(dim=-1).mean()
                 for s in kept]
        out[name] = torch.stack(norms).detach()
    return out


@torch.no_grad()
def gate_activations(cell: RecurrentCell, x: Tensor, state=None) -> Dict[str, Tensor]:
    """Mean gate activation per step, {gate name: (T,)}; empty for cells without gates (Elman)."""
    T, B = x.shape[0], x.shape[1]
    if state is None:
        state = cell.initial_state(B, device=x.device, dtype=x.dtype)
    u = cell.project(x)
    series: Dict[str, List[Tensor]] = {}

    def add(name: str, value: Tensor) -> None:
        series.setdefault(name, []).append(value.mean())

    for t in range(T):
        gates = _gates(cell, u[t], state)
        for name, value in gates.items():
            add(name, value)
        _, state = cell.step(u[t], state)
    return {k: torch.stack(v) for k, v in series.items()}


def _gates(cell: RecurrentCell, u: Tensor, state) -> Dict[str, Tensor]:
    """Gate activations of one step, from the cell's equations and parameters (see each cell's docstring)."""
    if isinstance(cell, LayerNormLSTMCell):
        h, c = state
        rec = F.layer_norm(linear(h, cell.weight_hh, None), (4 * cell.hidden_size,), cell.ln_hh_weight, None, 1e-5)
        i, f, g, o = (u + rec).chunk(4, dim=-1)
        return {"i": torch.sigmoid(i), "f": torch.sigmoid(f), "o": torch.sigmoid(o)}
    if isinstance(cell, LSTMCell):  # also PeepholeLSTMCell (its gates() adds the peepholes)
        h, c = state
        i, f, g, o = cell.gates(u, h, c, None)
        c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return {"i": torch.sigmoid(i), "f": torch.sigmoid(f), "o": torch.sigmoid(cell.output_gate(o, c_new))}
    if isinstance(cell, GRUCell):
        h = state
        u_r, u_z, _ = u.chunk(3, dim=-1)
        H = cell.hidden_size
        b = cell.bias_hh
        w = linear(h, cell.weight_hh[: 2 * H], None if b is None else b[: 2 * H])
        w_r, w_z = w.chunk(2, dim=-1)
        return {"r": torch.sigmoid(u_r + w_r), "z": torch.sigmoid(u_z + w_z)}
    if isinstance(cell, SRUCell):
        c = state
        _, u_f, u_r, _ = u.chunk(4, dim=-1)
        v_f, v_r = cell.weight_c.chunk(2)
        return {"f": torch.sigmoid(u_f + v_f * c), "r": torch.sigmoid(u_r + v_r * c)}
    if isinstance(cell, MinGRUCell):
        return {"z": torch.sigmoid(u.chunk(2, dim=-1)[0])}
    return {}


def plot_gradflow(results: Dict[str, Dict[str, Dict[str, Tensor]]], path, title: str = "") -> None:
    """One PNG: left, ||∂L_T/∂s_t|| over t on a log scale for every cell (h solid, c dashed);
    right, mean gate activations over t. results[cell] = {"grad": {...}, "gates": {...}}."""
    plt = pyplot(extra="plots", purpose="the gradient-flow plot")

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8), dpi=120)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for n, (cell, r) in enumerate(results.items()):
        color = colors[n % len(colors)]
        for k, (name, curve) in enumerate(r["grad"].items()):
            values = curve.clamp_min(1e-45).cpu().numpy()
            left.semilogy(range(len(values)), values, color=color, linestyle="-" if k == 0 else "--",
                          label=f"{cell}: ∂L/∂{name}_t")
        styles = ["-", "--", ":", "-."]
        for k, (gate, curve) in enumerate(r["gates"].items()):
            right.plot(range(len(curve)), curve.cpu().numpy(), color=color, linestyle=styles[k % 4],
                       label=f"{cell} {gate}")
    left.set_xlabel("t (the loss is taken at the last step T)")
    left.set_ylabel("‖∂L_T/∂s_t‖ (mean over the batch)")
    left.set_title("gradient flow back through time")
    left.grid(alpha=0.3, which="both")
    left.legend(fontsize=8)
    right.set_xlabel("t")
    right.set_ylabel("mean gate activation")
    right.set_title("gates")
    right.set_ylim(0, 1)
    right.grid(alpha=0.3)
    if right.lines:
        right.legend(fontsize=7, ncol=2)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def summary_line(cell: str, grads: Dict[str, Tensor]) -> str:
    """How many orders of magnitude each gradient falls from t = T−1 to t = 0."""
    parts = []
    for name, curve in grads.items():
        first, last = float(curve[0]), float(curve[-1])
        ratio = first / last if last > 0 else float("nan")
        parts.append(f"‖∂L/∂{name}_0‖ / ‖∂L/∂{name}_T-1‖ = {ratio:.2e}")
    return f"{cell:>9}: " + ", ".join(parts)
