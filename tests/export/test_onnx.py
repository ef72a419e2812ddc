"""ONNX export checked in onnxruntime against PyTorch: every cell family, stacked and bidirectional,
dynamic batch and time axes, lengths, initial states, float32 within 1e-5."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
import onnx  # noqa: E402

import rnnkit  # noqa: E402
from helpers import ALL_MODES, LayerConfig  # noqa: E402
from rnnkit.errors import InputError  # noqa: E402
from rnnkit.export import ExportError, build_onnx, check_onnx, export_onnx, run_onnx  # noqa: E402
from rnnkit.models.char_lm import LMConfig, RecurrentLM  # noqa: E402

TOL = 1e-5
#: modes whose layers become one ONNX operator; the rest run as Scan
NATIVE_OP = {"RNN_TANH": "RNN", "RNN_RELU": "RNN", "LSTM": "LSTM", "PeepholeLSTM": "LSTM", "GRU": "GRU",
             "GRU_BEFORE": "GRU"}


def _op_types(path: Path) -> set:
    return {node.op_type for node in onnx.load(str(path)).graph.node}


def _states(cfg: LayerConfig, B: int):
    LD = cfg.num_layers * cfg.num_directions
    parts = tuple(0.5 * torch.randn(LD, B, s) for s in cfg.state_sizes)
    return parts if len(parts) > 1 else parts[0]


def _check_many(layer, path: Path, cfg: LayerConfig) -> None:
    """Several batch sizes and lengths on one exported file: dynamic axes, lengths, initial states."""
    I = cfg.input_size
    for T, B, lengths in ((5, 3, [5, 2, 4]), (2, 1, None), (9, 4, [1, 9, 3, 7])):
        shape = (B, T, I) if cfg.batch_first else (T, B, I)
        x = torch.randn(*shape)
        lens = torch.tensor(lengths) if lengths is not None else None
        assert check_onnx(layer, path, x, lens) <= TOL
        assert check_onnx(layer, path, x, lens, _states(cfg, B)) <= TOL


@pytest.mark.parametrize("mode,native_ops", [(m, True) for m in ALL_MODES] + [(m, False) for m in NATIVE_OP],
                         ids=[m for m in ALL_MODES] + [f"{m}-as-scan" for m in NATIVE_OP])
def test_every_family_stacked_bidirectional(mode: str, native_ops: bool, tmp_path: Path) -> None:
    cfg = LayerConfig(mode=mode, input_size=3, hidden_size=4, num_layers=2, bidirectional=True, dtype=torch.float32)
    layer = cfg.build("auto").eval()
    path = export_onnx(layer, tmp_path / f"{mode}.onnx", native_ops=native_ops, lengths=True, initial_state=True)
    ops = _op_types(path)
    if native_ops and mode in NATIVE_OP:
        assert NATIVE_OP[mode] in ops and "Scan" not in ops
    else:
        assert "Scan" in ops and not ops & {"LSTM", "GRU", "RNN"}
    _check_many(layer, path, cfg)


@pytest.mark.parametrize("cfg", [
    LayerConfig(mode="LSTM", proj_size=2, hidden_size=5, num_layers=2, bidirectional=True, dtype=torch.float32),
    LayerConfig(mode="PeepholeLSTM", proj_size=3, hidden_size=5, dtype=torch.float32),
    LayerConfig(mode="LSTM", bias=False, batch_first=True, dtype=torch.float32),
    LayerConfig(mode="GRU_BEFORE", bias=False, num_layers=3, dtype=torch.float32),
    LayerConfig(mode="SRU", input_size=4, hidden_size=4, bidirectional=True, dtype=torch.float32),
    LayerConfig(mode="LSTM", num_layers=2, dtype=torch.float32,
                options=(("zoneout_hidden", 0.3), ("zoneout_cell", 0.1), ("dropout", 0.4))),
    LayerConfig(mode="QRNN", pooling="f", window=1, num_layers=2, dtype=torch.float32),
    LayerConfig(mode="QRNN", pooling="fo", window=2, num_layers=2, bidirectional=True, dtype=torch.float32),
    LayerConfig(mode="QRNN", pooling="ifo", window=3, bias=False, batch_first=True, dtype=torch.float32,
               options=(("zoneout_cell", 0.3),)),
], ids=["proj", "peephole_proj", "nobias_batch_first", "gru_before_nobias", "sru_highway_identity", "zoneout",
        "qrnn_f_k1", "qrnn_fo_k2_bidir", "qrnn_ifo_k3_zoneout"])
def test_special_configurations(cfg: LayerConfig, tmp_path: Path) -> None:
    layer = cfg.build("auto").eval()
    path = export_onnx(layer, tmp_path / "m.onnx", lengths=True, initial_state=True)
    _check_many(layer, path, cfg)


@pytest.mark.parametrize("cell", ["lstm", "sru", "qrnn"])
@pytest.mark.parametrize("embedding_size", [0, 6])
def test_language_model(cell: str, embedding_size: int, tmp_path: Path) -> None:
    model = RecurrentLM(LMConfig(vocab_size=9, cell=cell, hidden_size=6, num_layers=2,
                                 embedding_size=embedding_size)).eval()
    path = export_onnx(model, tmp_path / "lm.onnx", torch.randint(0, 9, (4, 2)),  # sample input: checked on export
                       lengths=True, initial_state=True)
    tokens = torch.randint(0, 9, (7, 3))
    assert check_onnx(model, path, tokens) <= TOL
    assert check_onnx(model, path, tokens, torch.tensor([7, 1, 4])) <= TOL
    graph = onnx.load(str(path)).graph
    states = {"lstm": ["h0", "c0"], "sru": ["c0"], "qrnn": ["c0", "window0"]}[cell]  # SRU's state is c
    assert [i.name for i in graph.input] == ["tokens", "lengths"] + states
    assert graph.output[0].name == "logits"


@pytest.mark.parametrize("make,state_names", [
    (lambda: rnnkit.GRU(3, 4, num_layers=2), ["h_n"]),
    (lambda: rnnkit.LSTM(3, 4, bidirectional=True, batch_first=True), ["h_n", "c_n"]),
    (lambda: rnnkit.SRU(3, 4), ["c_n"]),
], ids=["gru", "lstm_bidir_batch_first", "sru_scan"])
def test_default_export_takes_only_the_input(make, state_names, tmp_path: Path) -> None:
    """What a torch.onnx.export user does first: session.run(None, {"input": x}) on the default file."""
    layer = make().eval()
    x = torch.randn(2, 6, 3) if layer.batch_first else torch.randn(6, 2, 3)
    path = export_onnx(layer, tmp_path / "m.onnx", x)  # the sample call model(x): input only
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["input"]
    assert [o.name for o in graph.output] == ["output"] + state_names
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": x.numpy()})
    with torch.no_grad():
        y, final = layer(x)
    for g, want in zip(got, [y] + list(final if isinstance(final, tuple) else (final,))):
        assert np.abs(g - want.numpy()).max() <= TOL
    assert check_onnx(layer, path, x) <= TOL  # run_onnx / check_onnx take the input-only file too
    with pytest.raises(InputError, match="no lengths input.*lengths=True"):
        check_onnx(layer, path, x, torch.tensor([6, 3]))
    with pytest.raises(InputError, match="no initial state input.*initial_state=True"):
        run_onnx(path, x, state=layer.initial_state(2))


def test_lengths_and_state_are_opt_in_one_at_a_time(tmp_path: Path) -> None:
    layer = rnnkit.LSTM(3, 4, num_layers=2).eval()
    x, lengths = torch.randn(5, 3, 3), torch.tensor([5, 2, 4])
    state = tuple(0.5 * torch.randn(2, 3, 4) for _ in range(2))
    with_lengths = export_onnx(layer, tmp_path / "l.onnx", lengths=True)
    assert [i.name for i in onnx.load(str(with_lengths)).graph.input] == ["input", "lengths"]
    assert check_onnx(layer, with_lengths, x, lengths) <= TOL
    assert check_onnx(layer, with_lengths, x) <= TOL  # omitted lengths: every row full, as the model
    with_state = export_onnx(layer, tmp_path / "s.onnx", initial_state=True)
    assert [i.name for i in onnx.load(str(with_state)).graph.input] == ["input", "h0", "c0"]
    assert check_onnx(layer, with_state, x, state=state) <= TOL
    assert check_onnx(layer, with_state, x) <= TOL  # omitted state: zeros, as the model


def test_dynamic_axes_are_named(tmp_path: Path) -> None:
    path = export_onnx(rnnkit.LSTM(3, 4).eval(), tmp_path / "l.onnx")
    dims = [d.dim_param or d.dim_value for d in onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["time", "batch", 3]


class _MyCell(rnnkit.LSTMCell):
    pass


def test_unknown_cell_names_the_cell_and_the_alternative(tmp_path: Path) -> None:
    layer = rnnkit.Recurrent(_MyCell(3, 4))
    with pytest.raises(ExportError, match=r"_MyCell.*built-in cells.*torch.onnx.export"):
        build_onnx(layer)


def test_float64_model_is_refused_with_the_fix() -> None:
    with pytest.raises(ExportError, match=r"float32.*model.float\(\)"):
        build_onnx(rnnkit.LSTM(3, 4, dtype=torch.float64))


def test_character_features_and_attention_pooling_are_refused_with_the_way_out() -> None:
    from rnnkit.models.classify import ClassifierConfig, SequenceClassifier
    from rnnkit.models.tagger import SequenceTagger, TaggerConfig
    tagger = SequenceTagger(TaggerConfig(9, 3, hidden_size=4, embedding_size=3, char_features="cnn", num_chars=5))
    with pytest.raises(ExportError, match="cnn character features.*char_features none"):
        build_onnx(tagger.eval())
    with pytest.raises(ExportError, match="attention pooling.*last, mean or max"):
        build_onnx(SequenceClassifier(ClassifierConfig(9, 2, pooling="attention", hidden_size=4)).eval())


def test_a_classifier_ensemble_is_refused_with_the_way_out() -> None:
    from rnnkit.models.classify import ClassifierConfig, build_classifier
    with pytest.raises(ExportError, match=r"ClassifierEnsemble.*probabilities are averaged.*model\.members\[i\]"):
        build_onnx(build_classifier(ClassifierConfig(9, 2, hidden_size=4, ensemble=2)).eval())


def test_non_recurrent_model_is_refused() -> None:
    with pytest.raises(ExportError, match="Linear"):
        build_onnx(torch.nn.Linear(3, 4))


def _conv_states(layer, B: int, spatial):
    parts = tuple(0.5 * torch.randn(layer.num_layers * layer.num_directions, B, s, *spatial)
                  for s in layer.state_sizes)
    return parts if len(parts) > 1 else parts[0]


@pytest.mark.parametrize("make,spatial_sizes", [
    (lambda: rnnkit.ConvLSTM(2, 3, 3, num_layers=2, bidirectional=True), [(5, 6), (3, 4)]),
    (lambda: rnnkit.ConvLSTM(2, 4, (3, 1, 3), dims=3, peephole=True, groups=2, batch_first=True),
     [(3, 4, 3), (2, 2, 5)]),
    (lambda: rnnkit.ConvLSTM(2, 3, 3, peephole=True, peephole_size=(4, 5), zoneout_cell=0.2), [(4, 5)]),
    (lambda: rnnkit.ConvGRU(2, 4, 3, dims=1, groups=2, dilation=2, num_layers=2, bidirectional=True), [(7,), (4,)]),
    (lambda: rnnkit.ConvGRU(3, 2, 5, bias=False), [(6, 5)]),
], ids=["convlstm2d_stacked_bidir", "convlstm3d_peephole_groups_batch_first", "convlstm_spatial_peephole_zoneout",
        "convgru1d_groups_dilation_bidir", "convgru2d_nobias"])
def test_conv_layers(make, spatial_sizes, tmp_path: Path) -> None:
    """ConvLSTM / ConvGRU as Scan with Conv bodies: dynamic batch, time and spatial axes, lengths, states."""
    layer = make().eval()
    with torch.no_grad():  # values of both signs everywhere, peepholes included
        for p in layer.parameters():
            p.uniform_(-0.5, 0.5)
    path = export_onnx(layer, tmp_path / "conv.onnx", lengths=True, initial_state=True)
    assert {"Scan", "Conv"} <= _op_types(path)
    C = layer.input_size
    for spatial in spatial_sizes:
        for T, B, lengths in ((4, 2, [4, 2]), (2, 3, None)):
            x = torch.randn(B, T, C, *spatial) if layer.batch_first else torch.randn(T, B, C, *spatial)
            lens = torch.tensor(lengths) if lengths is not None else None
            assert check_onnx(layer, path, x, lens) <= TOL
            assert check_onnx(layer, path, x, lens, _conv_states(layer, B, spatial)) <= TOL


@pytest.mark.parametrize("pooling,objective,bidirectional,cell", [
    ("mean", "softmax", True, "lstm"), ("max", "softmax", False, "gru"), ("last", "sigmoid", True, "sru"),
    ("last", "softmax", False, "lnlstm"), ("max+mean", "sigmoid", True, "gru")])
def test_sequence_classifier(pooling: str, objective: str, bidirectional: bool, cell: str, tmp_path: Path) -> None:
    from rnnkit.models.classify import ClassifierConfig, SequenceClassifier

    model = SequenceClassifier(ClassifierConfig(vocab_size=11, num_classes=2 if objective == "sigmoid" else 3,
                                                objective=objective, pooling=pooling, cell=cell, embedding_size=4,
                                                hidden_size=5, num_layers=2, bidirectional=bidirectional)).eval()
    path = export_onnx(model, tmp_path / "clf.onnx")
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["tokens", "lengths"] and [o.name for o in graph.output] == ["logits"]
    for B, T, lengths in ((3, 6, [6, 1, 4]), (1, 2, [2]), (4, 9, [9, 9, 3, 5])):
        assert check_onnx(model, path, torch.randint(1, 11, (B, T)), torch.tensor(lengths)) <= TOL


@pytest.mark.parametrize("cell", ["lstm", "gru", "mingru"])
def test_sequence_tagger(cell: str, tmp_path: Path) -> None:
    from rnnkit.models.tagger import SequenceTagger, TaggerConfig

    model = SequenceTagger(TaggerConfig(vocab_size=11, num_tags=4, cell=cell, embedding_size=4, hidden_size=5)).eval()
    path = export_onnx(model, tmp_path / "tagger.onnx")
    for B, T, lengths in ((3, 6, [6, 1, 4]), (2, 3, [3, 3])):
        assert check_onnx(model, path, torch.randint(1, 11, (B, T)), torch.tensor(lengths)) <= TOL


def test_models_the_exporter_cannot_write_name_the_feature_and_the_alternative() -> None:
    from rnnkit.models.regressor import SequenceRegressor
    from rnnkit.models.seq2seq import Seq2Seq, Seq2SeqConfig

    seq2seq = Seq2Seq(Seq2SeqConfig(source_vocab_size=9, target_vocab_size=9, embedding_size=4, hidden_size=4))
    with pytest.raises(ExportError, match=r"Seq2Seq.*until every sentence has emitted EOS.*model\.encoder.*model"
                                          r"\.step"):
        build_onnx(seq2seq)
    # a model the exporter does not know: its recurrent parts are named, so they can be exported one by one
    with pytest.raises(ExportError, match=r"SequenceRegressor.*model\.rnn can each be exported"):
        build_onnx(SequenceRegressor("lstm", 3, 4))


class _Wrapped(torch.nn.Module):
    """A model the exporter has no graph for: a GRU and a linear head on every step."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = rnnkit.GRU(3, 5)
        self.head = torch.nn.Linear(5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(x)[0])


def test_a_model_class_exports_once_its_graph_is_registered(tmp_path: Path, monkeypatch) -> None:
    from rnnkit.export.onnx import recurrent_graph, register_graph, registry

    torch.manual_seed(0)
    model = _Wrapped().eval()
    with pytest.raises(ExportError, match=r"_Wrapped.*model\.rnn can each be exported.*register_graph"):
        build_onnx(model)
    monkeypatch.setattr(registry, "_GRAPHS", dict(registry._GRAPHS))  # the registration ends with the test

    @register_graph(_Wrapped)
    def _graph(g, model: _Wrapped, options) -> None:
        x = g.input("input", ["time", "batch", 3])
        y, _ = recurrent_graph(g, model.rnn, x, None, None, options.native_ops)
        g.output("logits", g.matmul_t(y, model.head.weight, model.head.bias, "head"), ["time", "batch", 2])

    class _Subclass(_Wrapped):  # takes its nearest registered base's graph
        pass

    for exported in (model, _Subclass().eval()):
        path = export_onnx(exported, tmp_path / "wrapped.onnx", torch.randn(4, 2, 3))  # checked on export
        assert [i.name for i in onnx.load(str(path)).graph.input] == ["input"]
        assert check_onnx(exported, path, torch.randn(7, 5, 3)) <= TOL  # other T and B: dynamic axes
    # a class still unregistered keeps the refusal, which now lists the registered model too
    with pytest.raises(ExportError, match=r"SequenceRegressor.*register_graph \(.*_Wrapped\).*model\.rnn"):
        from rnnkit.models.regressor import SequenceRegressor
        build_onnx(SequenceRegressor("lstm", 3, 4))


@pytest.mark.parametrize("mode", ["direct", "autoregressive", "seq2seq"])
@pytest.mark.parametrize("head,masked,K,cell,layers", [
    ("point", False, 1, "lstm", 1), ("gaussian", True, 2, "gru", 2), ("quantile", False, 0, "sru", 2)])
def test_forecaster(mode: str, head: str, masked: bool, K: int, cell: str, layers: int, tmp_path: Path) -> None:
    """The forecaster's inference forward, rollouts on its own point forecasts included (unrolled over the
    fixed horizon): input (B, L, F), future (B, H, K) -> theta (B, H, C, P)."""
    from rnnkit.models.forecast import ForecastConfig, Forecaster

    C, L, H = 2, 6, 4
    config = ForecastConfig(num_series=C, num_features=C * (2 if masked else 1) + K, num_calendar=K, lookback=L,
                            horizon=H, mode=mode, head=head, masked=masked, cell=cell, num_layers=layers,
                            hidden_size=8)
    model = Forecaster(config).eval()
    path = export_onnx(model, tmp_path / "forecaster.onnx")
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["input", "future"] and [o.name for o in graph.output] == ["theta"]
    for B in (3, 1):
        x, future = torch.randn(B, L, config.num_features), torch.randn(B, H, K)
        assert check_onnx(model, path, x, future=future) <= TOL


@pytest.mark.parametrize("feed,cell,peephole,channels,head", [
    ("none", "convlstm", True, 1, "pixels"), ("frames", "convgru", False, 2, "pixels"),
    ("frames", "convlstm", False, 1, "pixels"), ("none", "convlstm", False, 2, "advect"),
    ("frames", "convgru", False, 1, "advect")])
def test_video_encoder_forecaster(feed: str, cell: str, peephole: bool, channels: int, head: str,
                                  tmp_path: Path) -> None:
    """frames (k, B, C, S, S) -> logits of the next n frames: patching by Reshape/Transpose, the ConvLSTM /
    ConvGRU stacks as Scan, the rollout on its own predicted (or moved) frames unrolled over n."""
    from rnnkit.models.video import EncoderForecaster, VideoConfig

    torch.manual_seed(0)
    model = EncoderForecaster(VideoConfig(frame_size=16, channels=channels, patch_size=2, cell=cell,
                                          hidden_channels=4, num_layers=2, kernel_size=3, input_frames=3,
                                          output_frames=3, forecaster_input=feed, peephole=peephole, head=head,
                                          advect_kernels=2, advect_size=5)).eval()
    path = export_onnx(model, tmp_path / "video.onnx")
    for B, k in ((2, 3), (1, 4)):  # dynamic batch and number of input frames
        assert check_onnx(model, path, torch.rand(k, B, channels, 16, 16)) <= TOL
