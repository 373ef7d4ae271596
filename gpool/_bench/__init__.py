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
from typing import Sequence

__all__ = ["BENCH_HELP", "main"]

# One line for `gpool --help`, which lists the command without importing the harness.
BENCH_HELP = "compare gpool with gevent's spawn and Pool (servers, dispatch, memory)"


def main(
    argv: Sequence[str] | None = None, parser_class: type[argparse.ArgumentParser] = argparse.ArgumentParser
) -> int:
    """``gpool bench ARGS``: *argv* are the arguments after ``bench``.

    The ``gpool`` command calls this only when its first argument is ``bench`` (so no
    other command imports the harness), with its one-line-error *parser_class*;
    ``benchmarks/run.py`` calls it with the script's own arguments.
    """
    try:
        import resource  # noqa: F401 - the harness measures children with it
    except ImportError:
        print("gpool bench: error: the benchmark harness needs a Unix system (the resource module)", file=sys.stderr)
        return 2
    from .command import configure

    parser = parser_class(prog="gpool bench")  # configure() writes the description
    configure(parser)
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    status: int = args.run(args)
    return status
