"""`rnnkit train classify` (many-to-one) and `rnnkit train tag` (many-to-many aligned).

classify: label<TAB>text files; default NSMC (Korean movie reviews, 20k/5k) with a
SentencePiece vocabulary trained on the training texts. tag: token<TAB>tag files
with blank lines between sentences; default UD English EWT (UPOS). Both write
OUT/results.md and results.json with the test scores next to a majority-class
baseline and a bag-of-words (tagging: word-window) logistic regression fitted on
the same training examples; classify also writes OUT/confusion.png.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import click
import numpy as np
import torch

from .._optional import require, require_extra
from ..data.labelled import (CharTokenizer, LabelVocab, PieceTokenizer, SequenceLoader, WordTokenizer,
                             read_classification, read_tagged)
from ..data.text import DataError
from ..cells import CELLS
from ..models.classify import (OBJECTIVES, POOLINGS, ClassifierConfig, ClassifyTask, SequenceClassifier,
                               classification_scores, plot_confusion)
from ..models.tagger import (SequenceTagger, TaggerConfig, TagTask, entity_scores, is_bio, predict_tags)
from ..recipes import repository_data
from .apps import app_training_specs, run_app
from ._old_options import INPUT_PATH, POS_INT, PROB, recipe_options, run_specs

CLASSIFY_DATA = ("data/nsmc/train.tsv", "data/nsmc/test.tsv")
TAG_DATA = ("data/ud-english-ewt/train.tsv", "data/ud-english-ewt/dev.tsv", "data/ud-english-ewt/test.tsv")
BASELINE = "the logistic-regression baseline"

COMMON = [
    ("cell", click.Choice(list(CELLS)), "gru", "Recurrent cell."),
    ("bidirectional", bool, True, "Bidirectional encoder."),
    ("dropout", PROB, 0.2, "Dropout on embeddings, between layers and before the head."),
]

CLASSIFY_SPECS = [
    ("data", INPUT_PATH, None, f"Training file, label<TAB>text a line; a header row naming the columns is "
                               f"skipped (default {CLASSIFY_DATA[0]})."),
    ("test_data", INPUT_PATH, None, f"Test file, same format (default {CLASSIFY_DATA[1]} with the default data)."),
    ("val_fraction", click.FloatRange(0.0, 0.5, min_open=True), 0.1,
     "Training examples held out (at random, seeded) for validation and early stopping."),
    *run_specs("runs/classify", "Run directory."),
    ("tokenizer", click.Choice(["sentencepiece", "word", "char"]), "sentencepiece", "How texts become tokens."),
    ("vocab_size", POS_INT, 4000, "SentencePiece vocabulary size."),
    ("min_count", POS_INT, 2, "word/char: tokens seen fewer times in training become <unk>."),
    ("lowercase", bool, False, "word/char: lower-case texts."),
    ("max_length", POS_INT, 200, "Tokens kept per text (longer texts are cut; the count is reported)."),
    ("objective", click.Choice(("auto",) + OBJECTIVES), "auto", "sigmoid + BCE (two classes) or softmax + CE; "
                                                                "auto: sigmoid for two classes."),
    ("pooling", click.Choice(POOLINGS), "mean", "How the encoder's outputs become one vector."),
    ("embedding_size", POS_INT, 128, "Embedding size."),
    ("hidden_size", POS_INT, 128, "Hidden units per direction and layer."),
    ("num_layers", POS_INT, 1, "Stacked layers."),
] + COMMON + app_training_specs(dict(batch_size=64, optimizer="adam", lr=2e-3, clip_norm=5.0, max_epochs=8,
                                     early_stop_patience=2, eval_every=None, checkpoint_every=1000))

TAG_SPECS = [
    ("data", INPUT_PATH, None, f"Training file, token<TAB>tag a line, blank line between sentences, or CoNLL-U "
                               f"(FORM and UPOS) (default {TAG_DATA[0]})."),
    ("val_data", INPUT_PATH, None, f"Validation file (default {TAG_DATA[1]} with the default data)."),
    ("test_data", INPUT_PATH, None, f"Test file (default {TAG_DATA[2]} with the default data)."),
    *run_specs("runs/tag", "Run directory."),
    ("min_count", POS_INT, 2, "Words seen fewer times in training become <unk>."),
    ("lowercase", bool, False, "Lower-case words."),
    ("embedding_size", POS_INT, 100, "Word embedding size."),
    ("hidden_size", POS_INT, 64, "Hidden units per direction and layer."),
    ("num_layers", POS_INT, 2, "Stacked layers."),
] + COMMON + app_training_specs(dict(batch_size=32, optimizer="adam", lr=5e-3, clip_norm=5.0, max_epochs=8,
                                     early_stop_patience=2, checkpoint_every=1000))


# ------------------------------------------------------------------ classify
def verdict(rows: Dict[str, Dict[str, float]], metric: str) -> str:
    """One line: does the model beat every baseline on `metric` (higher is better)?"""
    model = rows["model"][metric]
    beaten_by = [name for name, v in rows.items() if name != "model" and v[metric] >= model]
    if beaten_by:
        return f"the model does NOT beat {', '.join(beaten_by)} on {metric}"
    return f"the model beats every baseline on {metric}"


def _write_results(out: Path, quiet: bool, header: str, rows: Dict[str, Dict[str, float]], metric: str,
                   extra: Dict[str, Any], also_wrote: Sequence[Path] = ()) -> None:
    """OUT/results.md: `header`, a table with one row per method and one column per score, and the `verdict`
    on `metric`; OUT/results.json: {"scores": rows, **extra}. Unless quiet, echoes the table and the files written
    (`also_wrote`: files the caller wrote beside them)."""
    keys = list(rows["model"])
    table = "| method | " + " | ".join(keys) + " |\n|---|" + "---:|" * len(keys) + "\n" + "\n".join(
        f"| {name} | " + " | ".join(f"{v[k]:.4f}" for k in keys) + " |" for name, v in rows.items())
    table += "\n\n" + verdict(rows, metric)
    (out / "results.md").write_text(header + table + "\n")
    (out / "results.json").write_text(json.dumps({"scores": rows, **extra}, indent=1))
    if not quiet:
        click.echo(header + table)
        click.echo("rnnkit: wrote " + ", ".join(str(p) for p in [out / "results.md", *also_wrote]))


def _classification_files(s: Dict[str, Any]) -> Tuple[str, Optional[str]]:
    if s.get("data"):
        return s["data"], s.get("test_data")
    return repository_data(CLASSIFY_DATA[0]), s.get("test_data") or repository_data(CLASSIFY_DATA[1])


def _fit_tokenizer(s: Dict[str, Any], texts: List[str]):
    if s["tokenizer"] == "sentencepiece":
        return PieceTokenizer.fit(texts, vocab_size=s["vocab_size"], seed=s["seed"])
    cls = WordTokenizer if s["tokenizer"] == "word" else CharTokenizer
    return cls.fit(texts, min_count=s["min_count"], lower=s["lowercase"])


def _held_out(n: int, fraction: float, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(n)
    k = max(1, int(round(n * fraction)))
    return np.sort(perm[k:]), np.sort(perm[:k])


def _check_two_classes(path: str, kept: Counter, held_out: Optional[str]) -> None:
    """DataError when what is left to train on (after holding out `held_out` for validation) has one class."""
    if len(kept) < 2:
        part = (f"after holding out {held_out} for validation, the training part has" if held_out
                else "the training data has")
        raise DataError(f"{path!r}: {part} only the label {next(iter(kept))!r}; give examples of at least two "
                        f"labels")


def _build_classify(s: Dict[str, Any]):
    train_path, test_path = _classification_files(s)
    data = read_classification(train_path)
    labels, texts, lines = data.labels, data.texts, data.lines
    label_vocab = LabelVocab.from_labels(labels)
    if len(label_vocab) < 2:
        raise DataError(f"{train_path!r}: only one label ({label_vocab.labels[0]!r}); a classifier needs two or more")
    tr, va = _held_out(len(texts), s["val_fraction"], s["seed"])
    counts = Counter(labels[i] for i in tr)
    _check_two_classes(train_path, counts, f"{len(va)} of {len(texts)} examples")
    train_texts = [texts[i] for i in tr]
    tok = _fit_tokenizer(s, train_texts)
    y = label_vocab.encode(labels, source=train_path, lines=lines)
    objective = s["objective"] if s["objective"] != "auto" else ("sigmoid" if len(label_vocab) == 2 else "softmax")
    cfg = ClassifierConfig(len(tok), len(label_vocab), objective=objective, pooling=s["pooling"], cell=s["cell"],
                           embedding_size=s["embedding_size"], hidden_size=s["hidden_size"],
                           num_layers=s["num_layers"], bidirectional=s["bidirectional"], dropout=s["dropout"])
    ids = [tok.encode(t) for t in texts]
    cut = sum(len(x) > s["max_length"] for x in ids)
    train = SequenceLoader([ids[i] for i in tr], [y[i] for i in tr], s["batch_size"], shuffle=True, seed=s["seed"],
                           max_length=s["max_length"])
    val = SequenceLoader([ids[i] for i in va], [y[i] for i in va], 256, max_length=s["max_length"])
    report = [f"{train_path}: {len(texts)} examples ({len(tr)} train, {len(va)} validation), labels "
              f"{dict(sorted(counts.items()))}; {s['tokenizer']} vocabulary of {len(tok)}; mean "
              f"{np.mean([len(x) for x in ids]):.1f} tokens, {cut} texts cut to {s['max_length']}; "
              f"{objective} objective, {s['pooling']} pooling"]
    notes = data.notes
    if test_path:
        test = read_classification(test_path, data.columns)
        notes += test.notes
        # an unseen test label stops the run before training
        label_vocab.encode(test.labels, source=test_path, lines=test.lines)
    for note in notes:  # how the files were read: shown even with --quiet
        click.echo(f"rnnkit: note: {note}", err=True)
    run_info = {"model": cfg.to_dict(), "labels": label_vocab.labels, "tokenizer": tok.to_json(),
                "data": {"train": train_path, "test": test_path, "val_fraction": s["val_fraction"],
                         "columns": list(data.columns)}}
    return SequenceClassifier(cfg), ClassifyTask(), train, val, run_info, report


@torch.no_grad()
def _predict(model: SequenceClassifier, loader: SequenceLoader) -> Tuple[np.ndarray, np.ndarray]:
    model.eval()
    device = next(model.parameters()).device
    true, pred = [], []
    for b in loader.batches(0, 0):
        pred.append(model.predict(b["tokens"].to(device), b["lengths"].to(device)).cpu().numpy())
        true.append(b["labels"].numpy())
    return np.concatenate(true), np.concatenate(pred)


def _finish_classify(model: SequenceClassifier, s: Dict[str, Any], out: Path, trainer) -> None:
    CountVectorizer = require("sklearn.feature_extraction.text", extra="nlp", purpose=BASELINE).CountVectorizer
    LogisticRegression = require("sklearn.linear_model", extra="nlp", purpose=BASELINE).LogisticRegression
    from ..data.labelled import tokenizer_from_json
    info = trainer.run_info
    train_path, test_path = info["data"]["train"], info["data"]["test"]
    if not test_path:
        if not s["quiet"]:
            click.echo("rnnkit: no --test-data: scores on the validation part only")
    vocab = LabelVocab(info["labels"])
    tok = tokenizer_from_json(info["tokenizer"])
    train = read_classification(train_path)
    labels, texts = train.labels, train.texts
    tr, va = _held_out(len(texts), s["val_fraction"], s["seed"])
    if test_path:
        test = read_classification(test_path, train.columns)
        eval_labels, eval_texts = test.labels, test.texts
        what = f"test ({test_path})"
    else:
        eval_labels, eval_texts = [labels[i] for i in va], [texts[i] for i in va]
        what = "validation part"
    y_eval = np.array(vocab.encode(eval_labels, source=test_path or train_path))
    loader = SequenceLoader([tok.encode(t) for t in eval_texts], list(y_eval), 256, max_length=s["max_length"])
    y_true, y_pred = _predict(model, loader)
    K = len(vocab)
    rows = {"model": classification_scores(y_true, y_pred, K)}
    y_train = np.array(vocab.encode([labels[i] for i in tr], source=train_path))
    majority = np.bincount(y_train, minlength=K).argmax()
    rows["majority class"] = classification_scores(y_true, np.full_like(y_true, majority), K)
    # bag of words over the same tokens, fitted on the same training examples
    vec = CountVectorizer(analyzer=tok.pieces, min_df=1)
    Xtr = vec.fit_transform([texts[i] for i in tr])
    lr = LogisticRegression(max_iter=2000, C=1.0)
    lr.fit(Xtr, y_train)
    rows["bag-of-words logistic regression"] = classification_scores(y_true, lr.predict(vec.transform(eval_texts)), K)
    cm = plot_confusion(out / "confusion.png", y_true, y_pred, vocab.labels, title=f"{what}: confusion")
    c = model.config
    header = (f"Classification on {what}: {c.cell} {'bi' if c.bidirectional else 'uni'}directional "
              f"{c.num_layers}x{c.hidden_size}, {c.pooling} pooling, {c.objective}, {tok.kind} tokens "
              f"(vocabulary {len(tok)}), {len(y_true)} examples\n\n")
    _write_results(out, s["quiet"], header, rows, "accuracy", {"confusion": cm.tolist(), "labels": vocab.labels},
                   also_wrote=[out / "confusion.png"])


@click.command("classify")
@recipe_options(CLASSIFY_SPECS)
@click.pass_context
def train_classify(ctx: click.Context, **values: Any) -> None:
    """Many-to-one sequence classifier (default: NSMC Korean movie-review sentiment, SentencePiece tokens).

    Two classes train a sigmoid + BCE head, more a softmax + CE head. The test scores
    (accuracy, F1) go to OUT/results.md next to a majority-class baseline and a
    bag-of-words logistic regression on the same split; OUT/confusion.png.
    """
    require_extra("nlp", "rnnkit train classify")
    run_app(ctx, "classify", values, _build_classify, _finish_classify)


# ------------------------------------------------------------------ tag
def _tag_files(s: Dict[str, Any]) -> Tuple[str, Optional[str], Optional[str]]:
    if s.get("data"):
        return s["data"], s.get("val_data"), s.get("test_data")
    return (repository_data(TAG_DATA[0]), s.get("val_data") or repository_data(TAG_DATA[1]),
            s.get("test_data") or repository_data(TAG_DATA[2]))


def _encode_tags(sentences, vocab: LabelVocab, source: str) -> List[List[int]]:
    out = []
    for tokens, tags, line in sentences:
        out.append(vocab.encode(tags, source=source, lines=list(range(line, line + len(tags)))))
    return out


def _build_tag(s: Dict[str, Any]):
    train_path, val_path, test_path = _tag_files(s)
    train = read_tagged(train_path, min_sentences=1 if val_path else 2)  # else 10% are held out
    tags = LabelVocab.from_labels(t for _, tt, _ in train for t in tt)
    y = _encode_tags(train, tags, train_path)
    if val_path:
        val_sents = read_tagged(val_path)
    else:  # hold out 10% of the training sentences
        tr, va = _held_out(len(train), 0.1, s["seed"])
        val_sents = [train[i] for i in va]
        train, y = [train[i] for i in tr], [y[i] for i in tr]
    # the words of the held-out sentences stay out of the vocabulary, as a test set's would
    tok = WordTokenizer.fit((w for w, _, _ in train), min_count=s["min_count"], lower=s["lowercase"])
    _check_two_classes(train_path, Counter(t for _, tt, _ in train for t in tt),
                       None if val_path else f"{len(val_sents)} of {len(train) + len(val_sents)} sentences")
    val_y = _encode_tags(val_sents, tags, val_path or train_path)
    if test_path:
        _encode_tags(read_tagged(test_path), tags, test_path)  # unseen test tags stop the run before training
    cfg = TaggerConfig(len(tok), len(tags), cell=s["cell"], embedding_size=s["embedding_size"],
                       hidden_size=s["hidden_size"], num_layers=s["num_layers"], bidirectional=s["bidirectional"],
                       dropout=s["dropout"])
    train_loader = SequenceLoader([tok.encode(w) for w, _, _ in train], y, s["batch_size"], shuffle=True,
                                  seed=s["seed"])
    val_loader = SequenceLoader([tok.encode(w) for w, _, _ in val_sents], val_y, 256)
    n_tokens = sum(len(w) for w, _, _ in train)
    report = [f"{train_path}: {len(train)} sentences, {n_tokens} tokens, {len(tags)} tags"
              f"{' (BIO: entity F1 reported)' if is_bio(tags.labels) else ''}; vocabulary {len(tok)} words "
              f"(min count {s['min_count']}); validation {val_path or '10% of training sentences'}"]
    run_info = {"model": cfg.to_dict(), "tags": tags.labels, "tokenizer": tok.to_json(),
                "data": {"train": train_path, "val": val_path, "test": test_path}}
    return SequenceTagger(cfg), TagTask(), train_loader, val_loader, run_info, report


def _window_features(words: List[str], i: int) -> Dict[str, float]:
    w = words[i]
    f = {"w=" + w.lower(): 1.0, "suf3=" + w[-3:].lower(): 1.0, "suf2=" + w[-2:].lower(): 1.0,
         "shape=" + ("X" if w[:1].isupper() else "x") + ("d" if any(ch.isdigit() for ch in w) else ""): 1.0,
         "bias": 1.0}
    f["prev=" + (words[i - 1].lower() if i > 0 else "<s>")] = 1.0
    f["next=" + (words[i + 1].lower() if i + 1 < len(words) else "</s>")] = 1.0
    return f


def _finish_tag(model: SequenceTagger, s: Dict[str, Any], out: Path, trainer) -> None:
    DictVectorizer = require("sklearn.feature_extraction", extra="nlp", purpose=BASELINE).DictVectorizer
    LogisticRegression = require("sklearn.linear_model", extra="nlp", purpose=BASELINE).LogisticRegression
    from ..data.labelled import tokenizer_from_json
    info = trainer.run_info
    tags = LabelVocab(info["tags"])
    tok = tokenizer_from_json(info["tokenizer"])
    train_path, val_path, test_path = info["data"]["train"], info["data"]["val"], info["data"]["test"]
    eval_path = test_path or val_path or train_path
    sents = read_tagged(eval_path)
    y = _encode_tags(sents, tags, eval_path)
    loader = SequenceLoader([tok.encode(w) for w, _, _ in sents], y, 256)
    true, pred = predict_tags(model, loader)
    bio = is_bio(tags.labels)

    def scores(pred_ids: List[List[int]]) -> Dict[str, float]:
        flat_t = np.concatenate([np.array(t) for t in true])
        flat_p = np.concatenate([np.array(p) for p in pred_ids])
        out_ = {"token_accuracy": float((flat_t == flat_p).mean())}
        if bio:
            out_.update(entity_scores([[tags.labels[i] for i in t] for t in true],
                                      [[tags.labels[i] for i in p] for p in pred_ids]))
        return out_

    rows = {"model": scores(pred)}
    train = read_tagged(train_path)
    if not val_path:
        tr, _ = _held_out(len(train), 0.1, s["seed"])
        train = [train[i] for i in tr]
    counts = Counter(t for _, tt, _ in train for t in tt)
    majority = tags.labels.index(counts.most_common(1)[0][0])
    rows["majority tag"] = scores([[majority] * len(t) for t in true])
    # most frequent tag of each word in training (unknown words: the majority tag)
    per_word: Dict[str, Counter] = {}
    for words, tt, _ in train:
        for w, t in zip(words, tt):
            per_word.setdefault(w, Counter())[t] += 1
    rows["most frequent tag per word"] = scores(
        [[tags.labels.index(per_word[w].most_common(1)[0][0]) if w in per_word else majority for w in words]
         for words, _, _ in sents])
    # logistic regression on a word window (word, suffixes, shape, neighbours), same training sentences
    vec = DictVectorizer()
    X = vec.fit_transform([_window_features(words, i) for words, _, _ in train for i in range(len(words))])
    Y = [tags.labels.index(t) for _, tt, _ in train for t in tt]
    lr = LogisticRegression(max_iter=300, C=1.0)
    lr.fit(X, Y)
    flat = lr.predict(vec.transform([_window_features(words, i) for words, _, _ in sents
                                     for i in range(len(words))]))
    split, k = [], 0
    for t in true:
        split.append(list(flat[k:k + len(t)]))
        k += len(t)
    rows["word-window logistic regression"] = scores(split)
    c = model.config
    header = (f"Tagging on {eval_path}: {c.cell} {'bi' if c.bidirectional else 'uni'}directional "
              f"{c.num_layers}x{c.hidden_size}, {len(true)} sentences, {sum(len(t) for t in true)} tokens\n\n")
    _write_results(out, s["quiet"], header, rows, "entity_f1" if bio else "token_accuracy", {"tags": tags.labels})


@click.command("tag")
@recipe_options(TAG_SPECS)
@click.pass_context
def train_tag(ctx: click.Context, **values: Any) -> None:
    """Sequence tagger: stacked bidirectional encoder + per-token softmax (default: UD English EWT UPOS).

    Reports token accuracy, and entity-level precision/recall/F1 when the tags are BIO
    (CoNLL NER files: token ... tag per line, blank line between sentences).
    """
    require_extra("nlp", "rnnkit train tag", ("sklearn",))
    run_app(ctx, "tag", values, _build_tag, _finish_tag)


def register(cli: click.Group, train: click.Group) -> None:
    """Add `rnnkit train classify` and `rnnkit train tag`."""
    train.add_command(train_classify)
    train.add_command(train_tag)
