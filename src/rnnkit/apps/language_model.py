"""What the two language-model applications (charlm, wordlm) share: settings, the run, sampling."""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterator, List, Optional, Union

import torch

from ..cells import CELLS
from ..data.text import CharVocab, DataError, WordVocab, vocab_from_json
from ..models.char_lm import LMConfig, RecurrentLM, sample
from ..errors import InputError
from .runner import Prepared, Recipe, Run, final_scores
from .settings import StreamSettings, setting, setting_name, settings_class

Vocab = Union[CharVocab, WordVocab]


@settings_class
class LMSettings(StreamSettings):
    """A recurrent language model trained on token streams with truncated BPTT."""

    data: Optional[str] = setting(None, "Training data.", path=True)
    cell: str = setting("lstm", "Recurrent cell.", choices=tuple(CELLS))
    hidden_size: int = setting(256, "Hidden units per layer.", min=1)
    num_layers: int = setting(1, "Stacked layers.", min=1)
    dropout: float = setting(0.0, "Dropout on non-recurrent connections.", min=0, max=1, max_open=True)
    val_batch_size: int = setting(32, "Streams used for validation (and test).", min=1)


def warm_up(model: torch.nn.Module, device: torch.device) -> None:
    """One tiny forward and backward before the clock starts: a backend that compiles its kernels on first
    use (rnnkit's fused CPU backend) does it now, not inside max_minutes. Changes nothing: eval mode (no
    dropout draws), gradients discarded, no optimizer step."""
    model.to(device).eval()
    logits, _ = model(torch.zeros(2, 1, dtype=torch.int64, device=device))
    logits.sum().backward()
    model.zero_grad(set_to_none=True)
    model.train()


def prepared(s: LMSettings, config: LMConfig, vocab: Vocab, task: Any, train_data: Any, val_data: Any,
             test_data: Any = None) -> Prepared:
    """The Prepared of a language model (its info: model description and vocabulary)."""
    model = RecurrentLM(config)
    report = [f"{s.cell} {s.num_layers}x{s.hidden_size}, vocabulary {len(vocab)}, "
              f"{train_data.tokens_per_epoch:,} training tokens/epoch on this process"]
    return Prepared(model, task, train_data, val_data, test_data, info={"model": config.to_dict(),
                                                                        "vocab": vocab.to_json()},
                    report=report, warm_up=warm_up)


def finish(run: Run) -> Dict[str, Any]:
    """The final validation (and test) scores of the best weights, as results.json and results.md."""
    summary = run.summary
    scores = final_scores(summary)
    rows = "\n".join(f"| {k} | {v:.4f} |" for k, v in scores.items())
    c = run.model.config
    markdown = (f"{run.app}: {c.cell} {c.num_layers}x{c.hidden_size}, vocabulary {c.vocab_size}, step "
                f"{summary.get('step')} ({summary.get('stop')})\n\n| score | value |\n|---|---|\n{rows}\n")
    return {"step": summary.get("step"), "stop": summary.get("stop"), **scores, "markdown": markdown}


def load_extras(info: Dict[str, Any]) -> Dict[str, Any]:
    vocab = vocab_from_json(info["vocab"])
    if len(vocab) != info["model"]["vocab_size"]:
        raise ValueError(f"vocabulary of {len(vocab)} tokens but the model expects {info['model']['vocab_size']}")
    return {"vocab": vocab}


def lm_recipe(name: str, settings: type, prepare: Callable[..., Prepared]) -> Recipe:
    return Recipe(name, settings, prepare, finish, lambda m: RecurrentLM(LMConfig(**m)), load_extras,
                  distributed=True)


def generate(run: Run, prime: str = "\n", length: int = 500, *, temperature: float = 0.8,
             top_k: Optional[int] = None, top_p: Optional[float] = None, seed: Optional[int] = None) -> Iterator[str]:
    """Text sampled after `prime`, piece by piece (a character, or a word and its space).

    `length` tokens; temperature, top_k, top_p as in `rnnkit.models.decoding`; `seed` makes it repeatable.

        >>> text = "".join(generate(run, "ROMEO:", 200, seed=1))  # doctest: +SKIP
    """
    vocab = run.extras.get("vocab") or vocab_from_json(run.info["vocab"])
    ids, decode = _encode_prime(vocab, prime)
    generator = torch.Generator(device=run.device)
    generator.manual_seed(seed) if seed is not None else generator.seed()
    for token in sample(run.model, ids, length, temperature=temperature, top_k=top_k, top_p=top_p,
                        generator=generator):
        yield decode(token)


def _encode_prime(vocab: Vocab, prime: str) -> tuple:
    """(token ids of the prime, token id -> its text)."""
    if isinstance(vocab, CharVocab):
        if prime == "\n" and prime not in vocab.index:
            raise DataError(f"the model's training text had no line break, so the default {setting_name('prime')} "
                            f"(a line break) cannot start a sample; give {setting_name('prime')} with characters "
                            f"from that text")
        return vocab.encode(prime, what=setting_name("prime")).tolist(), lambda t: vocab.decode([t])
    words: List[str] = prime.split() or ["<eos>"]
    missing = [w for w in words if w not in vocab.index]
    if missing:
        raise InputError(f"{setting_name('prime')} contains words not in the model's vocabulary: {missing[:5]}")

    def decode(token: int) -> str:
        word = vocab.words[token]
        return "\n" if word == "<eos>" else word + " "

    return [vocab.index[w] for w in words], decode
