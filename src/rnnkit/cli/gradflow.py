"""`rnnkit gradflow`: ||∂L_T/∂h_t|| over t and gate activations, for several cells on the same data, one PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from .._optional import require_extra
from ..analysis.gradflow import summary_line
from ..analysis.gradflow_runs import adding_flows, language_model_flow, write_flows
from ..apps import load
from ..cells import CELLS
from .options import out_option


def _cells(value: str):
    names = [v.strip() for v in value.split(",") if v.strip()]
    bad = [n for n in names if n not in CELLS]
    if not names or bad:
        raise click.BadParameter(f"expected a comma-separated list of cells from {', '.join(CELLS)}; got {value!r}")
    return names


@click.command()
@click.option("--cells", default="rnn,lstm,gru", show_default=True,
              help=f"Cells to compare (comma-separated: {', '.join(CELLS)}).")
@click.option("--task", type=click.Choice(["adding"]), default="adding", show_default=True,
              help="Input sequences and loss: the adding problem (loss at the last step).")
@click.option("--T", "T", type=click.IntRange(min=2), default=200, show_default=True, help="Sequence length.")
@click.option("--hidden-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--train-steps", type=click.IntRange(min=0), default=100, show_default=True,
              help="Adam steps on the task before measuring (0: the freshly initialised model).")
@click.option("--lr", type=click.FloatRange(min=0.0, min_open=True), default=1e-2, show_default=True)
@click.option("--forget-bias", type=float, default=1.0, show_default=True,
              help="Initial forget-gate bias of LSTM-family cells and SRU (Gers et al. 2000; Keras's default); "
                   "0 keeps the cells' own initialisation.")
@click.option("--init-scale", type=click.FloatRange(min=0.0), default=0.0, show_default=True,
              help="Scale each cell's initial recurrent weights (every H×H block of weight_hh) to this spectral "
                   "radius; above 1 an Elman RNN's gradient grows back through time. 0 keeps the cells' own "
                   "initialisation.")
@click.option("--checkpoint", default=None,
              help="Measure a trained language model instead (checkpoint file or run directory) on --text.")
@click.option("--text", default=None, help="Input text for --checkpoint (default: the first T characters of "
                                           "the run's validation data).")
@click.option("--seed", type=int, default=0, show_default=True)
@out_option("runs/gradflow", "gradflow.png and gradflow.json (the curves)")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def gradflow(cells: str, task: str, T: int, hidden_size: int, batch_size: int, train_steps: int, lr: float,
             forget_bias: float, init_scale: float, checkpoint: Optional[str], text: Optional[str], seed: int,
             out: str, quiet: bool) -> None:
    """Gradient flow through time: ||∂L_T/∂h_t|| for every t (log scale) and mean gate activations.

    With the adding problem (default) each cell is trained --train-steps steps on the same
    batches, then measured on the same held-out batch: the Elman RNN's gradient vanishes
    over T steps, the LSTM's (through c) and GRU's fall far less.
    """
    require_extra("plots", "rnnkit gradflow")
    if checkpoint is not None:
        results, title = language_model_flow(load(checkpoint), text, T)
    else:
        results, title = adding_flows(_cells(cells), T, hidden_size, batch_size, train_steps, lr, seed, quiet,
                                      forget_bias, init_scale)
    out_path = write_flows(results, title, Path(out))
    for c, r in results.items():
        click.echo(summary_line(c, r["grad"]) + "".join(f", {k}={v:.4g}" for k, v in r.get("info", {}).items()))
    click.echo(f"gradient flow: {out_path}")
