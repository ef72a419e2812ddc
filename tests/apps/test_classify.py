"""rnnkit.apps.classify from Python: train on tiny made-up reviews, then predict / predict_proba / evaluate on the
returned Run and on the run directory loaded back (rnnkit.apps.load, classify.load), and `rnnkit predict`."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

import rnnkit.apps
from helpers import cli_outcome
from rnnkit.apps import classify
from rnnkit.errors import InputError

FILLER = "the a film movie plot story scene music actor ending".split()


def reviews(path: Path, n: int, seed: int) -> Path:
    """label<TAB>text: "pos" reviews hold "great", "neg" ones "dull", among filler words."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label, word = ("pos", "great") if i % 2 else ("neg", "dull")
        words = [rng.choice(FILLER) for _ in range(4)]
        words.insert(rng.randrange(5), word)
        rows.append(f"{label}\t{' '.join(words)}\n")
    path.write_text("label\ttext\n" + "".join(rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("classify")
    settings = classify.ClassifySettings(
        data=str(reviews(tmp / "train.tsv", 80, seed=0)), test_data=str(reviews(tmp / "test.tsv", 20, seed=1)),
        tokenizer="word", min_count=1, embedding_size=8, hidden_size=8, batch_size=8, lr=0.02, max_epochs=4,
        out=str(tmp / "run"), quiet=True, tensorboard=False)
    return classify.train(settings), tmp


def test_train_predict_evaluate_from_python(trained):
    run, tmp = trained
    assert classify.predict(run, ["a great film", "a dull film", "great", "dull"]) == ["pos", "neg", "pos", "neg"]
    probabilities = classify.predict_proba(run, ["a great film", "dull"])
    assert [set(p) for p in probabilities] == [{"neg", "pos"}] * 2
    assert all(abs(sum(p.values()) - 1) < 1e-6 for p in probabilities)
    assert probabilities[0]["pos"] > 0.5 > probabilities[1]["pos"]
    scores = classify.evaluate(run, str(tmp / "test.tsv"))
    assert scores["examples"] == 20 and scores["accuracy"] >= 0.9 and 0 <= scores["f1"] <= 1
    # the final report: one results.md + results.json (test scores next to the baselines), confusion.png
    results = json.loads((run.out / "results.json").read_text())
    assert results["scores"]["model"]["accuracy"] == pytest.approx(scores["accuracy"])
    assert results["labels"] == ["neg", "pos"] and "markdown" not in results
    assert "| bag-of-words logistic regression |" in (run.out / "results.md").read_text()
    assert (run.out / "confusion.png").stat().st_size > 1000
    assert not (run.out / "test_scores.json").exists()
    # every evaluation logs the validation accuracy beside the loss
    evals = [json.loads(line) for line in (run.out / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in evals if r["kind"] == "eval"]
    assert evals and all(0 <= r["val_accuracy"] <= 1 for r in evals) and evals[-1]["val_accuracy"] >= 0.75
    assert classify.predict(run, []) == []


@pytest.mark.parametrize("loader", [rnnkit.apps.load, classify.load], ids=["apps.load", "classify.load"])
def test_a_loaded_run_predicts_as_the_trained_one(trained, loader):
    run, _ = trained
    texts = ["great story", "dull music", "the plot", "", "an unseen word"]
    loaded = loader(run.out)
    assert loaded.app == "classify" and loaded.settings is None
    assert classify.predict(loaded, texts) == classify.predict(run, texts)
    for a, b in zip(classify.predict_proba(loaded, texts), classify.predict_proba(run, texts)):
        assert a == pytest.approx(b, abs=1e-6)


def test_predict_command_prints_a_label_a_line(trained, capsys):
    run, tmp = trained
    texts = tmp / "texts.txt"
    texts.write_text("a great film\nso dull\n", encoding="utf-8")
    code, out, err = cli_outcome(["predict", "--checkpoint", run.out, "--input", texts, "--device", "cpu"], capsys)
    assert code == 0, err
    code, _, err = cli_outcome(["predict", "--checkpoint", run.out, "--input", tmp / "missing.txt"], capsys)
    assert code == 2 and "missing.txt' does not exist" in err and "Traceback" not in err
    assert out.splitlines() == ["pos", "neg"]


def test_evaluate_names_an_unseen_label_and_its_line(trained):
    run, tmp = trained
    bad = tmp / "bad.tsv"
    bad.write_text("pos\ta great film\nneutral\tthe plot\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"bad.tsv line 2: label 'neutral' was not seen in training"):
        classify.evaluate(run, str(bad))


def test_inference_input_errors(trained):
    run, _ = trained
    with pytest.raises(InputError, match="texts must be a list of strings"):
        classify.predict(run, "a great film")
    other = rnnkit.apps.Run("tag", run.model, run.info)
    with pytest.raises(InputError, match="expected a classify run; got a tag run"):
        classify.predict(other, ["a great film"])


@pytest.mark.parametrize("changes,needles", [
    (dict(val_fraction=0.7), ["val_fraction", "0.7"]),
    (dict(min_count=1), ["min_count", "tokenizer sentencepiece (the default)", "word or char"]),
    (dict(tokenizer="word", vocab_size=100), ["vocab_size", "tokenizer word (as set)"]),
    (dict(pooling="first"), ["pooling", "last, mean, max, max+mean"]),
    (dict(ensemble=0), ["ensemble", "0"]),
    (dict(pooled_dropout=1.0), ["pooled_dropout", "1.0"]),
])
def test_settings_errors_name_the_setting(changes, needles):
    with pytest.raises(InputError) as err:
        classify.ClassifySettings(**changes)
    for needle in needles:
        assert needle in str(err.value), str(err.value)


def test_loading_a_sentencepiece_run_without_sentencepiece_names_the_extra(tmp_path, monkeypatch):
    """A missing optional package is not a malformed checkpoint: the error says what to install."""
    import rnnkit.data.labelled
    from rnnkit._optional import missing_extra
    from rnnkit.models.classify import ClassifierConfig
    from rnnkit.training.checkpoint import save_checkpoint

    def no_sentencepiece(module, *, extra, purpose):
        raise missing_extra(module, extra=extra, purpose=purpose)

    config = ClassifierConfig(vocab_size=10, num_classes=2, objective="sigmoid", hidden_size=4, embedding_size=4)
    info = {"recipe": "classify", "model": config.to_dict(), "labels": ["neg", "pos"],
            "tokenizer": {"kind": "sentencepiece", "model": ""}}
    record = save_checkpoint(tmp_path / "run" / "checkpoints", 1, {}, {"run": info})
    monkeypatch.setattr(rnnkit.data.labelled, "require", no_sentencepiece)
    with pytest.raises(InputError, match=r"needs sentencepiece: pip install 'rnnkit\[nlp\]'") as err:
        classify.load(str(record))
    assert "malformed" not in str(err.value)


def test_an_ensemble_with_max_and_mean_pooling_trains_saves_and_loads(tmp_path):
    """ensemble=2: one run, one checkpoint holding both members; the loaded run predicts as the trained one."""
    settings = classify.ClassifySettings(
        data=str(reviews(tmp_path / "train.tsv", 80, seed=0)),
        test_data=str(reviews(tmp_path / "test.tsv", 20, seed=1)), tokenizer="word", min_count=1, embedding_size=8,
        hidden_size=8, batch_size=8, lr=0.02, max_epochs=4, pooling="max+mean", pooled_dropout=0.5, ensemble=2, out=str(tmp_path / "run"), quiet=True, tensorboard=False)
    run = classify.train(settings)
    assert len(run.model.members) == 2
    assert "an ensemble of 2 gru" in (run.out / "results.md").read_text()
    assert classify.evaluate(run, str(tmp_path / "test.tsv"))["accuracy"] >= 0.9
    texts = ["great story", "dull music", "the plot"]
    loaded = classify.load(run.out)
    assert loaded.model.config.ensemble == 2 and loaded.model.config.pooling == "max+mean"
    for a, b in zip(classify.predict_proba(loaded, texts), classify.predict_proba(run, texts)):
        assert a == pytest.approx(b, abs=1e-6)


def test_kernels_load_before_the_clock_starts(tmp_path, monkeypatch):
    """A recipe without its own warm-up (classify) still builds the fused CPU kernels before the trainer's
    clock starts: a first run on a new machine must not spend its max_minutes compiling."""
    from rnnkit.backends import extension
    from rnnkit.training.trainer import Trainer
    order = []
    real_load, real_start = extension.load, Trainer._start
    monkeypatch.setattr(extension, "load", lambda: order.append("kernels") or real_load())
    monkeypatch.setattr(Trainer, "_start", lambda self, resume: order.append("clock") or real_start(self, resume))
    settings = classify.ClassifySettings(
        data=str(reviews(tmp_path / "train.tsv", 40, seed=0)), tokenizer="word", min_count=1, embedding_size=8,
        hidden_size=8, batch_size=8, max_steps=2, out=str(tmp_path / "run"), quiet=True, tensorboard=False)
    classify.train(settings)
    assert order[:2] == ["kernels", "clock"]
