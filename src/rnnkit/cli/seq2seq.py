"""`rnnkit translate`, `rnnkit evaluate`, `rnnkit chat`: a seq2seq run (`rnnkit train seq2seq`) at work.

The decoding options are made from `rnnkit.apps.seq2seq.DecodeOptions`; the work is in `rnnkit.apps.seq2seq`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import click
from click.core import ParameterSource

from .._optional import require_extra
from ..apps import seq2seq
from ..apps.rundir import run_device
from ..apps.seq2seq_decode import DECODE_FIELDS, encode_sources, too_long, write_output
from ..data.text import DataError, decode_utf8, read_lines, split_lines
from .options import checkpoint_option, device_option, settings_options


def decode_command(fn: Callable) -> click.Command:
    """A command with --checkpoint, the DecodeOptions options and --device; the callback gets `run` and
    `options` in their place."""

    @click.pass_context
    def callback(ctx: click.Context, checkpoint: str, device: str, **values: Any) -> None:
        require_extra("nlp", f"rnnkit {ctx.command.name}")
        given = {k: values.pop(k) for k in DECODE_FIELDS}
        options = seq2seq.DecodeOptions(**{k: v for k, v in given.items()
                                            if ctx.get_parameter_source(k) == ParameterSource.COMMANDLINE})
        run = seq2seq.load(checkpoint, run_device(device))
        fn(run=run, options=options, **values)

    command = click.command(fn.__name__, help=fn.__doc__)(callback)
    command.params = [*getattr(fn, "__click_params__", [])[::-1], *settings_options(seq2seq.DecodeOptions)]
    checkpoint_option(device_option(command))
    return command


def _read_input(path: Optional[str]) -> Tuple[List[str], str]:
    if path is None:
        raw, origin = sys.stdin.buffer.read(), "<stdin>"
        return [line for _, line in split_lines(decode_utf8(raw, origin))], origin
    if not Path(path).is_file():
        raise DataError(f"input file {path!r} does not exist")
    return [line for _, line in read_lines(path)], path


@click.option("--input", "input_path", default=None, help="Read sentences from this file (default: stdin).")
@click.option("--output", default=None, help="Write the translations to this file, atomically (default: stdout).")
@click.option("--plot-attention", default=None, help="PNG file: source × output attention map of the first input.")
@click.option("--skip-long", is_flag=True, help="A line over the model's max_source_len gets an empty output line, "
              "named on stderr, instead of stopping before any line is translated.")
def translate(run: Any, options: Any, input_path: Optional[str], output: Optional[str],
              plot_attention: Optional[str], skip_long: bool) -> None:
    """Translate one sentence per line (stdin or --input); empty lines stay empty.

    Every line is checked (UTF-8, length) before anything is decoded or written; with --skip-long a line
    that is too long comes out empty instead. With --n-best N, each line holds N translations and their
    scores, tab-separated.
    """
    lines, origin = _read_input(input_path)
    hyps = seq2seq.decode(run, lines, options, origin=origin, attention=plot_attention is not None,
                          skip_long=skip_long)
    if skip_long:
        _report_skipped(run, lines, options.lang, origin)
    target = seq2seq.tokenizers(run)[1]
    texts = ["\t".join(f"{target.decode(h.tokens)}\t{h.score:.4f}" for h in hs) if options.n_best > 1
             else target.decode(hs[0].tokens) if hs else "" for hs in hyps]
    body = "".join(t + "\n" for t in texts)
    if output:
        write_output(output, body.encode("utf-8"))
    else:
        sys.stdout.write(body)
        sys.stdout.flush()
    if plot_attention:
        first = next((i for i, hs in enumerate(hyps) if hs), None)
        if first is None:
            raise DataError("--plot-attention: there is no non-empty input line to draw")
        seq2seq.plot_attention(run, lines[first], hyps[first][0], plot_attention, lang=options.lang)


def _report_skipped(run: Any, lines: List[str], lang: Optional[str], origin: str) -> None:
    """One stderr line naming the lines --skip-long left untranslated (the first 10 of them)."""
    long = too_long(run, encode_sources(run, lines, lang))
    if long:
        shown = ", ".join(str(i + 1) for i in long[:10]) + (", ..." if len(long) > 10 else "")
        click.echo(f"rnnkit: note: {len(long)} of {len(lines)} lines of {origin} are longer than this model's "
                   f"{run.model.config.max_source_len} tokens (max_source_len) and were left untranslated "
                   f"(empty output lines): {'line' if len(long) == 1 else 'lines'} {shown}", err=True)


@click.option("--data", default=None, help="Pairs to score (default: the run's own --data).")
@click.option("--split", type=click.Choice(["test", "valid", "train"]), default="test", show_default=True)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Score only the first N pairs.")
@click.option("--output", default=None, help="Also write the outputs to this file, one per line, atomically.")
def evaluate(run: Any, options: Any, data: Optional[str], split: str, limit: Optional[int],
             output: Optional[str]) -> None:
    """BLEU and chrF (sacrebleu) of a seq2seq run on a held-out split; prints one JSON line."""
    result: Dict[str, Any] = seq2seq.evaluate(run, data, split=split, limit=limit, options=options,
                                              hypotheses=output is not None)
    if output:
        write_output(output, "".join(h + "\n" for h in result.pop("hypotheses")).encode("utf-8"))
    click.echo(json.dumps(result))


def chat(run: Any, options: Any) -> None:
    """Talk to a seq2seq model: one message per line, its reply below (stdin works too, for scripts)."""
    interactive = sys.stdin.isatty()
    if interactive:
        click.echo("rnnkit chat: type a message, Enter to send, Ctrl-D to quit.", err=True)
    n = 0
    while True:
        if interactive:
            click.echo("> ", nl=False, err=True)
        raw = sys.stdin.buffer.readline()
        if not raw:
            break
        n += 1
        text = _line(raw, n)
        if not text:
            continue
        try:
            reply = seq2seq.translate(run, [text], options, origin="<stdin>", first_line=n)[0]
        except DataError as err:
            if not interactive:
                raise
            click.echo(f"rnnkit: {err}", err=True)
            continue
        click.echo(reply)


def _line(raw: bytes, n: int) -> str:
    try:
        return raw.decode("utf-8").strip()
    except UnicodeDecodeError as err:
        raise DataError(f"<stdin>:{n}: not UTF-8 text (byte {err.start} of the line: {err.reason})") from None


def register(cli: click.Group, train: click.Group) -> None:
    """Add translate, evaluate and chat to the `rnnkit` group (`train seq2seq` is made from its settings)."""
    for fn in (translate, evaluate, chat):
        cli.add_command(decode_command(fn))
