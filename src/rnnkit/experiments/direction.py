"""Bidirectional RNNs: does reading a sentence both ways tag it better, and where does the gain come from?

Trains the tagger (`rnnkit.apps.tag`, default data: the repository's UD English EWT, UPOS tags)
twice for the same number of steps: unidirectional (widened to the bidirectional model's
parameter count, so that the second direction is not just more parameters) and bidirectional.
Scores both on the test file, overall, by part of speech and by kind of token: words seen with
one tag in training, ambiguous words in their usual tag and in another one, unseen words, and
"left context misleads": tokens whose usual tag after the same previous word (in training; the
word's usual tag where that pair is unseen) is not their tag, the ones a reader of one word back
gets wrong and the right context can fix.

    rnnkit experiment direction --help
"""

from __future__ import annotations

import dataclasses
import textwrap
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .._optional import pyplot
from ..apps import tag
from ..apps.runner import Run
from ..apps.settings import setting, setting_name, settings_class
from ..errors import InputError
from ..data.labelled import read_tagged
from ..models.tagger import SequenceTagger
from .app_runs import AppExperimentSettings, hidden_for_budget, parameter_count, train_quietly, verdict_line

CLAIM = ("A bidirectional RNN tags a sentence better than a unidirectional one, because the words after a "
         "token help decide it (seed 001: Bidirectional RNN).")

#: the token groups, in the table's order
GROUPS = ("all", "one tag in training", "ambiguous, usual tag", "ambiguous, other tag", "unseen word",
          "left context misleads")
#: the methods compared
METHODS = ("unidirectional", "bidirectional")
#: sentences as read: (tokens, tags, first line)
Sentences = Sequence[Tuple[List[str], List[str], Any]]
#: tag counts per word, and per (previous word, word), in the training sentences
TagCounts = Tuple[Dict[str, Counter], Dict[Tuple[str, str], Counter]]


@settings_class
class DirectionSettings(AppExperimentSettings):
    """Settings of `rnnkit experiment direction`."""

    DEFAULTS = dict(out="runs/direction", cell="gru", steps=600, eval_every=200, lr=5e-3)
    data: Optional[str] = setting(None, f"Training file, token<TAB>tag lines or CoNLL-U (default: "
                                        f"{tag.DEFAULT_DATA[0]}, with its dev and test files).", path=True)
    val_data: Optional[str] = setting(None, "Validation file (with --data).", path=True)
    test_data: Optional[str] = setting(None, "Test file scored by kind of token (with --data; default: the "
                                             "validation file).", path=True)
    hidden_size: int = setting(64, "Hidden units per direction of the bidirectional tagger.", min=1)
    embedding_size: int = setting(100, "Word embedding size.", min=1)
    equal_parameters: bool = setting(True, "Widen the unidirectional tagger to the bidirectional one's parameter "
                                           "count (else: the same hidden size per direction).")
    margin: float = setting(0.005, "Token accuracy by which bidirectional must beat unidirectional for the claim "
                                   "to hold.", min=0)


    def check(self) -> None:
        given = [setting_name(k) for k in ("val_data", "test_data") if getattr(self, k) is not None]
        if given and self.data is None:
            verb = "go" if len(given) > 1 else "goes"
            raise InputError(f"{' and '.join(given)} {verb} with {setting_name('data')} (without it the default data "
                             f"set's own files are used); give {setting_name('data')} too, or leave them out")


SETTINGS = DirectionSettings


def train_tagger(s: DirectionSettings, bidirectional: bool, hidden: int) -> Run:
    """One tagger trained for s.steps. The application's own final scoring is skipped (its logistic-regression
    baseline takes minutes): `run` scores both taggers itself."""
    recipe = dataclasses.replace(tag.RECIPE, finish=lambda run: {})
    files = dict(data=s.data, val_data=s.val_data, test_data=s.test_data) if s.data else {}
    return train_quietly(recipe, s, METHODS[bidirectional], **files, bidirectional=bidirectional,
                         hidden_size=hidden, embedding_size=s.embedding_size, num_layers=1)


def unidirectional_hidden(bi: Run, s: DirectionSettings) -> int:
    """The unidirectional hidden size whose tagger is closest in size to the bidirectional `bi`."""
    if not s.equal_parameters:
        return s.hidden_size
    config = bi.model.config

    def size_of(hidden: int) -> int:
        model = SequenceTagger(dataclasses.replace(config, hidden_size=hidden, bidirectional=False))
        return sum(p.numel() for p in model.parameters())

    return hidden_for_budget(parameter_count(bi), size_of)


def tag_counts(train: Sentences) -> TagCounts:
    """How often each word, and each word after a given previous word ("<s>" first), had each tag."""
    per_word: Dict[str, Counter] = defaultdict(Counter)
    per_pair: Dict[Tuple[str, str], Counter] = defaultdict(Counter)
    for words, tags, _ in train:
        for i, (w, t) in enumerate(zip(words, tags)):
            per_word[w][t] += 1
            per_pair[(words[i - 1] if i else "<s>", w)][t] += 1
    return dict(per_word), dict(per_pair)


def token_groups(counts: TagCounts, words: List[str], tags: List[str]) -> List[List[str]]:
    """The groups (of GROUPS, "all" left out) of each token of one sentence."""
    per_word, per_pair = counts
    out = []
    for i, (word, gold) in enumerate(zip(words, tags)):
        seen = per_word.get(word)
        if seen is None:
            groups = ["unseen word"]
        elif len(seen) == 1:
            groups = ["one tag in training"]
        else:
            groups = ["ambiguous, usual tag" if seen.most_common(1)[0][0] == gold else "ambiguous, other tag"]
        left = per_pair.get((words[i - 1] if i else "<s>", word)) or seen
        if left is not None and left.most_common(1)[0][0] != gold:
            groups.append("left context misleads")
        out.append(groups)
    return out


def breakdown(train: Sentences, test: Sentences, predictions: Dict[str, List[List[str]]]
              ) -> Dict[str, Dict[str, Dict[str, int]]]:
    """{"groups": {group: {"tokens": n, method: correct}}, "tags": {UPOS: the same}} over the test tokens."""
    counts = tag_counts(train)
    tables: Dict[str, Dict[str, Dict[str, int]]] = {"groups": {g: {} for g in GROUPS}, "tags": {}}
    for k, (words, tags, _) in enumerate(test):
        for i, groups in enumerate(token_groups(counts, words, tags)):
            cells = [tables["groups"][g] for g in ["all", *groups]] + [tables["tags"].setdefault(tags[i], {})]
            for cell in cells:
                cell["tokens"] = cell.get("tokens", 0) + 1
                for method, pred in predictions.items():
                    cell[method] = cell.get(method, 0) + int(pred[k][i] == tags[i])
    return tables


def markdown_table(rows: Dict[str, Dict[str, int]], total_gain: int, first: str) -> str:
    """One row per group: tokens, each method's accuracy, the gain and its share of the total gain."""
    lines = [f"| {first} | tokens | unidirectional | bidirectional | gain (points) | share of the gain |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, r in rows.items():
        if not r.get("tokens"):
            continue
        uni, bi = r["unidirectional"] / r["tokens"], r["bidirectional"] / r["tokens"]
        share = (r["bidirectional"] - r["unidirectional"]) / total_gain if total_gain else float("nan")
        lines.append(f"| {name} | {r['tokens']:,} | {uni:.4f} | {bi:.4f} | {100 * (bi - uni):+.2f} | {share:+.0%} |")
    return "\n".join(lines)


def plot(tables: Dict[str, Dict[str, Dict[str, int]]], path: Path, title: str) -> None:
    """Accuracy by group (both methods), and each part of speech's share of the gain."""
    plt = pyplot(extra="plots", purpose="the direction plot")
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.4))
    groups = [g for g in GROUPS if tables["groups"][g].get("tokens")]
    for j, method in enumerate(METHODS):
        acc = [tables["groups"][g][method] / tables["groups"][g]["tokens"] for g in groups]
        left.bar([i + 0.4 * j - 0.2 for i in range(len(groups))], acc, width=0.4, label=method)
    left.set_xticks(range(len(groups)), [textwrap.fill(g, 12) for g in groups], fontsize=8)
    left.set_ylabel("test token accuracy")
    left.set_ylim(0, 1.12)  # room for the legend above the bars
    left.legend(loc="upper center", ncol=2)
    gains = {t: r["bidirectional"] - r["unidirectional"] for t, r in tables["tags"].items()}
    order = sorted(gains, key=gains.get, reverse=True)
    right.bar(order, [gains[t] for t in order], color=["tab:green" if gains[t] >= 0 else "tab:red" for t in order])
    right.set_ylabel("test tokens: bidirectional right − unidirectional right")
    right.tick_params(axis="x", labelrotation=60, labelsize=8)
    right.axhline(0, color="grey", linewidth=0.8)
    for axis in (left, right):
        axis.grid(True, axis="y", alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def verdict(groups: Dict[str, Dict[str, int]], margin: float) -> Tuple[bool, str]:
    """Whether bidirectional beats unidirectional by more than `margin` on all tokens, and the line."""
    acc = {m: groups["all"][m] / groups["all"]["tokens"] for m in METHODS}
    gain = acc["bidirectional"] - acc["unidirectional"]
    misled = groups["left context misleads"]
    where = ""
    if misled.get("tokens"):
        m_gain = (misled["bidirectional"] - misled["unidirectional"]) / misled["tokens"]
        where = (f"; on the {misled['tokens']:,} tokens the left context misleads the gain is {100 * m_gain:+.1f} "
                 f"points")
    evidence = (f"token accuracy {acc['bidirectional']:.4f} bidirectional against {acc['unidirectional']:.4f} "
                f"unidirectional ({100 * gain:+.2f} points; the margin asked is {100 * margin:g} points){where}")
    holds = gain > margin
    return holds, verdict_line(holds, "bidirectional tags better", evidence)


def run(s: DirectionSettings) -> Dict[str, Any]:
    """Both taggers for s.steps; direction.png, the tables by kind of token and part of speech, the verdict."""
    bi = train_tagger(s, True, s.hidden_size)
    uni = train_tagger(s, False, unidirectional_hidden(bi, s))
    paths = bi.info["data"]
    test_path = paths["test"] or paths["val"] or paths["train"]
    test = read_tagged(test_path)
    train, _ = tag.training_sentences(bi.settings, paths["train"], paths["val"] is not None)
    runs = {"unidirectional": uni, "bidirectional": bi}
    predictions = {m: tag.predict(r, [w for w, _, _ in test]) for m, r in runs.items()}
    tables = breakdown(train, test, predictions)
    total = tables["groups"]["all"]["bidirectional"] - tables["groups"]["all"]["unidirectional"]
    sizes = {m: (r.model.config.hidden_size, parameter_count(r)) for m, r in runs.items()}
    title = (f"{s.cell} tagger on {Path(test_path).name}: unidirectional 1x{sizes['unidirectional'][0]} "
             f"({sizes['unidirectional'][1]:,} parameters) vs bidirectional 1x{sizes['bidirectional'][0]} per "
             f"direction ({sizes['bidirectional'][1]:,}), {s.steps} steps each")
    plot(tables, Path(s.out) / "direction.png", title)
    holds, line = verdict(tables["groups"], s.margin)
    by_gain = dict(sorted(tables["tags"].items(), key=lambda kv: kv[1]["unidirectional"] - kv[1]["bidirectional"]))
    markdown = (f"{title}\n\nBy kind of token (test file; training counts decide the kind):\n\n"
                f"{markdown_table(tables['groups'], total, 'kind of token')}\n\n"
                f"By part of speech (largest gain first):\n\n{markdown_table(by_gain, total, 'UPOS')}\n\n"
                f"Plot: direction.png\n\n{line}\n")
    return {"sizes": sizes, "tables": tables, "test": test_path, "holds": holds, "markdown": markdown}
