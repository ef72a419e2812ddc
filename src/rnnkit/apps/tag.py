"""Sequence tagger, a stacked bidirectional encoder with a softmax per token (default: UD English EWT UPOS).

Data: token<TAB>tag a line with a blank line between sentences (CoNLL files: the tag is the last
column), or CoNLL-U (FORM and UPOS). Reports token accuracy, and entity-level precision, recall
and F1 when the tags are BIO, in OUT/results.md and results.json next to a majority-tag, a
most-frequent-tag-per-word and a word-window logistic-regression baseline.

    >>> from rnnkit.apps import tag
    >>> run = tag.train(tag.TagSettings(data="train.conllu", max_epochs=2))  # doctest: +SKIP
    >>> tag.predict(run, [["The", "cat", "sat"]])                         # doctest: +SKIP
    [['DET', 'NOUN', 'VERB']]
"""

from __future__ import annotations

import functools
from collections import Counter
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .._optional import require
from ..data.labelled import (UNK, CharTokenizer, LabelVocab, SequenceLoader, WordTokenizer, read_tagged,
                             tokenizer_from_json)
from ..errors import InputError
from ..models.char_words import CHAR_FEATURES
from ..models.tagger import SequenceTagger, TaggerConfig, TagTask, entity_scores, is_bio
from ..recipes import repository_data
from .labelled import (BASELINE, LabelledSettings, check_two_classes, extras, held_out, load_extras,
                       model_outputs, results_markdown, run_numbers)
from .runner import Prepared, Recipe, Run
from .settings import setting, setting_name, settings_class

__all__ = ["TagSettings", "train", "load", "predict", "evaluate", "RECIPE"]

DEFAULT_DATA = ("data/ud-english-ewt/train.tsv", "data/ud-english-ewt/dev.tsv", "data/ud-english-ewt/test.tsv")
#: sentences as read: (tokens, tags, first line)
Sentences = List[Tuple[List[str], List[str], int]]
#: characters kept of a longer word: its first and last MAX_WORD_CHARS // 2 (prefixes and suffixes tell the tag)
MAX_WORD_CHARS = 20


@settings_class
class TagSettings(LabelledSettings):
    """Settings of `rnnkit train tag` (defaults: two bidirectional GRU layers over words on UD English EWT,
    exportable to ONNX; the recipe tag-ud-ewt adds character features)."""

    DEFAULTS = dict(out="runs/tag", batch_size=32, lr=5e-3, embedding_size=100, hidden_size=64, num_layers=2)
    data: Optional[str] = setting(None, f"Training file, token<TAB>tag a line, blank line between sentences, or "
                                        f"CoNLL-U (FORM and UPOS) (default {DEFAULT_DATA[0]}).", path=True)
    val_data: Optional[str] = setting(None, "Validation file (default: the default data set's, else val_fraction of "
                                            "the training sentences).", path=True)
    min_count: int = setting(2, "Words seen fewer times in training become <unk>.", min=1)
    lowercase: bool = setting(False, "Lower-case words (the character features keep the case).")
    word_dropout_alpha: float = setting(0.0, "Training: a word seen n times in training is also read as <unk> "
                                             "with probability α/(α+n), so rare words most often (Plank et al. "
                                             "2016 use 0.25).", min=0)
    char_features: str = setting("none", "A vector per word from its characters (a CNN or a BiLSTM), beside its "
                                         "embedding: words outside the vocabulary are seen by their spelling (not "
                                         "exportable to ONNX).",
                                 choices=CHAR_FEATURES)
    char_embedding_size: int = setting(32, "Character embedding size.", min=1,
                                       acts_with=("char_features", CHAR_FEATURES[1:]))
    char_hidden_size: int = setting(50, "Character CNN filters, or BiLSTM units per direction.", min=1,
                                    acts_with=("char_features", CHAR_FEATURES[1:]))

    def check(self) -> None:
        super().check()
        if self.explicit("val_fraction") and self.explicit("val_data"):
            raise InputError(f"{setting_name('val_fraction')} holds out training sentences for validation and "
                             f"{setting_name('val_data')} gives them; choose one")


def data_files(s: TagSettings) -> Tuple[str, Optional[str], Optional[str]]:
    """(training, validation, test file): the settings' own, else the default data set's."""
    if s.data:
        return s.data, s.val_data, s.test_data
    return (repository_data(DEFAULT_DATA[0]), s.val_data or repository_data(DEFAULT_DATA[1]),
            s.test_data or repository_data(DEFAULT_DATA[2]))


def encode_tags(sentences: Sentences, vocab: LabelVocab, source: str) -> List[List[int]]:
    return [vocab.encode(tags, source=source, lines=list(range(line, line + len(tags))))
            for _, tags, line in sentences]


def word_chars(chars: Optional[CharTokenizer], sentences: List[List[str]]) -> Optional[List[List[List[int]]]]:
    """The character ids of each word of each sentence (a long word: its first and last MAX_WORD_CHARS // 2), or
    None without a character tokenizer."""
    if chars is None:
        return None
    half = MAX_WORD_CHARS // 2
    return [[chars.encode(w if len(w) <= MAX_WORD_CHARS else w[:half] + w[-half:]) for w in words]
            for words in sentences]


def out_of_vocabulary(run: Run, sentences: List[List[str]]) -> List[List[bool]]:
    """Whether each token is outside the run's word vocabulary (read as <unk>)."""
    tokenizer = tag_extras(run)["tokenizer"]
    return [[i == UNK for i in tokenizer.encode(words)] for words in sentences]


def training_sentences(s: TagSettings, path: str, has_val: bool) -> Tuple[Sentences, Sentences]:
    """(kept for training, held out for validation) of the training file: all and none with a validation
    file, else val_fraction of them held out."""
    sentences = read_tagged(path, min_sentences=1 if has_val else 2)
    if has_val:
        return sentences, []
    kept, held = held_out(len(sentences), s.val_fraction, s.seed)
    return [sentences[i] for i in kept], [sentences[i] for i in held]


def prepare(s: TagSettings, resumed: Optional[Dict[str, Any]], rank: int, world: int) -> Prepared:
    train_path, val_path, test_path = data_files(s)
    train, held = training_sentences(s, train_path, val_path is not None)
    tags = LabelVocab.from_labels(t for _, tt, _ in train + held for t in tt)
    val_sents = read_tagged(val_path) if val_path else held
    # the words of the held-out sentences stay out of the vocabulary, as a test set's would
    tok = WordTokenizer.fit((w for w, _, _ in train), min_count=s.min_count, lower=s.lowercase)
    check_two_classes(train_path, Counter(t for _, tt, _ in train for t in tt),
                      None if val_path else f"{len(held)} of {len(train) + len(held)} sentences")
    # every character of the training words: a character never seen there is <unk>
    chars = CharTokenizer.fit(w for words, _, _ in train for w in words) if s.char_features != "none" else None
    config = TaggerConfig(len(tok), len(tags), cell=s.cell, embedding_size=s.embedding_size,
                          hidden_size=s.hidden_size, num_layers=s.num_layers, bidirectional=s.bidirectional,
                          dropout=s.dropout, char_features=s.char_features, num_chars=len(chars) if chars else 0,
                          char_embedding_size=s.char_embedding_size, char_hidden_size=s.char_hidden_size,
                          word_dropout=s.word_dropout, word_dropout_alpha=s.word_dropout_alpha)

    def loader(sentences: Sentences, source: str, batch_size: int, shuffle: bool = False) -> SequenceLoader:
        words = [w for w, _, _ in sentences]
        return SequenceLoader([tok.encode(w) for w in words], encode_tags(sentences, tags, source),
                              batch_size, shuffle=shuffle, seed=s.seed, chars=word_chars(chars, words))

    # an unseen validation or test tag stops the run before training
    test = loader(read_tagged(test_path), test_path, 256) if test_path else None
    report = [f"{train_path}: {len(train)} sentences, {sum(len(w) for w, _, _ in train)} tokens, {len(tags)} tags"
              f"{' (BIO: entity F1 reported)' if is_bio(tags.labels) else ''}; vocabulary {len(tok)} words "
              f"(min count {s.min_count})"
              f"{f', {len(chars)} characters ({s.char_features})' if chars else ''}; "
              f"validation {val_path or f'{s.val_fraction:.0%} of the training sentences'}"]
    info = {"model": config.to_dict(), "tags": tags.labels, "tokenizer": tok.to_json(),
            **({"char_tokenizer": chars.to_json()} if chars else {}),
            "data": {"train": train_path, "val": val_path, "test": test_path, "val_fraction": s.val_fraction}}
    model = SequenceTagger(config)
    if s.word_dropout_alpha > 0:
        ids = np.concatenate([np.asarray(tok.encode(w), dtype=np.int64) for w, _, _ in train])
        model.set_word_counts(torch.from_numpy(np.bincount(ids, minlength=len(tok))))
    return Prepared(model, TagTask(), loader(train, train_path, s.batch_size, shuffle=True),
                    loader(val_sents, val_path or train_path, 256), test, info=info, report=report)


def finish(run: Run) -> Dict[str, Any]:
    """Token accuracy (and entity scores for BIO tags) of the model and the baselines on the test file (else
    the validation file, else the training file)."""
    info, vocab = run.info, tag_extras(run)["labels"]
    paths = info["data"]
    eval_path = paths["test"] or paths["val"] or paths["train"]
    sentences = read_tagged(eval_path)
    true = encode_tags(sentences, vocab, eval_path)
    train, _ = training_sentences(run.settings, paths["train"], paths["val"] is not None)
    words = [w for w, _, _ in sentences]
    oov = out_of_vocabulary(run, words)
    score = functools.partial(tag_scores, true, vocab.labels, oov=oov)
    rows = {"model": score(predict_ids(run, words))}
    counts = Counter(t for _, tt, _ in train for t in tt)
    majority = vocab.labels.index(counts.most_common(1)[0][0])
    rows["majority tag"] = score([[majority] * len(t) for t in true])
    per_word: Dict[str, Counter] = {}
    for words, tt, _ in train:
        for w, t in zip(words, tt):
            per_word.setdefault(w, Counter())[t] += 1
    rows["most frequent tag per word"] = score(
        [[vocab.labels.index(per_word[w].most_common(1)[0][0]) if w in per_word else majority for w in words]
         for words, _, _ in sentences])
    rows["word-window logistic regression"] = score(word_window_baseline(train, sentences, vocab))
    c = run.model.config
    n_oov, n = sum(map(sum, oov)), sum(len(t) for t in true)
    chars = f", {c.char_features} character features" if c.char_features != "none" else ""
    header = (f"Tagging on {eval_path}: {c.cell} {'bi' if c.bidirectional else 'uni'}directional "
              f"{c.num_layers}x{c.hidden_size}{chars}, {len(true)} sentences, {n} tokens, {n_oov} "
              f"({n_oov / n:.1%}) outside the model's vocabulary (oov_accuracy)")
    metric = "entity_f1" if is_bio(vocab.labels) else "token_accuracy"
    return {"scores": rows, "tags": vocab.labels, **run_numbers(run),
            "markdown": results_markdown(header, rows, metric)}


def tag_scores(true: List[List[int]], labels: List[str], pred: List[List[int]],
               oov: Optional[List[List[bool]]] = None) -> Dict[str, float]:
    """token_accuracy, oov_accuracy (on the tokens flagged in `oov`; NaN when none is), and entity
    precision/recall/F1 when the tags are BIO."""
    flat_t = np.concatenate([np.array(t) for t in true])
    flat_p = np.concatenate([np.array(p) for p in pred])
    scores = {"token_accuracy": float((flat_t == flat_p).mean())}
    if oov is not None:
        mask = np.concatenate([np.array(o, dtype=bool) for o in oov])
        scores["oov_accuracy"] = float((flat_t == flat_p)[mask].mean()) if mask.any() else float("nan")
    if is_bio(labels):
        scores.update(entity_scores([[labels[i] for i in t] for t in true], [[labels[i] for i in p] for p in pred]))
    return scores


def window_features(words: List[str], i: int) -> Dict[str, float]:
    """The word, its 2- and 3-letter suffixes, its shape and its neighbours (the logistic regression's view)."""
    w = words[i]
    f = {"w=" + w.lower(): 1.0, "suf3=" + w[-3:].lower(): 1.0, "suf2=" + w[-2:].lower(): 1.0,
         "shape=" + ("X" if w[:1].isupper() else "x") + ("d" if any(ch.isdigit() for ch in w) else ""): 1.0,
         "bias": 1.0}
    f["prev=" + (words[i - 1].lower() if i > 0 else "<s>")] = 1.0
    f["next=" + (words[i + 1].lower() if i + 1 < len(words) else "</s>")] = 1.0
    return f


def word_window_baseline(train: Sentences, sentences: Sentences, vocab: LabelVocab) -> List[List[int]]:
    """Tag ids of `sentences` from a logistic regression on word windows, fitted on the training sentences."""
    DictVectorizer = require("sklearn.feature_extraction", extra="nlp", purpose=BASELINE).DictVectorizer
    LogisticRegression = require("sklearn.linear_model", extra="nlp", purpose=BASELINE).LogisticRegression
    vec = DictVectorizer()
    X = vec.fit_transform([window_features(words, i) for words, _, _ in train for i in range(len(words))])
    model = LogisticRegression(max_iter=300, C=1.0).fit(X, [vocab.labels.index(t) for _, tt, _ in train for t in tt])
    flat = model.predict(vec.transform([window_features(words, i) for words, _, _ in sentences
                                        for i in range(len(words))]))
    bounds = np.cumsum([0] + [len(words) for words, _, _ in sentences])
    return [list(flat[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


def tag_load_extras(info: Dict[str, Any]) -> Dict[str, Any]:
    """The word tokenizer, the tags and (with character features) the character tokenizer of a run."""
    out = load_extras(info, labels_key="tags", size_key="num_tags")
    out["chars"] = tokenizer_from_json(info["char_tokenizer"]) if "char_tokenizer" in info else None
    wanted = info["model"].get("num_chars", 0)
    if len(out["chars"] or ()) != wanted:
        raise ValueError(f"a character tokenizer of {len(out['chars'] or ())} characters but the model expects "
                         f"{wanted}")
    return out


RECIPE = Recipe("tag", TagSettings, prepare, finish, lambda m: SequenceTagger(TaggerConfig(**m)), tag_load_extras,
                extra="nlp")
#: the run's word tokenizer, tags ("labels") and character tokenizer ("chars": None without character features)
tag_extras = functools.partial(extras, app="tag", load=tag_load_extras)


def train(settings: Optional[TagSettings] = None, **changes: Any) -> Run:
    """Train a tagger: `train(TagSettings(data="train.conllu"))` or `train(data="train.conllu")`."""
    return RECIPE.train(settings, **changes)


def load(path: str, device: str = "cpu") -> Run:
    """A trained tagger from its run directory or a checkpoint (best weights first)."""
    return RECIPE.load(path, device)


def predict(run: Run, sentences: Sequence[Union[Sequence[str], str]]) -> List[List[str]]:
    """The tag of each token of each sentence; a sentence is a list of tokens (or a string, split at spaces)."""
    labels = tag_extras(run)["labels"].labels
    return [[labels[k] for k in ids] for ids in predict_ids(run, sentences)]


def predict_ids(run: Run, sentences: Sequence[Union[Sequence[str], str]]) -> List[List[int]]:
    """The tag ids of each token of each sentence (see `predict`)."""
    if isinstance(sentences, str):
        raise InputError(f"sentences must be a list of sentences; got one string {sentences[:40]!r} (put it in "
                         f"a list)")
    ex = tag_extras(run)
    tokens = [s.split() if isinstance(s, str) else list(s) for s in sentences]
    if not tokens:
        return []
    out: List[List[int]] = []
    for z, lengths in model_outputs(run, [ex["tokenizer"].encode(t) for t in tokens],
                                    chars=word_chars(ex["chars"], tokens)):
        out.extend(row[:n].argmax(-1).tolist() for row, n in zip(z, lengths))
    return [ids[:len(t)] for ids, t in zip(out, tokens)]  # an empty sentence ran as one <unk>


def evaluate(run: Run, path: str) -> Dict[str, float]:
    """token_accuracy, oov_accuracy (tokens outside the run's vocabulary; entity scores for BIO tags) on a tagged
    file, and its numbers of sentences, tokens and such tokens; DataError naming the line of a tag the run never
    saw."""
    vocab = tag_extras(run)["labels"]
    sentences = read_tagged(path)
    true = encode_tags(sentences, vocab, str(path))
    words = [w for w, _, _ in sentences]
    oov = out_of_vocabulary(run, words)
    return {**tag_scores(true, vocab.labels, predict_ids(run, words), oov), "sentences": len(true),
            "tokens": sum(map(len, true)), "oov_tokens": sum(map(sum, oov))}
