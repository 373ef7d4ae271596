"""gpool's header parser for pywsgi against the one gevent uses (http.client + email).

The fast path must give the very message ``email`` would, attribute for attribute, for
every header block; blocks it cannot vouch for take the standard way. Tested on
hand-picked blocks and on generated ones, biased towards the characters where the two
could part: colons, blanks, CR/LF, splitlines' other line breaks, bytes above ASCII.
"""

from __future__ import annotations

import io
from http import client
from typing import Any

import pytest
from gevent import pywsgi
from hypothesis import given, settings
from hypothesis import strategies as st

from gpool._serving import headers as _headers
from gpool._serving.headers import read_request_headers


def gevents(fp: io.BytesIO) -> Any:
    """What gevent's own handler parses the header block at *fp* into."""
    handler = pywsgi.WSGIHandler.__new__(pywsgi.WSGIHandler)
    return handler.MessageClass(fp, 0)


def state(message: Any) -> dict[str, Any]:
    # Defects are exception instances, equal only by identity: compare their kinds.
    seen = dict(vars(message))
    seen["defects"] = [type(defect) for defect in seen["defects"]]
    seen["type"] = type(message)
    if isinstance(seen["_payload"], list):  # parts email made of a multipart/message type
        seen["_payload"] = [state(part) for part in seen["_payload"]]
    return seen


def assert_same(block: bytes, rest: bytes = b"") -> None:
    """Both parsers agree on *block*, and leave the same bytes unread."""
    theirs_fp, ours_fp = io.BytesIO(block + rest), io.BytesIO(block + rest)
    theirs, ours = gevents(theirs_fp), read_request_headers(ours_fp)
    assert state(ours) == state(theirs)
    assert ours_fp.read() == theirs_fp.read()


PLAIN = b"Host: 127.0.0.1:8080\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n"


def test_plain_block_takes_the_fast_path_and_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_email(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("email parser used for a plain block")

    assert_same(PLAIN, b"GET /next HTTP/1.1\r\n")
    monkeypatch.setattr(_headers.email.parser, "Parser", no_email)
    message = read_request_headers(io.BytesIO(PLAIN))
    assert message.get("user-agent") == "wrk"
    assert message.status == ""


@pytest.mark.parametrize(
    "block",
    [
        b"\r\n",  # no headers at all (HTTP/1.0)
        b"Host: a\r\nX-Empty:\r\nX-Blank:   \r\n\r\n",
        b"Host: a\r\nX-Tabs:\t value\twith tabs \t\r\n\r\n",  # leading blanks go, trailing stay
        b"Host: a\r\nX-Dup: 1\r\nx-dup: 2\r\n\r\n",
        b"Host: a\r\nX-Colons: a:b::c\r\n\r\n",
        b"Host: a\r\nX_Underscore: yes\r\n\r\n",
        b"Host: a\r\nX-Folded: first\r\n  second\r\n\r\n",  # obsolete line folding
        b"Host: a\r\nX-Latin: caf\xe9\r\n\r\n",
        b"Host: a\r\nX-Utf8: \xe2\x82\xac\r\n\r\n",
        b"Host: a\r\nX-Nel: a\x85b\r\n\r\n",  # str.splitlines breaks at U+0085
        b"Host: a\r\nX-Ff: a\x0cb\r\n\r\n",
        b"Host: a\r\nX-Cr: a\rb\r\n\r\n",
        b"Host: a\r\nX-Del: a\x7fb\r\n\r\n",
        b"Host: a\nAccept: */*\n\n",  # bare LF
        b"Host: a\r\nNoColonHere\r\n\r\n",
        b"Host: a\r\n: no name\r\n\r\n",
        b"Host: a\r\nBad Name: x\r\n\r\n",
        b"From nobody\r\nHost: a\r\n\r\n",  # what email takes for an mbox separator
        b"Host: a\r\nContent-Type: multipart/form-data; boundary=xyz\r\n\r\n",
        b"Host: a\r\nContent-Type: message/rfc822\r\n\r\n",
        b"Host: a\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 3\r\n\r\n",
        b"Host: a\r\n",  # the stream ends inside the block
        b"",
    ],
)
def test_odd_blocks_match(block: bytes) -> None:
    assert_same(block, b"body")


def test_a_line_too_long_is_flagged_like_gevent() -> None:
    block = b"Host: a\r\nX-Long: " + b"x" * client._MAXLINE + b"\r\n\r\n"
    ours = read_request_headers(io.BytesIO(block))
    assert ours.status == "Line too long"
    assert state(ours) == state(gevents(io.BytesIO(block)))


def test_too_many_headers_raise_like_gevent() -> None:
    block = b"".join(b"X-%d: v\r\n" % n for n in range(client._MAXHEADERS + 1)) + b"\r\n"
    with pytest.raises(client.HTTPException, match="got more than 100 headers") as theirs:
        gevents(io.BytesIO(block))
    with pytest.raises(client.HTTPException) as ours:
        read_request_headers(io.BytesIO(block))
    assert str(ours.value) == str(theirs.value)


# Bytes where a header line could be read two ways, and plain ones to make lines.
_TRICKY = b":; \t\r\n\x0b\x0c\x1c\x1d\x1e\x7f\x85\xa0\xe9\xff_-"
_byte = st.one_of(st.sampled_from(list(_TRICKY)), st.integers(0x21, 0x7E), st.integers(0, 255))
_text = st.lists(_byte, max_size=12).map(bytes)
_name = st.one_of(st.sampled_from([b"Host", b"Content-Type", b"content-length", b"X-A", b"From"]), _text)
_value = st.one_of(
    st.sampled_from([b"", b"multipart/mixed", b"Message/partial", b"text/html", b"  a  "]),
    _text,
)
_ending = st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r"])
_line = st.one_of(
    st.builds(
        lambda n, sep, v, end: n + sep + v + end, _name, st.sampled_from([b": ", b":", b":\t", b" : "]), _value, _ending
    ),
    st.builds(lambda lead, v, end: lead + v + end, st.sampled_from([b" ", b"\t"]), _value, _ending),  # folded
    st.builds(lambda t, end: t + end, _text, _ending),
)
_block = st.builds(
    lambda lines, end: b"".join(lines) + end,
    st.lists(_line, max_size=6),
    st.sampled_from([b"\r\n", b"\r\n", b"\n", b""]),
)


@settings(max_examples=600, deadline=None)
@given(_block)
def test_generated_blocks_match(block: bytes) -> None:
    assert_same(block, b"GET / HTTP/1.1\r\n")
