"""The ``loracheck`` command line.

Subcommands: ``run`` (the main job: the default suite of synthetic problems, a table of verdicts,
report files; ``--real`` adds the linearized offline MiniLM), ``claims`` (every claim and whether
it has a checker), ``figures`` (PNG/SVG figures and an HTML gallery from saved results),
``audit`` (a problem file: the user's own problem or a saved counterexample,
and optionally a trained LoRA point), ``phase`` (the data of the [JLR24] phase diagram: the fraction of LoRA
trainings that end at the global minimum per ``(r, K, N)``), ``sweep`` (a TOML-configured sweep of
independent tasks on a serial, process-pool or Dask executor, into a resumable SQLite result
store) and ``experiment`` (the [JLR24] real-model experiment on the review sentences).

Exit codes: 0 all hold, 1 some violated, 2 some inconclusive, 3 bad input, 4 internal error;
``run`` compares its verdicts with the suite's record (:mod:`verify.run.record`).
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import sys
from collections.abc import Sequence

from landscapes.threads import command_threads
from theory.errors import UserInputError
from verify.cli import audit, claims, experiment, figures, kkr, phase, run, schema, speed, sweep
from verify.cli.common import EXIT_BAD_INPUT, EXIT_INTERNAL, Parser, stopped
from verify.signals import exit_code, stop_signals_as_interrupt
from verify.terminal import PrintableStream, ReaderGone, printable

__all__ = ["main"]

#: Subcommand name -> its module: ``NAME``, ``HELP``, ``DESCRIPTION`` (and ``EPILOG``),
#: ``add_arguments(parser)`` and ``handle(args) -> int``.
COMMANDS = {
    "run": run,
    "audit": audit,
    "figures": figures,
    "schema": schema,
    "claims": claims,
    "phase": phase,
    "sweep": sweep,
    "experiment": experiment,
    "speed": speed,
    "kkr": kkr,
}


def _parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="loracheck",
        description="Certified checks of the theory of LoRA fine-tuning.",
        epilog="Exit codes: 0 all hold, 1 some violated, 2 some inconclusive, 3 bad input, 4 internal "
        "error; `run` compares with its suite's record (0 every verdict as recorded, 1 a new violation, "
        "2 another difference; --strict for the plain codes).",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for module in COMMANDS.values():
        module.add_arguments(
            sub.add_parser(
                module.NAME,
                help=module.HELP,
                description=module.DESCRIPTION,
                epilog=getattr(module, "EPILOG", None),
            )
        )
    return p


#: Operating-system errors about a path given on the command line (exit 3); any other ``OSError``
#: (ENOSPC, EIO, ...) is a failure of the environment (exit 4).
_PATH_ERRNOS = frozenset(
    getattr(errno, name)
    for name in ("ENOENT", "EACCES", "EPERM", "ENOTDIR", "EISDIR", "EROFS", "ENAMETOOLONG", "ELOOP", "EEXIST")
    if hasattr(errno, name)
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``loracheck`` console script.

    Exit codes: 0 all hold, 1 some violated, 2 some inconclusive, 3 bad input (a
    :class:`~theory.errors.UserInputError`), 4 any other failure, ``128 + n`` when stopped by signal
    ``n`` (Ctrl-C 130, SIGTERM 143, SIGHUP 129) after the finished results were saved, and
    ``128 + SIGPIPE`` = 141, quietly, when the reader of standard output went away.
    """
    stdout = sys.stdout
    sys.stdout = PrintableStream(stdout)  # type: ignore[assignment]  # text from input files is escaped
    try:
        with stop_signals_as_interrupt():
            code = _main(argv)
            sys.stdout.flush()  # a closed pipe shows here when the whole output fit in the buffer
            return code
    except ReaderGone:  # the reader of our output went away (``loracheck claims | head``)
        return _reader_gone(stdout)
    finally:
        sys.stdout = stdout


def _reader_gone(stream: object) -> int:
    """Exit quietly as a shell tool does when its reader closes the pipe: ``128 + SIGPIPE``.

    The file descriptor behind ``stream`` (standard output) is pointed at ``os.devnull``, so that
    the interpreter's last flush of what is still buffered does not fail again.  ``run`` saves each
    verdict in its report before printing its line, so the run stops with that verdict kept.
    """
    try:
        fd = stream.fileno()  # type: ignore[attr-defined]
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, fd)
        finally:
            os.close(devnull)
    except (OSError, AttributeError, ValueError):  # no file descriptor behind it (a test's capture)
        pass
    return 128 + int(getattr(signal, "SIGPIPE", 13))


def _main(argv: Sequence[str] | None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse's own exits: --help 0, a bad value 3 (``Parser.error``)
        return exc.code if isinstance(exc.code, int) else EXIT_BAD_INPUT
    if args.command is None:
        parser.print_help()
        return EXIT_BAD_INPUT
    try:
        # --threads (run) or the user's MKL/OMP_NUM_THREADS; else the free cores now (landscapes.threads)
        with command_threads(getattr(args, "threads", None)):
            return COMMANDS[args.command].handle(args)
    except UserInputError as exc:  # only bad input is exit 3; any other failure is exit 4
        print(printable(f"loracheck: error: {exc}"), file=sys.stderr)
        return EXIT_BAD_INPUT
    except ReaderGone:  # handled by main(), whatever command was running
        raise
    except OSError as exc:
        if exc.errno in _PATH_ERRNOS:  # a path the user named: missing, not permitted, not a directory
            print(printable(f"loracheck: error: {exc}"), file=sys.stderr)
            return EXIT_BAD_INPUT
        print(  # a full disk, an I/O error: the environment failed, not the input
            printable(
                f"loracheck: internal error ({type(exc).__name__}): {exc}; results finished so far are in "
                "the report or --json file, if one was written"
            ),
            file=sys.stderr,
        )
        return EXIT_INTERNAL
    except KeyboardInterrupt as exc:
        if args.command in ("run", "kkr", "speed") or (args.command == "audit" and args.json):
            kept = "results finished so far are kept (re-run the same command to resume)"
        elif args.command == "audit":
            kept = "nothing was saved (with --json FILE an audit keeps its finished verdicts)"
        else:  # phase, experiment, figures do not resume
            kept = f"'loracheck {args.command}' does not resume: re-running it starts over"
        print(f"loracheck: {stopped(exc)}; {kept}", file=sys.stderr)
        return exit_code(exc)
    except Exception as exc:  # a numerical failure inside a checker: not the user's input
        print(
            printable(
                f"loracheck: internal error ({type(exc).__name__}): {exc}; verdicts finished so far are in "
                "the report or --json file, if one was written"
            ),
            file=sys.stderr,
        )
        return EXIT_INTERNAL
