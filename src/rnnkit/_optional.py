"""Optional dependencies: the applications' packages come with extras (``pip install 'rnnkit[nlp]'``).

``import rnnkit``, the layers and the trainer need only the core (torch, numpy,
safetensors, tqdm, click). Code that needs an optional package imports it where
it is used, through `require`, so that a missing one raises
`rnnkit.errors.MissingExtraError` naming the extra to install (one
``rnnkit: error:`` line on the command line), not a bare ModuleNotFoundError.

    >>> from rnnkit._optional import EXTRAS
    >>> EXTRAS["forecast"]
    ('pandas', 'statsmodels', 'matplotlib')
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType
from typing import Dict, Optional, Sequence, Tuple

from .errors import MissingExtraError

#: what each extra brings, as import names; pyproject.toml's optional-dependencies list the same
#: distributions (tests/test_optional.py keeps the two equal). An application's extra includes
#: matplotlib when its command writes figures, so one extra is all a command asks for.
EXTRAS: Dict[str, Tuple[str, ...]] = {
    "nlp": ("sentencepiece", "sacrebleu", "sklearn", "matplotlib"),  # seq2seq, chat, classify, tag
    "forecast": ("pandas", "statsmodels", "matplotlib"),
    "vision": ("skimage", "PIL", "sacrebleu", "matplotlib"),  # video (SSIM, GIFs), captions (images, BLEU)
    "deploy": ("onnx", "onnxruntime", "h5py"),  # ONNX export and checks, int8, Keras weight files
    "plots": ("matplotlib",),  # rnnkit plot, rnnkit gradflow, the experiments' figures
    "tensorboard": ("tensorboard",),
    "parquet": ("pyarrow",),
}

#: distribution (pip) names that differ from the import names
DISTRIBUTIONS = {"sklearn": "scikit-learn", "skimage": "scikit-image", "PIL": "pillow"}


def _top_level(module: str, extra: str) -> str:
    top = module.partition(".")[0]
    if top not in EXTRAS.get(extra, ()):  # a wrong pairing is rnnkit's bug, not the user's
        raise RuntimeError(f"rnnkit bug: extra {extra!r} does not bring {top!r} (see rnnkit._optional.EXTRAS)")
    return top


def missing_extra(module: str, *, extra: str, purpose: str, reason: Optional[str] = None) -> MissingExtraError:
    """The error for a missing optional package: "<purpose> needs <distribution>: pip install 'rnnkit[<extra>]'"."""
    top = _top_level(module, extra)
    because = f" ({reason})" if reason else ""
    return MissingExtraError(f"{purpose} needs {DISTRIBUTIONS.get(top, top)}{because}: "
                             f"pip install 'rnnkit[{extra}]'")


def require(module: str, *, extra: str, purpose: str) -> ModuleType:
    """Import `module` (a dotted name such as "sklearn.metrics" is fine) and return it, or raise
    MissingExtraError naming `extra`. A package that is installed but fails to import (a dependency
    of its own missing) gets the same error, with the import error's text."""
    top = _top_level(module, extra)
    try:
        return importlib.import_module(module)
    except ImportError as err:
        reason = None if (err.name or "").partition(".")[0] == top else str(err)
        raise missing_extra(module, extra=extra, purpose=purpose, reason=reason) from err


def require_extra(extra: str, purpose: str, modules: Optional[Sequence[str]] = None) -> None:
    """Check, without importing them, that the packages of `extra` (or only `modules` of them) are
    installed: a command calls this first, so that it fails before its work, not after training."""
    for name in modules or EXTRAS[extra]:
        if importlib.util.find_spec(name) is None:
            raise missing_extra(name, extra=extra, purpose=purpose)


def pyplot(*, extra: str, purpose: str) -> ModuleType:
    """matplotlib.pyplot on the Agg backend (figures go to files; no display needed)."""
    matplotlib = require("matplotlib", extra=extra, purpose=purpose)
    matplotlib.use("Agg")
    return importlib.import_module("matplotlib.pyplot")
