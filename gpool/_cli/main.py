"""The ``gpool`` command: ``gpool serve`` runs a WSGI app, ``gpool bench`` the benchmarks."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn, Sequence

__all__ = ["main"]


class _OneLineErrors(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__
    from .._bench import BENCH_HELP
    from .serve import add_serve_parser

    parser = _OneLineErrors(prog="gpool", description="gpool: a greenlet-reusing worker pool for gevent servers.")
    parser.add_argument("--version", action="version", version=f"gpool {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_OneLineErrors)
    add_serve_parser(commands)
    # Listed here, parsed by the harness itself: see main().
    commands.add_parser("bench", help=BENCH_HELP, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gpool`` console script and of ``python -m gpool``."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:
        # The benchmark harness (a tenth of the package, and Unix-only) is imported
        # only when it runs: it builds and parses its own options.
        from .._bench import main as bench

        return bench(argv[1:], parser_class=_OneLineErrors)
    args = build_parser().parse_args(argv)
    status: int = args.run(args)
    return status


if __name__ == "__main__":  # pragma: no cover - python -m gpool.cli
    sys.exit(main())
