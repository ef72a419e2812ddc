"""Fixtures of the CLI tests."""

from __future__ import annotations

from typing import Any, Callable, List, Tuple

import pytest

from helpers import cli_outcome


@pytest.fixture
def rnnkit(capsys) -> Callable[[List[Any]], Tuple[int, str, str]]:
    """Run `rnnkit ARGS` in this process: (exit status, stdout, stderr); 0 when it returned without exiting."""

    def run(args: List[Any]) -> Tuple[int, str, str]:
        code, out, err = cli_outcome(args, capsys)
        return code or 0, out, err

    return run
