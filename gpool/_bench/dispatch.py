"""Child process: the cost of dispatching a task, in one process, with no sockets.

A callback in the hub calls ``spawn`` N times in a row, as a server's accept callback
does for a burst of connections. Each task blocks once (``gevent.sleep(0)``, standing
in for a handler's first wait on its socket) and ends. The clock runs from the first
``spawn`` until every task has ended *and* the pool has finished its bookkeeping (for
``gevent.pool.Pool``, until the finished greenlets have left the group), and the result
is divided by N: microseconds per task, suspend and resume included.

A second mode runs tasks that never block, which leaves the pool's own cost.

Two reference rows (:mod:`.floor`): ``floor`` (when that strategy is chosen) is
WorkerPool's design with no bookkeeping at all (a LIFO list of parked greenlets, each
on its own ``Channel``), and ``handoff`` switches each task straight into a bare parked
greenlet, without even the channel: no pool built on greenlets can dispatch for less,
so the gap between it and ``gevent.pool.Pool`` is the most that dispatch can save.

Every strategy gets one full batch before timing starts, so a ``WorkerPool`` begins
with N idle workers, as a server does after its first burst. Strategies alternate
batch by batch; the parent takes medians.

``python -m gpool._bench.dispatch --tasks N --rounds R --strategy NAME...`` says
``RESULT`` with every batch's figure.
"""

from __future__ import annotations

import argparse
import gc
import sys
from time import perf_counter
from typing import Any, Callable

from .child import die_with_parent, say
from .floor import BareHandOff, FloorPool
from .strategies import FLOOR, make_spawn

MODES = ("block", "noblock")
HANDOFF = "handoff"


def _batch_runner(n: int, block: bool) -> Callable[[Any], float]:
    import gevent
    from gevent.event import Event

    hub = gevent.get_hub()
    sleep = gevent.sleep

    def run(pool: Any) -> float:
        spawn = gevent.spawn if pool is None else pool.spawn
        left = n
        done = Event()
        times = [0.0, 0.0]

        def finish() -> None:
            # Queued after the last task's own callbacks (a gevent Pool drops its
            # greenlets in link callbacks); queued again until the pool is empty.
            if pool is None or not hasattr(pool, "__len__") or len(pool) == 0:
                times[1] = perf_counter()
                done.set()
            else:
                hub.loop.run_callback(finish)

        def task() -> None:
            nonlocal left
            if block:
                sleep(0)
            left -= 1
            if not left:
                hub.loop.run_callback(finish)

        def launch() -> None:
            times[0] = perf_counter()
            for _ in range(n):
                spawn(task)

        gc.collect()
        hub.loop.run_callback(launch)
        done.wait()
        sleep(0)
        return (times[1] - times[0]) / n * 1e6

    return run


def measure(strategies: list[str], n: int, rounds: int, alt: str | None) -> dict[str, dict[str, list[float]]]:
    """Microseconds per task, per mode and strategy, one figure per round."""
    # max_idle is raised so that no worker is culled between batches.
    pools: dict[str, Any] = {}
    for name in strategies:
        if name == HANDOFF:
            pools[name] = BareHandOff()
            continue
        if name == FLOOR:  # the pool itself: dispatch calls its spawn
            pools[name] = FloorPool()
            continue
        spawn = make_spawn(name, alt, max_idle=600.0)
        pools[name] = None if spawn == "default" else spawn
    out: dict[str, dict[str, list[float]]] = {}
    for mode in MODES:
        run = _batch_runner(n, block=mode == "block")
        for name in strategies:  # warm-up: fills the WorkerPools' ready lists
            run(pools[name])
        figures: dict[str, list[float]] = {name: [] for name in strategies}
        for r in range(rounds):
            k = r % len(strategies)
            for name in strategies[k:] + strategies[:k]:
                figures[name].append(run(pools[name]))
        out[mode] = figures
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gpool._bench.dispatch")
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--strategy", action="append", required=True)
    parser.add_argument("--alt", metavar="PATH")
    args = parser.parse_args(argv)
    die_with_parent()
    say("RESULT", measure(args.strategy, args.tasks, args.rounds, args.alt))
    return 0


if __name__ == "__main__":
    sys.exit(main())
