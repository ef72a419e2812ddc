"""Data matrix, text applications (char-LM, word-LM, classify, tag): generated files in every documented format
through the whole path (train -> generate / scores -> export). Each row either works, with sane output, or stops
with one `rnnkit: error:` line naming the file and the cause; never a traceback, never a silent misread.

seq2seq's rows are in test_data_matrix_seq2seq.py. The models are tiny (hidden 8, two steps): the rows check how
the data is read and carried through, not what the models learn.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import List, Sequence

import pytest

from helpers import cli_outcome

TINY = ["--hidden-size", "8", "--max-steps", "2", "--quiet", "--no-tensorboard", "--threads", "1"]
LM = TINY + ["--embedding-size", "4", "--bptt", "8"]
APP = TINY + ["--embedding-size", "4", "--batch-size", "8", "--min-count", "1"]
WORDS = "the a good bad film movie plot actor great dull fun mess story ending scene music".split()


def works(args: Sequence, capsys) -> tuple:
    """Run `rnnkit ARGS`; it must succeed. (stdout, stderr)"""
    code, out, err = cli_outcome(args, capsys)
    assert code == 0, err
    return out, err


def fails(args: Sequence, capsys, *needles: str) -> str:
    """Run `rnnkit ARGS`; it must stop with exactly one `rnnkit: error:` line (notes aside) holding `needles`."""
    code, out, err = cli_outcome(args, capsys)
    lines = [l for l in err.splitlines() if l.strip() and not l.startswith("rnnkit: note:")]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("rnnkit: error: "), err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def notes(err: str) -> List[str]:
    return [l for l in err.splitlines() if l.startswith("rnnkit: note:")]


def sentence(rng: random.Random, n: int = 6) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def write_tsv(path: Path, rows: Sequence[Sequence[str]], header: Sequence[str] = ()) -> Path:
    path.write_text("".join("\t".join(r) + "\n" for r in ([header] if header else []) + list(rows)),
                    encoding="utf-8")
    return path


def config(run: Path) -> dict:
    return json.loads((run / "config.json").read_text())


# ------------------------------------------------------------------ char-LM
def generate(run: Path, capsys, *args: str) -> str:
    out, _ = works(["generate", "--checkpoint", run, "--length", "30", "--seed", "0", *args], capsys)
    return out


def export(run: Path, capsys) -> dict:
    """Export RUN to ONNX (checked against PyTorch in onnxruntime); the sidecar's JSON."""
    out, _ = works(["export", "--checkpoint", run], capsys)
    assert (run / "model.onnx").stat().st_size > 0 and "max |diff|" in out
    sidecar = next(run.glob("model.*.json"))
    return json.loads(sidecar.read_text(encoding="utf-8"))


def test_charlm_file_smaller_than_one_batch(tmp_path, capsys):
    data = tmp_path / "tiny.txt"
    data.write_text("hello world, a tiny corpus.\n")  # 28 characters: 25 to train on, 3 to validate
    run = tmp_path / "run"
    fails(["train", "charlm", "--data", data, "--out", run, *LM], capsys,
          f"the training part of '{data}': 25 tokens are too few for 32 streams", "use --batch-size 24 or less")
    fails(["train", "charlm", "--data", data, "--out", run, *LM, "--batch-size", "4"], capsys,
          f"the validation part (last 10%) of '{data}': 3 tokens", "use --val-batch-size 2 or less")
    assert not run.exists()
    works(["train", "charlm", "--data", data, "--out", run, *LM, "--batch-size", "4", "--val-batch-size", "2"],
          capsys)
    text = generate(run, capsys, "--prime", "he")
    assert text.startswith("he") and set(text) <= set(data.read_text())


def test_charlm_one_line_file(tmp_path, capsys):
    data = tmp_path / "one.txt"
    data.write_text("a single line of text without a line break at its end, for a model")
    run = tmp_path / "run"
    works(["train", "charlm", "--data", data, "--out", run, *LM, "--batch-size", "4", "--val-batch-size", "2"],
          capsys)
    fails(["generate", "--checkpoint", run], capsys, "had no line break", "--prime")
    text = generate(run, capsys, "--prime", "a s")
    assert text.startswith("a s") and set(text.rstrip("\n")) <= set(data.read_text())


def test_charlm_korean_and_emoji(tmp_path, capsys):
    data = tmp_path / "ko.txt"
    data.write_text(("안녕하세요 😀 반갑습니다 🎉\n"
                     "한국어 텍스트와 이모지 👍🏽 섞어서 씁니다.\n") * 8, encoding="utf-8")
    run = tmp_path / "run"
    works(["train", "charlm", "--data", data, "--out", run, *LM, "--batch-size", "4", "--val-batch-size", "2"],
          capsys)
    text = generate(run, capsys, "--prime", "안녕")
    assert text.startswith("안녕") and set(text) <= set(data.read_text(encoding="utf-8"))
    fails(["generate", "--checkpoint", run, "--prime", "hello"], capsys, "--prime contains the character 'h'")
    vocab = export(run, capsys)["vocab"]
    assert "😀" in vocab["tokens"] and "한" in vocab["tokens"]


def test_charlm_directory_of_files(tmp_path, capsys):
    folder = tmp_path / "corpus"
    (folder / "more").mkdir(parents=True)
    rng = random.Random(0)
    (folder / "a.txt").write_text("\n".join(sentence(rng) for _ in range(20)) + "\n")
    (folder / "more" / "b.md").write_text("# notes\n" + "\n".join(sentence(rng) for _ in range(20)) + "\n")
    (folder / "ignored.csv").write_text("Z,Q\n")  # not a text suffix: not read
    run = tmp_path / "run"
    works(["train", "charlm", "--data", folder, "--out", run, *LM, "--batch-size", "4", "--val-batch-size", "2"],
          capsys)
    record = json.loads(sorted((run / "checkpoints").glob("step-*.json"))[-1].read_text())
    vocab = record["run"]["vocab"]["tokens"]
    assert "#" in vocab and "Z" not in vocab  # b.md was read, ignored.csv was not
    assert generate(run, capsys, "--prime", "the").startswith("the")


def test_charlm_not_utf8(tmp_path, capsys):
    data = tmp_path / "latin1.txt"
    data.write_bytes("first line\ncaf\xe9 au lait\n".encode("latin-1"))
    fails(["train", "charlm", "--data", data, "--out", tmp_path / "run", *LM], capsys,
          f"{data}:2: not UTF-8 text (byte 3 of the line")


# ------------------------------------------------------------------ word-LM
def ptb_folder(path: Path, with_unk: bool = True) -> Path:
    rng = random.Random(1)
    path.mkdir()
    for split, n in (("train", 60), ("valid", 12), ("test", 12)):
        lines = [sentence(rng, 8) for _ in range(n)]
        if with_unk:
            lines[0] += " <unk>"
        if split != "train":
            lines[1] += " zebra"  # a word train.txt never had
        (path / f"{split}.txt").write_text("".join(f" {l} \n" for l in lines))  # PTB's own spacing
    return path


def test_wordlm_ptb_layout(tmp_path, capsys):
    data, run = ptb_folder(tmp_path / "ptb"), tmp_path / "run"
    works(["train", "wordlm", "--data", data, "--out", run, *TINY, "--bptt", "5", "--batch-size", "4",
           "--val-batch-size", "2"], capsys)
    test = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if '"test"' in l]
    assert test and test[-1]["test_ppl"] > 1
    words = generate(run, capsys, "--prime", "the good").split()
    assert words[:2] == ["the", "good"] and set(words) <= set(WORDS) | {"<unk>"}
    fails(["generate", "--checkpoint", run, "--prime", "zebra"], capsys, "not in the model's vocabulary", "zebra")
    assert "film" in export(run, capsys)["vocab"]["tokens"]


@pytest.mark.parametrize("problem,needles", [
    ("no test.txt", ["test.txt' does not exist"]),
    ("unseen word, no <unk>", ["valid.txt line 2: the word 'zebra' is not in the vocabulary"]),
    ("valid.txt too short", ["valid.txt: 2 tokens are too few for 10 streams", "--val-batch-size 1 or less"]),
])
def test_wordlm_bad_folder(tmp_path, capsys, problem, needles):
    data = ptb_folder(tmp_path / "ptb", with_unk=problem != "unseen word, no <unk>")
    if problem == "no test.txt":
        (data / "test.txt").unlink()
    elif problem == "valid.txt too short":
        (data / "valid.txt").write_text("the\n")
    fails(["train", "wordlm", "--data", data, "--out", tmp_path / "run", *TINY, "--bptt", "5", "--batch-size", "4"],
          capsys, *needles)
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------ classify
def reviews(n: int, labels: Sequence[str], seed: int = 0) -> List[List[str]]:
    rng = random.Random(seed)
    return [[labels[i % len(labels)], f"{sentence(rng)} {labels[i % len(labels)]}word"] for i in range(n)]


def train_classify(data: Path, run: Path, capsys, *extra) -> str:
    """Train on DATA (--tokenizer word); stderr (the notes)."""
    _, err = works(["train", "classify", "--data", data, "--out", run, *APP, "--tokenizer", "word", *extra], capsys)
    return err


def test_classify_two_labels_train_score_export(tmp_path, capsys):
    train = write_tsv(tmp_path / "train.tsv", reviews(40, ["neg", "pos"]))
    test = write_tsv(tmp_path / "test.tsv", reviews(6, ["pos", "neg"], seed=1))
    run = tmp_path / "run"
    assert notes(train_classify(train, run, capsys, "--test-data", test)) == []
    cfg = config(run)
    assert cfg["labels"] == ["neg", "pos"] and cfg["model"]["objective"] == "sigmoid"
    scores = json.loads((run / "results.json").read_text())["scores"]["model"]
    assert 0 <= scores["accuracy"] <= 1
    assert export(run, capsys)["labels"] == ["neg", "pos"]


def test_classify_many_labels(tmp_path, capsys):
    labels = [f"topic{k}" for k in range(7)]
    train = write_tsv(tmp_path / "train.tsv", reviews(70, labels))
    test = write_tsv(tmp_path / "test.tsv", reviews(7, labels, seed=1))  # each label once: fine in a test file
    run = tmp_path / "run"
    train_classify(train, run, capsys, "--test-data", test)
    cfg = config(run)
    assert cfg["labels"] == labels and cfg["model"]["objective"] == "softmax"
    assert len(json.loads((run / "results.json").read_text())["confusion"]) == 7


def test_classify_swapped_columns_are_read_as_text_label(tmp_path, capsys):
    """text<TAB>label used to train a 40-class softmax, one class per text."""
    rows = reviews(40, ["neg", "pos"])
    train = write_tsv(tmp_path / "train.tsv", [[t, l] for l, t in rows])
    test = write_tsv(tmp_path / "test.tsv", [["a fine film", "pos"], ["a dull one", "neg"]])
    run = tmp_path / "run"
    err = train_classify(train, run, capsys, "--test-data", test)
    assert notes(err) == [f"rnnkit: note: {train}: the first column looks like text and the last like labels "
                          f"(2 distinct): read as text<TAB>label"]
    cfg = config(run)
    assert cfg["labels"] == ["neg", "pos"] and cfg["model"]["objective"] == "sigmoid"


def test_classify_header_row_is_skipped(tmp_path, capsys):
    """A label<TAB>text header used to become a third class with one example (and softmax instead of sigmoid)."""
    train = write_tsv(tmp_path / "train.tsv", reviews(40, ["neg", "pos"]), header=["label", "text"])
    run = tmp_path / "run"
    err = train_classify(train, run, capsys)
    assert notes(err) == [f"rnnkit: note: {train}: line 1 is a header, skipped: label = column 1 ('label'), "
                          f"text = column 2 ('text')"]
    cfg = config(run)
    assert cfg["labels"] == ["neg", "pos"] and cfg["model"]["objective"] == "sigmoid"


def test_classify_byte_order_mark_is_not_part_of_the_first_label(tmp_path, capsys):
    """A UTF-8 byte-order mark (Excel, Notepad) used to make the first example's label a class of its own."""
    data = tmp_path / "excel.tsv"
    data.write_bytes(b"\xef\xbb\xbf" + write_tsv(data, reviews(40, ["neg", "pos"])).read_bytes())
    run = tmp_path / "run"
    train_classify(data, run, capsys)
    assert config(run)["labels"] == ["neg", "pos"]


@pytest.mark.parametrize("problem,needles", [
    ("not UTF-8", ["latin1.tsv:3: not UTF-8 text"]),
    ("missing", ["missing.tsv' does not exist"]),
    ("no label column", ["the first column does not look like labels (40 distinct values in 40 examples"]),
    ("one label", ["only one label ('pos')"]),
    ("one label left to train on", ["after holding out 1 of 2 examples for validation, the training part has only "
                                    "the label 'neg'"]),
])
def test_classify_bad_file(tmp_path, capsys, problem, needles):
    data = tmp_path / {"not UTF-8": "latin1.tsv", "missing": "missing.tsv"}.get(problem, "train.tsv")
    if problem == "not UTF-8":
        data.write_bytes("pos\tgood\nneg\tbad\npos\tcaf\xe9\n".encode("latin-1"))
    elif problem == "no label column":  # ids first, text last: nothing to take as labels
        write_tsv(data, [[str(i), t] for i, (_, t) in enumerate(reviews(40, ["neg", "pos"]))])
    elif problem == "one label":
        write_tsv(data, reviews(10, ["pos"]))
    elif problem == "one label left to train on":  # used to end in a scikit-learn traceback after training
        write_tsv(data, reviews(2, ["pos", "neg"]))
    fails(["train", "classify", "--data", data, "--out", tmp_path / "run", *APP, "--tokenizer", "word"], capsys,
          *needles)
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------ tag
CONLLU = """# sent_id = s{k}
# text = Don't stop the music.
1-2	Don't	_	_	_	_	_	_	_	_
1	Do	do	AUX	VBP	_	3	aux	_	_
2	n't	not	PART	RB	_	3	advmod	_	_
3	stop	stop	VERB	VB	_	0	root	_	_
4	the	the	DET	DT	_	5	det	_	_
4.1	is	be	AUX	VBZ	_	_	_	3:cop	_
5	music	music	NOUN	NN	_	3	obj	_	SpaceAfter=No
6	.	.	PUNCT	.	_	3	punct	_	_

"""


def test_tag_conllu_with_multiword_tokens_and_empty_nodes(tmp_path, capsys):
    """CoNLL-U used to be read with its MISC column as the tag (and comment lines as tokens)."""
    data = tmp_path / "ud.conllu"
    data.write_text("".join(CONLLU.format(k=k) for k in range(12)))
    run = tmp_path / "run"
    works(["train", "tag", "--data", data, "--out", run, *APP], capsys)
    assert config(run)["tags"] == ["AUX", "DET", "NOUN", "PART", "PUNCT", "VERB"]
    results = (run / "results.md").read_text()
    assert "12 sentences, 72 tokens" in results  # 6 words a sentence: ranges and empty nodes are not tokens
    assert export(run, capsys)["tags"] == ["AUX", "DET", "NOUN", "PART", "PUNCT", "VERB"]


@pytest.mark.parametrize("tags", [["N", "V"], ["B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "O"]])
def test_tag_tsv(tmp_path, capsys, tags):
    rng = random.Random(2)
    sentences = ["".join(f"{rng.choice(WORDS)}\t{rng.choice(tags)}\n" for _ in range(5)) for _ in range(16)]
    data = tmp_path / "train.tsv"
    data.write_text("\n".join(sentences))
    run = tmp_path / "run"
    works(["train", "tag", "--data", data, "--out", run, *APP], capsys)
    assert config(run)["tags"] == sorted(tags)
    assert ("entity_f1" in (run / "results.md").read_text()) == (len(tags) > 2)


@pytest.mark.parametrize("problem,needles", [
    ("no blank lines", ["no blank line separates sentences, so all 10 tokens would be one sentence (at least 2 "
                        "sentences needed); expected one token<TAB>tag a line, a blank line after each sentence"]),
    ("not UTF-8", ["train.tsv:4: not UTF-8 text"]),
    ("one tag left to train on", ["after holding out 1 of 2 sentences for validation, the training part has only "
                                  "the label 'X'"]),
    ("CoNLL-U row cut short", ["line 4: expected 10 tab-separated CoNLL-U columns; got 4"]),
])
def test_tag_bad_file(tmp_path, capsys, problem, needles):
    data = tmp_path / ("ud.conllu" if problem.startswith("CoNLL-U") else "train.tsv")
    if problem == "no blank lines":
        data.write_text("".join(f"w{i}\tX\n" for i in range(10)))
    elif problem == "not UTF-8":
        data.write_bytes("a\tX\nb\tY\n\ncaf\xe9\tX\n".encode("latin-1"))
    elif problem == "one tag left to train on":  # used to end in a scikit-learn traceback after training
        data.write_text("a\tX\nb\tY\n\nc\tX\n")
    else:
        data.write_text("# sent_id = 1\n# text = Do go\n1\tDo\tdo\tAUX\tVB\t_\t2\taux\t_\t_\n2\tgo\tgo\tVERB\n")
    fails(["train", "tag", "--data", data, "--out", tmp_path / "run", *APP], capsys, str(data.name), *needles)
    assert not (tmp_path / "run").exists()
