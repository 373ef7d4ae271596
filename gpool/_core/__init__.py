"""The pool core: the worker pool itself, with no knowledge of servers or protocols.

Layer 1 of 3. Imports nothing from :mod:`gpool._serving` or :mod:`gpool._cli`
(``lint-imports`` checks this; see the ``importlinter`` section of ``setup.cfg``).
"""
