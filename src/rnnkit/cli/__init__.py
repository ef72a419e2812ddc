"""`rnnkit` command line (also `python -m rnnkit`). Argument parsing only; the work is in the library.

Errors in what the user gave (data, checkpoints, settings) print one line,
`rnnkit: error: ...`, and exit with status 2; `--debug` shows the traceback.
"""

from __future__ import annotations

import errno
import sys
from typing import List, Optional

import click

from ..apps.settings import option_names
from ..backends.allocator import keep_freed_memory
from ..errors import InputError
from ..training.trainer import TrainingError

#: errors raised on purpose about what the user gave; anything else is a bug and keeps its traceback
USER_ERRORS = (InputError, TrainingError)
#: operating-system errors about a path the user named (missing, a folder, no permission, disk full)
PATH_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError, FileExistsError)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.version_option(package_name="rnnkit")
def cli(debug: bool) -> None:
    """rnnkit: recurrent networks — train, sample, inspect."""


def _register() -> None:
    from .bench import bench
    from .experiment import experiment
    from .export import export
    from .generate import generate
    from .gradflow import gradflow
    from .plot import plot
    from .train import train
    for command in (train, generate, gradflow, plot, bench, export, experiment):
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
        with option_names():  # messages name settings as this command line spells them: --batch-size
            cli.main(args=args, prog_name="rnnkit", standalone_mode=False)
    except click.exceptions.Exit as exit_:
        sys.exit(exit_.exit_code)
    except click.exceptions.Abort:
        click.echo("rnnkit: aborted", err=True)
        sys.exit(130)
    except click.UsageError as err:
        if debug:
            raise
        command = err.ctx.command_path if err.ctx is not None else "rnnkit"
        _fail(f"{err.format_message()} (see '{command} --help')", err.exit_code)
    except click.ClickException as err:
        if debug:
            raise
        _fail(err.format_message(), err.exit_code)
    except KeyboardInterrupt:
        click.echo("rnnkit: interrupted", err=True)
        sys.exit(130)
    except USER_ERRORS as err:
        if debug:
            raise
        _fail(str(err))
    except PATH_ERRORS as err:
        if debug or err.filename is None:
            raise
        _fail(f"{err.filename}: {err.strerror or err}")
    except OSError as err:
        if debug or err.errno != errno.ENOSPC:
            raise
        _fail(f"no space left on the device{f' writing {err.filename}' if err.filename else ''}; "
              "free some space and run again (earlier checkpoints are intact)")


def _fail(message: str, code: int = 2) -> None:
    """Print the one documented error line and exit."""
    click.echo(f"rnnkit: error: {' '.join(message.split())}", err=True)
    sys.exit(code)
