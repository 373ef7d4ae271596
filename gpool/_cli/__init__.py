"""The command line: ``gpool serve``, the gunicorn application and the demo app.

Layer 3 of 3: builds on :mod:`gpool._serving` and :mod:`gpool._core`. ``gpool bench``
lives apart in :mod:`gpool._bench`, imported only when that command runs.
"""
