"""The errors rnnkit raises on purpose when what it was given cannot be used.

Every deliberate check of a caller's input (shapes, dtypes, settings, files,
checkpoints) raises one of these. They subclass ``ValueError`` / ``TypeError``,
so ``except ValueError`` keeps working, and the command line tells them apart
from bugs: an ``InputError`` prints one ``rnnkit: error:`` line, anything else
shows its traceback so that it gets reported.

    >>> from rnnkit.errors import InputError
    >>> issubclass(InputError, ValueError)
    True
"""

from __future__ import annotations


class InputError(ValueError):
    """A value, shape, setting or file the caller gave cannot be used (the message says why)."""


class InputTypeError(InputError, TypeError):
    """An argument of the wrong type (also a ``TypeError``)."""


class MissingExtraError(InputError, ImportError):
    """An optional dependency is not installed; the message names the extra that brings it."""
