"""A server's keep-alive bookkeeping on its own (gpool._serving.keepalive.IdleConnections), with
parked connections over real socket pairs and the hub's real timers."""

from __future__ import annotations

from typing import Iterator

import gevent
import pytest
from gevent import socket
from gevent.event import Event

from gpool._serving.keepalive import IdleConnections

QUIET = 0.2  # reclaim_idle_after in these tests


class Parked:
    """A connection parked in *connections* by a greenlet waiting for its next request,
    as a server's handler parks one; ``ended`` is set when that wait returns."""

    def __init__(self, connections: IdleConnections) -> None:
        self.server_side, self.client_side = socket.socketpair()
        self.connection = connections.open(self.server_side)
        self.ended = Event()
        self.greenlet = gevent.spawn(self._wait, connections)
        gevent.sleep(0)  # let it park

    def _wait(self, connections: IdleConnections) -> None:
        connections.wait_parked(self.connection, self.server_side)
        self.ended.set()

    @property
    def hung_up(self) -> bool:
        return self.server_side.recv(1) == b"" if self.ended.is_set() else False

    def close(self) -> None:
        self.greenlet.kill()
        self.server_side.close()
        self.client_side.close()


@pytest.fixture
def parked() -> Iterator[list[Parked]]:
    made: list[Parked] = []
    yield made
    for one in made:
        one.close()


def test_one_waiting_client_costs_one_connection_however_slow_its_slot(parked: list[Parked]) -> None:
    connections = IdleConnections(reclaim_idle_after=QUIET)
    first, second = Parked(connections), Parked(connections)
    parked += [first, second]
    assert len(connections) == 2
    # A client finds the pool full before either has been idle long enough: the
    # connection parked longest is asked to close, and hung up once idle long enough.
    assert connections.want_slot() is True
    assert first.connection.close_requested and not second.connection.close_requested
    assert first.ended.wait(timeout=5 * QUIET)
    assert first.hung_up
    # Its slot takes a while to reach the waiting client (a busy or descheduled
    # process): meanwhile no second connection is hung up for the same client.
    gevent.sleep(QUIET / 2)
    assert not second.ended.is_set()
    connections.slot_given()
    assert not second.ended.wait(timeout=1.5 * QUIET)
    assert len(connections) == 1
    assert connections.reclaimed == 1


def test_a_slot_that_never_arrives_costs_one_more_connection_later(parked: list[Parked]) -> None:
    connections = IdleConnections(reclaim_idle_after=QUIET)
    first, second = Parked(connections), Parked(connections)
    parked += [first, second]
    assert connections.want_slot() is True
    assert first.ended.wait(timeout=5 * QUIET)
    hung_up_first = gevent.get_hub().loop.now()
    # slot_given() never comes (another spawn took the slot): one more, a quiet spell on.
    assert second.ended.wait(timeout=5 * QUIET)
    assert gevent.get_hub().loop.now() - hung_up_first >= QUIET * 0.9
    assert second.hung_up
    assert connections.reclaimed == 2


def test_a_drain_hangs_up_every_idle_connection(parked: list[Parked]) -> None:
    connections = IdleConnections(reclaim_idle_after=QUIET)
    ones = [Parked(connections) for _ in range(3)]
    parked += ones
    connections.drain()
    for one in ones:
        assert one.ended.wait(timeout=5 * QUIET)
        assert one.hung_up
    assert connections.drained == 3
