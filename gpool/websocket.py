"""WebSockets on gpool's pywsgi server, with gevent-websocket.

One handler class does it::

    from gpool import WorkerPool
    from gpool.websocket import WebSocketHandler
    from gpool.wsgi import WSGIServer

    WSGIServer(("127.0.0.1", 8000), app, spawn=WorkerPool(1000), handler_class=WebSocketHandler)

The app finds the socket in ``environ["wsgi.websocket"]`` as with gevent-websocket's
own handler. Under gunicorn, ``-k gpool.workers.GPoolWebSocketWorker`` serves with it.

What the class adds to gevent-websocket's handler:

- plain HTTP requests are served as by :class:`gpool.wsgi.WSGIHandler`: idle
  keep-alive connections are parked, reclaimed for waiting clients and drained, and
  each request is isolated from the one before;
- once a connection is upgraded it leaves the keep-alive bookkeeping for good (it is
  never parked, hung up for a new client or asked to close by a drain) and, on a
  :class:`~gpool.WorkerPool`, its task detaches (:func:`gpool.detach`): the socket no
  longer holds a pool slot. Detached tasks are bounded by the pool's
  ``max_detached``; past it the WebSocket is still served, holding its slot. A drain
  leaves it open until its timeout, then kills it like any detached task;
- access-log lines go to the server's ``log`` (pywsgi's format), WebSockets included.

Needs ``pip install 'gpool[websocket]'``.
"""

from ._serving.websocket import WebSocketHandler

__all__ = ["WebSocketHandler"]
