#!/usr/bin/env python
"""Run the benchmarks: ``python benchmarks/run.py ARGS`` is ``gpool bench ARGS``.

The harness itself is installed with gpool (``gpool/_bench/``); see
``benchmarks/README.md`` for the method and the latest results.
"""

from __future__ import annotations

import sys

from gpool.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
