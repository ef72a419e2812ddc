"""The training recipes (`rnnkit train charlm --config charlm-demo`) and the data that travels with them.

A recipe is a TOML file in this folder, shipped with the package. Paths in it resolve against
this folder, like those of any config file: the embedded char-LM corpus is ``data/tinyshakespeare``
beside the recipes; the other recipes read the repository's ``data/`` folder (``../../../data/...``
from here), which a source checkout has and an installed wheel does not (`missing_data` says where
to get it).

    >>> from rnnkit.recipes import find_recipe
    >>> find_recipe("charlm-demo").name
    'charlm-demo.toml'
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

from ..errors import InputError

#: the folder of the recipes (inside the installed package)
RECIPES = Path(__file__).resolve().parent
#: the root of the source checkout this package runs from (when it runs from one)
CHECKOUT = RECIPES.parents[2]
#: the char-LM corpus embedded in the package: `rnnkit train charlm` works anywhere, offline
TINYSHAKESPEARE = RECIPES / "data" / "tinyshakespeare" / "input.txt"


def recipe_names() -> List[str]:
    return sorted(p.stem for p in RECIPES.glob("*.toml"))


def find_recipe(name: str) -> Optional[Path]:
    """The packaged recipe called `name` (with or without .toml), or None."""
    if Path(name).name != name:  # a path, not a name
        return None
    path = RECIPES / (name if name.endswith(".toml") else f"{name}.toml")
    return path if path.is_file() else None


def is_recipe(path: Path) -> bool:
    return path.resolve().parent == RECIPES


def repository_data(relative: str) -> str:
    """A default data set of the repository's data/ folder (e.g. "data/nsmc/train.tsv"): relative to the
    working directory, else to the source checkout; as given when neither has it (an installed package),
    and the loader then names the missing file."""
    if Path(relative).exists():
        return relative
    checkout = CHECKOUT / relative
    return str(checkout) if checkout.exists() else relative


def missing_data(recipe: Path, path: str, option: str) -> InputError:
    """The error for a recipe input that is not there: an installed package has only the embedded corpus."""
    where = os.path.relpath(path, CHECKOUT)  # the recipes name the checkout's data/ folder relative to themselves
    return InputError(f"recipe {recipe.stem!r} reads {where} of the rnnkit source repository, which an installed "
                      f"rnnkit does not include (only data/{TINYSHAKESPEARE.parent.name} is embedded): "
                      f"get it from the repository (its SOURCE.md names the original) and pass {option} PATH, or "
                      f"run rnnkit from a source checkout")
