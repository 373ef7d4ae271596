"""``gpool bench``: benchmarks that compare gpool with what a gevent user would otherwise use.

One module per job:

- :mod:`.command`: the options and the run, in the parent process (no gevent hub);
- :mod:`.scenarios`: the scenarios as rounds of child processes;
- :mod:`.server`, :mod:`.dispatch`, :mod:`.loadgen`: the child processes (a gevent
  server, the in-process dispatch measurement, the built-in load generator);
- :mod:`.load`: load from ``wrk`` or the built-in generator;
- :mod:`.procs`, :mod:`.child`: the two ends of talking to children;
- :mod:`.stats`, :mod:`.targets`, :mod:`.report`, :mod:`.chart`: figures, tables, JSON, PNG.

Installed with gpool, so ``gpool bench`` works after a plain ``pip install gpool``;
the chart needs matplotlib (``pip install 'gpool[bench]'``).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Sequence

__all__ = ["add_bench_parser", "main"]


def add_bench_parser(commands: Any) -> argparse.ArgumentParser:
    """Add ``bench`` to the ``gpool`` command's subparsers *commands*."""
    from .command import configure

    parser: argparse.ArgumentParser = commands.add_parser(
        "bench", help="compare gpool with gevent's spawn and Pool (servers, dispatch, memory)"
    )
    configure(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``gpool bench`` on its own (``benchmarks/run.py`` calls this)."""
    from .._cli.main import _OneLineErrors

    parser = _OneLineErrors(prog="gpool")
    add_bench_parser(parser.add_subparsers(dest="command", required=True, parser_class=_OneLineErrors))
    args = parser.parse_args(["bench", *(sys.argv[1:] if argv is None else argv)])
    status: int = args.run(args)
    return status
