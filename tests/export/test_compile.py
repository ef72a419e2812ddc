"""torch.compile without graph breaks and torch.export with dynamic batch and time, every family.

The fused backend's time loops are torch.library custom ops with fake implementations,
so Dynamo sees one opaque node per layer and direction; these tests fail on any graph
break (fullgraph=True / torch._dynamo.explain) or any difference from eager.
"""

from __future__ import annotations

import io

import pytest
import torch
from torch.export import Dim

import rnnkit
from helpers import ALL_MODES, LayerConfig, assert_close

F32 = torch.float32


class _WithLengths(torch.nn.Module):
    """forward(x, lengths) for torch.export (keyword arguments become positional inputs)."""

    def __init__(self, layer: torch.nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x, lengths):
        return self.layer(x, lengths=lengths)


def _flat(result):
    y, state = result
    return [y] + list(state if isinstance(state, tuple) else (state,))


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    from rnnkit.backends import extension

    reason = extension.load()
    if reason is not None:  # without the custom ops the time loop is Python: nothing opaque to compile
        pytest.skip(f"fused kernels unavailable: {reason}")
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("mode", ALL_MODES)
def test_compile_fullgraph_every_family(mode: str) -> None:
    """Forward with lengths and backward through the compiled graph (aot_eager: no C++ codegen) equal eager."""
    cfg = LayerConfig(mode=mode, num_layers=2, bidirectional=True, dtype=F32)
    layer = cfg.build("auto")
    x = torch.randn(6, 3, 3)
    lengths = torch.tensor([6, 2, 4])
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    got = _flat(compiled(x.requires_grad_(), lengths=lengths))
    assert layer.last_backend == "fused"  # one custom op per layer and direction, nothing unrolled
    grads = torch.autograd.grad(sum(t.square().sum() for t in got), [x] + list(layer.parameters()))
    want = _flat(layer(x, lengths=lengths))
    want_grads = torch.autograd.grad(sum(t.square().sum() for t in want), [x] + list(layer.parameters()))
    for a, b in zip(got + list(grads), want + list(want_grads)):
        assert_close(a, b, F32)


@pytest.mark.parametrize("mode", ["LSTM", "SRU"])
def test_explain_reports_zero_graph_breaks(mode: str) -> None:
    layer = LayerConfig(mode=mode, num_layers=2, dtype=F32).build("auto").eval()
    for kwargs in ({}, {"lengths": torch.tensor([5, 3])}):
        report = torch._dynamo.explain(layer)(torch.randn(5, 2, 3), **kwargs)
        assert report.graph_break_count == 0, report.break_reasons
        assert report.graph_count == 1
        # not torch's aten.lstm, which AOTAutograd would decompose into ops per time step
        assert layer.last_backend == "fused"


@pytest.mark.slow
def test_inductor_compile_lstm_dynamic_shapes() -> None:
    """The real compiler (inductor), dynamic batch and time: no recompilation across shapes."""
    layer = rnnkit.LSTM(3, 8, num_layers=2).eval()
    compiled = torch.compile(layer, fullgraph=True, dynamic=True)
    with torch.no_grad():
        for T, B in ((5, 2), (9, 3), (4, 5)):
            x = torch.randn(T, B, 3)
            lengths = torch.randint(1, T + 1, (B,))
            for a, b in zip(_flat(compiled(x, lengths=lengths)), _flat(layer(x, lengths=lengths))):
                assert_close(a, b, F32)


@pytest.mark.parametrize("mode", ALL_MODES)
def test_torch_export_round_trip_dynamic_batch_and_time(mode: str) -> None:
    cfg = LayerConfig(mode=mode, num_layers=2, bidirectional=mode in ("LSTM", "GRU_BEFORE", "SRU"), dtype=F32)
    layer = cfg.build("auto").eval()
    T, B = Dim("time", min=2, max=4096), Dim("batch", min=2, max=4096)
    program = torch.export.export(_WithLengths(layer), (torch.randn(5, 2, 3), torch.tensor([5, 3])),
                                  dynamic_shapes={"x": {0: T, 1: B}, "lengths": {0: B}})
    ops = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert any(op.startswith("rnnkit.") for op in ops), ops  # the loop is one custom op, not unrolled
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    buffer.seek(0)
    loaded = torch.export.load(buffer).module()
    for T_, B_ in ((9, 4), (3, 2)):
        x = torch.randn(T_, B_, 3)
        lengths = torch.randint(1, T_ + 1, (B_,))
        for a, b in zip(_flat(loaded(x, lengths)), _flat(layer(x, lengths=lengths))):
            assert_close(a, b, F32)


def test_native_backend_with_lengths_refuses_under_compile() -> None:
    """torch's kernels need a PackedSequence for lengths (a graph break): auto takes the fused ops instead,
    and naming the native backend says why it cannot run."""
    x, lengths = torch.randn(5, 2, 3), torch.tensor([5, 3])
    auto = torch.compile(rnnkit.LSTM(3, 4).eval(), fullgraph=True, backend="eager")
    auto(x, lengths=lengths)
    native = torch.compile(rnnkit.LSTM(3, 4, backend="native").eval(), fullgraph=True, backend="eager")
    with pytest.raises(Exception, match="PackedSequence|graph break"):
        native(x, lengths=lengths)


@pytest.mark.parametrize("mode,enforce_sorted", [
    ("LSTM", False), ("GRU", False), ("SRU", False),
    # an enforce_sorted=True pack has no sorted_indices, so its batch size is traced as a data-dependent
    # value: this case checks that the fused backend decides nothing from it while compiling
    ("LSTM", True),
])
def test_packed_sequence_compiles_without_graph_breaks(mode: str, enforce_sorted: bool) -> None:
    """A PackedSequence input (packed outside the compiled region) runs in one graph, forward and backward,
    and a second batch with other lengths and batch size gives eager's numbers (no stale specialisation)."""
    from torch.nn.utils.rnn import pack_padded_sequence

    layer = LayerConfig(mode=mode, num_layers=2, bidirectional=True, dtype=F32).build("auto")
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    for T, lengths in ((6, [6, 2, 4]), (5, [5, 5, 3, 1])):
        lengths = sorted(lengths, reverse=True) if enforce_sorted else lengths
        x = torch.randn(T, len(lengths), 3)
        results = []
        for module in (compiled, layer):
            leaf = x.clone().requires_grad_()
            out, state = module(pack_padded_sequence(leaf, torch.tensor(lengths), enforce_sorted=enforce_sorted))
            tensors = [out.data] + _flat((None, state))[1:]
            grads = torch.autograd.grad(sum(t.square().sum() for t in tensors), [leaf] + list(layer.parameters()))
            results.append((out.batch_sizes, tensors + list(grads)))
        (got_sizes, got), (want_sizes, want) = results
        assert torch.equal(got_sizes, want_sizes)
        for a, b in zip(got, want):
            assert_close(a, b, F32)


def test_explain_packed_sequence_zero_graph_breaks() -> None:
    from torch.nn.utils.rnn import pack_padded_sequence

    layer = rnnkit.LSTM(3, 4, num_layers=2).eval()
    packed = pack_padded_sequence(torch.randn(5, 3, 3), torch.tensor([2, 5, 3]), enforce_sorted=False)
    report = torch._dynamo.explain(layer)(packed)
    assert report.graph_break_count == 0 and not report.break_reasons, report.break_reasons
    assert report.graph_count == 1


@pytest.mark.parametrize("make,shape", [
    (lambda: rnnkit.ConvLSTM(2, 3, 3, num_layers=2, bidirectional=True, peephole=True), (4, 2, 2, 5, 5)),
    (lambda: rnnkit.ConvGRU(2, 3, 3, dims=1), (4, 2, 2, 6)),
], ids=["convlstm", "convgru"])
def test_compile_fullgraph_conv_layers(make, shape) -> None:
    """ConvLSTM / ConvGRU compile without graph breaks, forward with lengths and backward equal eager.
    No custom op covers their loop (`auto` runs the reference step loop), so the graph holds T steps and
    a new sequence length recompiles."""
    layer = make()
    x, lengths = torch.randn(*shape), torch.tensor([4, 2])
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    got = _flat(compiled(x.requires_grad_(), lengths=lengths))
    grads = torch.autograd.grad(sum(t.square().sum() for t in got), [x] + list(layer.parameters()))
    want = _flat(layer(x, lengths=lengths))
    want_grads = torch.autograd.grad(sum(t.square().sum() for t in want), [x] + list(layer.parameters()))
    for a, b in zip(got + list(grads), want + list(want_grads)):
        assert_close(a, b, F32)


def _app_model(name: str):
    from rnnkit.models.char_lm import LMConfig, RecurrentLM
    from rnnkit.models.classify import ClassifierConfig, SequenceClassifier
    from rnnkit.models.forecast import ForecastConfig, Forecaster
    from rnnkit.models.tagger import SequenceTagger, TaggerConfig

    tokens, lengths = torch.randint(1, 9, (3, 6)), torch.tensor([6, 2, 4])
    if name == "classifier":
        return SequenceClassifier(ClassifierConfig(vocab_size=9, num_classes=3, pooling="last", hidden_size=5,
                                                   embedding_size=4)), (tokens, lengths)
    if name == "tagger":
        return SequenceTagger(TaggerConfig(vocab_size=9, num_tags=3, hidden_size=5, embedding_size=4)), (tokens, lengths)
    if name == "char_lm":
        return RecurrentLM(LMConfig(vocab_size=9, hidden_size=5, num_layers=2)), (tokens.t(),)
    return Forecaster(ForecastConfig(num_series=2, num_features=3, num_calendar=1, lookback=6, horizon=3,
                                     mode="autoregressive", hidden_size=8)), (torch.randn(4, 6, 3), torch.randn(4, 3, 1))


@pytest.mark.parametrize("name", ["classifier", "tagger", "char_lm", "forecaster"])
def test_application_models_compile_in_one_graph(name: str) -> None:
    """The application models (lengths, pooling, the forecaster's rollout on its own forecasts) have no graph
    break either, and the compiled forward equals eager."""
    model, args = _app_model(name)
    model.eval()
    report = torch._dynamo.explain(model)(*args)
    assert report.graph_break_count == 0 and report.graph_count == 1, report.break_reasons
    torch._dynamo.reset()
    got = torch.compile(model, fullgraph=True, backend="eager")(*args)
    want = model(*args)
    for a, b in zip(*(x if isinstance(x, tuple) else (x,) for x in (got, want))):
        if isinstance(a, torch.Tensor):
            assert_close(a, b, F32)
