"""Encoder–decoder with attention (translation, dialogue) on sentence pairs, with SentencePiece subwords.

Default: English→French on the embedded Tatoeba subset (data: www.manythings.org/anki and tatoeba.org,
CC BY 2.0 FR). Validation: val_loss, val_ppl (teacher-forced); at the end, BLEU and chrF of the best
weights on the test split (OUT/results.md, results.json). The SentencePiece models are embedded in every
checkpoint and written to the run directory (spm.model; spm-source.model and spm-target.model when not
shared).

    >>> from rnnkit.apps import seq2seq
    >>> run = seq2seq.train(seq2seq.Seq2SeqSettings(data="pairs.tsv", max_minutes=5))   # doctest: +SKIP
    >>> seq2seq.translate(run, ["Where is the station?"])                              # doctest: +SKIP
    >>> seq2seq.evaluate(run, beam=5)["bleu"]                                          # doctest: +SKIP
"""

from __future__ import annotations

import re
import sys
import time
from dataclasses import fields
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ..cells import CELLS
from ..data.spm import BOS_ID, EOS_ID, MODEL_TYPES, PAD_ID
from ..data.text import DataError
from ..errors import InputError
from ..models.attention import ATTENTIONS
from ..models.scheduled_sampling import SCHEDULES, SamplingSchedule
from ..models.seq2seq import BRIDGES, Seq2Seq, Seq2SeqConfig, Seq2SeqTask
from ..recipes import repository_data
from .runner import Prepared, Recipe, Run, final_scores, say
from .rundir import saved_settings
from .seq2seq_decode import (DecodeOptions, decode, decode_options, load_extras, plot_attention, score_pairs,
                             target_language, tokenizers, tokenizers_to_json, translate)
from .settings import TrainingSettings, setting, setting_name, settings_class

__all__ = ["Seq2SeqSettings", "DecodeOptions", "train", "load", "translate", "evaluate", "decode", "tokenizers",
           "plot_attention", "RECIPE"]

#: the model's defaults (Seq2SeqConfig declares them once; the settings take them from there)
MODEL_DEFAULTS = {f.name: f.default for f in fields(Seq2SeqConfig)}
#: the special token ids of every SentencePiece model rnnkit trains
SPECIAL_IDS = dict(pad_id=PAD_ID, bos_id=BOS_ID, eos_id=EOS_ID)
#: ε_i's parameter k per schedule when ss_k is not given
SS_DEFAULT_K = {"none": 1.0, "linear": 1.0, "exponential": 0.9995, "inverse_sigmoid": 300.0}
SAMPLING = tuple(k for k in SCHEDULES if k != "none")


def model_setting(name: str, help: str, **checks: Any) -> Any:
    """A setting that is a field of Seq2SeqConfig, with the config's default."""
    return setting(MODEL_DEFAULTS[name], help, **checks)


@settings_class
class Seq2SeqSettings(TrainingSettings):
    """Settings of `rnnkit train seq2seq` (defaults: a bidirectional LSTM with Bahdanau attention)."""

    DEFAULTS = dict(out="runs/seq2seq", batch_size=64, lr=2e-3, clip_norm=1.0, eval_every=500, checkpoint_every=500,
                    max_minutes=9.0)
    data: str = setting(repository_data("data/tatoeba-eng-fra"), "Pairs: a directory with train.tsv (+ valid.tsv, "
                        "test.tsv), a .tsv (source<TAB>target[<TAB>...]) or .csv file, or the source side of two "
                        "aligned files (see --target-data).", path=True)
    target_data: Optional[str] = setting(None, "Target side, aligned line by line with --data.", path=True)
    swap: bool = setting(False, "Exchange source and target (e.g. French→English on an English–French corpus).")
    also: Optional[str] = setting(None, "More pairs with the same source language and another target language "
                                  "(any format --data takes): one multilingual model is trained on both, each "
                                  "source led by a token naming its target language (<2ko>, <2fr>).", path=True)
    lang: Optional[str] = setting(None, "With --also: the target language of --data (its tag, e.g. ko); translate "
                                        "produces it unless told --lang.")
    also_lang: Optional[str] = setting(None, "With --also: the target language of --also (e.g. fr).")
    oversample: int = setting(1, "With --also: --data's training pairs appear this many times per epoch (a "
                                 "small corpus beside a large one).", min=1)
    val_fraction: float = setting(0.05, "Held out for validation when --data has no split.", min=0, max=0.5)
    test_fraction: float = setting(0.05, "Held out for testing when --data has no split.", min=0, max=0.5)
    spm_type: str = setting("bpe", "SentencePiece model type.", choices=MODEL_TYPES)
    vocab_size: int = setting(4000, "SentencePiece vocabulary size (per language unless shared); an upper bound: "
                                    "a small corpus gets fewer pieces.", min=8)
    spm_shared: bool = setting(True, "One SentencePiece model for both languages (trained on both sides).")
    cell: str = model_setting("cell", "Decoder cell (and encoder cell unless --encoder-cell).", choices=tuple(CELLS))
    encoder_cell: Optional[str] = model_setting("encoder_cell", "Encoder cell (default: --cell).", choices=tuple(CELLS))
    hidden_size: int = model_setting("hidden_size", "Hidden units per direction of each encoder layer; the "
                                     "decoder has the encoder's output width (2x with --bidirectional).", min=1)
    num_layers: int = model_setting("num_layers", "Stacked layers (encoder, and decoder unless --decoder-layers).",
                                    min=1)
    decoder_layers: Optional[int] = model_setting("decoder_layers", "Decoder layers (default: --num-layers).", min=1)
    embedding_size: int = model_setting("embedding_size", "Token embedding size.", min=1)
    bidirectional: bool = model_setting("bidirectional", "Bidirectional encoder.")
    bridge: str = model_setting("bridge", "Encoder final state → decoder initial state.", choices=BRIDGES)
    attention: str = model_setting("attention", "Attention (none = fixed-size bottleneck).", choices=ATTENTIONS)
    attention_size: int = model_setting("attention_size", "Width of additive attention (0: the decoder's size).",
                                        min=0)
    input_feeding: bool = model_setting("input_feeding", "Feed the attentional vector back (Luong attention).")
    dropout: float = model_setting("dropout", "Dropout on embeddings, between layers and before the output layer.",
                                   min=0, max=1, max_open=True)
    max_source_len: int = model_setting("max_source_len", "Longest source in tokens (end token included); longer "
                                        "training pairs are dropped, longer inputs to translate are an error.", min=1)
    max_target_len: int = model_setting("max_target_len", "Longest target in tokens (end token included).", min=1)
    label_smoothing: float = setting(0.1, "Label smoothing ε.", min=0, max=1, max_open=True)
    length_normalize: bool = setting(False, "Average each sentence's loss over its length, then over sentences.")
    scheduled_sampling: str = setting("none", "Scheduled sampling schedule (none = teacher forcing).",
                                      choices=SCHEDULES)
    ss_k: Optional[float] = setting(None, "Schedule parameter k (linear: start; exponential: base < 1; "
                                          "inverse_sigmoid: k >= 1). Default: 1, 0.9995, 300.",
                                    acts_with=("scheduled_sampling", SAMPLING))
    ss_c: float = setting(1e-4, "Linear schedule's slope per step.", min=0,
                          acts_with=("scheduled_sampling", ("linear",)))
    ss_min: float = setting(0.0, "Lowest teacher-forcing probability.", min=0, max=1,
                            acts_with=("scheduled_sampling", SAMPLING))
    beam: int = setting(5, "Beam width of the final test BLEU (1: greedy).", min=1)
    eval_max_sentences: int = setting(0, "Score at most this many test sentences at the end (0: all).", min=0)
    val_batch_size: int = setting(128, "Pairs per validation (and test) batch.", min=1)

    def check(self) -> None:
        super().check()
        self.check_languages()
        self.sampling_schedule()
        self.model_config(8, 8)  # the rules between model settings (e.g. attention none needs a bridge)

    def check_languages(self) -> None:
        """--also needs --lang and --also-lang (two different tags); they and --oversample need --also."""
        if self.also is None:
            named = [setting_name(k) for k in ("lang", "also_lang", "oversample") if self.explicit(k)]
            if named:
                raise InputError(f"{' and '.join(named)} {'act' if len(named) > 1 else 'acts'} only with "
                                 f"{setting_name('also')} (a second corpus)")
            return
        for name in ("lang", "also_lang"):
            tag = getattr(self, name)
            if tag is None or not re.fullmatch(r"[A-Za-z0-9_-]+", tag):
                raise InputError(f"{setting_name('also')} needs {setting_name(name)}: a language tag of letters, "
                                 f"digits, - or _ (e.g. ko, fr); got {tag!r}")
        if self.lang == self.also_lang:
            raise InputError(f"{setting_name('lang')} and {setting_name('also_lang')} must differ; both are "
                             f"{self.lang!r}")
        if self.swap or self.target_data is not None:
            raise InputError(f"{setting_name('also')} cannot be combined with {setting_name('swap')} or "
                             f"{setting_name('target_data')}: give --data as pairs in the direction to learn")

    def sampling_schedule(self) -> SamplingSchedule:
        kind = self.scheduled_sampling
        return SamplingSchedule(kind, self.ss_k if self.ss_k is not None else SS_DEFAULT_K[kind],
                                self.ss_c if kind == "linear" else 0.0, self.ss_min)

    def model_config(self, source_vocab_size: int, target_vocab_size: int) -> Seq2SeqConfig:
        """The model these settings describe, for vocabularies of the given sizes."""
        shape = {k: getattr(self, k) for k in MODEL_DEFAULTS if hasattr(self, k)}
        return Seq2SeqConfig(source_vocab_size=source_vocab_size, target_vocab_size=target_vocab_size,
                             **shape, **SPECIAL_IDS)


# ---------------------------------------------------------------------- training
def languages(settings: Dict[str, Any]) -> List[Optional[str]]:
    """The target languages of a run's settings, --data's first: [lang, also_lang], or [None] (one corpus)."""
    return [settings["lang"], settings["also_lang"]] if settings.get("also") else [None]


def read_splits(settings: Dict[str, Any], data: Optional[str] = None, lang: Optional[str] = None) -> Any:
    """The train/valid/test pairs of a run's settings: --data's, or --also's for its language `lang`
    (another `data` instead: its own, unswapped)."""
    from ..data.pairs import load_pair_splits
    default = {f.name: f.default for f in fields(Seq2SeqSettings)}
    get = lambda k: settings.get(k, default[k])  # noqa: E731
    if data is None and lang is not None and get("also") and lang == get("also_lang"):
        data = get("also")
    return load_pair_splits(data or get("data"), None if data else get("target_data"),
                            valid_fraction=get("val_fraction"), test_fraction=get("test_fraction"),
                            swap=bool(get("swap")) and data is None)


def check_fractions(s: Seq2SeqSettings) -> None:
    """A fraction named by the user has no effect when the data folder has its own split files."""
    own = [n for n in ("valid", "test") if (Path(s.data) / f"{n}.tsv").is_file()]
    for name in ("val_fraction", "test_fraction"):
        if own and s.explicit(name):
            raise InputError(f"{setting_name(name)} has no effect: {s.data} has its own {' and '.join(own)}.tsv, "
                             f"which are used as they are")


def sentencepiece(s: Seq2SeqSettings, train_pairs: List[Any], resumed: Optional[Dict[str, Any]], report: List[str],
                  symbols: Tuple[str, ...] = ()):
    """(source, target) SentencePiece models: a resumed run's own, never retrained; else trained on the
    training pairs (one model on both sides when spm_shared), the source side's with `symbols` as pieces
    of their own (the language tokens). A multilingual run's target model is shared by its languages:
    their scripts barely overlap, so it holds each one's pieces, and oversampling gives the small one its share."""
    from ..data.spm import train_sentencepiece
    from .seq2seq_decode import read_tokenizers
    if resumed is not None:
        return read_tokenizers(resumed, None)
    t0 = time.monotonic()
    sources, targets = [p.source for p in train_pairs], [p.target for p in train_pairs]
    if s.spm_shared:
        src = tgt = train_sentencepiece(sources + targets, s.vocab_size, s.spm_type, symbols=symbols)
    else:
        src = train_sentencepiece(sources, s.vocab_size, s.spm_type, symbols=symbols)
        tgt = train_sentencepiece(targets, s.vocab_size, s.spm_type)
    report.append(f"SentencePiece {s.spm_type} trained in {time.monotonic() - t0:.1f} s: vocab {src.vocab_size}"
                  + ("" if s.spm_shared else f" / {tgt.vocab_size}"))
    return src, tgt


def split_report(splits: Any, encoded: Dict[str, Any], s: Seq2SeqSettings, lang: Optional[str]) -> str:
    """One line on what a corpus gave: pairs per split, and what was dropped."""
    train, valid = encoded["train"], encoded["valid"]
    return (f"{splits.description}{f' (→ {lang})' if lang else ''}: {len(splits.train)} train / "
            f"{len(splits.valid)} valid / {len(splits.test)} test pairs; {splits.skipped_blank} blank lines skipped; "
            f"dropped from train: {train.dropped_long} longer than {s.max_source_len}/{s.max_target_len} tokens, "
            f"{train.dropped_empty} empty after tokenization" + (f"; from valid: {valid.dropped}" if splits.valid else ""))


def encode_corpora(s: Seq2SeqSettings, resumed: Optional[Dict[str, Any]], report: List[str]):
    """(source and target SentencePiece models, encoded train/valid/test pairs of every corpus, the
    language token ids and the target piece ids of each language's training targets (both empty with one
    corpus), test pairs, blank lines). A multilingual run's sources begin with their target language's token;
    --data's training pairs come `oversample` times."""
    from ..data.pairs import EncodedPairs, encode_pairs
    from .seq2seq_decode import language_token
    settings = s.to_dict()
    corpora = {lang: read_splits(settings, lang=lang) for lang in languages(settings)}
    for splits in corpora.values():
        for note in splits.notes:  # which columns became source and target: shown even when quiet
            print(f"rnnkit: note: {note}", file=sys.stderr, flush=True)
    repeats = [s.oversample] + [1] * (len(corpora) - 1)
    train_pairs = [p for splits, times in zip(corpora.values(), repeats) for p in splits.train * times]
    tokens = tuple(language_token(lang) for lang in corpora if lang is not None)
    src_tok, tgt_tok = sentencepiece(s, train_pairs, resumed, report, tokens)
    token_ids = {lang: src_tok.piece_to_id(language_token(lang)) for lang in corpora if lang is not None}
    parts = {name: [] for name in ("train", "valid", "test")}
    for lang, splits in corpora.items():
        one = {name: encode_pairs(getattr(splits, name), src_tok, tgt_tok, max_source_len=s.max_source_len,
                                  max_target_len=s.max_target_len,
                                  source_prefix=[token_ids[lang]] if lang is not None else [])
               for name in parts}
        report.append(split_report(splits, one, s, lang))
        for name in parts:
            parts[name].append(one[name])
    # the target pieces each language's training targets use: decoding into that language emits no other
    pieces = {lang: sorted({i for ids in one.target for i in ids})
              for lang, one in zip(corpora, parts["train"]) if lang is not None}
    encoded = {name: EncodedPairs.join(p, repeats if name == "train" else None) for name, p in parts.items()}
    if s.oversample > 1:
        report.append(f"training pairs of {s.data} × {s.oversample}: {len(encoded['train'])} per epoch")
    test_pairs = sum(len(splits.test) for splits in corpora.values())
    blank = sum(splits.skipped_blank for splits in corpora.values())
    return src_tok, tgt_tok, encoded, token_ids, pieces, test_pairs, blank


def prepare(s: Seq2SeqSettings, resumed: Optional[Dict[str, Any]], rank: int, world: int) -> Prepared:
    from ..data.pairs import PairBatches
    check_fractions(s)
    report: List[str] = []
    src_tok, tgt_tok, encoded, token_ids, pieces, test_pairs, blank = encode_corpora(s, resumed, report)
    config = s.model_config(src_tok.vocab_size, tgt_tok.vocab_size)
    train, valid = encoded["train"], encoded["valid"]
    batches = {name: PairBatches(pairs, s.val_batch_size, shuffle=False, **config.special_ids)
               if len(pairs) and name != "train" else None for name, pairs in encoded.items()}
    train_data = PairBatches(train, s.batch_size, shuffle=True, seed=s.seed, **config.special_ids)
    schedule = s.sampling_schedule()
    task = Seq2SeqTask(pad_id=config.pad_id, label_smoothing=s.label_smoothing,
                       length_normalize=s.length_normalize, schedule=schedule)
    report.append(f"seq2seq {s.encoder_cell or s.cell}→{s.cell} {s.num_layers}x{s.hidden_size}"
                  f"{' bidirectional' if s.bidirectional else ''}, attention {s.attention}, bridge {s.bridge}, "
                  f"{s.scheduled_sampling if s.scheduled_sampling != 'none' else 'teacher forcing'}, "
                  f"{train_data.tokens_per_epoch:,} target tokens/epoch")
    counts = {"train": len(train), "valid": len(valid), "test": test_pairs, "dropped_long": train.dropped_long,
              "dropped_empty": train.dropped_empty, "blank_lines": blank}
    info = {"model": config.to_dict(), "tokenizers": tokenizers_to_json(src_tok, tgt_tok, s.spm_shared),
            "schedule": schedule.to_dict(), "data": counts}
    if token_ids:  # a multilingual run: each target language, the id of its source-side token, its pieces
        info["languages"] = token_ids
        info["language_pieces"] = pieces
    return Prepared(Seq2Seq(config), task, train_data, batches["valid"], batches["test"], info, report)


def finish(run: Run) -> Dict[str, Any]:
    """Write the SentencePiece models into the run directory; BLEU and chrF of the best weights on the test
    split (at most eval_max_sentences, beam search with `beam`), with the validation and test losses."""
    s, summary = run.settings, run.summary
    src_tok, tgt_tok = tokenizers(run)
    entries = run.info["tokenizers"]
    src_tok.save(run.out / entries["source"]["file"])
    if not entries["shared"]:
        tgt_tok.save(run.out / entries["target"]["file"])
    scores = final_scores(summary)
    results: Dict[str, Any] = {"step": summary.get("step"), "stop": summary.get("stop"), **scores}
    if run.info["data"]["test"]:
        for i, lang in enumerate(languages(s.to_dict())):
            test = evaluate(run, limit=s.eval_max_sentences or None, beam=s.beam, lang=lang, progress=not s.quiet)
            keys = ("bleu", "chrf", "sentences", "too_long", "beam", "decode_s")
            if i == 0:  # the first language's scores are the run's
                results.update({k: test[k] for k in keys})
            if lang is not None:
                results.update({f"{k}_{lang}": test[k] for k in keys if k != "beam"})
            say(s, f"test BLEU {test['bleu']:.2f}, chrF {test['chrf']:.2f} on {test['sentences']} sentences "
                   f"(beam {s.beam}{f', → {lang}' if lang else ''})")
    rows = "\n".join(f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |"
                     for k, v in results.items() if k not in ("step", "stop"))
    c = run.model.config
    langs = f"target languages {', '.join(run.info['languages'])}, " if run.info.get("languages") else ""
    results["markdown"] = (f"seq2seq: {c.encoder_cell or c.cell}→{c.cell} {c.num_layers}x{c.hidden_size}, "
                           f"attention {c.attention}, vocabulary {c.source_vocab_size}/{c.target_vocab_size}, {langs}"
                           f"step {summary.get('step')} ({summary.get('stop')})\n\n| score | value |\n|---|---|\n{rows}\n")
    return results


RECIPE = Recipe("seq2seq", Seq2SeqSettings, prepare, finish, lambda m: Seq2Seq(Seq2SeqConfig(**m)), load_extras,
                extra="nlp")


def train(settings: Optional[Seq2SeqSettings] = None, **changes: Any) -> Run:
    """Train a translator: `train(Seq2SeqSettings(data="pairs.tsv", max_minutes=5))`."""
    return RECIPE.train(settings, **changes)


def load(path: str, device: str = "cpu") -> Run:
    """A trained seq2seq model from its run directory or a checkpoint (best weights first)."""
    return RECIPE.load(path, device)


# ---------------------------------------------------------------------- scoring
def run_settings(run: Run) -> Dict[str, Any]:
    """The settings `run` was trained with: its own, or its run directory's config.json ({} if neither)."""
    if run.settings is not None:
        return run.settings.to_dict()
    saved = saved_settings(run.out) if run.out is not None else None
    return (saved or {}).get("settings") or {}


def evaluate(run: Run, data: Optional[str] = None, *, split: str = "test", limit: Optional[int] = None,
             options: Optional[DecodeOptions] = None, hypotheses: bool = False, progress: bool = False,
             **changes: Any) -> Dict[str, Any]:
    """BLEU and chrF (sacrebleu) of `run` on a split of its own data, or of `data` (pairs in any format
    `train` reads); the first `limit` pairs only if given. With `hypotheses`, the outputs too. A
    multilingual run translates into `lang` (an option; default: its first language), and its own data
    is that language's corpus.

        >>> seq2seq.evaluate(run, split="valid", beam=1)  # doctest: +SKIP
        {'bleu': 21.3, 'chrf': 44.0, 'sentences': 500, 'too_long': 0, 'split': 'valid', ...}
    """
    if split not in ("test", "valid", "train"):
        raise InputError(f"{setting_name('split')} must be test, valid or train; got {split!r}")
    options = decode_options(options, changes)
    settings = run_settings(run)
    if data is None and not settings.get("data"):
        raise DataError(f"{setting_name('data')} is needed: the run has no config.json naming its data")
    lang = target_language(run, options.lang)
    splits = read_splits(settings, data, lang)
    pairs = getattr(splits, split)[:limit]
    if not pairs:
        raise DataError(f"the {split} split of {splits.description} is empty")
    t0 = time.monotonic()
    result, outputs = score_pairs(run, pairs, options, progress=progress)
    result.update(split=split, step=run.summary.get("step"), decode_s=round(time.monotonic() - t0, 1),
                  method=options.generate_kwargs()["method"], beam=options.beam, **({"lang": lang} if lang else {}))
    return {**result, "hypotheses": outputs} if hypotheses else result
