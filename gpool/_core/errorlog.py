"""Where a failed task's exception goes.

Like gevent's own pool, failures are reported to the hub's ``handle_error``, so the
usual gevent tooling (and gevent's tests) see them. Network errors that only mean the
client went away are noise on a busy server: they are logged at DEBUG instead, as
fasthttp does, unless the pool was built with ``log_all_errors=True``.
"""

from __future__ import annotations

import errno
import logging
import socket
import ssl
from types import TracebackType
from typing import Any

__all__ = ["is_benign", "logger", "report"]

logger = logging.getLogger("gpool")

# Classified by type and errno, never by message text.
_BENIGN_TYPES = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, socket.timeout, TimeoutError)
_BENIGN_ERRNOS = frozenset({errno.EPIPE, errno.ECONNRESET, errno.ECONNABORTED, errno.ETIMEDOUT})


# A TLS handshake the peer broke off: it hung up, spoke something other than TLS on
# the TLS port, or refused the certificate or protocol version (its alert). Named by
# OpenSSL's reason codes (SSLError.reason), not by message text. Certificate
# verification failures (this process verifying a peer) are not among them.
_BENIGN_SSL_TYPES = (ssl.SSLEOFError, ssl.SSLZeroReturnError)
_BENIGN_SSL_REASONS = frozenset(
    {
        "UNEXPECTED_EOF_WHILE_READING",
        "HTTP_REQUEST",
        "HTTPS_PROXY_REQUEST",
        "WRONG_VERSION_NUMBER",
        "UNKNOWN_PROTOCOL",
        "UNSUPPORTED_PROTOCOL",
        "VERSION_TOO_LOW",
    }
)
_PEER_ALERT_PREFIXES = ("TLSV1_ALERT_", "TLSV13_ALERT_", "SSLV3_ALERT_")


def is_benign(exc: BaseException) -> bool:
    """True for errors that mean the peer hung up, went quiet or broke off a TLS
    handshake, not a bug."""
    if isinstance(exc, _BENIGN_TYPES + _BENIGN_SSL_TYPES):
        return True
    if isinstance(exc, ssl.SSLError) and not isinstance(exc, ssl.SSLCertVerificationError):
        reason = getattr(exc, "reason", None) or ""
        return reason in _BENIGN_SSL_REASONS or reason.startswith(_PEER_ALERT_PREFIXES)
    return isinstance(exc, OSError) and exc.errno in _BENIGN_ERRNOS


def report(hub: Any, context: object, exc: BaseException, log_all_errors: bool) -> None:
    """Send *exc*, raised by a task running in *context*, where it belongs."""
    tb: TracebackType | None = exc.__traceback__
    if not log_all_errors and is_benign(exc):
        logger.debug("task in %r ended with a network error", context, exc_info=(type(exc), exc, tb))
        return
    hub.handle_error(context, type(exc), exc, tb)
