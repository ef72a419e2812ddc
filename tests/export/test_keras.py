"""Keras 3 .weights.h5 converters: fixture files written with h5py in Keras's layout, checked against
Keras's LSTM/GRU equations written out in numpy (keras/src/layers/rnn/lstm.py, gru.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Dict

import numpy as np
import pytest
import torch

h5py = pytest.importorskip("h5py")

import rnnkit  # noqa: E402
from helpers import assert_close  # noqa: E402
from rnnkit.export.keras import (KerasWeightsError, find_recurrent_layers, load_keras_weights,  # noqa: E402
                                 save_keras_weights)

F64 = torch.float64
I, H = 3, 4


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def keras_lstm(x, kernel, recurrent, bias):
    """Keras LSTM, batch-major x (B, T, I) -> (B, T, H); gates i, f, c, o."""
    B, T, _ = x.shape
    h = np.zeros((B, recurrent.shape[0]))
    c = np.zeros_like(h)
    out = []
    for t in range(T):
        z = x[:, t] @ kernel + h @ recurrent + (bias if bias is not None else 0.0)
        i, f, g, o = np.split(z, 4, axis=-1)
        c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        h = _sigmoid(o) * np.tanh(c)
        out.append(h)
    return np.stack(out, 1)


def keras_gru(x, kernel, recurrent, bias, reset_after):
    """Keras GRU (implementation 2), gates z, r, h; h = z * h_prev + (1 - z) * hh."""
    B, T, _ = x.shape
    U = recurrent.shape[0]
    h = np.zeros((B, U))
    if bias is None:
        b_in, b_rec = np.zeros(3 * U), np.zeros(3 * U)
    elif reset_after:
        b_in, b_rec = bias[0], bias[1]
    else:
        b_in, b_rec = bias, None
    out = []
    for t in range(T):
        x_z, x_r, x_h = np.split(x[:, t] @ kernel + b_in, 3, axis=-1)
        if reset_after:
            inner = h @ recurrent + b_rec
            r_z, r_r, r_h = np.split(inner, 3, axis=-1)
        else:
            r_z, r_r = np.split(h @ recurrent[:, : 2 * U], 2, axis=-1)
        z, r = _sigmoid(x_z + r_z), _sigmoid(x_r + r_r)
        rh = r * r_h if reset_after else (r * h) @ recurrent[:, 2 * U:]
        hh = np.tanh(x_h + rh)
        h = z * h + (1 - z) * hh
        out.append(h)
    return np.stack(out, 1)


def _write(path: Path, entries: Dict[str, list]) -> Path:
    """A .weights.h5 in Keras 3's layout: <layer>/cell/vars/0.. plus the empty vars groups Keras writes."""
    with h5py.File(path, "w") as f:
        f.create_group("vars")
        for where, arrays in entries.items():
            f.create_group(f"{where}/vars")
            for i, a in enumerate(arrays):
                f[f"{where}/cell/vars/{i}"] = a.astype(np.float32)
    return path


def _rand(*shape):
    return np.random.default_rng(sum(shape) * 7 + len(shape)).uniform(-0.5, 0.5, shape)


def test_lstm_two_layers_match_keras_equations(tmp_path: Path) -> None:
    w = {"layers/lstm": [_rand(I, 4 * H), _rand(H, 4 * H), _rand(4 * H)],
         "layers/lstm_1": [_rand(H, 4 * H) * 1.1, _rand(H, 4 * H) * 0.9, _rand(4 * H) * 0.5]}
    path = _write(tmp_path / "m.weights.h5", w)
    assert find_recurrent_layers(path) == ["layers/lstm", "layers/lstm_1"]
    layer = rnnkit.LSTM(I, H, num_layers=2, batch_first=True, dtype=F64)
    load_keras_weights(layer, path)
    x = np.random.default_rng(0).normal(size=(2, 6, I))
    f32 = {k: [a.astype(np.float32).astype(np.float64) for a in v] for k, v in w.items()}
    want = keras_lstm(keras_lstm(x, *f32["layers/lstm"]), *f32["layers/lstm_1"])
    got, _ = layer(torch.as_tensor(x))
    assert_close(got, torch.as_tensor(want), F64)


@pytest.mark.parametrize("reset_after", [True, False])
def test_gru_both_forms_match_keras_equations(reset_after: bool, tmp_path: Path) -> None:
    bias = _rand(2, 3 * H) if reset_after else _rand(3 * H)
    arrays = [_rand(I, 3 * H), _rand(H, 3 * H), bias]
    path = _write(tmp_path / "g.weights.h5", {"layers/gru": arrays})
    layer = rnnkit.GRU(I, H, batch_first=True, reset="after" if reset_after else "before", dtype=F64)
    load_keras_weights(layer, path)
    x = np.random.default_rng(1).normal(size=(3, 5, I))
    f32 = [a.astype(np.float32).astype(np.float64) for a in arrays]
    got, _ = layer(torch.as_tensor(x))
    assert_close(got, torch.as_tensor(keras_gru(x, *f32, reset_after)), F64)


@pytest.mark.parametrize("make", [
    lambda: rnnkit.LSTM(I, H, num_layers=2, dtype=F64),
    lambda: rnnkit.LSTM(I, H, bias=False, dtype=F64),
    lambda: rnnkit.GRU(I, H, num_layers=2, bidirectional=True, dtype=F64),
    lambda: rnnkit.GRU(I, H, reset="before", dtype=F64),
], ids=["lstm", "lstm_nobias", "gru_bidirectional", "gru_before"])
def test_write_then_read_round_trip(make, tmp_path: Path) -> None:
    source = make()
    if isinstance(source.cells[0], rnnkit.GRUCell) and source.cells[0].reset == "before":
        for cell in source.cells:
            cell.bias_hh.data.zero_()  # Keras's reset_after=False GRU has no recurrent bias
    path = save_keras_weights(source, tmp_path / "out.weights.h5")
    copy = make()
    load_keras_weights(copy, path)
    x = torch.randn(5, 2, I, dtype=F64)
    assert_close(copy.weight_hh_l0, source.weight_hh_l0, torch.float32)
    y1, _ = source(x)
    y2, _ = copy(x)
    assert_close(y2, y1, torch.float32)  # the file stores float32, as Keras does
    with h5py.File(path, "r") as f:
        if source.bidirectional:
            assert "layers/bidirectional/forward_layer/cell/vars/0" in f
            assert "layers/bidirectional_1/backward_layer/cell/vars/2" in f
        else:
            name = "lstm" if isinstance(source, rnnkit.LSTM) else "gru"
            assert f[f"layers/{name}/cell/vars/0"].shape == (I, (4 if name == "lstm" else 3) * H)
            assert ("2" in f[f"layers/{name}/cell/vars"]) == (source.cells[0].bias_ih is not None)


def test_wrong_shape_names_the_tensor(tmp_path: Path) -> None:
    path = _write(tmp_path / "bad.weights.h5", {"layers/lstm": [_rand(I, 4 * H), _rand(H + 1, 4 * H), _rand(4 * H)]})
    with pytest.raises(KerasWeightsError, match=r"layers/lstm/cell/vars/1 \(recurrent_kernel\): expected shape "
                                                r"\(4, 16\), got \(5, 16\)"):
        load_keras_weights(rnnkit.LSTM(I, H), path)


def test_gru_form_mismatch_names_both_forms(tmp_path: Path) -> None:
    path = _write(tmp_path / "g.weights.h5", {"layers/gru": [_rand(I, 3 * H), _rand(H, 3 * H), _rand(2, 3 * H)]})
    with pytest.raises(KerasWeightsError, match=r"reset_after=True.*reset='before'.*reset='after'"):
        load_keras_weights(rnnkit.GRU(I, H, reset="before"), path)


def test_layer_count_mismatch_and_unsupported_configurations(tmp_path: Path) -> None:
    path = _write(tmp_path / "m.weights.h5", {"layers/lstm": [_rand(I, 4 * H), _rand(H, 4 * H), _rand(4 * H)]})
    with pytest.raises(KerasWeightsError, match="2 cells but the file has 1"):
        load_keras_weights(rnnkit.LSTM(I, H, num_layers=2), path)
    with pytest.raises(KerasWeightsError, match="proj_size"):
        save_keras_weights(rnnkit.LSTM(I, H, proj_size=2), tmp_path / "p.weights.h5")
    with pytest.raises(KerasWeightsError, match="SRUCell"):
        save_keras_weights(rnnkit.SRU(I, H), tmp_path / "s.weights.h5")
    with pytest.raises(KerasWeightsError, match=r"bias_hh_l0 is nonzero.*reset='after'"):
        save_keras_weights(rnnkit.GRU(I, H, reset="before"), tmp_path / "g.weights.h5")
