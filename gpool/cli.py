"""The ``gpool`` command: ``gpool serve`` runs a WSGI app, ``gpool bench`` the benchmarks."""

import sys

from ._cli.main import main

__all__ = ["main"]

if __name__ == "__main__":  # pragma: no cover - python -m gpool.cli
    sys.exit(main())
