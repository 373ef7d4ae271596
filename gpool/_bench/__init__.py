"""``gpool bench``: the benchmark harness (placeholder until the harness lands)."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_bench_parser"]


def add_bench_parser(commands: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser("bench", help="compare gpool with gevent's pools")
    parser.set_defaults(run=lambda args: 0)
    return parser
