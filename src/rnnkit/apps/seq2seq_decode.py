"""Inference of the seq2seq application: decoding options, the run's SentencePiece models, batched decoding,
BLEU/chrF and the attention map. `rnnkit.apps.seq2seq` re-exports what a user calls."""

from __future__ import annotations

import io
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple, Union

import torch

from ..errors import InputError, InputTypeError
from ..training.checkpoint import CheckpointError
from .runner import Run
from .settings import Settings, setting, setting_name, settings_class

if TYPE_CHECKING:
    from ..data.spm import SentencePieceTokenizer
    from ..models.decoding import Hypothesis


@settings_class
class DecodeOptions(Settings):
    """How a seq2seq model decodes: beam search (beam 1 = greedy) or sampling.

        >>> DecodeOptions(beam=5).generate_kwargs()["method"]
        'beam'
        >>> DecodeOptions(beam=1).generate_kwargs()["method"]
        'greedy'
    """

    beam: int = setting(5, "Beam width (1: greedy).", min=1)
    alpha: float = setting(0.6, "Length penalty exponent ((5+len)/6)^alpha of beam search (0: none).", min=0)
    n_best: int = setting(1, "Hypotheses per input (beam search; at most --beam).", min=1)
    sample: bool = setting(False, "Sample instead of searching (see --temperature, --top-k, --top-p).")
    temperature: float = setting(1.0, "Softmax temperature of sampling.", min=0, min_open=True,
                                 acts_with=("sample", (True,)))
    top_k: Optional[int] = setting(None, "Sample from the k most likely tokens.", min=1, acts_with=("sample", (True,)))
    top_p: Optional[float] = setting(None, "Nucleus sampling: the smallest set of tokens with probability >= p.",
                                     min=0, max=1, min_open=True, acts_with=("sample", (True,)))
    seed: int = setting(0, "Seed of sampling.")
    max_len: Optional[int] = setting(None, "Most output tokens (default: the model's max_target_len).", min=1)
    min_len: int = setting(0, "Fewest output tokens before the end token.", min=0)
    no_repeat_ngram: int = setting(0, "Block repeated n-grams of this size (0: off).", min=0)
    batch_size: int = setting(64, "Sentences decoded together.", min=1)
    lang: Optional[str] = setting(None, "Target language of a multilingual run (one of its --lang/--also-lang; "
                                        "default: its first, --lang).")
    language_mask: bool = setting(True, "Multilingual run: emit only target pieces that the chosen language's "
                                        "training targets use (no switch into another language mid-sentence).")

    def check(self) -> None:
        if self.n_best > self.beam and not self.sample:
            raise InputError(f"{setting_name('n_best')} {self.n_best} asks for more hypotheses than the beam keeps "
                             f"({setting_name('beam')} {self.beam})")

    def generate_kwargs(self) -> Dict[str, Any]:
        """The keyword arguments of `Seq2Seq.generate` (a sampling generator seeded with `seed`)."""
        if self.sample:
            generator = torch.Generator()
            generator.manual_seed(self.seed)
            kwargs: Dict[str, Any] = dict(method="sample", temperature=self.temperature, top_k=self.top_k,
                                          top_p=self.top_p, generator=generator)
        elif self.beam > 1:
            kwargs = dict(method="beam", beam_size=self.beam, alpha=self.alpha, n_best=self.n_best)
        else:
            kwargs = dict(method="greedy")
        return dict(kwargs, max_len=self.max_len, min_len=self.min_len, no_repeat_ngram=self.no_repeat_ngram)


DECODE_FIELDS = tuple(f.name for f in fields(DecodeOptions))


def decode_options(options: Optional[DecodeOptions], changes: Dict[str, Any]) -> DecodeOptions:
    """`options` (default: DecodeOptions()) with `changes`."""
    if options is None:
        return DecodeOptions(**changes)
    if not isinstance(options, DecodeOptions):
        raise InputTypeError(f"options must be DecodeOptions; got {type(options).__name__}")
    return options.replace(**changes) if changes else options


# ---------------------------------------------------------------------- the run's SentencePiece models
def tokenizers_to_json(src: "SentencePieceTokenizer", tgt: "SentencePieceTokenizer", shared: bool) -> Dict[str, Any]:
    """The run info's "tokenizers": each model embedded, and the file name it gets in the run directory."""
    if shared:
        return {"shared": True, "source": {"file": "spm.model", **src.to_json()}}
    return {"shared": False, "source": {"file": "spm-source.model", **src.to_json()},
            "target": {"file": "spm-target.model", **tgt.to_json()}}


def read_tokenizers(info: Dict[str, Any], folder: Optional[Path]
                    ) -> Tuple["SentencePieceTokenizer", "SentencePieceTokenizer"]:
    """(source, target) SentencePiece models of a run's info: embedded, else `folder`'s files (checked by
    SHA-256). CheckpointError if one is missing or does not fit the model's vocabulary."""
    from ..data.spm import SentencePieceTokenizer
    entries = info.get("tokenizers")
    if not isinstance(entries, dict) or "source" not in entries:
        raise CheckpointError("the run names no SentencePiece model (not a seq2seq run?)")

    def one(entry: Dict[str, Any]) -> SentencePieceTokenizer:
        if entry.get("model_b64"):
            try:
                return SentencePieceTokenizer.from_json(entry)
            except ValueError as err:
                raise CheckpointError(f"the run's SentencePiece model: {err}") from None
        path = (folder or Path(".")) / str(entry.get("file", ""))
        if folder is None or not path.is_file():
            raise CheckpointError(f"the run's SentencePiece model {entry.get('file')!r} is missing (not in the "
                                  f"checkpoint, not in the run directory {str(folder)!r})")
        tok = SentencePieceTokenizer.load(path)
        if entry.get("sha256") and tok.sha256 != entry["sha256"]:
            raise CheckpointError(f"{str(path)!r} is not the SentencePiece model the run was trained with "
                                  f"(SHA-256 differs)")
        return tok

    src = one(entries["source"])
    tgt = src if entries.get("shared") else one(entries.get("target") or {})
    model = info["model"]
    if (src.vocab_size, tgt.vocab_size) != (model["source_vocab_size"], model["target_vocab_size"]):
        raise CheckpointError(f"the run's SentencePiece vocabularies ({src.vocab_size}, {tgt.vocab_size}) do not "
                              f"match its model ({model['source_vocab_size']}, {model['target_vocab_size']})")
    return src, tgt


def load_extras(info: Dict[str, Any]) -> Dict[str, Any]:
    """Run.extras of a loaded run: the embedded SentencePiece models (a run whose checkpoint lacks them
    reads its directory's files at first use, `tokenizers`)."""
    entries = info.get("tokenizers") or {}
    embedded = all((entries.get(side) or {}).get("model_b64") for side in
                   (("source",) if entries.get("shared") else ("source", "target")))
    return {"tokenizers": read_tokenizers(info, None)} if embedded else {}


def tokenizers(run: Run) -> Tuple["SentencePieceTokenizer", "SentencePieceTokenizer"]:
    """(source, target) SentencePiece models of `run`."""
    if "tokenizers" not in run.extras:
        run.extras["tokenizers"] = read_tokenizers(run.info, run.out)
    return run.extras["tokenizers"]


# ---------------------------------------------------------------------- target languages
def language_token(lang: str) -> str:
    """The source-side token that asks a multilingual model for language `lang` (Johnson et al. 2017)."""
    return f"<2{lang}>"


def target_language(run: Run, lang: Optional[str]) -> Optional[str]:
    """The language `run` translates into when asked for `lang`: `lang` itself, checked, or the first of a
    multilingual run; None for a run with one target language (where naming one is an error)."""
    tokens: Dict[str, int] = run.info.get("languages") or {}
    if not tokens:
        if lang is not None:
            raise InputError(f"{setting_name('lang')} {lang!r}: this run translates into one language only "
                             f"(it was not trained with --also)")
        return None
    if lang is not None and lang not in tokens:
        raise InputError(f"{setting_name('lang')} must be one of this run's languages ({', '.join(tokens)}); "
                         f"got {lang!r}")
    return lang if lang is not None else next(iter(tokens))


def language_suppress(run: Run, lang: Optional[str]) -> Optional[torch.Tensor]:
    """(V,) bool, True for the target pieces that the training targets of `run`'s language `lang`
    (`target_language`) never use, the special tokens excepted; None for a run with one target language
    (or one trained before the pieces were recorded)."""
    chosen = target_language(run, lang)
    pieces = (run.info.get("language_pieces") or {}).get(chosen)
    if pieces is None:
        return None
    config = run.model.config
    suppress = torch.ones(config.target_vocab_size, dtype=torch.bool)
    suppress[torch.tensor(pieces, dtype=torch.long)] = False
    suppress[[i for i in config.special_ids.values() if 0 <= i < config.target_vocab_size]] = False
    return suppress


def source_prefix(run: Run, lang: Optional[str]) -> List[int]:
    """The ids put before every source of `run`: [the token of its target language] in a multilingual run
    (`target_language`), nothing otherwise."""
    chosen = target_language(run, lang)
    return [run.info["languages"][chosen]] if chosen is not None else []


def encode_sources(run: Run, texts: Sequence[str], lang: Optional[str]) -> List[List[int]]:
    """Source ids of `texts` as the model reads them (the language token first); [] for an empty text."""
    prefix = source_prefix(run, lang)
    return [[*prefix, *ids] if ids else [] for ids in tokenizers(run)[0].encode_batch([t.strip() for t in texts])]


# ---------------------------------------------------------------------- decoding
def decode(run: Run, texts: Sequence[str], options: Optional[DecodeOptions] = None, *, origin: str = "texts",
           first_line: int = 1, attention: bool = False, progress: bool = False,
           skip_long: bool = False) -> List[List["Hypothesis"]]:
    """The hypotheses of every text (best first; none for an empty text), decoded in batches of similar
    length. Every text is checked first: a DataError names `origin`:line of the first that is longer than
    the model's max_source_len (texts[0] is line `first_line`); with `skip_long`, such a text gets no
    hypotheses instead (find them with `too_long`), so one long line does not stop a file."""
    from ..data.pairs import collate
    from ..data.text import DataError
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise InputTypeError(f"texts must be a list of strings; got {type(texts).__name__} (a single sentence "
                             f"goes in a list: [sentence])")
    options = options or DecodeOptions()
    config = run.model.config
    ids = encode_sources(run, texts, options.lang)
    long = too_long(run, ids)
    if long and not skip_long:
        i = long[0]
        raise DataError(f"{origin}:{i + first_line}: the source has {len(ids[i])} tokens (+1 end token"
                        f"{tagged(run)}); this model accepts at most {config.max_source_len} (max_source_len)")
    skipped = set(long)
    order = sorted((i for i, s in enumerate(ids) if s and i not in skipped), key=lambda i: len(ids[i]))
    batches = [order[i:i + options.batch_size] for i in range(0, len(order), options.batch_size)]
    if progress:
        from tqdm import tqdm
        batches = tqdm(batches, unit="batch", desc="decoding", leave=False)
    suppress = language_suppress(run, options.lang) if options.language_mask else None
    out: List[List[Hypothesis]] = [[] for _ in texts]
    for idx in batches:
        batch = collate([ids[i] for i in idx], None, **config.special_ids)
        hyps = run.model.generate(batch["source"].to(run.device), batch["source_lengths"].to(run.device),
                                  return_attention=attention, suppress=suppress, **options.generate_kwargs())
        for i, h in zip(idx, hyps):
            out[i] = h
    return out


def too_long(run: Run, ids: Sequence[Sequence[int]]) -> List[int]:
    """Indices of the encoded sources (language token included, end token not) over the model's limit."""
    limit = run.model.config.max_source_len
    return [i for i, s in enumerate(ids) if len(s) + 1 > limit]


def tagged(run: Run) -> str:
    """", the language token included" in a multilingual run's messages about source lengths."""
    return ", the language token included" if run.info.get("languages") else ""


def translate(run: Run, texts: Sequence[str], options: Optional[DecodeOptions] = None, *, origin: str = "texts",
              first_line: int = 1, skip_long: bool = False, **changes: Any) -> List[str]:
    """The best translation (or reply) of every text; an empty text gets an empty one, and so does a text
    over the model's max_source_len with `skip_long` (without it, such a text is a DataError).

        >>> seq2seq.translate(run, ["Where is the station?"], beam=5)  # doctest: +SKIP
        ['Où est la gare ?']
    """
    hyps = decode(run, texts, decode_options(options, changes), origin=origin, first_line=first_line,
                  skip_long=skip_long)
    target = tokenizers(run)[1]
    return [target.decode(h[0].tokens) if h else "" for h in hyps]


def score(hypotheses: Sequence[str], references: Sequence[str]) -> Dict[str, float]:
    """Corpus BLEU and chrF (sacrebleu, default settings: 13a tokenization)."""
    from .._optional import require
    sacrebleu = require("sacrebleu", extra="nlp", purpose="BLEU and chrF")
    bleu = sacrebleu.corpus_bleu(list(hypotheses), [list(references)])
    chrf = sacrebleu.corpus_chrf(list(hypotheses), [list(references)])
    return {"bleu": round(bleu.score, 2), "chrf": round(chrf.score, 2), "sentences": len(hypotheses)}


def score_pairs(run: Run, pairs: Sequence[Any], options: DecodeOptions, progress: bool = False
                ) -> Tuple[Dict[str, float], List[str]]:
    """(BLEU/chrF of `run` on `pairs`, its outputs). A source longer than the model's maximum is counted
    (too_long) and scored as an empty output, so that leaving it out does not flatter the score."""
    tgt_tok = tokenizers(run)[1]
    long = set(too_long(run, encode_sources(run, [p.source for p in pairs], options.lang)))
    fits = [i for i in range(len(pairs)) if i not in long]
    hyps = decode(run, [pairs[i].source for i in fits], options, progress=progress)
    texts = [""] * len(pairs)
    for i, h in zip(fits, hyps):
        texts[i] = tgt_tok.decode(h[0].tokens) if h else ""
    return {**score(texts, [p.target for p in pairs]), "too_long": len(pairs) - len(fits)}, texts


# ---------------------------------------------------------------------- the attention map
def plot_attention(run: Run, text: str, hypothesis: "Hypothesis", path: Union[str, Path], *,
                   lang: Optional[str] = None) -> None:
    """Heat map of `hypothesis`'s attention over `text` (output rows × source columns) to a PNG file,
    written atomically (decode with attention=True)."""
    from .._optional import pyplot
    if hypothesis.attention is None:
        raise InputError("this model has no attention (attention 'none'), or it was decoded without attention=True")
    src_tok, tgt_tok = tokenizers(run)
    source = [src_tok.id_to_piece(i) for i in encode_sources(run, [text], lang)[0]] + ["</s>"]
    target = [tgt_tok.id_to_piece(i) for i in hypothesis.tokens] + (["</s>"] if hypothesis.finished else [])
    plt = pyplot(extra="nlp", purpose="the attention plot")
    w = hypothesis.attention[:len(target), :len(source)].numpy()
    fig, ax = plt.subplots(figsize=(max(4, 0.45 * len(source) + 1.5), max(3, 0.4 * len(target) + 1.2)))
    ax.imshow(w, cmap="Greys", vmin=0.0, vmax=max(float(w.max()), 1e-6), aspect="auto")
    ax.set_xticks(range(len(source)))
    ax.set_xticklabels(source, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(target)))
    ax.set_yticklabels(target, fontsize=8)
    ax.set_xlabel("source")
    ax.set_ylabel("output")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    write_output(path, buf.getvalue())


def write_output(path: Union[str, Path], data: bytes) -> None:
    """Write a file the user named, atomically, creating its folder if needed."""
    from ..training.checkpoint import _write_atomic
    target = Path(path)
    if target.is_dir():  # else the rename of the temporary file would fail, naming that file
        raise InputError(f"output path {str(path)!r} is a folder; expected a file name")
    target.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(target, data)
