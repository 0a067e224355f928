"""The ``trioconfd`` command: one subcommand per request type, plus serve, bench and demo."""

from __future__ import annotations

import argparse
import io
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import NoReturn, TextIO, cast

import trio

from ..protocol import (
    ConfdError,
)
from ._bench import run_bench
from ._demo import run_demo
from ._exits import (
    EXIT_CLOSED_OUTPUT,
    EXIT_ERROR_REPLY,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_OUTPUT_ERROR,
    EXIT_TIMEOUT,
    EXIT_USAGE,
)
from ._parser import (
    QUERIES,
    UsageError,
    as_option_names,
    build_parser,
    cli_client,
    parse_peer,
    resolve_key_and_peers,
)
from ._render import report
from ._serve import run_serve
from ._watch import run_watch

__all__ = [
    "EXIT_CLOSED_OUTPUT",
    "EXIT_ERROR_REPLY",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_OUTPUT_ERROR",
    "EXIT_TIMEOUT",
    "EXIT_USAGE",
    "UsageError",
    "build_parser",
    "main",
    "parse_peer",
    "report",
]


async def run_query(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    request = QUERIES[args.command][2](args)
    async with cli_client(args) as client:
        result = await client.query(request, coverage=args.coverage, timeout=args.timeout)
    return report(request, result, args.json, out, err, partial=args.partial)


def _fail(message: str, err: TextIO) -> NoReturn:
    print(f"trioconfd: error: {message}", file=err)
    raise SystemExit(EXIT_USAGE)


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line read; a mistake is shown with its subcommand's usage."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        # argparse reports these with the top-level usage, which lists no
        # subcommand's options: the innermost subcommand's own usage helps
        # more ("watch master --bogus": master's, under watch).
        innermost = parser
        while True:
            commands = [
                action
                for action in innermost._actions
                if isinstance(action, argparse._SubParsersAction)
            ]
            if not commands:
                break
            innermost = commands[0].choices[getattr(args, commands[0].dest)]
        innermost.error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    try:
        args = parse_arguments(argv)
    except BrokenPipeError:  # --help or --version, into a pipe closed early
        return _quietly_closed(sys.stdout)
    except OSError as exc:  # --help or --version, not written (see build_parser)
        print(f"trioconfd: error: cannot write to standard output: {exc.strerror}", file=sys.stderr)
        return EXIT_OUTPUT_ERROR
    stdout, err = sys.stdout, sys.stderr
    if err is None:  # started with standard error closed ("2>&-"): say nothing
        err = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
    if stdout is None:  # started with standard output closed (">&-")
        print("trioconfd: error: standard output is closed", file=err)
        return EXIT_OUTPUT_ERROR
    out = cast(TextIO, _Output(stdout))
    for stream in (stdout, err):
        # An answer may hold what no encoding can write (a lone surrogate from
        # a JSON escape, or from an argument that was not UTF-8): escape it.
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _plain_warning(err)
            code = _run(args, out, err)
        out.flush()  # here, not at exit, where a closed pipe would be a traceback
    except BrokenPipeError:
        return _quietly_closed(stdout)
    except OutputError as exc:
        print(f"trioconfd: error: cannot write to standard output: {exc.reason}", file=err)
        return EXIT_OUTPUT_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED  # Ctrl-C as the output was flushed
    return code


def _quietly_closed(stdout: TextIO) -> int:
    """Standard output was closed (``| head``): end quietly, as command-line tools
    do; what is still buffered for it goes nowhere."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, stdout.fileno())
    os.close(devnull)
    return EXIT_CLOSED_OUTPUT


class OutputError(Exception):
    """Standard output could not be written (not a closed pipe: a full disk, say)."""

    def __init__(self, error: OSError) -> None:
        super().__init__(error)
        self.reason = error.strerror or str(error)


class _Output:
    """Standard output, its write failures told apart from every other OSError."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise OutputError(exc) from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise OutputError(exc) from None

    def __getattr__(self, name: str) -> object:
        return getattr(self._stream, name)


def _plain_warning(err: TextIO) -> Callable[..., None]:
    """A warning as one line for the person at the terminal, without our source lines."""

    def show(message: Warning | str, *_: object, **__: object) -> None:
        print(f"trioconfd: warning: {message}", file=err)

    return show


def _first_of(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first exception in ``group``, in its nested groups too."""
    first = group.exceptions[0]
    return _first_of(first) if isinstance(first, BaseExceptionGroup) else first


def _run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        if args.command == "demo":
            return trio.run(run_demo, out)
        if args.command == "serve":
            return trio.run(run_serve, args, out, err)
        if args.command == "watch":
            return trio.run(run_watch, args, out, err)
        if args.command == "bench":
            key, peers = resolve_key_and_peers(args)
            return trio.run(run_bench, key, peers, args, out, err)
        return trio.run(run_query, args, out, err)
    except UsageError as exc:
        _fail(str(exc), err)
    except ConfdError as exc:
        _fail(as_option_names(str(exc)), err)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BaseExceptionGroup as group:
        # Ctrl-C seen by a task in a nursery comes out in a group: it is an
        # interruption all the same, not a crash to show a traceback for.
        # So does output that failed in a nursery (watch prints in one).
        for kind in (OutputError, BrokenPipeError):
            output, rest = group.split(kind)
            if output is not None and rest is None:
                raise output.exceptions[0] from None
        # A mistake the API refused in a task (watch asks in one, bench in
        # its workers): one line, as anywhere else.
        mistakes, rest = group.split((UsageError, ConfdError))
        if mistakes is not None and rest is None:
            first = _first_of(mistakes)
            message = str(first) if isinstance(first, UsageError) else as_option_names(str(first))
            _fail(message, err)
        if group.split(KeyboardInterrupt)[1] is not None:
            raise
        return EXIT_INTERRUPTED
