"""`rnnkit generate`: sample text from a trained language model, streamed to the terminal."""

from __future__ import annotations

import sys
from typing import Optional

import click
import torch

from ..data.text import CharVocab, DataError, WordVocab
from ..models.char_lm import sample
from .loading import load_language_model


@click.command()
@click.option("--checkpoint", required=True, help="Checkpoint file (.json or .safetensors) or run directory "
                                                 "(its latest complete checkpoint).")
@click.option("--prime", default="\n", show_default=True, help="Text the sample continues.")
@click.option("--length", type=click.IntRange(min=1), default=500, show_default=True,
              help="Tokens (characters or words) to generate.")
@click.option("--temperature", type=click.FloatRange(min=0.0, min_open=True), default=0.8, show_default=True,
              help="Softmax temperature (lower: more conservative).")
@click.option("--top-k", type=click.IntRange(min=1), default=None, help="Sample only from the k most likely tokens.")
@click.option("--top-p", type=click.FloatRange(min=0.0, max=1.0, min_open=True), default=None,
              help="Nucleus sampling: the smallest set of tokens with probability >= p.")
@click.option("--seed", type=int, default=None, help="Random seed for reproducible samples.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
def generate(checkpoint: str, prime: str, length: int, temperature: float, top_k: Optional[int],
             top_p: Optional[float], seed: Optional[int], device: str) -> None:
    """Sample from a trained char-LM or word-LM, printing tokens as they come."""
    model, vocab, _ = load_language_model(checkpoint, torch.device(device))
    prime = prime.replace("\\n", "\n")  # a typed backslash-n means a line break
    if isinstance(vocab, CharVocab):
        if prime == "\n" and prime not in vocab.index:
            raise DataError("the model's training text had no line break, so the default --prime (a line break) "
                            "cannot start a sample; give --prime with characters from that text")
        ids = vocab.encode(prime, what="--prime").tolist()
        decode = vocab.decode
    else:
        assert isinstance(vocab, WordVocab)
        words = prime.split() or ["<eos>"]
        missing = [w for w in words if w not in vocab.index]
        if missing:
            raise DataError(f"--prime contains words not in the model's vocabulary: {missing[:5]}")
        ids = [vocab.index[w] for w in words]
        if prime and not prime[-1].isspace():
            prime += " "  # the first sampled word is a word of its own, not the end of the prime's last

        def decode(tokens):
            word = vocab.words[tokens[0]]
            return "\n" if word == "<eos>" else word + " "
    generator = torch.Generator(device=device)
    if seed is not None:
        generator.manual_seed(seed)
    else:
        generator.seed()
    out = sys.stdout
    out.write(prime)
    for token in sample(model, ids, length, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator):
        out.write(decode([token]))
        out.flush()
    out.write("\n")
