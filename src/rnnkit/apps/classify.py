"""Many-to-one sequence classifier on label<TAB>text files (default: NSMC Korean movie-review sentiment).

Two classes train a sigmoid + BCE head, more a softmax + CE head. The test scores (accuracy,
F1) go to OUT/results.md and results.json next to a majority-class baseline and a bag-of-words
logistic regression fitted on the same training examples; the confusion matrix to
OUT/confusion.png.

    >>> from rnnkit.apps import classify
    >>> run = classify.train(classify.ClassifySettings(data="reviews.tsv", max_epochs=2))  # doctest: +SKIP
    >>> classify.predict(run, ["a wonderful film", "dull"])                 # doctest: +SKIP
    ['pos', 'neg']
    >>> classify.predict_proba(run, ["a wonderful film"])                   # doctest: +SKIP
    [{'neg': 0.08, 'pos': 0.92}]
    >>> classify.evaluate(run, "test.tsv")["accuracy"]                      # doctest: +SKIP
"""

from __future__ import annotations

import functools
from collections import Counter
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .._optional import require
from ..data.labelled import (CharTokenizer, LabelVocab, PieceTokenizer, SequenceLoader, WordTokenizer,
                             read_classification)
from ..data.text import DataError
from ..errors import InputError
from ..models.classify import (OBJECTIVES, POOLINGS, ClassifierConfig, ClassifyTask, build_classifier,
                               classification_scores, plot_confusion)
from ..recipes import repository_data
from .labelled import (BASELINE, LabelledSettings, check_two_classes, extras, held_out, load_extras,
                       model_outputs, results_markdown, run_numbers, show_notes)
from .runner import Prepared, Recipe, Run
from .settings import setting, setting_name, settings_class

__all__ = ["ClassifySettings", "train", "load", "predict", "predict_proba", "evaluate", "RECIPE"]

DEFAULT_DATA = ("data/nsmc/train.tsv", "data/nsmc/test.tsv")
TEXT_TOKENIZERS = ("word", "char")


@settings_class
class ClassifySettings(LabelledSettings):
    """Settings of `rnnkit train classify` (defaults: a bidirectional GRU on NSMC, SentencePiece tokens)."""

    DEFAULTS = dict(out="runs/classify", batch_size=64, lr=2e-3)
    data: Optional[str] = setting(None, f"Training file, label<TAB>text a line; a first row naming the columns "
                                        f"(label<TAB>text, sentiment<TAB>review, ...) is a header and is skipped "
                                        f"(default {DEFAULT_DATA[0]}).", path=True)
    tokenizer: str = setting("sentencepiece", "How texts become tokens.", choices=("sentencepiece",) + TEXT_TOKENIZERS)
    vocab_size: int = setting(4000, "SentencePiece vocabulary size.", min=1,
                              acts_with=("tokenizer", ("sentencepiece",)))
    min_count: int = setting(2, "word/char: tokens seen fewer times in training become <unk>.", min=1,
                             acts_with=("tokenizer", TEXT_TOKENIZERS))
    lowercase: bool = setting(False, "word/char: lower-case texts.", acts_with=("tokenizer", TEXT_TOKENIZERS))
    max_length: int = setting(200, "Tokens kept per text (longer texts are cut; the count is reported).", min=1)
    objective: str = setting("auto", "sigmoid + BCE (two classes) or softmax + CE; auto: sigmoid for two classes.",
                             choices=("auto",) + OBJECTIVES)
    pooling: str = setting("mean", "How the encoder's outputs become one vector (max+mean: both side by side).",
                           choices=POOLINGS)
    pooled_dropout: Optional[float] = setting(None, "Dropout on the pooled vector before the head (default: "
                                                    "--dropout).", min=0, max=1, max_open=True)
    ensemble: int = setting(1, "Models trained side by side, each from its own initial weights; predictions "
                               "average their probabilities (k times the training time).", min=1)


def data_files(s: ClassifySettings) -> Tuple[str, Optional[str]]:
    """(training file, test file or None): the settings' own, else the default data set's."""
    if s.data:
        return s.data, s.test_data
    return repository_data(DEFAULT_DATA[0]), s.test_data or repository_data(DEFAULT_DATA[1])


def fit_tokenizer(s: ClassifySettings, texts: List[str]) -> Any:
    if s.tokenizer == "sentencepiece":
        return PieceTokenizer.fit(texts, vocab_size=s.vocab_size, seed=s.seed)
    cls = WordTokenizer if s.tokenizer == "word" else CharTokenizer
    return cls.fit(texts, min_count=s.min_count, lower=s.lowercase)


def prepare(s: ClassifySettings, resumed: Optional[Dict[str, Any]], rank: int, world: int) -> Prepared:
    train_path, test_path = data_files(s)
    data = read_classification(train_path)
    labels = LabelVocab.from_labels(data.labels)
    if len(labels) < 2:
        raise DataError(f"{train_path!r}: only one label ({labels.labels[0]!r}); a classifier needs two or more")
    tr, va = held_out(len(data.texts), s.val_fraction, s.seed)
    counts = Counter(data.labels[i] for i in tr)
    check_two_classes(train_path, counts, f"{len(va)} of {len(data.texts)} examples")
    tok = fit_tokenizer(s, [data.texts[i] for i in tr])
    y = labels.encode(data.labels, source=train_path, lines=data.lines)
    objective = s.objective if s.objective != "auto" else ("sigmoid" if len(labels) == 2 else "softmax")
    config = ClassifierConfig(len(tok), len(labels), objective=objective, pooling=s.pooling, cell=s.cell,
                              embedding_size=s.embedding_size, hidden_size=s.hidden_size, num_layers=s.num_layers,
                              bidirectional=s.bidirectional, dropout=s.dropout,
                              word_dropout=s.word_dropout, pooled_dropout=s.pooled_dropout, ensemble=s.ensemble)
    ids = [tok.encode(t) for t in data.texts]
    train = SequenceLoader([ids[i] for i in tr], [y[i] for i in tr], s.batch_size, shuffle=True, seed=s.seed,
                           max_length=s.max_length)
    val = SequenceLoader([ids[i] for i in va], [y[i] for i in va], 256, max_length=s.max_length)
    test, notes = None, data.notes
    if test_path:
        found = read_classification(test_path, data.columns)
        notes = notes + found.notes
        # an unseen test label stops the run before training
        y_test = labels.encode(found.labels, source=test_path, lines=found.lines)
        test = SequenceLoader([tok.encode(t) for t in found.texts], y_test, 256, max_length=s.max_length)
    show_notes(notes)
    cut = sum(len(x) > s.max_length for x in ids)
    report = [f"{train_path}: {len(ids)} examples ({len(tr)} train, {len(va)} validation), labels "
              f"{dict(sorted(counts.items()))}; {s.tokenizer} vocabulary of {len(tok)}; mean "
              f"{np.mean([len(x) for x in ids]):.1f} tokens, {cut} texts cut to {s.max_length}; "
              f"{objective} objective, {s.pooling} pooling"]
    info = {"model": config.to_dict(), "labels": labels.labels, "tokenizer": tok.to_json(),
            "max_length": s.max_length,
            "data": {"train": train_path, "test": test_path, "val_fraction": s.val_fraction,
                     "columns": list(data.columns)}}
    return Prepared(build_classifier(config), ClassifyTask(), train, val, test, info=info, report=report)


def finish(run: Run) -> Dict[str, Any]:
    """The model's scores on the test file (else the validation part) next to the baselines; confusion.png."""
    s, info = run.settings, run.info
    train_path, test_path = info["data"]["train"], info["data"]["test"]
    train = read_classification(train_path)
    tr, va = held_out(len(train.texts), s.val_fraction, s.seed)
    if test_path:
        test = read_classification(test_path, train.columns)
        texts, gold, what = test.texts, test.labels, f"test ({test_path})"
    else:
        texts, gold, what = [train.texts[i] for i in va], [train.labels[i] for i in va], "validation part"
    ex = classify_extras(run)
    vocab, tok = ex["labels"], ex["tokenizer"]
    y_true = np.array(vocab.encode(gold, source=test_path or train_path))
    y_pred = probabilities(run, texts).argmax(1)
    y_train = np.array(vocab.encode([train.labels[i] for i in tr], source=train_path))
    K = len(vocab)
    rows = {"model": classification_scores(y_true, y_pred, K),
            "majority class": classification_scores(y_true, np.full_like(y_true, np.bincount(y_train).argmax()), K),
            "bag-of-words logistic regression": classification_scores(
                y_true, bag_of_words_baseline(tok, [train.texts[i] for i in tr], y_train, texts), K)}
    cm = plot_confusion(run.out / "confusion.png", y_true, y_pred, vocab.labels, title=f"{what}: confusion")
    c = run.model.config
    ensemble = f"an ensemble of {c.ensemble} " if c.ensemble > 1 else ""
    header = (f"Classification on {what}: {ensemble}{c.cell} {'bi' if c.bidirectional else 'uni'}directional "
              f"{c.num_layers}x{c.hidden_size}, {c.pooling} pooling, {c.objective}, {tok.kind} tokens "
              f"(vocabulary {len(tok)}), {len(y_true)} examples")
    if not test_path:
        header += f" (no {setting_name('test_data')}: scores on the validation part only)"
    return {"scores": rows, "confusion": cm.tolist(), "labels": vocab.labels, **run_numbers(run),
            "markdown": results_markdown(header, rows, "accuracy")}


def bag_of_words_baseline(tok: Any, train_texts: List[str], y_train: np.ndarray, texts: List[str]) -> np.ndarray:
    """Predictions of a logistic regression on bag-of-words counts of the same tokens, fitted on the same
    training examples."""
    CountVectorizer = require("sklearn.feature_extraction.text", extra="nlp", purpose=BASELINE).CountVectorizer
    LogisticRegression = require("sklearn.linear_model", extra="nlp", purpose=BASELINE).LogisticRegression
    vec = CountVectorizer(analyzer=tok.pieces, min_df=1)
    model = LogisticRegression(max_iter=2000, C=1.0).fit(vec.fit_transform(train_texts), y_train)
    return model.predict(vec.transform(texts))


classify_load_extras = functools.partial(load_extras, labels_key="labels", size_key="num_classes")
RECIPE = Recipe("classify", ClassifySettings, prepare, finish, lambda m: build_classifier(ClassifierConfig(**m)),
                classify_load_extras, extra="nlp")
classify_extras = functools.partial(extras, app="classify", load=classify_load_extras)


def train(settings: Optional[ClassifySettings] = None, **changes: Any) -> Run:
    """Train a classifier: `train(ClassifySettings(data="reviews.tsv"))` or `train(data="reviews.tsv")`."""
    return RECIPE.train(settings, **changes)


def load(path: str, device: str = "cpu") -> Run:
    """A trained classifier from its run directory or a checkpoint (best weights first)."""
    return RECIPE.load(path, device)


def probabilities(run: Run, texts: Sequence[str]) -> np.ndarray:
    """Class probabilities (N, K) of `texts`, columns in the order of the run's labels."""
    if isinstance(texts, str):
        raise InputError(f"texts must be a list of strings; got one string {texts[:40]!r} (put it in a list)")
    ex = classify_extras(run)
    if not texts:
        return np.zeros((0, len(ex["labels"])))
    ids = [ex["tokenizer"].encode(t) for t in texts]
    parts = []
    for z, _ in model_outputs(run, ids, run.info.get("max_length")):
        if run.model.config.objective == "sigmoid":
            p = torch.sigmoid(z)
            parts.append(torch.stack([1 - p, p], dim=1))
        else:
            parts.append(torch.softmax(z, dim=1))
    return torch.cat(parts).numpy()


def predict(run: Run, texts: Sequence[str]) -> List[str]:
    """The most likely label of each text."""
    labels = classify_extras(run)["labels"].labels
    return [labels[k] for k in probabilities(run, texts).argmax(1)]


def predict_proba(run: Run, texts: Sequence[str]) -> List[Dict[str, float]]:
    """Each text's probability of each label: [{label: p, ...}, ...]."""
    labels = classify_extras(run)["labels"].labels
    return [dict(zip(labels, map(float, row))) for row in probabilities(run, texts)]


def evaluate(run: Run, path: str) -> Dict[str, float]:
    """accuracy, macro_f1 (and f1 of the second label with two labels) on a label<TAB>text file, and its
    number of examples; DataError naming the line of a label the run never saw."""
    ex = classify_extras(run)
    columns = run.info.get("data", {}).get("columns")
    data = read_classification(path, tuple(columns) if columns else None)
    y_true = np.array(ex["labels"].encode(data.labels, source=str(path), lines=data.lines))
    y_pred = probabilities(run, data.texts).argmax(1)
    return {**classification_scores(y_true, y_pred, len(ex["labels"])), "examples": len(y_true)}

