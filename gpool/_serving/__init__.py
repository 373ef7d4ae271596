"""Serving: gevent servers, gunicorn workers and metrics built on the pool core.

Layer 2 of 3: builds on :mod:`gpool._core`, never on :mod:`gpool._cli`. Importing it
installs the answer a full ``overflow="reject"`` pool gives a server's connection.
"""

from . import reject as _reject  # noqa: F401 - installs the rejected-connection answer
