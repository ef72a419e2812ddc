"""`rnnkit export`: write a trained language model, classifier, tagger, forecaster or video predictor for
serving (ONNX, optionally int8-quantised)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import click
import torch

from .._optional import require_extra
from .loading import load_language_model


@click.command()
@click.option("--checkpoint", required=True, help="Checkpoint file (.json or .safetensors) or run directory "
                                                 "(its latest complete checkpoint).")
@click.option("--format", "fmt", type=click.Choice(["onnx"]), default="onnx", show_default=True,
              help="Output format.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None,
              help="Output file (default: model.onnx next to the checkpoint).")
@click.option("--lengths/--no-lengths", default=False, show_default=True,
              help="Give a language model's graph a `lengths` (batch,) int64 input for padded batches.")
@click.option("--initial-state/--no-initial-state", default=False, show_default=True,
              help="Give a language model's graph initial-state inputs (h0[, c0]) for streaming.")
@click.option("--quantize", type=click.Choice(["none", "int8"]), default="none", show_default=True,
              help="int8: dynamic int8 quantisation of the weights (onnxruntime.quantization), written as a "
                   "second file *.int8.onnx.")
@click.option("--check/--no-check", default=True, show_default=True,
              help="Run the exported file in onnxruntime on a random batch and compare with PyTorch.")
def export(checkpoint: str, fmt: str, output: Optional[str], lengths: bool, initial_state: bool, quantize: str,
           check: bool) -> None:
    """Export a trained char-LM or word-LM (tokens (time, batch) -> logits), a classify / tag run
    (tokens (batch, time) and lengths (batch,) -> logits), a forecast run (input, future -> theta) or a
    video run (k frames (time, batch, channels, size, size) -> logits of the next n), with dynamic batch
    and time axes."""
    require_extra("deploy", "rnnkit export", ("onnx", "onnxruntime") if check or quantize != "none" else ("onnx",))
    from ..export.onnx import check_onnx, export_onnx
    from ..training.checkpoint import load_checkpoint

    recipe = (load_checkpoint(checkpoint)[1].get("run") or {}).get("recipe")
    if recipe in ("classify", "tag", "forecast", "video"):
        _export_app_model(checkpoint, recipe, output, check, quantize)
        return
    if recipe == "seq2seq":
        from ..export.onnx import ExportError

        raise ExportError(
            f"cannot export a {recipe!r} run to ONNX: rnnkit export writes charlm, wordlm, classify, tag, forecast "
            f"and video runs, and a seq2seq model decodes with attention until every sentence has emitted EOS. "
            f"Alternative, in Python: rnnkit.export_onnx(model.encoder, ...) for its encoder and model.step() "
            f"for the decoder, or torch.export.export(model, ...) for the teacher-forced forward (docs/library.md, Deploy)")
    model, vocab, _ = load_language_model(checkpoint, torch.device("cpu"))
    model = model.float()
    path = _output_path(checkpoint, output)
    export_onnx(model, path, lengths=lengths, initial_state=initial_state)
    sidecar = path.with_suffix(".vocab.json")
    sidecar.write_text(json.dumps(vocab.to_json(), ensure_ascii=False) + "\n", encoding="utf-8")
    states = ", ".join(f"{n}0" for n in model.rnn.cells[0].state_names)
    inputs = ("tokens (time, batch)" + (", lengths (batch,)" if lengths else "")
              + (f", {states} (layers·directions, batch, size)" if initial_state else ""))
    click.echo(f"wrote {path} (+ {sidecar.name}); inputs {inputs}")
    if check:
        gen = torch.Generator().manual_seed(0)
        tokens = torch.randint(0, model.config.vocab_size, (16, 3), generator=gen)
        diff = check_onnx(model, path, tokens)
        _report_check(diff)
    if quantize == "int8":
        _write_int8(path)


def _export_app_model(checkpoint: str, recipe: str, output: Optional[str], check: bool, quantize: str) -> None:
    """A classify / tag run: tokens (B, T) int64 and lengths (B,) (both required, no state) -> logits;
    a forecast run: input (B, L, F) and future (B, H, K) -> theta (B, H, C, P) (scaled values);
    a video run: frames (k, B, C, S, S) -> logits (n, B, C, S, S) of the next frames."""
    from ..export.onnx import check_onnx, export_onnx
    from ..models.classify import ClassifierConfig, SequenceClassifier
    from ..models.forecast import ForecastConfig, Forecaster
    from ..models.tagger import SequenceTagger, TaggerConfig
    from ..models.video import EncoderForecaster, VideoConfig
    from .apps import load_app_model

    build, what, keep = {
        "classify": (lambda m: SequenceClassifier(ClassifierConfig(**m)), "a classifier", ("tokenizer", "labels")),
        "tag": (lambda m: SequenceTagger(TaggerConfig(**m)), "a tagger", ("tokenizer", "tags")),
        "forecast": (lambda m: Forecaster(ForecastConfig(**m)), "a forecaster", ("scaler", "calendar", "columns")),
        "video": (lambda m: EncoderForecaster(VideoConfig(**m)), "a video model", ()),
    }[recipe]
    model, run = load_app_model(checkpoint, recipe, what, build, torch.device("cpu"))
    model = model.float()
    path = _output_path(checkpoint, output)
    export_onnx(model, path)
    # what a server needs around the graph: the tokenizer and label names, or the scaler and calendar
    sidecar = path.with_suffix(".run.json")
    sidecar.write_text(json.dumps({"recipe": recipe, "model": run.get("model"), **{k: run.get(k) for k in keep}},
                                  ensure_ascii=False) + "\n", encoding="utf-8")
    inputs = {"forecast": "input (batch, lookback, features), future (batch, horizon, calendar)",
              "video": "frames (time, batch, channels, size, size)"}.get(recipe, "tokens (batch, time), lengths (batch,)")
    click.echo(f"wrote {path} (+ {sidecar.name}); inputs {inputs}")
    if check:
        gen = torch.Generator().manual_seed(0)
        if recipe == "video":
            c = model.config
            diff = check_onnx(model, path, torch.rand(c.input_frames, 2, c.channels, c.frame_size, c.frame_size,
                                                      generator=gen))
        elif recipe == "forecast":
            c = model.config
            diff = check_onnx(model, path, torch.randn(3, c.lookback, c.num_features, generator=gen),
                              future=torch.randn(3, c.horizon, c.num_calendar, generator=gen))
        else:
            tokens = torch.randint(1, model.config.vocab_size, (3, 16), generator=gen)
            diff = check_onnx(model, path, tokens, torch.tensor([16, 9, 3]))
        _report_check(diff)
    if quantize == "int8":
        _write_int8(path)


def _output_path(checkpoint: str, output: Optional[str]) -> Path:
    """--output, else model.onnx in the run directory (or beside the checkpoint file)."""
    source = Path(checkpoint)
    return Path(output) if output else (source if source.is_dir() else source.parent) / "model.onnx"


def _report_check(diff: float) -> None:
    """Echo the onnxruntime-vs-PyTorch difference; above 1e-4 the export fails."""
    click.echo(f"onnxruntime vs PyTorch on a random batch: max |diff| = {diff:.2e}")
    if diff > 1e-4:
        raise click.ClickException(f"the exported graph differs from the model by {diff:.3g}")


def _write_int8(path: Path) -> None:
    """PATH.int8.onnx: the exported file with dynamic int8 weights (onnxruntime.quantization)."""
    from ..export.quantize import quantize_onnx

    q_path = quantize_onnx(path, path.with_suffix(".int8.onnx"))
    click.echo(f"wrote {q_path} (int8 weights)")
