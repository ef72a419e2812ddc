"""Data matrix, seq2seq: sentence pairs in every documented format (TSV with extra columns, CSV with a header,
two aligned files, Korean and emoji) through `train seq2seq` -> `translate` / `evaluate` / `chat` -> `export`.
Each row works with sane output, or stops with one `rnnkit: error:` line naming the file and the cause.
"""

from __future__ import annotations

import contextlib
import io
import json
import random
import sys
from pathlib import Path
from typing import List, Tuple

import pytest

from rnnkit.cli import main
from test_data_matrix_text import config, fails, notes, works

TINY = ["--hidden-size", "8", "--embedding-size", "4", "--max-steps", "2", "--quiet", "--no-tensorboard",
        "--threads", "1", "--batch-size", "8", "--beam", "1", "--vocab-size", "200"]
ENG = "I you we they see like want the a red big small cat dog house car book tree".split()
FRA = "je tu nous ils vois aime veux le la rouge grand petit chat chien maison voiture livre arbre".split()
KOR = ("나는 너는 우리는 그들은 본다 좋아한다 원한다 빨간 "
       "큰 작은 고양이 개 집 차 책 나무").split()
EMOJI = ["😀", "🎉", "👍🏽", "🐱", "🏠"]


def pairs(n: int, source: List[str], target: List[str], seed: int = 0) -> List[Tuple[str, str]]:
    """N sentence pairs, word i of the source always becoming word i of the target."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        idx = [rng.randrange(len(source)) for _ in range(rng.randint(2, 5))]
        out.append((" ".join(source[i] for i in idx), " ".join(target[i] for i in idx)))
    return out


def stdin(monkeypatch, text: str) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.encode("utf-8")), encoding="utf-8"))


def train(data: Path, run: Path, capsys, *extra) -> str:
    """Train on DATA; stderr (the notes on how it was read)."""
    _, err = works(["train", "seq2seq", "--data", data, "--out", run, *TINY, *extra], capsys)
    assert (run / "spm.model").is_file()
    return err


@pytest.fixture(scope="module")
def tatoeba_run(tmp_path_factory) -> Tuple[Path, Path, List[str]]:
    """A run on Tatoeba/Anki-style eng<TAB>fra<TAB>attribution lines; its notes."""
    tmp = tmp_path_factory.mktemp("tatoeba")
    data = tmp / "fra.txt"
    data.write_text("".join(f"{e}\t{f}\tCC-BY 2.0 (France) Attribution: tatoeba.org #{i}\n"
                            for i, (e, f) in enumerate(pairs(40, ENG, FRA))), encoding="utf-8")
    err = io.StringIO()  # a module fixture has no capsys: catch the notes itself
    with contextlib.redirect_stderr(err):
        main(["train", "seq2seq", "--data", str(data), "--out", str(tmp / "run"), *TINY])
    return data, tmp / "run", notes(err.getvalue())


def test_tsv_with_extra_columns_train_translate_evaluate(tatoeba_run, tmp_path, capsys, monkeypatch):
    data, run, seen = tatoeba_run
    assert seen == [f"rnnkit: note: {data}: source = column 1, target = column 2; unused: column 3"]
    assert config(run)["data"] == {"train": 36, "valid": 2, "test": 2, "dropped_long": 0, "dropped_empty": 0,
                                   "blank_lines": 0}
    scores = json.loads((run / "results.json").read_text())
    assert scores["sentences"] == 2 and 0 <= scores["bleu"] <= 100
    stdin(monkeypatch, "I see the cat\n\nwe like a red car\n")
    out, _ = works(["translate", "--checkpoint", run, "--beam", "2"], capsys)
    lines = out.split("\n")
    assert len(lines) == 4 and lines[1] == "" and lines[3] == ""  # one line out per line in; empty stays empty
    out, _ = works(["evaluate", "--checkpoint", run, "--beam", "1", "--split", "valid"], capsys)
    assert json.loads(out)["sentences"] == 2


def test_translate_output_into_missing_folder(tatoeba_run, tmp_path, capsys):
    """--output into a folder that does not exist used to fail naming an internal temporary file."""
    _, run, _ = tatoeba_run
    source = tmp_path / "in.txt"
    source.write_text("I see the cat\nthey want a book\n")
    output = tmp_path / "new" / "folder" / "out.txt"
    works(["translate", "--checkpoint", run, "--input", source, "--output", output], capsys)
    assert len(output.read_text().splitlines()) == 2
    hyps = tmp_path / "other" / "hyps.txt"
    works(["evaluate", "--checkpoint", run, "--output", hyps], capsys)
    assert len(hyps.read_text().splitlines()) == 2
    fails(["translate", "--checkpoint", run, "--input", source, "--output", tmp_path], capsys,
          f"output path '{tmp_path}' is a folder; expected a file name")


def test_translate_bad_input_and_export(tatoeba_run, tmp_path, capsys, monkeypatch):
    _, run, _ = tatoeba_run
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("I see\nun caf\xe9\n".encode("latin-1"))
    fails(["translate", "--checkpoint", run, "--input", latin], capsys, f"{latin}:2: not UTF-8 text")
    stdin(monkeypatch, "I see the cat\n")
    out, _ = works(["chat", "--checkpoint", run, "--beam", "1"], capsys)
    assert len(out.splitlines()) == 1
    fails(["export", "--checkpoint", run], capsys, "cannot export a 'seq2seq' run")


def test_csv_with_header(tmp_path, capsys):
    data = tmp_path / "pairs.csv"
    data.write_text("english,french\n" + "".join(f'"{e}","{f}"\n' for e, f in pairs(40, ENG, FRA)))
    run = tmp_path / "run"
    err = train(data, run, capsys)
    assert notes(err) == [f"rnnkit: note: {data}: header row 'english,french' skipped; source = column 1 "
                          f"('english'), target = column 2 ('french')"]
    assert config(run)["data"]["train"] + config(run)["data"]["valid"] + config(run)["data"]["test"] == 40


def test_csv_header_x_y_z_with_two_rows_is_too_small(tmp_path, capsys):
    """Two pairs used to train with empty validation and test splits and print no scores."""
    data = tmp_path / "xyz.csv"
    data.write_text("x,y,z\nhello,bonjour,a\ncat,chat,b\n")
    fails(["train", "seq2seq", "--data", data, "--out", tmp_path / "run", *TINY], capsys,
          f"{data}: 2 sentence pairs are too few to hold out 5% for validation and 5% for testing: "
          "at least 11 are needed")
    assert not (tmp_path / "run").exists()


def test_two_aligned_files(tmp_path, capsys, monkeypatch):
    both = pairs(30, ENG, FRA, seed=3)
    source, target = tmp_path / "train.en", tmp_path / "train.fr"
    source.write_text("".join(e + "\n" for e, _ in both))
    target.write_text("".join(f + "\n" for _, f in both))
    run = tmp_path / "run"
    assert notes(train(source, run, capsys, "--target-data", target)) == []
    stdin(monkeypatch, "the dog\n")
    out, _ = works(["translate", "--checkpoint", run, "--beam", "1"], capsys)
    assert len(out.splitlines()) == 1
    target.write_text("".join(f + "\n" for _, f in both[:-1]))
    fails(["train", "seq2seq", "--data", source, "--target-data", target, "--out", tmp_path / "run2", *TINY],
          capsys, "aligned files differ in length", "has 30 lines", "has 29")


def test_korean_and_emoji(tmp_path, capsys, monkeypatch):
    emoji = pairs(40, KOR, [f"{w}{EMOJI[i % 5]}" for i, w in enumerate(ENG[:len(KOR)])], seed=4)
    data = tmp_path / "ko.tsv"
    data.write_text("".join(f"{k}\t{e}\n" for k, e in emoji), encoding="utf-8")
    run = tmp_path / "run"
    train(data, run, capsys)
    stdin(monkeypatch, "나는 고양이 좋아한다 🐱\n")
    out, _ = works(["translate", "--checkpoint", run, "--beam", "2"], capsys)
    assert len(out.splitlines()) == 1
    out, _ = works(["evaluate", "--checkpoint", run, "--beam", "1"], capsys)
    assert json.loads(out)["sentences"] == 2
