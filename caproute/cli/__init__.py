"""The ``caproute`` command (also ``python -m caproute``).

One module per command: ``predict`` (classify the user's images), ``fit`` (``cluster`` and
``mixture`` on the user's data), ``convert`` (other implementations' checkpoints),
``demo`` (``demo``, ``toy``, ``info``) and ``bench``. This module builds the parser, runs the
command and turns every expected failure into one line on stderr and an exit code:
0 success, 1 the work failed, 2 bad usage (see docs/cli.md).
"""

from __future__ import annotations

import argparse
import os
import sys

from ._common import (
    EXIT_FAILURE,
    EXIT_USAGE,
    FIRST_RUN_NOTICE,
    Output,
    UsageError,
    WorkError,
)
from ._common import notice_if_slow as _notice_if_slow  # noqa: F401 -- kept for its callers

__all__ = ["FIRST_RUN_NOTICE", "build_parser", "main"]

DESCRIPTION = """\
caproute: capsule routing and Gaussian mixtures on NumPy, Numba and CuPy.

Classify your images with a capsule network, cluster your data with routing or
a Gaussian mixture, convert checkpoints, and try the shipped models.
"""

EPILOG = """\
exit status:
  0  success
  1  the work failed: a missing, unreadable or malformed file, data a model
     or an estimator refuses, a failed check
  2  bad usage: an unknown command or option, an invalid option value

Run `caproute COMMAND --help` for a command's options. Documentation:
docs/cli.md.
"""


class _Parser(argparse.ArgumentParser):
    """argparse with caproute's error line: ``caproute: error: ...``, exit 2."""

    def error(self, message):
        self.print_usage(sys.stderr)
        command = self.prog.split(" ", 1)[1] if " " in self.prog else None
        more = f"caproute {command} --help" if command else "caproute --help"
        sys.stderr.write(f"caproute: error: {message} (see `{more}`)\n")
        sys.exit(EXIT_USAGE)


def _global_options(parser, *, defaults):
    """--json, --quiet, --progress, --debug: on the main parser with their defaults, on each
    command with none (so that either place works and the command's wins)."""
    d = (lambda v: v) if defaults else (lambda v: argparse.SUPPRESS)
    parser.add_argument(
        "--json",
        action="store_true",
        default=d(False),
        help="print the results as one JSON document on stdout",
    )
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=d(False),
        help="no progress bars and no notices on stderr",
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=d(None),
        help="force the progress bars on or off (default: on when stderr is a terminal)",
    )
    parser.add_argument(
        "--debug", action="store_true", default=d(False), help="show the traceback of an error"
    )


def build_parser():
    """The ``caproute`` argument parser.

    Returns
    -------
    argparse.ArgumentParser
        With one sub-command per command; each sets ``func(args, out)``.

    Examples
    --------
    >>> from caproute.cli import build_parser
    >>> args = build_parser().parse_args(["toy", "--batch", "8"])
    >>> args.command, args.batch, args.json
    ('toy', 8, False)
    """
    from .._version import __version__
    from . import bench, convert, demo, fit, predict

    parser = _Parser(
        prog="caproute",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"caproute {__version__}")
    _global_options(parser, defaults=True)
    common = _Parser(add_help=False)
    _global_options(common, defaults=False)
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )
    parents = [common]
    # the commands, in the order `caproute --help` lists them
    predict.add_parser(sub, parents)
    fit.add_parsers(sub, parents)
    convert.add_parsers(sub, parents)
    demo.add_parsers(sub, parents)
    bench.add_parser(sub, parents)
    for choice in sub.choices.values():
        choice.formatter_class = argparse.RawDescriptionHelpFormatter
    return parser


def main(argv=None):
    """Run the ``caproute`` command.

    Parameters
    ----------
    argv : list of str, optional
        The arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit status: 0 success, 1 the work failed, 2 bad usage.

    Examples
    --------
    >>> from caproute.cli import main
    >>> main(["--version"])  # doctest: +ELLIPSIS
    caproute ...
    0
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors: argparse's exit status
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    out = Output(json_mode=args.json, quiet=args.quiet, progress=args.progress)
    try:
        return args.func(args, out)
    except BrokenPipeError:  # the reader went away (`caproute ... | head`): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python's advice: no second error at exit
        return EXIT_FAILURE
    except KeyboardInterrupt:
        if args.debug:
            raise
        sys.stderr.write("\ncaproute: interrupted\n")
        return 130
    except Exception as exc:  # the command line's one place for every error
        if args.debug:
            raise
        status, message = _describe(exc)
        sys.stdout.flush()
        sys.stderr.write(f"caproute: error: {message}\n")
        if args.json:
            out.document({"error": message, "exit_status": status})
        return status


def _describe(exc):
    """(exit status, message) for an exception raised by a command."""
    from .._backend import BackendUnavailableError

    if isinstance(exc, UsageError):
        return EXIT_USAGE, str(exc)
    if isinstance(exc, WorkError):
        return EXIT_FAILURE, str(exc)
    if isinstance(exc, IsADirectoryError):
        return EXIT_FAILURE, f"{exc.filename!r} is a directory; expected a file."
    if isinstance(exc, FileNotFoundError) and exc.filename:
        return EXIT_FAILURE, f"{exc.filename!r} does not exist."
    if isinstance(exc, PermissionError) and exc.filename:
        return EXIT_FAILURE, f"{exc.filename!r}: permission denied."
    if isinstance(exc, MemoryError):
        return EXIT_FAILURE, "out of memory (try a smaller --batch or fewer images)."
    if isinstance(
        exc, (ValueError, TypeError, OSError, ImportError, BackendUnavailableError)
    ):  # caproute's and the libraries' messages about the data, files and backends
        return EXIT_FAILURE, str(exc) or type(exc).__name__
    return (
        EXIT_FAILURE,
        f"unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback and "
        "please report it)",
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
