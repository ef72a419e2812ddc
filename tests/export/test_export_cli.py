"""`rnnkit export` on a language-model checkpoint, and int8 quantisation of the exported file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("onnxruntime")

from rnnkit.cli import main  # noqa: E402
from rnnkit.data.text import CharVocab  # noqa: E402
from rnnkit.export import check_onnx  # noqa: E402
from rnnkit.export.quantize import bits_per_token, quantize_onnx  # noqa: E402
from rnnkit.models.char_lm import LMConfig, RecurrentLM  # noqa: E402
from rnnkit.training.checkpoint import save_checkpoint  # noqa: E402


def _checkpoint(tmp_path: Path, cell: str) -> tuple:
    vocab = CharVocab(list("abcdefg \n"))
    config = LMConfig(vocab_size=len(vocab), cell=cell, hidden_size=8, num_layers=2, embedding_size=4)
    model = RecurrentLM(config).eval()
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    meta = {"run": {"recipe": "charlm", "model": config.to_dict(), "vocab": vocab.to_json()}}
    record = save_checkpoint(tmp_path / "run" / "checkpoints", 3, tensors, meta)
    return record, model


@pytest.mark.parametrize("cell", ["lstm", "lnlstm"])
def test_export_command_writes_a_checked_onnx_file(cell: str, tmp_path: Path, capsys) -> None:
    record, model = _checkpoint(tmp_path, cell)
    out = tmp_path / "lm.onnx"
    main(["export", "--checkpoint", str(record), "--format", "onnx", "--output", str(out), "--quantize", "int8"])
    text = capsys.readouterr().out
    assert "max |diff|" in text and out.exists() and (tmp_path / "lm.int8.onnx").exists()
    assert "inputs tokens (time, batch)\n" in text  # by default what model(tokens) takes, nothing more
    assert json.loads((tmp_path / "lm.run.json").read_text())["vocab"]["tokens"] == list("abcdefg \n")
    tokens = torch.randint(0, 9, (12, 2))
    assert check_onnx(model, out, tokens) <= 1e-5
    main(["export", "--checkpoint", str(record), "--output", str(out), "--lengths", "--initial-state"])
    state = "h0, c0" if cell in ("lstm", "lnlstm") else "h0"
    assert f"inputs tokens (time, batch), lengths (batch,), {state} (layers" in capsys.readouterr().out
    assert check_onnx(model, out, tokens, torch.tensor([12, 5])) <= 1e-5


def test_export_command_bad_checkpoint_is_one_line(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["export", "--checkpoint", str(tmp_path / "missing"), "--format", "onnx"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "error" in err


def test_int8_quantisation_changes_little(tmp_path: Path) -> None:
    record, model = _checkpoint(tmp_path, "lstm")
    from rnnkit.export import export_onnx
    fp32 = export_onnx(model, tmp_path / "m.onnx", initial_state=True)  # the state carried between windows
    int8 = quantize_onnx(fp32, tmp_path / "m.int8.onnx")
    tokens = torch.randint(0, 9, (400,))
    a, b = bits_per_token(fp32, tokens, window=16, batch=4), bits_per_token(int8, tokens, window=16, batch=4)
    assert abs(a - b) < 0.05 * a  # a few per cent at most on a random model
    # the streaming carry (windows of 16, state fed back) equals one pass over the whole stream
    assert abs(bits_per_token(fp32, tokens, window=1000, batch=4) - a) < 1e-4


@pytest.mark.parametrize("recipe", ["classify", "tag", "forecast", "video"])
def test_export_command_application_runs(recipe: str, tmp_path: Path, capsys) -> None:
    from rnnkit.models.classify import ClassifierConfig, SequenceClassifier
    from rnnkit.models.forecast import ForecastConfig, Forecaster
    from rnnkit.models.tagger import SequenceTagger, TaggerConfig
    from rnnkit.models.video import EncoderForecaster, VideoConfig

    if recipe == "classify":
        config = ClassifierConfig(vocab_size=12, num_classes=3, hidden_size=6, embedding_size=4)
        model, extra = SequenceClassifier(config).eval(), {"tokenizer": {"kind": "char"}, "labels": ["a", "b", "c"]}
    elif recipe == "tag":
        config = TaggerConfig(vocab_size=12, num_tags=4, hidden_size=6, embedding_size=4)
        model, extra = SequenceTagger(config).eval(), {"tokenizer": {"kind": "char"}, "tags": ["O", "B-X", "I-X"]}
    elif recipe == "video":
        config = VideoConfig(frame_size=8, patch_size=2, hidden_channels=4, num_layers=1, kernel_size=3,
                             input_frames=2, output_frames=2)
        model, extra = EncoderForecaster(config).eval(), {}
    else:
        config = ForecastConfig(num_series=2, num_features=3, num_calendar=1, lookback=5, horizon=3,
                                mode="seq2seq", head="gaussian", hidden_size=6)
        model = Forecaster(config).eval()
        extra = {"scaler": {"mean": [0.0, 1.0]}, "calendar": ["hour"], "columns": ["a", "b"],
                 "es": None}  # the sidecar says explicitly that windows are not ES-normalised
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    meta = {"run": {"recipe": recipe, "model": config.to_dict(), **extra}}
    record = save_checkpoint(tmp_path / "run" / "checkpoints", 5, tensors, meta)
    files = {}
    if recipe == "forecast":  # the run's conformal scores travel with the model
        files["calibration"] = {"method": "split conformal", "head": "gaussian", "windows": 2,
                                "scores": [[[0.1, 0.4], [0.2, 0.5]]] * 3}  # (horizon, series, windows)
        (tmp_path / "run" / "calibration.json").write_text(json.dumps(files["calibration"]))
    out = tmp_path / f"{recipe}.onnx"
    main(["export", "--checkpoint", str(record), "--format", "onnx", "--output", str(out)])
    assert "max |diff|" in capsys.readouterr().out
    assert json.loads(out.with_suffix(".run.json").read_text()) == {"recipe": recipe, "model": config.to_dict(),
                                                                    **extra, **files}
    if recipe == "video":
        assert check_onnx(model, out, torch.rand(3, 2, 1, 8, 8)) <= 1e-5
    elif recipe == "forecast":
        assert check_onnx(model, out, torch.randn(4, 5, 3), future=torch.randn(4, 3, 1)) <= 1e-5
    else:
        assert check_onnx(model, out, torch.randint(1, 12, (4, 7)), torch.tensor([7, 2, 5, 1])) <= 1e-5


def test_export_command_refuses_a_seq2seq_run_in_one_line(tmp_path: Path, capsys) -> None:
    record = save_checkpoint(tmp_path / "run" / "checkpoints", 1, {"model.w": torch.zeros(1)},
                             {"run": {"recipe": "seq2seq", "model": {}}})
    with pytest.raises(SystemExit) as exc:
        main(["export", "--checkpoint", str(record), "--format", "onnx"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "seq2seq" in err and "torch.export" in err
