"""Configs that travel: inputs named in a --config file resolve against the file, packaged recipes are found
by name, and a packaged recipe whose data an installed rnnkit lacks says where to get it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import rnnkit.recipes
from helpers import cli_outcome
from rnnkit.recipes import RECIPES, TINYSHAKESPEARE

TINY = ["--hidden-size", "8", "--embedding-size", "4", "--batch-size", "2", "--bptt", "8", "--quiet",
        "--no-tensorboard", "--max-steps", "2", "--val-batch-size", "2", "--threads", "1"]


def run_cli(args, capsys):
    """(exit status, stderr); 0 when the command returns."""
    code, _, err = cli_outcome(args, capsys)
    return code, err


def settings(run: Path) -> dict:
    return json.loads((run / "config.json").read_text())["settings"]


def test_config_inputs_resolve_against_the_config_file(tmp_path, monkeypatch, capsys):
    """Run from another directory, the config finds the corpus beside it; its `out` stays in the working
    directory; a --data on the command line is relative to the working directory (recorded absolute)."""
    conf = tmp_path / "project" / "configs"
    conf.mkdir(parents=True)
    (conf / "corpus.txt").write_text("to be or not to be, that is the question\n" * 30)
    (conf / "run.toml").write_text('data = "corpus.txt"\nout = "runs/here"\nlr = 0.004\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert run_cli(["train", "charlm", "--config", conf / "run.toml", *TINY], capsys)[0] == 0
    s = settings(elsewhere / "runs" / "here")
    assert s["data"] == str(conf / "corpus.txt") and s["lr"] == 0.004

    (elsewhere / "local.txt").write_text("a local corpus, named on the command line\n" * 30)
    code, err = run_cli(["train", "charlm", "--config", conf / "run.toml", "--data", "local.txt",
                         "--out", "runs/cli", *TINY], capsys)
    assert code == 0, err
    assert settings(elsewhere / "runs" / "cli")["data"] == str(elsewhere / "local.txt")


def test_config_by_recipe_name_reads_the_embedded_corpus(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, err = run_cli(["train", "charlm", "--config", "charlm-demo", "--out", "run", "--val-fraction", "0.001",
                         *TINY], capsys)
    assert code == 0, err
    s = settings(tmp_path / "run")
    assert s["data"] == str(TINYSHAKESPEARE) and s["schedule"] == "cosine"  # the recipe's settings


def test_unknown_config_lists_the_recipes(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, err = run_cli(["train", "charlm", "--config", "charlm-dmeo", *TINY], capsys)
    assert code == 2 and "charlm-dmeo" in err and "charlm-demo" in err and "Traceback" not in err


def test_packaged_recipe_without_its_data_says_where_to_get_it(tmp_path, monkeypatch, capsys):
    """An installed wheel: the recipe is there, the repository's data/ folder is not."""
    installed = tmp_path / "lib" / "rnnkit" / "recipes"
    installed.mkdir(parents=True)
    shutil.copy(RECIPES / "classify-nsmc.toml", installed)
    monkeypatch.setattr(rnnkit.recipes, "RECIPES", installed)
    monkeypatch.setattr(rnnkit.recipes, "CHECKOUT", tmp_path)
    monkeypatch.chdir(tmp_path)
    code, err = run_cli(["train", "classify", "--config", "classify-nsmc", "--out", "run"], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("rnnkit: error: "), err
    assert "'classify-nsmc' reads data/nsmc/train.tsv" in err and "--data PATH" in err
    # the train file given on the command line: the recipe's test file is the one still missing
    (tmp_path / "train.tsv").write_text("1\tgood\n0\tbad\n")
    code, err = run_cli(["train", "classify", "--config", "classify-nsmc", "--data", "train.tsv", "--out", "run"],
                        capsys)
    assert code == 2 and "data/nsmc/test.tsv" in err and "--test-data PATH" in err, err
    assert not (tmp_path / "run").exists()
