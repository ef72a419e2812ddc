"""`rnnkit` command line (also `python -m rnnkit`). Argument parsing only; the work is in the library.

Errors in what the user gave (data, checkpoints, settings) print one line,
`rnnkit: error: ...`, and exit with status 2; `--debug` shows the traceback.
"""

from __future__ import annotations

import sys
from typing import List, Optional

import click

from ..backends.allocator import keep_freed_memory
from ..data.text import DataError
from ..training.checkpoint import CheckpointError
from ..training.trainer import TrainingError

USER_ERRORS = (DataError, CheckpointError, TrainingError, ValueError, TypeError, FileNotFoundError,
               IsADirectoryError, PermissionError)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.version_option(package_name="rnnkit")
def cli(debug: bool) -> None:
    """rnnkit: recurrent networks — train, sample, inspect."""


def _register() -> None:
    from .bench import bench
    from .export import export
    from .generate import generate
    from .gradflow import gradflow
    from .plot import plot
    from .train import train
    for command in (train, generate, gradflow, plot, bench, export):
        cli.add_command(command)
    from .seq2seq import register as register_seq2seq
    register_seq2seq(cli, train)
    from .forecast import register as register_forecast
    register_forecast(cli, train)
    from .vision import register as register_vision
    register_vision(cli, train)
    from .classify import register as register_classify
    register_classify(cli, train)


_register()


def main(argv: Optional[List[str]] = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    # this process is ours: keep the large per-step buffers mapped between steps (backends/allocator.py)
    keep_freed_memory()
    debug = "--debug" in args
    try:
        cli.main(args=args, prog_name="rnnkit", standalone_mode=False)
    except click.exceptions.Exit as exit_:
        sys.exit(exit_.exit_code)
    except click.exceptions.Abort:
        click.echo("rnnkit: aborted", err=True)
        sys.exit(130)
    except click.ClickException as err:
        if debug:
            raise
        err.show()
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        click.echo("rnnkit: interrupted", err=True)
        sys.exit(130)
    except USER_ERRORS as err:
        if debug:
            raise
        message = " ".join(str(err).split())
        click.echo(f"rnnkit: error: {message}", err=True)
        sys.exit(2)
