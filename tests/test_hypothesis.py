"""Property tests: random layer configurations against torch.nn, and against the cells stepped by hand.

The strategies and the comparison live in helpers.py (`layer_cases`, `run_torch_case`)
with a `backend` argument, so a fast backend runs the same properties:

    @given(case=layer_cases())
    def test_fused_matches_torch(case): run_torch_case(case, backend="fused")
"""

from __future__ import annotations

import copy

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import (ALL_MODES, Case, LayerConfig, as_state, assert_as_accurate, assert_close, compare_backends, layer_cases,
                     make_batch, run_by_hand, run_torch_case, state_parts)
from rnnkit.backends import extension

BACKEND = "reference"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=layer_cases())
def test_random_configurations_match_torch(case: Case) -> None:
    """mode, layers, bidirectional, batch_first, bias, proj_size, packed/lengths/unbatched, h_0, dtype."""
    run_torch_case(case, backend=BACKEND)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=layer_cases(ALL_MODES))
def test_random_configurations_match_cells_stepped_by_hand(case: Case) -> None:
    """Every rnnkit layer (torch.nn has no twin for most) against its own cells, stepped one row at a time."""
    cfg, kw = case.cfg, case.batch_kwargs
    if kw.get("batch") is None or kw.get("packed"):
        kw = dict(kw, batch=kw.get("batch") or 1, packed=False)
    layer = cfg.build(BACKEND).eval()
    data = make_batch(cfg, **kw)
    x = data.x.transpose(0, 1) if cfg.batch_first else data.x
    out, final = layer(data.x, as_state(data.state), lengths=data.lengths)
    out = out.transpose(0, 1) if cfg.batch_first else out
    lengths = None if data.lengths is None else data.lengths.tolist()
    out_ref, final_ref = run_by_hand(layer, x, data.state, lengths)
    if cfg.dtype == torch.float64:
        assert_close(out, out_ref, f"{cfg} outputs")
        for a, b in zip(state_parts(final), final_ref):
            assert_close(a, b, f"{cfg} final state")
    else:  # float32: the layer about as accurate as the cells stepped by hand, against a float64 truth
        state64 = None if data.state is None else tuple(s.double() for s in data.state)
        out_truth, final_truth = run_by_hand(copy.deepcopy(layer).double(), x.double(), state64, lengths)
        assert_as_accurate(out, out_ref, out_truth, f"{cfg} outputs")
        for a, b, t in zip(state_parts(final), final_ref, final_truth):
            assert_as_accurate(a, b, t, f"{cfg} final state")
    assert out.dtype == cfg.dtype and torch.isfinite(out).all()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_qrnn_configurations(data) -> None:
    """QRNN (window, pooling, layers, direction, layout, bias, lengths, initial state): the reference against
    its cells stepped by hand, and every fast backend that takes the configuration against the reference."""
    cfg = LayerConfig(mode="QRNN", window=data.draw(st.integers(1, 4)), pooling=data.draw(st.sampled_from(["f", "fo", "ifo"])),
                     input_size=data.draw(st.integers(1, 3)), hidden_size=data.draw(st.integers(1, 3)),
                     num_layers=data.draw(st.integers(1, 2)), bidirectional=data.draw(st.booleans()),
                     batch_first=data.draw(st.booleans()), bias=data.draw(st.booleans()))
    T, B = data.draw(st.integers(1, 6)), data.draw(st.integers(1, 3))
    lengths = data.draw(st.none() | st.lists(st.integers(1, T), min_size=B, max_size=B))
    kw = dict(seq_len=T, batch=B, lengths=lengths, with_state=data.draw(st.booleans()),
              seed=data.draw(st.integers(0, 99)))
    layer = cfg.build("reference")
    batch = make_batch(cfg, **kw)
    out, final = layer(batch.x, as_state(batch.state), lengths=batch.lengths)
    x = batch.x.transpose(0, 1) if cfg.batch_first else batch.x
    out_ref, final_ref = run_by_hand(layer, x, batch.state, lengths)
    assert_close(out.transpose(0, 1) if cfg.batch_first else out, out_ref, f"{cfg} outputs")
    for a, b in zip(state_parts(final), final_ref):
        assert_close(a, b, f"{cfg} final state")
    fused = cfg.pooling != "ifo" and extension.load() is None  # the kernels run f- and fo-pooling
    for backend in ("scan", "fused") if fused else ("scan",):
        compare_backends(cfg, backend, **kw, require_signal=False)
