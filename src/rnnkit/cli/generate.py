"""`rnnkit generate`: sample text from a trained language model, streamed to the terminal."""

from __future__ import annotations

import sys
from typing import Optional

import click

from ..apps import load
from ..apps.language_model import generate as generate_text
from ..apps.rundir import run_device
from ..training.checkpoint import CheckpointError
from .options import checkpoint_option, device_option


@click.command()
@checkpoint_option
@click.option("--prime", default="\n", show_default=True, help="Text the sample continues.")
@click.option("--length", type=click.IntRange(min=1), default=500, show_default=True,
              help="Tokens (characters or words) to generate.")
@click.option("--temperature", type=click.FloatRange(min=0.0, min_open=True), default=0.8, show_default=True,
              help="Softmax temperature (lower: more conservative).")
@click.option("--top-k", type=click.IntRange(min=1), default=None, help="Sample only from the k most likely tokens.")
@click.option("--top-p", type=click.FloatRange(min=0.0, max=1.0, min_open=True), default=None,
              help="Nucleus sampling: the smallest set of tokens with probability >= p.")
@click.option("--seed", type=int, default=None, help="Random seed for reproducible samples.")
@device_option
def generate(checkpoint: str, prime: str, length: int, temperature: float, top_k: Optional[int],
             top_p: Optional[float], seed: Optional[int], device: str) -> None:
    """Sample from a trained char-LM or word-LM, printing tokens as they come."""
    run = load(checkpoint, run_device(device))
    if run.app not in ("charlm", "wordlm"):
        raise CheckpointError(f"{checkpoint!r} is not a language model (a {run.app} run)")
    prime = prime.replace("\\n", "\n")  # a typed backslash-n means a line break
    pieces = generate_text(run, prime, length, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
    first = next(pieces, "")  # a bad prime fails before anything is printed
    if run.app == "wordlm" and prime and not prime[-1].isspace():
        prime += " "  # the first sampled word is a word of its own, not the end of the prime's last
    sys.stdout.write(prime + first)
    for piece in pieces:
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
