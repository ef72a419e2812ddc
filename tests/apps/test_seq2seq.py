"""rnnkit.apps.seq2seq from Python, as a notebook user writes it: train on tiny made-up pairs, translate and
evaluate with the returned Run, and the same from the run directory (`seq2seq.load`, `rnnkit.load`)."""

from __future__ import annotations

import json
import random

import pytest

import rnnkit.apps
from rnnkit.apps import seq2seq
from rnnkit.data.text import DataError
from rnnkit.errors import InputError, InputTypeError
from rnnkit.models.seq2seq import Seq2SeqConfig

pytest.importorskip("sentencepiece")
pytest.importorskip("sacrebleu")

ENG = "I you we see like want the a red big cat dog house car book tree".split()
FRA = "je tu nous vois aime veux le la rouge grand chat chien maison voiture livre arbre".split()


def write_pairs(path, n: int = 60, target_words=FRA, seed: int = 0, longest: int = 5) -> str:
    """N pairs of 2 to `longest` words, word i of the source always becoming word i of `target_words`."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        idx = [rng.randrange(len(ENG)) for _ in range(rng.randint(2, longest))]
        lines.append(" ".join(ENG[i] for i in idx) + "\t" + " ".join(target_words[i] for i in idx) + "\n")
    path.write_text("".join(lines), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("seq2seq")
    settings = seq2seq.Seq2SeqSettings(data=write_pairs(folder / "pairs.tsv"), out=str(folder / "run"),
                                       hidden_size=8, embedding_size=8, vocab_size=60, batch_size=8, max_steps=4,
                                       val_fraction=0.1, test_fraction=0.1, beam=2, quiet=True, tensorboard=False,
                                       threads=1)
    return seq2seq.train(settings), folder / "run"


def test_train_writes_the_report_and_returns_the_run(trained):
    run, out = trained
    for name in ("results.md", "results.json", "best.safetensors", "spm.model", "config.json"):
        assert (out / name).is_file(), name
    results = json.loads((out / "results.json").read_text())
    assert results["sentences"] == 6 and results["beam"] == 2 and 0 <= results["bleu"] <= 100
    assert {k: run.results[k] for k in ("bleu", "chrf", "test_loss")} == \
        {k: results[k] for k in ("bleu", "chrf", "test_loss")}
    assert "| bleu |" in (out / "results.md").read_text()
    assert json.loads((out / "config.json").read_text())["data"]["train"] == 48
    # hidden_size is per direction (torch.nn's meaning): the bidirectional encoder's output, the decoder, is 2x
    assert run.model.memory_size == 16 and run.model.config.decoder_size == 16


def test_translate_on_the_run_and_on_its_directory(trained):
    run, out = trained
    texts = ["I see the cat", "", "we like a red car"]
    got = seq2seq.translate(run, texts)
    assert len(got) == 3 and got[1] == "" and all(isinstance(t, str) for t in got)
    for loaded in (seq2seq.load(str(out)), rnnkit.apps.load(out)):
        assert loaded.app == "seq2seq"
        assert seq2seq.translate(loaded, texts) == got  # the best weights, the same SentencePiece model
    beam = seq2seq.translate(run, texts, beam=3)
    assert len(beam) == 3
    options = seq2seq.DecodeOptions(beam=3, n_best=2)
    assert all(len(h) == 2 for h in seq2seq.decode(run, ["I see the cat"], options))


def test_evaluate_on_the_run_and_on_its_directory(trained):
    run, out = trained
    scores = seq2seq.evaluate(run, beam=1)
    assert scores["sentences"] == 6 and scores["method"] == "greedy" and 0 <= scores["chrf"] <= 100
    loaded = seq2seq.evaluate(seq2seq.load(str(out)), split="valid", limit=4, hypotheses=True)
    assert loaded["split"] == "valid" and loaded["sentences"] == 4 and len(loaded["hypotheses"]) == 4


def test_bad_inputs_to_inference(trained):
    run, _ = trained
    with pytest.raises(InputTypeError, match="list of strings"):
        seq2seq.translate(run, "I see the cat")
    with pytest.raises(DataError, match="texts:2: the source has"):
        seq2seq.translate(run, ["I see", "cat " * 60])
    with pytest.raises(InputError, match="n_best 3 asks for more hypotheses than the beam keeps"):
        seq2seq.translate(run, ["I see"], beam=2, n_best=3)
    with pytest.raises(InputError, match="beam must be an int >= 1; got 0"):
        seq2seq.DecodeOptions(beam=0)


@pytest.mark.parametrize("changes,needle", [
    (dict(beam=0), "beam must be an int >= 1"),
    (dict(val_fraction=0.7), "val_fraction must be a number in [0, 0.5]"),
    (dict(vocab_size=4), "vocab_size must be an int >= 8"),
    (dict(ss_k=0.9), "ss_k has no effect with scheduled_sampling none"),
    (dict(scheduled_sampling="exponential", ss_k=2.0), "exponential schedule needs 0 < k < 1"),
    (dict(attention="none", bridge="none"), "no view of the source"),
])
def test_settings_errors_name_the_setting(changes, needle):
    with pytest.raises(InputError) as err:
        seq2seq.Seq2SeqSettings(**changes)
    assert needle in str(err.value)


def test_one_default_for_the_model_shape():
    """The settings take the model's defaults from Seq2SeqConfig (the CLI once said 48 where the config said 64)."""
    s = seq2seq.Seq2SeqSettings()
    config = Seq2SeqConfig(source_vocab_size=8, target_vocab_size=8)
    for name in ("max_source_len", "max_target_len", "hidden_size", "embedding_size", "attention", "dropout"):
        assert getattr(s, name) == getattr(config, name), name
    assert s.model_config(8, 8) == config
