"""Request headers for pywsgi, parsed without the ``email`` package when that is safe.

gevent's pywsgi reads a request's header block with ``http.client.parse_headers``,
which hands the block to ``email.parser``: 18 µs for a three-header request on the
Intel VM, the largest single cost of a pywsgi request after the app. Nearly every
request's header block is plain: ``Name: value`` lines of printable ASCII ending in
CRLF. For such a block :func:`read_request_headers` builds the very object ``email.parser``
would (gevent's ``OldMessage``, the same ``(name, value)`` list, no defects) in 3 µs;
any other block (folded lines, bare LF, bytes outside ASCII, a line ``email`` would
take for a defect, a ``multipart``/``message`` content type, which ``email`` treats
specially) goes the standard way. ``tests/serving/test_headers.py`` checks the two agree on
generated blocks.
"""

from __future__ import annotations

import email.parser
import re
from http import client
from typing import Any, BinaryIO

from gevent import pywsgi

__all__ = ["read_request_headers"]

# What pywsgi's handler parses into; pywsgi defines it on every Python gevent supports.
_Message: Any = pywsgi.OldMessage

# A header line email's compat32 policy splits into (name, value) with nothing else to
# do: a name of the characters email allows before the colon (printable ASCII but the
# colon), then the value after its leading blanks, printable ASCII or tabs, then CRLF.
# Anything outside ASCII, a lone CR or LF, or a control character email (or
# str.splitlines) would split the line at, makes the block take the standard way.
_PLAIN_LINE = re.compile(rb"([!-9;-~]+):[ \t]*([\t -~]*)\r\n")

_SPECIAL_TYPES = ("multipart", "message")


def read_request_headers(fp: BinaryIO) -> Any:
    """Read a request's header block from *fp* into gevent's ``OldMessage``: what
    ``pywsgi.WSGIHandler.MessageClass(fp)`` returns, and with the same errors. A line
    over http.client's limit gives an empty message with ``status`` set, which pywsgi
    answers with 400."""
    try:
        # http.client's own reader, with its limits and errors, as in parse_headers().
        lines: list[bytes] = client._read_headers(fp)  # type: ignore[attr-defined]
    except client.LineTooLong:
        message = _Message()
        message.status = "Line too long"
        return message
    message = _parse_plain(lines)
    if message is None:
        text = b"".join(lines).decode("iso-8859-1")
        message = email.parser.Parser(_class=_Message).parsestr(text)
    return message


def _parse_plain(lines: list[bytes]) -> Any:
    """The message for a plain header block, None for any other."""
    if lines[-1] != b"\r\n":
        return None
    headers = []
    match = _PLAIN_LINE.fullmatch
    for line in lines[:-1]:
        found = match(line)
        if found is None:
            return None
        name = found[1].decode("ascii")
        value = found[2].decode("ascii")
        if name.lower() == "content-type" and any(kind in value.lower() for kind in _SPECIAL_TYPES):
            return None
        headers.append((name, value))
    message = _Message()
    message._headers = headers
    message._payload = ""  # what email leaves after a header block with no body
    return message
