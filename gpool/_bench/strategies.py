"""The ways of running a task per connection that the benchmark compares.

The parent only needs the names and labels; :func:`make_spawn` runs in the child
processes, which are the only ones to import gevent's pools.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import Any

__all__ = [
    "ALT_SUFFIX",
    "FLOOR",
    "FLOOR_LABEL",
    "HANDOFF_LABEL",
    "LABELS",
    "POOL_SIZE",
    "STRATEGIES",
    "alt_names",
    "label",
    "make_spawn",
]

# Large enough that no scenario ever fills a pool: the comparison is about dispatch,
# not about backpressure.
POOL_SIZE = 10000

# The measuring stick (gpool/_bench/floor.py): WorkerPool's design with no bookkeeping.
FLOOR = "floor"
FLOOR_LABEL = "floor: bare reuse pool (LIFO, Channel per worker)"
# The dispatch scenario's second reference row: not even a Channel.
HANDOFF_LABEL = "handoff: bare greenlet hand-off"

LABELS: dict[str, str] = {
    "default": "spawn='default'",
    "pool": f"gevent.pool.Pool({POOL_SIZE})",
    "gpool": f"WorkerPool({POOL_SIZE})",
    "gpool-noiso": f"WorkerPool({POOL_SIZE}, isolate=False)",
    FLOOR: FLOOR_LABEL,
}
STRATEGIES = tuple(LABELS)

# `--alt PATH` adds the WorkerPool strategies once more, from the gpool package in PATH
# (a modified copy), so a change to the hot path is A/B tested in the same run.
ALT_SUFFIX = "@alt"


def alt_names() -> list[str]:
    return [name + ALT_SUFFIX for name in STRATEGIES if name.startswith("gpool")]


def label(name: str) -> str:
    if name == "handoff":
        return HANDOFF_LABEL
    if name.endswith(ALT_SUFFIX):
        return LABELS[name[: -len(ALT_SUFFIX)]] + " [alt]"
    return LABELS[name]


def _alt_package(path: str) -> Any:
    """The gpool package found in *path*, imported as ``gpool_alt`` beside the real one."""
    if "gpool_alt" in sys.modules:
        return sys.modules["gpool_alt"]
    init = os.path.join(path, "gpool", "__init__.py")
    spec = importlib.util.spec_from_file_location("gpool_alt", init, submodule_search_locations=[os.path.dirname(init)])
    if spec is None or spec.loader is None:
        raise SystemExit(f"--alt: no gpool package in {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpool_alt"] = module
    spec.loader.exec_module(module)
    return module


def make_spawn(name: str, alt_path: str | None = None, max_idle: float | None = None) -> Any:
    """What a child passes as ``spawn=`` for strategy *name* (imports gevent)."""
    if name == "default":
        return "default"
    if name == "pool":
        from gevent.pool import Pool

        return Pool(POOL_SIZE)
    if name == FLOOR:
        from .floor import FloorPool

        # Its bound spawn, not the pool: a server then keeps no pool bookkeeping either.
        return FloorPool().spawn
    if name.endswith(ALT_SUFFIX):
        if alt_path is None:
            raise SystemExit(f"strategy {name} needs --alt PATH")
        worker_pool = _alt_package(alt_path).WorkerPool
        name = name[: -len(ALT_SUFFIX)]
    else:
        from gpool import WorkerPool as worker_pool
    options: dict[str, Any] = {}
    if max_idle is not None:
        options["max_idle"] = max_idle
    if name == "gpool":
        return worker_pool(POOL_SIZE, **options)
    if name == "gpool-noiso":
        return worker_pool(POOL_SIZE, isolate=False, **options)
    raise SystemExit(f"unknown strategy {name!r}")
