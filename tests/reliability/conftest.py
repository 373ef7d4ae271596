"""The reliability suite: sustained load, faults, isolation and model-based tests.

Every test here is marked ``reliability`` (``pytest -m reliability`` runs just these).
Their volume scales with ``GPOOL_RELIABILITY_SCALE``: 1 (the default) is the load the
README's figures come from and CI runs; tox's matrix uses a small fraction; a soak
takes a larger factor, e.g. ``GPOOL_RELIABILITY_SCALE=20``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import gevent
import pytest

from ..helpers import SCALE, TestTimedOut


@pytest.fixture(autouse=True)
def _bounded() -> Iterator[None]:
    """Replaces the suite-wide 30 s bound: these tests run longer, and longer still
    when scaled up for a soak."""
    timeout = gevent.Timeout(240 * max(SCALE, 1.0), TestTimedOut)
    timeout.start()
    try:
        yield
    finally:
        timeout.close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.path).startswith(here):
            item.add_marker(pytest.mark.reliability)
