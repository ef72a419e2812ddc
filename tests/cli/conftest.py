"""Fixtures of the CLI tests."""

from __future__ import annotations

from typing import Any, Callable, List, Tuple

import pytest

from rnnkit.cli import main


@pytest.fixture
def rnnkit(capsys) -> Callable[[List[Any]], Tuple[int, str, str]]:
    """Run `rnnkit ARGS` in this process: (exit status, stdout, stderr); 0 when it returned without exiting."""

    def run(args: List[Any]) -> Tuple[int, str, str]:
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code or 0
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run
