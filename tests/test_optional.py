"""A light core: `import rnnkit`, the layers, the trainer and checkpoints work without any extra installed,
and every command that needs an extra says which one in one line.

The subprocess tests hide the optional packages the way an environment without them looks: every
finder on sys.meta_path answers "not found" for them (importlib.util.find_spec returns None, `import`
raises ModuleNotFoundError). A finder that raised ImportError instead would break torch itself, whose
import probes optional modules with find_spec.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import rnnkit
from rnnkit._optional import DISTRIBUTIONS, EXTRAS, pyplot, require, require_extra
from rnnkit.errors import MissingExtraError

ROOT = Path(__file__).resolve().parents[1]
SRC = Path(rnnkit.__file__).resolve().parents[1]
HIDDEN = sorted({m for modules in EXTRAS.values() for m in modules})

HIDE_EXTRAS = f"""
import sys
sys.path.insert(0, {str(SRC)!r})
HIDDEN = {HIDDEN!r}

class Hide:
    def __init__(self, finder):
        self.finder = finder

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in HIDDEN:
            return None
        return self.finder.find_spec(name, path, target)

    def __getattr__(self, attr):
        return getattr(self.finder, attr)

sys.meta_path[:] = [Hide(f) for f in sys.meta_path]
"""


def run_without_extras(code: str, cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-c", HIDE_EXTRAS + code], cwd=cwd, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


CORE_RUN = """
import torch
import rnnkit
from rnnkit.data.streams import StreamLoader
from rnnkit.models import LanguageModelTask, LMConfig, RecurrentLM
from rnnkit.training import TrainConfig, Trainer
from rnnkit.training.checkpoint import latest_checkpoint, load_checkpoint

torch.manual_seed(0)
lstm = rnnkit.LSTM(3, 5, num_layers=2)
opt = torch.optim.SGD(lstm.parameters(), lr=0.1)
x = torch.randn(6, 2, 3)
for _ in range(3):
    opt.zero_grad()
    y, (h, c) = lstm(x)
    y.pow(2).mean().backward()
    opt.step()

tokens = torch.arange(400) % 5
model = RecurrentLM(LMConfig(vocab_size=5, cell="lstm", hidden_size=8, embedding_size=4))
trainer = Trainer(model, LanguageModelTask(), StreamLoader([tokens], 2, 10),
                  TrainConfig(max_steps=3, checkpoint_every=3, quiet=True), out_dir="run")
trainer.fit()
_, meta, tensors = load_checkpoint(latest_checkpoint("run"))
fresh = RecurrentLM(LMConfig(vocab_size=5, cell="lstm", hidden_size=8, embedding_size=4))
fresh.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values()))
print("hidden still imported:", sorted(m for m in sys.modules if m.partition(".")[0] in HIDDEN))
print("trained", trainer.step)
"""


def test_core_alone_imports_trains_and_checkpoints(tmp_path):
    """rnnkit.LSTM trains, the Trainer runs and its checkpoint loads with every extra hidden; the
    trainer's default TensorBoard logging turns itself off naming the extra."""
    out = run_without_extras(CORE_RUN, tmp_path).stdout
    assert "hidden still imported: []" in out and "trained 3" in out, out
    assert "pip install 'rnnkit[tensorboard]'" in out, out


#: every command that needs an extra, with just enough arguments to get past click's parsing
COMMANDS = [
    ("nlp", ["train", "seq2seq"]), ("nlp", ["translate", "--checkpoint", "x"]),
    ("nlp", ["evaluate", "--checkpoint", "x"]), ("nlp", ["chat", "--checkpoint", "x"]),
    ("nlp", ["train", "classify"]), ("nlp", ["train", "tag"]),
    ("forecast", ["train", "forecast"]), ("forecast", ["forecast", "--checkpoint", "x"]),
    ("vision", ["train", "video"]), ("vision", ["predict-video", "--checkpoint", "x"]),
    ("vision", ["train", "caption"]), ("vision", ["caption", "--checkpoint", "x", "a.png"]),
    ("deploy", ["export", "--checkpoint", "x"]),
    ("plots", ["plot", "run"]), ("plots", ["gradflow"]),
]

CLI_RUN = f"""
import contextlib, io, json
from rnnkit.cli import main
results = []
for argv in {[argv for _, argv in COMMANDS]!r}:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            main(argv)
            code = 0
        except SystemExit as exit_:
            code = exit_.code
    results.append([code, err.getvalue()])
print(json.dumps(results))
"""


def test_each_command_without_its_extra_names_it_in_one_line(tmp_path):
    results = json.loads(run_without_extras(CLI_RUN, tmp_path).stdout.strip().splitlines()[-1])
    for (extra, argv), (code, err) in zip(COMMANDS, results):
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1, (argv, code, err)
        assert lines[0].startswith("rnnkit: error: ") and f"pip install 'rnnkit[{extra}]'" in lines[0], (argv, err)
    assert not list(tmp_path.iterdir())  # failed before writing anything


def _names(requirements):
    return {re.match(r"[A-Za-z0-9_.-]+", r).group(0).lower() for r in requirements}


def test_pyproject_extras_match_the_table():
    """pyproject.toml's extras bring what rnnkit._optional.EXTRAS says (and the messages name);
    the core brings none of it; [all] names every extra and [test] installs [all]."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    for extra, modules in EXTRAS.items():
        assert _names(extras[extra]) == {DISTRIBUTIONS.get(m, m).lower() for m in modules}, extra
    core = _names(project["dependencies"])
    assert core == {"torch", "numpy", "safetensors", "tqdm", "click"}
    assert set(EXTRAS) <= set(re.search(r"\[(.*)\]", extras["all"][0]).group(1).split(","))
    assert "rnnkit[all]" in extras["test"]


def test_require_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sacrebleu", None)  # what `import` sees when a package is absent
    with pytest.raises(ImportError) as info:  # a MissingExtraError is an ImportError too
        require("sacrebleu", extra="nlp", purpose="BLEU")
    assert isinstance(info.value, MissingExtraError)
    assert str(info.value) == "BLEU needs sacrebleu: pip install 'rnnkit[nlp]'"
    with pytest.raises(MissingExtraError, match=r"^rnnkit caption needs sacrebleu: pip install 'rnnkit\[vision\]'"):
        require_extra("vision", "rnnkit caption", ("sacrebleu",))
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MissingExtraError, match=r"rnnkit\[plots\]"):
        pyplot(extra="plots", purpose="a figure")


def test_require_refuses_an_extra_that_does_not_bring_the_package():
    with pytest.raises(RuntimeError, match="bug"):
        require("pandas", extra="nlp", purpose="x")
