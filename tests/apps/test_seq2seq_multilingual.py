"""Multilingual seq2seq (Johnson et al. 2017): one model trained on two corpora that share the source language,
each source led by a token naming its target language (`--also`, `--lang`, `--also-lang`, `--oversample`)."""

from __future__ import annotations

import io
import re
import sys

import pytest
import torch

from rnnkit.apps import seq2seq
from rnnkit.apps.runner import Run
from rnnkit.apps.seq2seq_decode import language_suppress, source_prefix
from rnnkit.cli import main
from rnnkit.errors import InputError

from .test_seq2seq import ENG, FRA, write_pairs

pytest.importorskip("sentencepiece")
pytest.importorskip("sacrebleu")

#: two made-up target languages: word i of the source becomes word i of the target
LATIN = FRA
HANGUL = "나 너 우리 봐 좋아 원해 그 한 빨강 큰 고양이 개 집 차 책 나무".split()
IS_HANGUL = re.compile(r"^[\uac00-\ud7a3 ]+$")
IS_LATIN = re.compile(r"^[a-z ]+$")


def settings(folder, **changes) -> seq2seq.Seq2SeqSettings:
    base = dict(data=write_pairs(folder / "ko.tsv", 60, HANGUL, seed=1, longest=4),
                also=write_pairs(folder / "fr.tsv", 200, LATIN, seed=2, longest=4),
                lang="ko", also_lang="fr", oversample=3, attention="dot", out=str(folder / "run"), hidden_size=24,
                embedding_size=16, vocab_size=80, spm_type="unigram", spm_shared=False, batch_size=16, dropout=0.0,
                label_smoothing=0.0, lr=0.01, val_fraction=0.1, test_fraction=0.1, beam=1, quiet=True,
                tensorboard=False, threads=1, seed=0)
    return seq2seq.Seq2SeqSettings(**{**base, **changes})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("multilingual")
    return seq2seq.train(settings(folder, max_steps=400)), folder


def test_every_training_source_begins_with_its_language_token(tmp_path):
    s = settings(tmp_path, max_steps=1)
    _, tgt, encoded, token_ids, pieces, test_pairs, _ = seq2seq.encode_corpora(s, None, [])
    assert set(token_ids) == {"ko", "fr"} and token_ids["ko"] != token_ids["fr"]
    firsts = [ids[0] for ids in encoded["train"].source]
    # 60 Korean pairs (48 for training) three times over, 200 French ones (160 for training) once
    assert firsts.count(token_ids["ko"]) == 3 * 48 and firsts.count(token_ids["fr"]) == 160
    assert all(token_ids["ko"] not in ids[1:] and token_ids["fr"] not in ids[1:] for ids in encoded["train"].source)
    assert test_pairs == 6 + 20
    # each language's target pieces: Hangul ones for ko, Latin ones for fr, none in both but "▁" (a space piece)
    script = lambda ids: {tgt.id_to_piece(i).strip("▁")[:1] for i in ids} - {""}  # noqa: E731
    assert all(IS_HANGUL.match(c) for c in script(pieces["ko"]))
    assert all(IS_LATIN.match(c) for c in script(pieces["fr"]))


def test_the_language_token_reaches_the_encoder(trained):
    run, _ = trained
    seen = []
    hook = run.model.source_embedding.register_forward_hook(lambda m, args, out: seen.append(args[0][:, 0].tolist()))
    try:
        for lang in (None, "ko", "fr"):
            seq2seq.translate(run, ["I see the cat", "a red car"], beam=1, lang=lang)
    finally:
        hook.remove()
    tokens = run.info["languages"]
    assert seen == [[tokens["ko"]] * 2, [tokens["ko"]] * 2, [tokens["fr"]] * 2]  # the default is the first, --lang


def test_one_model_translates_into_each_language_by_its_token(trained):
    run, _ = trained
    sources = ["I see the cat", "we want a car", "you like the book", "dog see a tree"]  # 2 to 4 words, as trained
    korean = seq2seq.translate(run, sources, beam=1, lang="ko")
    french = seq2seq.translate(run, sources, beam=1, lang="fr")
    assert all(IS_HANGUL.match(t) for t in korean), korean
    assert all(IS_LATIN.match(t) for t in french), french
    # and they translate, not babble: most words of the word-for-word translation are there (400 tiny steps)
    recall = lambda outs, words: sum(  # noqa: E731
        len(set(o.split()) & {words[ENG.index(w)] for w in s.split()}) / len(s.split())
        for o, s in zip(outs, sources)) / len(sources)
    assert recall(korean, HANGUL) >= 0.4 and recall(french, LATIN) >= 0.5, (korean, french)


def test_scores_per_language_and_the_saved_run_translates_the_same(trained):
    run, folder = trained
    assert {"bleu_ko", "chrf_ko", "bleu_fr", "chrf_fr"} <= set(run.results)
    assert run.results["bleu"] == run.results["bleu_ko"] and run.results["sentences_fr"] == 20
    loaded = seq2seq.load(str(folder / "run"))
    assert loaded.info["languages"] == run.info["languages"]
    sources = ["I see the big cat", "we want a red car"]
    for lang in ("ko", "fr"):
        assert seq2seq.translate(loaded, sources, beam=2, lang=lang) == seq2seq.translate(run, sources, beam=2,
                                                                                          lang=lang)
    scores = seq2seq.evaluate(loaded, beam=1, lang="fr")
    assert scores["sentences"] == 20 and scores["lang"] == "fr"
    assert seq2seq.evaluate(loaded, beam=1)["lang"] == "ko"


def test_translate_command_picks_the_language(trained, capsys, monkeypatch):
    _, folder = trained
    for flags, script in (([], IS_HANGUL), (["--lang", "fr"], IS_LATIN)):
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"I see the cat\n"), encoding="utf-8"))
        main(["translate", "--checkpoint", str(folder / "run"), "--beam", "1", *flags])
        out = capsys.readouterr().out
        assert script.match(out.strip()), (flags, out)


def test_the_language_mask_keeps_each_output_in_its_language(trained):
    run, _ = trained
    suppress = language_suppress(run, "fr")
    assert suppress.dtype == torch.bool and suppress.shape == (run.model.config.target_vocab_size,)
    allowed = set(run.info["language_pieces"]["fr"]) | set(run.model.config.special_ids.values())
    assert set(torch.nonzero(~suppress).flatten().tolist()) == allowed
    # an unfinished model mixes scripts when sampled hot; the mask rules that out, --no-language-mask does not
    sources = ["I see the cat", "we want a car", "you like the book", "dog see a tree"] * 4
    hot = dict(sample=True, temperature=3.0, seed=0, lang="ko")
    masked = seq2seq.translate(run, sources, **hot)
    assert all(IS_HANGUL.match(t) for t in masked if t), masked
    unmasked = seq2seq.translate(run, sources, language_mask=False, **hot)
    assert not all(IS_HANGUL.match(t) for t in unmasked if t), unmasked
    assert language_suppress(Run("seq2seq", run.model, {"languages": run.info["languages"]}), "ko") is None  # older run


def test_language_errors(trained, tmp_path):
    run, _ = trained
    with pytest.raises(InputError, match="one of this run's languages"):
        seq2seq.translate(run, ["I see"], lang="de")
    with pytest.raises(InputError, match="into one language only"):  # a run trained without --also
        source_prefix(Run("seq2seq", run.model, {}), "fr")
    with pytest.raises(InputError, match="acts only with also"):
        seq2seq.Seq2SeqSettings(lang="ko")
    with pytest.raises(InputError, match="needs also_lang"):
        seq2seq.Seq2SeqSettings(also=str(tmp_path), lang="ko")
    with pytest.raises(InputError, match="must differ"):
        seq2seq.Seq2SeqSettings(also=str(tmp_path), lang="ko", also_lang="ko")
