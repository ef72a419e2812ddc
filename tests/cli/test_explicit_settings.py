"""Explicit settings win (issue 14, failure 3): a default never silently overrides what the user named, on
the command line or in a TOML file. Each pair of settings where a default could do so is a row here:

- budgets: naming any of --max-steps / --max-epochs / --max-minutes drops the defaults of the others and of
  --early-stop-patience, in every train recipe (the default --max-epochs 10 ended `--max-steps 200`);
- a resumed run keeps which of its settings were defaults (they stay droppable);
- settings that only act with another (--momentum with sgd/rmsprop, --lr-gamma with step/plateau/epoch_decay,
  --quantiles with the quantile head, ...): named while the other (often its default) switches them off is
  an error, not a silent no-op;
- --bptt-k2 below the default --bptt says that k1 is a default;
- `resume = true` in the TOML file is honoured (the command line's default False used to win);
- the cosine schedule is sized by the limits the run has (max_epochs too), not by a default's;
- a default --threads never overrides the OMP_NUM_THREADS the user exported;
- seq2seq --val-fraction / --test-fraction with a directory that has its own valid.tsv / test.tsv;
- config.json records where every setting came from: "user", "config" or "default".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional

import click
import pytest
import torch

from rnnkit import apps
from rnnkit.apps.rundir import apply_threads
from rnnkit.apps.settings import BUDGETS, Settings, option_names
from rnnkit.cli.options import resolve
from rnnkit.cli.train import train_command
from rnnkit.errors import InputError
from rnnkit.training.config import TrainConfig
from rnnkit.training.trainer import Trainer

RECIPES = [name for name in apps.APPS if name != "adding"]
BUDGET_VALUES = {"max_steps": "7", "max_epochs": "3", "max_minutes": "0.5"}
charlm, wordlm, train_seq2seq, train_forecast = "charlm", "wordlm", "seq2seq", "forecast"
train_video = "video"


def settings_of(app: str, args: List[str], toml: Optional[Dict[str, Any]] = None,
                base: Optional[Dict[str, Any]] = None, base_sources: Optional[Dict[str, str]] = None) -> Settings:
    try:
        settings = apps.module(app).RECIPE.settings
    except (ModuleNotFoundError, AttributeError):
        pytest.skip(f"{app} is not an rnnkit.apps module yet")
    command = train_command(app)
    with option_names():
        ctx = command.make_context(app, list(args))
        return resolve(ctx, settings, ctx.params, toml or {}, base, base_sources=base_sources)




@pytest.mark.parametrize("where", ["command line", "config file"])
@pytest.mark.parametrize("budget", BUDGETS)
@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_a_named_budget_drops_the_other_defaults(recipe, budget, where):
    cmd = recipe
    if where == "command line":
        s = settings_of(cmd, [f"--{budget.replace('_', '-')}", BUDGET_VALUES[budget]])
    else:
        s = settings_of(cmd, [], toml={budget: float(BUDGET_VALUES[budget])})
    assert getattr(s, budget) == pytest.approx(float(BUDGET_VALUES[budget]))
    assert s.sources[budget] == ("user" if where == "command line" else "config")
    for other in BUDGETS + ("early_stop_patience",):
        if other != budget:
            assert getattr(s, other) is None, (other, getattr(s, other))


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_without_a_named_budget_the_defaults_stay(recipe):
    s = settings_of(recipe, [])
    assert any(getattr(s, b) is not None for b in BUDGETS)  # every recipe has a default budget


def test_naming_only_a_patience_keeps_the_default_budget():
    s = settings_of(train_forecast, ["--early-stop-patience", "3"])
    assert s.max_epochs == 40 and s.early_stop_patience == 3


def test_two_named_budgets_both_hold():
    s = settings_of(charlm, ["--max-steps", "50", "--max-minutes", "2"])
    assert (s.max_steps, s.max_minutes, s.max_epochs) == (50, 2.0, None)


def test_resume_keeps_which_settings_were_defaults():
    saved = {"max_epochs": 10, "max_steps": None, "lr": 0.01}
    sources = {"max_epochs": "default", "max_steps": "default", "lr": "user"}
    s = settings_of(charlm, ["--max-steps", "400"], base=saved, base_sources=sources)
    assert s.max_steps == 400 and s.max_epochs is None  # extending a run is not cut by an old default
    assert s.lr == 0.01 and s.sources["lr"] == "user"
    explicit = settings_of(charlm, ["--max-steps", "400"], base=saved, base_sources={"max_epochs": "user"})
    assert explicit.max_epochs == 10  # the user's own earlier choice stays


@pytest.mark.parametrize("command,args,needles", [
    (charlm, ["--momentum", "0.9"], ["--momentum", "--optimizer adam (the default)", "sgd or rmsprop"]),
    (charlm, ["--lr-gamma", "0.3"], ["--lr-gamma", "--schedule constant (the default)"]),
    (charlm, ["--lr-step-size", "50"], ["--lr-step-size", "step"]),
    (charlm, ["--lr-min", "1e-5"], ["--lr-min", "cosine"]),
    (charlm, ["--lr-decay-after-epochs", "2"], ["--lr-decay-after-epochs", "epoch_decay"]),
    (charlm, ["--plateau-patience", "3"], ["--plateau-patience", "plateau"]),
    (charlm, ["--schedule", "cosine", "--lr-step-size", "50"], ["--schedule cosine (as set)"]),
    (train_seq2seq, ["--ss-k", "0.99"], ["--ss-k", "--scheduled-sampling none (the default)"]),
    (train_seq2seq, ["--ss-c", "0.01", "--scheduled-sampling", "exponential"], ["--ss-c", "linear"]),
    (train_seq2seq, ["--ss-min", "0.2"], ["--ss-min"]),
    (train_forecast, ["--quantiles", "0.1,0.5,0.9"], ["--quantiles", "--head gaussian (the default)"]),
    (train_forecast, ["--head", "point", "--quantiles", "0.2,0.5,0.8"], ["--quantiles", "--head point (as set)"]),
    (train_forecast, ["--teacher-forcing", "0.5"], ["--teacher-forcing", "--mode direct (the default)"]),
    (train_forecast, ["--machines", "1,2"], ["--machines", "kaggle-ipasn"]),
])
def test_a_setting_switched_off_by_another_is_an_error(command, args, needles):
    with pytest.raises(InputError) as err:
        settings_of(command, args)
    message = str(err.value)
    for needle in needles:
        assert needle in message, message


@pytest.mark.parametrize("command,args", [
    (charlm, ["--momentum", "0.9", "--optimizer", "sgd"]),
    (charlm, ["--schedule", "step", "--lr-gamma", "0.3", "--lr-step-size", "50"]),
    (wordlm, ["--lr-gamma", "0.8"]),  # wordlm's default schedule is epoch_decay: it acts
    (train_forecast, ["--head", "quantile", "--quantiles", "0.1,0.5,0.9"]),
    (train_forecast, ["--mode", "seq2seq", "--teacher-forcing", "0.5"]),
    (train_video, ["--teacher-forcing", "0.5"]),  # video's teacher forcing does not depend on a --mode
])
def test_a_setting_that_acts_is_accepted(command, args):
    settings_of(command, args)


def test_every_packaged_recipe_resolves():
    from rnnkit.cli.options import load_toml
    from rnnkit.recipes import RECIPES as FOLDER
    paths = sorted(FOLDER.glob("*.toml"))
    assert len(paths) >= 15
    for path in paths:
        prefix = path.stem.split("-")[0]
        app = {"zaremba": "wordlm", "chatbot": "seq2seq"}.get(prefix, prefix)
        if not _ported(app):
            continue
        command = train_command(app)
        with option_names():
            ctx = command.make_context(app, [])
            s = resolve(ctx, apps.module(app).RECIPE.settings, ctx.params, load_toml(str(path), ctx))
        assert any(s.sources[k] == "config" for k in s.sources), path


def _ported(app: str) -> bool:
    try:
        return hasattr(apps.module(app), "RECIPE")
    except ModuleNotFoundError:
        return False


def tiny_corpus(tmp_path: Path) -> Path:
    path = tmp_path / "small.txt"
    path.write_text("to be or not to be, that is the question.\n" * 10)  # 430 bytes
    return path


TINY_LM = ["--hidden-size", "8", "--embedding-size", "4", "--batch-size", "4", "--bptt", "16", "--quiet",
           "--no-tensorboard", "--val-batch-size", "2", "--eval-every", "1000"]


def test_max_steps_is_not_cut_by_the_default_max_epochs(tmp_path, rnnkit):
    """Failure 3 of issue 14: a small file, `--max-steps` above 10 epochs' worth: the run took 10 epochs."""
    out = tmp_path / "run"
    cfg = tmp_path / "c.toml"
    cfg.write_text("lr = 0.005\n")
    code, _, err = rnnkit(["train", "charlm", "--data", tiny_corpus(tmp_path), "--out", out, *TINY_LM,
                           "--max-steps", "80", "--config", cfg])
    assert code == 0, err
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 80  # 10 epochs of this file are 60 steps
    config = json.loads((out / "config.json").read_text())
    assert config["settings"]["max_epochs"] is None
    assert config["sources"]["max_steps"] == "user" and config["sources"]["lr"] == "config"
    assert config["sources"]["max_epochs"] == "default" and config["sources"]["cell"] == "default"
    assert set(config["sources"]) == set(config["settings"])


def test_bptt_k2_below_the_default_bptt_says_it_is_a_default(tmp_path, rnnkit):
    code, _, err = rnnkit(["train", "charlm", "--data", tiny_corpus(tmp_path), "--out", tmp_path / "r",
                           "--bptt-k2", "64"])
    assert code == 2 and "--bptt 128, the default; set --bptt to at most k2" in err


def test_resume_in_the_config_file_is_honoured(tmp_path, rnnkit):
    out = tmp_path / "run"
    args = ["train", "charlm", "--data", tiny_corpus(tmp_path), "--out", out, *TINY_LM]
    assert rnnkit([*args, "--max-steps", "3"])[0] == 0
    cfg = tmp_path / "c.toml"
    cfg.write_text("resume = true\n")
    code, _, err = rnnkit([*args, "--max-steps", "5", "--config", cfg])
    assert code == 0, err  # was: "already holds checkpoints; pass --resume"
    assert json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 5


class Batches:
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def batches(self, epoch: int, start: int = 0):
        for _ in range(start, self.n):
            yield torch.ones(2, 1)


class SquareTask:
    def loss(self, model, batch, state):
        from rnnkit.training.trainer import LossResult
        return LossResult((model(batch) ** 2).sum(), batch.shape[0], batch.shape[0])


def test_cosine_is_sized_by_max_epochs():
    """With max_epochs the only limit (no default max_minutes left), the cosine spans epochs × batches."""
    cfg = TrainConfig(max_epochs=3, schedule="cosine", lr=0.1, lr_min=0.0, quiet=True, tensorboard=False)
    trainer = Trainer(torch.nn.Linear(1, 1), SquareTask(), Batches(4), cfg)
    assert trainer.total_steps == 12
    trainer.fit()
    assert trainer.step == 12 and trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("args,env,expected", [
    ([], "3", None),  # video's default --threads 1 must not override OMP_NUM_THREADS=3
    ([], None, 1),  # without it the default applies
    (["--threads", "2"], "3", 2),  # a named --threads wins over the environment
])
def test_default_threads_do_not_override_omp_num_threads(tmp_path, monkeypatch, args, env, expected):
    if env is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", env)
    calls: List[int] = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    apply_threads(settings_of(train_video, args))
    assert calls == ([] if expected is None else [expected])


def test_seq2seq_fractions_with_its_own_split_files(tmp_path, rnnkit):
    data = tmp_path / "pairs"
    data.mkdir()
    for name in ("train", "valid"):
        (data / f"{name}.tsv").write_text("a b\tc d\n" * 4)
    code, _, err = rnnkit(["train", "seq2seq", "--data", data, "--out", tmp_path / "r", "--val-fraction", "0.2"])
    assert code == 2 and "--val-fraction" in err and "its own valid.tsv" in err
    assert not (tmp_path / "r").exists()


def test_aggregate_without_freq_is_an_error(tmp_path, rnnkit):
    """--aggregate combines the values of one --freq bucket; without --freq it did nothing, silently."""
    series = tmp_path / "series.txt"
    series.write_text("\n".join(str(i % 7) for i in range(200)) + "\n")
    code, _, err = rnnkit(["train", "forecast", "--data", series, "--aggregate", "sum", "--out", tmp_path / "r",
                           "--max-steps", "1"])
    assert code == 2 and "--aggregate has no effect without --freq" in err, err
    assert not (tmp_path / "r" / "config.json").exists()


def test_a_config_value_left_idle_by_the_command_line_is_no_error():
    """`--config zaremba-small --schedule constant`: the recipe's lr_gamma goes with its schedule; the same
    pair from one source (command line, or a config file in itself) is still an error."""
    s = settings_of("charlm", ["--schedule", "constant"], toml={"schedule": "epoch_decay", "lr_gamma": 0.5})
    assert s.schedule == "constant"
    with option_names(), pytest.raises(InputError, match="--lr-gamma has no effect with --schedule constant"):
        settings_of("charlm", ["--schedule", "constant", "--lr-gamma", "0.5"])
    with option_names(), pytest.raises(InputError, match="--lr-gamma has no effect with --schedule constant"):
        settings_of("charlm", [], toml={"schedule": "constant", "lr_gamma": 0.5})
