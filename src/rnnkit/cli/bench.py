"""`rnnkit bench NAME [ARGS]`: run benchmarks/bench_NAME.py from the source checkout."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path
from typing import Tuple

import click


def _bench_dir() -> Path:
    here = Path.cwd() / "benchmarks"
    return here if here.is_dir() else Path(__file__).resolve().parents[3] / "benchmarks"


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("name", required=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench(name: str, args: Tuple[str, ...]) -> None:
    """Run benchmarks/bench_NAME.py (without NAME: list them)."""
    directory = _bench_dir()
    scripts = sorted(p.stem[len("bench_"):] for p in directory.glob("bench_*.py")) if directory.is_dir() else []
    if not name:
        click.echo("benchmarks: " + (", ".join(scripts) if scripts else "(none found)"))
        return
    path = directory / f"bench_{name}.py"
    if not path.is_file():
        raise click.BadParameter(f"no benchmark {name!r} in {str(directory)!r}; available: "
                                 f"{', '.join(scripts) or 'none'}", param_hint="'NAME'")
    sys.argv = [str(path), *args]
    runpy.run_path(str(path), run_name="__main__")
