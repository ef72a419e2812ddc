"""Gradient flow through time and gate statistics, checked against hand-written BPTT and gate biases."""

from __future__ import annotations

import json

import pytest
import torch

from rnnkit.analysis.curves import eval_table, plot_run, read_metrics
from rnnkit.analysis.gradflow import gate_activations, gradient_flow
from rnnkit.cells import ElmanCell, GRUCell, LSTMCell, MinGRUCell, SRUCell
from rnnkit.cli import main


def test_elman_gradient_norms_match_hand_bptt():
    torch.manual_seed(0)
    cell = ElmanCell(3, 5).double()
    x = torch.randn(12, 4, 3, dtype=torch.float64)
    w = torch.randn(5, 1, dtype=torch.float64)
    got = gradient_flow(cell, x, lambda y: (y @ w).sum())["h"]
    # by hand: h_t = tanh(a_t); dL/dh_T = w; dL/dh_t = (dL/dh_{t+1} * (1 - h_{t+1}^2)) @ W_hh
    hs, h = [], torch.zeros(4, 5, dtype=torch.float64)
    with torch.no_grad():
        for t in range(12):
            h = torch.tanh(x[t] @ cell.weight_ih.T + cell.bias_ih + h @ cell.weight_hh.T + cell.bias_hh)
            hs.append(h)
        delta = w.T.expand(4, 5).clone()
        want = [None] * 12
        want[11] = delta.norm(dim=-1).mean()
        for t in range(10, -1, -1):
            delta = (delta * (1 - hs[t + 1] ** 2)) @ cell.weight_hh
            want[t] = delta.norm(dim=-1).mean()
    torch.testing.assert_close(got, torch.stack(want), rtol=1e-10, atol=1e-12)
    assert all(p.grad is None for p in cell.parameters())  # read-only


@pytest.mark.parametrize("make,bias_slice,gate", [
    (lambda: LSTMCell(3, 4), slice(4, 8), "f"),  # gate order i, f, g, o
    (lambda: LSTMCell(3, 4), slice(12, 16), "o"),
    (lambda: GRUCell(3, 4), slice(4, 8), "z"),  # gate order r, z, n
    (lambda: GRUCell(3, 4), slice(0, 4), "r"),
])
def test_gate_names_follow_the_cells_gate_order(make, bias_slice, gate):
    cell = make()
    x = torch.randn(6, 2, 3)
    for value, expect in ((20.0, 1.0), (-20.0, 0.0)):
        with torch.no_grad():
            cell.bias_ih[bias_slice] = value
        means = gate_activations(cell, x)[gate]
        assert means.shape == (6,)
        torch.testing.assert_close(means, torch.full((6,), expect), atol=1e-6, rtol=0)


def test_gates_of_scan_cells():
    x = torch.randn(5, 2, 3)
    assert set(gate_activations(SRUCell(3, 4), x)) == {"f", "r"}
    assert set(gate_activations(MinGRUCell(3, 4), x)) == {"z"}
    assert gate_activations(ElmanCell(3, 4), x) == {}


def test_gradflow_cli(tmp_path, capsys):
    out = tmp_path / "flow" / "gradflow.png"
    with pytest.raises(SystemExit) as exc:
        main(["gradflow", "--cells", "rnn,lstm,gru", "--T", "30", "--train-steps", "2", "--hidden-size", "8",
              "--batch-size", "4", "--out", str(out.parent), "--quiet"])
        raise SystemExit(0)
    assert exc.value.code in (0, None)
    assert out.stat().st_size > 10_000
    data = json.loads(out.with_suffix(".json").read_text())
    assert set(data["cells"]) == {"rnn", "lstm", "gru"}
    assert set(data["cells"]["lstm"]["grad"]) == {"h", "c"}
    assert len(data["cells"]["rnn"]["grad"]["h"]) == 30
    text = capsys.readouterr().out
    assert "rnn" in text and "gradient flow" in text
    with pytest.raises(SystemExit) as exc:
        main(["gradflow", "--cells", "rnn,bogus", "--out", str(out.parent)])
    assert exc.value.code != 0


def test_plot_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    lines = [{"kind": "train", "step": s, "loss": 3.0 / s} for s in range(1, 30)]
    lines += [{"kind": "eval", "step": 10, "loss": 0.3, "val_loss": 1.5, "val_bpc": 2.16}]
    (run / "metrics.jsonl").write_text("\n".join(map(json.dumps, lines)) + "\n{\"kind\": \"tra")  # cut last line
    train, evals = read_metrics(run)
    assert len(train) == 29 and len(evals) == 1
    assert "2.1600" in eval_table(evals)
    png = plot_run(run)
    assert png.exists() and png.stat().st_size > 5_000


def test_forget_bias_sets_the_f_gate():
    from rnnkit.models.regressor import SequenceRegressor
    for cell in ("lstm", "peephole", "lnlstm", "sru"):
        m = SequenceRegressor(cell, 2, 4, forget_bias=30.0)
        f = gate_activations(m.rnn.cells[0], torch.randn(5, 3, 2))["f"]
        torch.testing.assert_close(f, torch.ones(5), atol=1e-4, rtol=0)


def test_sequence_regressor_runs():
    from rnnkit.models.regressor import SequenceRegressor
    m = SequenceRegressor("gru", 2, 4, forget_bias=1.0)
    assert m(torch.randn(7, 3, 2)).shape == (3, 1)


def _gradflow_growth(tmp_path, *options: str) -> dict:
    """||∂L/∂h_0|| / ||∂L/∂h_T−1|| per cell from `rnnkit gradflow` on freshly initialised cells."""
    out = tmp_path / "flow"
    with pytest.raises(SystemExit) as exc:
        main(["gradflow", "--cells", "rnn-relu,rnn", "--T", "40", "--train-steps", "0", "--hidden-size", "16",
              "--batch-size", "4", "--out", str(out), "--quiet", *options])
        raise SystemExit(0)
    assert exc.value.code in (0, None)
    cells = json.loads((out / "gradflow.json").read_text())["cells"]
    return {name: c["grad"]["h"][0] / c["grad"]["h"][-1] for name, c in cells.items()}


def test_gradflow_init_scale_makes_the_elman_gradient_grow(tmp_path, capsys):
    """Default init: the gradient vanishes back through 40 steps; --init-scale 2.5 (spectral radius 2.5): it grows,
    for ReLU (--cells rnn-relu) and tanh alike."""
    assert all(g < 1e-3 for g in _gradflow_growth(tmp_path).values())
    assert all(g > 10 for g in _gradflow_growth(tmp_path, "--init-scale", "2.5").values())
    assert "initial W_hh spectral radius 2.5" in json.loads((tmp_path / "flow" / "gradflow.json").read_text())["title"]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["gradflow", "--cells", "sru", "--T", "5", "--train-steps", "0", "--init-scale", "2",
              "--out", str(tmp_path / "sru")])
    assert exc.value.code == 2
    assert capsys.readouterr().err.strip() == ("rnnkit: error: SRUCell has no recurrent matrix weight_hh, so "
                                               "scaling the initial recurrent weights does not apply")
