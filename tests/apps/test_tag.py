"""rnnkit.apps.tag from Python: train on tiny made-up tagged sentences, then predict / evaluate on the returned Run
and on the run directory loaded back (rnnkit.apps.load, tag.load), and `rnnkit predict`."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import List

import pytest

import rnnkit.apps
from helpers import cli_outcome
from rnnkit.apps import tag
from rnnkit.errors import InputError

#: each word has one tag, so a tagger learns them in a few steps
LEXICON = {"the": "DET", "a": "DET", "cat": "NOUN", "dog": "NOUN", "mat": "NOUN", "sat": "VERB", "ran": "VERB",
           "saw": "VERB"}


def sentences(path: Path, n: int, seed: int) -> Path:
    """token<TAB>tag lines, a blank line after each sentence: DET NOUN VERB DET NOUN."""
    rng = random.Random(seed)
    pick = {t: [w for w, u in LEXICON.items() if u == t] for t in set(LEXICON.values())}
    blocks = []
    for _ in range(n):
        words = [rng.choice(pick[t]) for t in ("DET", "NOUN", "VERB", "DET", "NOUN")]
        blocks.append("".join(f"{w}\t{LEXICON[w]}\n" for w in words))
    path.write_text("\n".join(blocks), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tag")
    settings = tag.TagSettings(data=str(sentences(tmp / "train.tsv", 40, seed=0)),
                               test_data=str(sentences(tmp / "test.tsv", 8, seed=1)), min_count=1,
                               embedding_size=8, hidden_size=8, num_layers=1, batch_size=8, lr=0.03, max_epochs=6,
                               out=str(tmp / "run"), quiet=True, tensorboard=False)
    return tag.train(settings), tmp


def test_train_predict_evaluate_from_python(trained):
    run, tmp = trained
    assert tag.predict(run, [["a", "dog", "ran"], "the cat saw a mat", []]) == \
        [["DET", "NOUN", "VERB"], ["DET", "NOUN", "VERB", "DET", "NOUN"], []]
    scores = tag.evaluate(run, str(tmp / "test.tsv"))
    assert scores["sentences"] == 8 and scores["tokens"] == 40 and scores["token_accuracy"] >= 0.9
    results = json.loads((run.out / "results.json").read_text())
    assert results["scores"]["model"]["token_accuracy"] == pytest.approx(scores["token_accuracy"])
    assert results["tags"] == ["DET", "NOUN", "VERB"]
    assert "| word-window logistic regression |" in (run.out / "results.md").read_text()
    # validation: 10% (val_fraction) of the 40 training sentences, their words kept out of the vocabulary
    config = json.loads((run.out / "config.json").read_text())
    assert config["data"]["val_fraction"] == 0.1 and config["settings"]["val_fraction"] == 0.1
    evals = [json.loads(line) for line in (run.out / "metrics.jsonl").read_text().splitlines()]
    assert [0 <= r["val_accuracy"] <= 1 for r in evals if r["kind"] == "eval"] == [True] * 6  # one an epoch


@pytest.mark.parametrize("loader", [rnnkit.apps.load, tag.load], ids=["apps.load", "tag.load"])
def test_a_loaded_run_predicts_as_the_trained_one(trained, loader):
    run, _ = trained
    batch = [["the", "dog", "saw", "a", "cat"], ["unseen", "words"], ["mat"]]
    loaded = loader(run.out)
    assert loaded.app == "tag" and tag.predict(loaded, batch) == tag.predict(run, batch)


def test_predict_command_prints_the_tags_of_a_sentence_a_line(trained, capsys):
    run, tmp = trained
    text = tmp / "sentences.txt"
    text.write_text("the cat sat\n\na dog\n", encoding="utf-8")
    code, out, err = cli_outcome(["predict", "--checkpoint", run.out, "--input", text], capsys)
    assert code == 0, err
    assert out.split("\n")[:3] == ["DET NOUN VERB", "", "DET NOUN"]


def test_inference_input_errors(trained):
    run, _ = trained
    with pytest.raises(InputError, match="sentences must be a list of sentences"):
        tag.predict(run, "the cat sat")


def test_val_fraction_with_val_data_is_an_error(tmp_path):
    with pytest.raises(InputError, match="val_fraction.*val_data.*choose one"):
        tag.TagSettings(val_data=str(tmp_path / "dev.tsv"), val_fraction=0.2)
    with pytest.raises(InputError, match="num_layers"):
        tag.TagSettings(num_layers=0)


def suffix_sentences(path: Path, n: int, seed: int, stems: List[str]) -> Path:
    """"the" then three words, each a NOUN ending in -tion or a VERB ending in -ed at random: only the suffix
    tells the tag, never the position or the neighbours."""
    rng = random.Random(seed)
    blocks = []
    for _ in range(n):
        words = [("the", "DET")] + [(rng.choice(stems) + suffix, t) for suffix, t in
                                    (rng.choice([("tion", "NOUN"), ("ed", "VERB")]) for _ in range(3))]
        blocks.append("".join(f"{w}\t{t}\n" for w, t in words))
    path.write_text("\n".join(blocks), encoding="utf-8")
    return path


@pytest.mark.parametrize("chars", ["cnn", "bilstm"])
def test_character_features_tag_unseen_words_by_their_spelling(tmp_path, chars):
    """Test words never seen in training are all <unk> to the word vocabulary: with character features the
    tagger tags them by suffix (oov_accuracy in results.json), and a loaded run predicts the same."""
    train_stems = ["ac", "bo", "cu", "de", "fi", "ga", "ho", "ju"]
    settings = tag.TagSettings(data=str(suffix_sentences(tmp_path / "train.tsv", 60, 0, train_stems)),
                               test_data=str(suffix_sentences(tmp_path / "test.tsv", 10, 1, ["zyx", "qua", "wem"])),
                               min_count=1, embedding_size=8, hidden_size=8, num_layers=1, char_features=chars,
                               char_embedding_size=8, char_hidden_size=8, batch_size=8, lr=0.03, max_epochs=8,
                               out=str(tmp_path / "run"), quiet=True, tensorboard=False)
    run = tag.train(settings)
    model = json.loads((run.out / "results.json").read_text())["scores"]["model"]
    assert model["oov_accuracy"] >= 0.9 and model["oov_accuracy"] <= model["token_accuracy"] + 0.25
    scores = tag.evaluate(run, str(tmp_path / "test.tsv"))
    assert scores["oov_tokens"] == 30 and scores["oov_accuracy"] == pytest.approx(model["oov_accuracy"])
    unseen = [["the", "plimtion", "sorbed", "krued"]]
    assert tag.predict(run, unseen) == [["DET", "NOUN", "VERB", "VERB"]]
    assert tag.predict(tag.load(run.out), unseen) == tag.predict(run, unseen)


def test_frequency_scaled_word_dropout_reads_the_training_counts(tmp_path):
    """--word-dropout-alpha: prepare hands the model each word's training count, so a word seen n times is read as
    <unk> with probability α/(α+n) (the lexicon's words: "the" often, "mat" less)."""
    from collections import Counter

    from rnnkit.apps.tag import TagSettings, prepare

    path = sentences(tmp_path / "train.tsv", 30, seed=0)
    settings = TagSettings(data=str(path), val_data=str(path), min_count=1, embedding_size=4, hidden_size=4,
                           num_layers=1, batch_size=8, word_dropout_alpha=0.5)
    p = prepare(settings, None, 0, 1)
    counts = Counter(line.split("\t")[0] for line in path.read_text().splitlines() if line)
    words = p.info["tokenizer"]["words"]
    expected = [0.0, 0.0] + [0.5 / (0.5 + counts[w]) for w in words[2:]]
    assert p.model.word_drop_prob.tolist() == pytest.approx(expected)
