"""`rnnkit export`: write a trained application's model for serving (ONNX, optionally int8-quantised)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import click
import torch

from .._optional import require_extra
from .options import checkpoint_option

#: what a server needs beside each application's graph (from the run's info): tokenizer and label names,
#: vocabulary, or scaler and calendar; and the graph's inputs in words
SERVED: Dict[str, Tuple[Tuple[str, ...], str]] = {
    "charlm": (("vocab",), "tokens (time, batch)"),
    "wordlm": (("vocab",), "tokens (time, batch)"),
    "classify": (("tokenizer", "labels"), "tokens (batch, time), lengths (batch,)"),
    "tag": (("tokenizer", "tags"), "tokens (batch, time), lengths (batch,)"),
    "forecast": (("scaler", "calendar", "columns", "es"), "input (batch, lookback, features), future (batch, horizon, "
                                                    "calendar)"),
    "video": ((), "frames (time, batch, channels, size, size)"),
    "adding": ((), "x (time, batch, 2)"),
}
#: why an application's model has no one-graph export, and what to do instead
REFUSALS = {
    "seq2seq": "; a seq2seq model decodes until every sentence has ended. Alternative, in Python: "
               "rnnkit.export_onnx(model.encoder, ...) for its encoder and model.step() for the decoder, or "
               "torch.export.export(model, ...) for the teacher-forced forward (docs/library.md, Deploy)",
    "caption": "; a captioner decodes until every caption has ended (export its CNN and decoder step in Python)",
    "clips": "; a clips run's frame encoder is any nn.Module: export it with torch.onnx.export in Python",
}


@click.command()
@checkpoint_option
@click.option("--format", "fmt", type=click.Choice(["onnx"]), default="onnx", show_default=True,
              help="Output format.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None,
              help="Output file (default: model.onnx in the run directory, or next to the checkpoint file).")
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
    """Export a trained run's model with dynamic batch and time axes: charlm, wordlm (tokens -> logits),
    classify, tag (tokens, lengths -> logits), forecast (input, future -> distribution parameters), video
    (frames -> next frames' logits) or adding. Beside it, PATH.run.json holds what serving needs
    (vocabulary, tokenizer and labels, or scaler, calendar and the interval calibration)."""
    require_extra("deploy", "rnnkit export", ("onnx", "onnxruntime") if check or quantize != "none" else ("onnx",))
    from ..apps.runner import load
    from ..export.onnx import ExportError, check_onnx, export_onnx
    from ..training.checkpoint import read_checkpoint_meta, resolve_checkpoint

    app = (read_checkpoint_meta(resolve_checkpoint(checkpoint)).get("run") or {}).get("recipe")
    if app not in SERVED:
        raise ExportError(f"cannot export a {app!r} run to ONNX: rnnkit export writes {', '.join(SERVED)} runs"
                          + (REFUSALS.get(app, "") if app else " (this checkpoint names no application)"))
    run = load(checkpoint, extras=False)  # the graph needs the model only; the sidecar copies the run's info
    model = run.model.float()
    language_model = run.app in ("charlm", "wordlm")
    path = Path(output) if output else (run.out or Path(checkpoint).parent) / "model.onnx"
    options = dict(lengths=lengths, initial_state=initial_state) if language_model else {}
    export_onnx(model, path, **options)
    keep, inputs = SERVED[run.app]
    sidecar = path.with_suffix(".run.json")
    served = {"recipe": run.app, "model": run.info.get("model"), **{k: run.info.get(k) for k in keep}}
    if run.app == "forecast":  # its conformal scores: with them a server widens the graph's interval as forecast() does
        from ..apps.forecast import read_calibration
        calibration = read_calibration(run.out)
        if calibration is not None:
            served["calibration"] = calibration.to_json()
    sidecar.write_text(json.dumps(served, ensure_ascii=False) + "\n", encoding="utf-8")
    if language_model:
        states = ", ".join(f"{n}0" for n in model.rnn.cells[0].state_names)
        inputs += (", lengths (batch,)" if lengths else "") + \
            (f", {states} (layers·directions, batch, size)" if initial_state else "")
    click.echo(f"wrote {path} (+ {sidecar.name}); inputs {inputs}")
    if check:
        args, kwargs = example_inputs(run.app, model)
        diff = check_onnx(model, path, *args, **kwargs)
        click.echo(f"onnxruntime vs PyTorch on a random batch: max |diff| = {diff:.2e}")
        if diff > 1e-4:
            raise click.ClickException(f"the exported graph differs from the model by {diff:.3g}")
    if quantize == "int8":
        from ..export.quantize import quantize_onnx
        click.echo(f"wrote {quantize_onnx(path, path.with_suffix('.int8.onnx'))} (int8 weights)")


def example_inputs(app: str, model: torch.nn.Module) -> Tuple[tuple, Dict[str, Any]]:
    """A small random batch for the onnxruntime comparison: (positional, keyword) inputs of `check_onnx`."""
    gen = torch.Generator().manual_seed(0)
    c = getattr(model, "config", None)
    if app in ("charlm", "wordlm"):
        return (torch.randint(0, c.vocab_size, (16, 3), generator=gen),), {}
    if app == "video":
        return (torch.rand(c.input_frames, 2, c.channels, c.frame_size, c.frame_size, generator=gen),), {}
    if app == "forecast":
        return (torch.randn(3, c.lookback, c.num_features, generator=gen),), \
            {"future": torch.randn(3, c.horizon, c.num_calendar, generator=gen)}
    if app == "adding":
        return (torch.rand(12, 3, 2, generator=gen),), {}
    return (torch.randint(1, c.vocab_size, (3, 16), generator=gen), torch.tensor([16, 9, 3])), {}
