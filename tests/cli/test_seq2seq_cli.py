"""`rnnkit train seq2seq`, `translate`, `evaluate`, `chat` on a tiny corpus; bad input gives one line, nothing written."""

from __future__ import annotations

import io
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from rnnkit.cli import main
from rnnkit.apps import seq2seq
from rnnkit.apps.seq2seq_decode import tokenizers_to_json
from rnnkit.data.pairs import PairBatches, encode_pairs, read_pairs
from rnnkit.data.spm import train_sentencepiece
from rnnkit.models.seq2seq import Seq2Seq, Seq2SeqConfig, Seq2SeqTask
from rnnkit.training import TrainConfig, Trainer

ROOT = Path(__file__).resolve().parents[2]
FRA_TRAIN = ROOT / "data" / "tatoeba-eng-fra" / "train.tsv"
SMALL = ["--hidden-size", "16", "--embedding-size", "8", "--vocab-size", "120", "--batch-size", "16",
         "--max-steps", "6", "--quiet", "--no-tensorboard", "--threads", "1", "--val-batch-size", "32",
         "--beam", "2", "--max-source-len", "40", "--max-target-len", "40"]


def run_cli(args, capsys, stdin: bytes = None, monkeypatch=None):
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    return exc.value.code, captured.out, captured.err


def ok_cli(args, capsys, stdin: bytes = None, monkeypatch=None) -> str:
    main_args = [str(a) for a in args]
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
    main(main_args)
    return capsys.readouterr().out


def assert_one_line_error(code, err, *needles):
    assert code not in (0, None)
    assert "Traceback" not in err
    lines = [l for l in err.strip().splitlines() if l.strip()]
    assert len(lines) <= 3, err
    for n in needles:
        assert n.lower() in err.lower(), err


def tiny_corpus(path: Path, n: int = 240) -> Path:
    lines = FRA_TRAIN.read_text(encoding="utf-8").splitlines()[:n]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("s2s")
    data = tiny_corpus(tmp / "pairs.tsv")
    out = tmp / "run"
    main_args = ["train", "seq2seq", "--data", str(data), "--out", str(out), *SMALL]
    main(main_args)
    return out


def test_train_writes_run(run):
    assert (run / "config.json").is_file() and (run / "spm.model").is_file()
    records = sorted((run / "checkpoints").glob("step-*.json"))
    assert records
    meta = json.loads(records[-1].read_text())
    assert meta["run"]["recipe"] == "seq2seq" and meta["run"]["tokenizers"]["source"]["model_b64"]
    scores = json.loads((run / "results.json").read_text())
    assert {"bleu", "chrf", "sentences"} <= set(scores) and scores["sentences"] == 12
    lines = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["kind"] == "test"
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["data"]["train"] + cfg["data"]["dropped_long"] + cfg["data"]["dropped_empty"] == 216


def test_translate_is_repeatable_and_plots(run, capsys, monkeypatch, tmp_path):
    text = "I am here.\n\nWhere is Tom?\n".encode()
    a = ok_cli(["translate", "--checkpoint", run, "--beam", "3", "--plot-attention", tmp_path / "att.png"],
               capsys, text, monkeypatch)
    b = ok_cli(["translate", "--checkpoint", run, "--beam", "3"], capsys, text, monkeypatch)
    assert a == b
    assert len(a.split("\n")) == 4 and a.split("\n")[1] == ""  # empty input line stays empty
    assert (tmp_path / "att.png").read_bytes()[:4] == b"\x89PNG"
    nbest = ok_cli(["translate", "--checkpoint", run, "--beam", "3", "--n-best", "2"], capsys, b"Hello.\n",
                   monkeypatch)
    assert len(nbest.rstrip("\n").split("\t")) == 4  # text, score, text, score
    out_file = tmp_path / "out.txt"
    ok_cli(["translate", "--checkpoint", run, "--beam", "1", "--output", out_file], capsys, text, monkeypatch)
    assert len(out_file.read_text().splitlines()) == 3


def test_evaluate_and_chat(run, capsys, monkeypatch):
    out = ok_cli(["evaluate", "--checkpoint", run, "--beam", "2"], capsys)
    result = json.loads(out.strip().splitlines()[-1])
    assert result["split"] == "test" and result["sentences"] == 12 and 0 <= result["bleu"] <= 100
    replies = ok_cli(["chat", "--checkpoint", run, "--beam", "1"], capsys, "Hello.\nHow are you?\n".encode(),
                     monkeypatch)
    assert len(replies.splitlines()) == 2


def test_checkpoint_reload_gives_identical_translations(tmp_path):
    pairs, _, _ = read_pairs(tiny_corpus(tmp_path / "p.tsv", 120))
    tok = train_sentencepiece([p.source for p in pairs] + [p.target for p in pairs], 120)
    cfg = Seq2SeqConfig(tok.vocab_size, tok.vocab_size, hidden_size=16, embedding_size=8, attention="general",
                        max_source_len=40, max_target_len=40)
    torch.manual_seed(0)
    model = Seq2Seq(cfg)
    data = PairBatches(encode_pairs(pairs, tok, tok, max_source_len=40, max_target_len=40), 16, pad_id=0,
                       bos_id=2, eos_id=3)
    run_info = {"recipe": "seq2seq", "model": cfg.to_dict(), "tokenizers": tokenizers_to_json(tok, tok, True)}
    Trainer(model, Seq2SeqTask(), data, TrainConfig(max_steps=3, quiet=True, tensorboard=False),
            out_dir=tmp_path / "run", run_info=run_info).fit()
    loaded_run = seq2seq.load(str(tmp_path / "run"))
    loaded, src_tok = loaded_run.model, seq2seq.tokenizers(loaded_run)[0]
    batch = next(data.batches(0))
    for kw in (dict(method="greedy"), dict(method="beam", beam_size=3, alpha=0.6, n_best=2)):
        a = model.eval().generate(batch["source"], batch["source_lengths"], max_len=12, **kw)
        b = loaded.generate(batch["source"], batch["source_lengths"], max_len=12, **kw)
        assert [[h.tokens for h in x] for x in a] == [[h.tokens for h in x] for x in b]
        assert [[h.score for h in x] for x in a] == [[h.score for h in x] for x in b]
    assert src_tok.sha256 == tok.sha256


# ------------------------------------------------------------------ bad input
def test_source_too_long_names_line_and_writes_nothing(run, capsys, monkeypatch, tmp_path):
    out = tmp_path / "out.txt"
    code, stdout, err = run_cli(["translate", "--checkpoint", run, "--output", out], capsys,
                                ("Hi.\n" + "word " * 60 + "\n").encode(), monkeypatch)
    assert_one_line_error(code, err, "<stdin>:2", "at most 40")
    assert not out.exists() and stdout == ""


def test_skip_long_translates_the_other_lines(run, capsys, monkeypatch):
    long = "word " * 60
    text = ("Hi.\n" + long + "\nWhere is Tom?\n").encode()
    expected = ok_cli(["translate", "--checkpoint", run, "--beam", "2"], capsys, b"Hi.\nWhere is Tom?\n",
                      monkeypatch).splitlines()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text), encoding="utf-8"))
    main(["translate", "--checkpoint", str(run), "--beam", "2", "--skip-long"])
    stdout, err = capsys.readouterr()
    assert stdout.splitlines() == [expected[0], "", expected[1]]  # the long line's output is empty
    assert "1 of 3 lines of <stdin>" in err and "line 2" in err and "40 tokens" in err
    loaded = seq2seq.load(run)
    assert seq2seq.translate(loaded, ["Hi.", long], beam=2, skip_long=True) == [expected[0], ""]
    with pytest.raises(Exception, match="texts:2: the source has"):
        seq2seq.translate(loaded, ["Hi.", long], beam=2)


def test_non_utf8_input(run, capsys, monkeypatch):
    code, stdout, err = run_cli(["translate", "--checkpoint", run], capsys, b"Hi.\nbad \xff byte\n", monkeypatch)
    assert_one_line_error(code, err, "<stdin>:2", "not UTF-8")
    assert stdout == ""


def test_missing_sentencepiece_model(run, capsys, monkeypatch, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    for record in (copy / "checkpoints").glob("step-*.json"):
        meta = json.loads(record.read_text())
        del meta["run"]["tokenizers"]["source"]["model_b64"]
        record.write_text(json.dumps(meta))
    # the run directory still has spm.model (checked against the recorded SHA-256): that copy is used
    assert ok_cli(["translate", "--checkpoint", copy, "--beam", "1"], capsys, b"Hi.\n", monkeypatch).strip() != ""
    (copy / "spm.model").unlink()
    code, _, err = run_cli(["translate", "--checkpoint", copy], capsys, b"Hi.\n", monkeypatch)
    assert_one_line_error(code, err, "SentencePiece model 'spm.model' is missing")


@pytest.mark.parametrize("content,needle", [
    ("Hi.\tSalut.\nGo.\t\n", "pairs.tsv:2: one-sided pair"),
    ("Hi.\tSalut.\njust one column\n", "pairs.tsv:2: expected at least 2 tab-separated columns"),
    (b"Hi.\tSalut.\n\xc3\x28\tx\n", "pairs.tsv:2: not UTF-8"),
])
def test_bad_training_data(tmp_path, capsys, content, needle):
    data = tmp_path / "pairs.tsv"
    data.write_bytes(content if isinstance(content, bytes) else content.encode())
    out = tmp_path / "run"
    code, _, err = run_cli(["train", "seq2seq", "--data", data, "--out", out, *SMALL], capsys)
    assert_one_line_error(code, err, needle)
    assert not out.exists()  # nothing half-written


def test_not_a_seq2seq_checkpoint(tmp_path, capsys):
    code, _, err = run_cli(["translate", "--checkpoint", tmp_path / "nowhere"], capsys)
    assert_one_line_error(code, err, "does not exist")


def test_resume_continues_exactly(tmp_path, capsys):
    """3 steps + resume to 6 == 6 steps straight (scheduled sampling on: its coin flips are restored too)."""
    data = tiny_corpus(tmp_path / "pairs.tsv", 160)
    common = ["--data", data, *SMALL, "--beam", "1", "--eval-max-sentences", "2", "--scheduled-sampling",
              "linear", "--ss-c", "0.1"]
    straight, split = tmp_path / "a", tmp_path / "b"
    main(["train", "seq2seq", "--out", str(straight), *map(str, common), "--max-steps", "6"])
    main(["train", "seq2seq", "--out", str(split), *map(str, common), "--max-steps", "3"])
    main(["train", "seq2seq", "--out", str(split), *map(str, common), "--max-steps", "6", "--resume"])
    capsys.readouterr()
    from safetensors.torch import load_file
    a = load_file(str(sorted((straight / "checkpoints").glob("*.safetensors"))[-1]))
    b = load_file(str(sorted((split / "checkpoints").glob("*.safetensors"))[-1]))
    for k in a:
        if k.startswith("model."):
            assert torch.equal(a[k], b[k]), k
    la = [json.loads(l)["loss"] for l in (straight / "metrics.jsonl").read_text().splitlines()
          if '"train"' in l]
    lb = [json.loads(l)["loss"] for l in (split / "metrics.jsonl").read_text().splitlines() if '"train"' in l]
    assert la == lb
