"""Streaming base64 inside JSON: decode a download as it arrives, encode an upload as it is sent.

Kanboard moves file contents as ONE base64 string inside a JSON-RPC envelope (``downloadTaskFile``
answers ``{"jsonrpc":"2.0","result":"<base64>","id":1}``; ``createTaskFile`` takes ``"blob"``). A
256 MiB file is a 358 MB JSON document, so neither side may be held in memory whole:

* :func:`find_result_string` scans the small head of a response for where the ``"result"`` string
  starts (a real tokenizer, so a ``"result"`` inside some other string does not fool it);
* :class:`JsonBase64Decoder` is fed the rest chunk by chunk, undoes JSON escapes (``\\/`` - some
  servers escape slashes, Kanboard does not - and ``\\n`` if a server wraps its base64), decodes
  whole 4-character quanta and keeps the remainder, and stops at the closing quote, keeping what
  follows (``,"id":1}``) so the caller can validate the envelope;
* :func:`encoded_length` / :func:`iter_base64` produce an upload body whose length is known in
  advance, so it is sent with ``Content-Length`` instead of chunked encoding (PHP's built-in server
  does not accept chunked request bodies).

Everything here is pure and synchronous (bytes in, bytes out) so it can be tested in isolation.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Callable, Iterator
from typing import BinaryIO

import pybase64

__all__ = [
    "RAW_CHUNK",
    "Base64FormatError",
    "JsonBase64Decoder",
    "NotStreamable",
    "decode_whole",
    "encoded_length",
    "find_result_string",
    "iter_base64",
    "skip_ws",
    "value_end",
]

#: Raw bytes per upload chunk: a multiple of 3, so each chunk encodes to base64 without padding.
RAW_CHUNK = 3 * 256 * 1024

_WS = b" \t\r\n"
_BACKSLASH = 0x5C
_QUOTE = 0x22
_SIMPLE_ESCAPES = {
    b'"': b'"',
    b"\\": b"\\",
    b"/": b"/",
    b"b": b"\b",
    b"f": b"\f",
    b"n": b"\n",
    b"r": b"\r",
    b"t": b"\t",
}
_ESCAPE_RE = re.compile(rb"\\(u[0-9a-fA-F]{4}|.|$)", re.DOTALL)


class Base64FormatError(ValueError):
    """The result string is not valid (JSON-escaped) base64."""


class NotStreamable(Exception):
    """The response is not ``{..., "result": "<string>", ...}``: parse it as a whole instead."""


# --------------------------------------------------------------------------------------------
# Response head scanning


def _skip_ws(buf: bytes, i: int) -> int:
    n = len(buf)
    while i < n and buf[i] in _WS:
        i += 1
    return i


def _string_end(buf: bytes, i: int) -> int:
    """Index just past the JSON string starting at ``buf[i] == '"'``, or -1 if incomplete."""
    j = i + 1
    while True:
        k = buf.find(b'"', j)
        if k < 0:
            return -1
        b = k
        while b > i + 1 and buf[b - 1] == _BACKSLASH:
            b -= 1
        if (k - b) % 2 == 0:
            return k + 1
        j = k + 1


def _value_end(buf: bytes, i: int) -> int:
    """Index just past the JSON value starting at ``buf[i]``, or -1 if incomplete."""
    c = buf[i]
    if c == _QUOTE:
        return _string_end(buf, i)
    n = len(buf)
    if c in b"{[":
        depth = 0
        j = i
        while j < n:
            c = buf[j]
            if c == _QUOTE:
                e = _string_end(buf, j)
                if e < 0:
                    return -1
                j = e
                continue
            if c in b"{[":
                depth += 1
            elif c in b"}]":
                depth -= 1
                if depth == 0:
                    return j + 1
            j += 1
        return -1
    j = i
    while j < n and buf[j] not in b",}] \t\r\n":
        j += 1
    return -1 if j == n else j


def skip_ws(buf: bytes, i: int) -> int:
    """Index of the first non-whitespace byte at or after ``i`` (``len(buf)`` if none)."""
    return _skip_ws(buf, i)


def value_end(buf: bytes, i: int) -> int:
    """Index just past the JSON value starting at ``buf[i]``, or -1 if it is incomplete."""
    return _value_end(buf, i)


def find_result_string(buf: bytes) -> int | None:
    """Where the top-level ``"result"`` string's content starts in ``buf`` (just past its quote).

    Returns None when more bytes are needed. Raises :class:`NotStreamable` when the document is
    not an object whose ``result`` member is a string (an error object, ``false``, an array, an
    HTML page...): the caller then reads the (small) response whole and parses it normally.
    """
    n = len(buf)
    i = _skip_ws(buf, 0)
    if i >= n:
        return None
    if buf[i] != ord("{"):
        raise NotStreamable("not a JSON object")
    i += 1
    while True:
        i = _skip_ws(buf, i)
        if i >= n:
            return None
        if buf[i] != _QUOTE:
            raise NotStreamable("no string result member")
        e = _string_end(buf, i)
        if e < 0:
            return None
        key = buf[i:e]
        i = _skip_ws(buf, e)
        if i >= n:
            return None
        if buf[i] != ord(":"):
            raise NotStreamable("malformed object")
        i = _skip_ws(buf, i + 1)
        if i >= n:
            return None
        if key == b'"result"':
            if buf[i] == _QUOTE:
                return i + 1
            raise NotStreamable("result is not a string")
        e = _value_end(buf, i)
        if e < 0:
            return None
        i = _skip_ws(buf, e)
        if i >= n:
            return None
        if buf[i] != ord(","):
            raise NotStreamable("no result member")
        i += 1


# --------------------------------------------------------------------------------------------
# Decoding the result string


def _unescaped_quote(data: bytes) -> int:
    """Index of the first ``"`` in ``data`` that is not escaped, or -1."""
    i = data.find(b'"')
    while i >= 0:
        j = i
        while j > 0 and data[j - 1] == _BACKSLASH:
            j -= 1
        if (i - j) % 2 == 0:
            return i
        i = data.find(b'"', i + 1)
    return -1


def _incomplete_escape(seg: bytes) -> int | None:
    """Start of an escape sequence cut off at the end of ``seg`` (to be completed by more data)."""
    n = len(seg)
    k = n
    while k > 0 and seg[k - 1] == _BACKSLASH:
        k -= 1
    if (n - k) % 2 == 1:
        return n - 1
    p = seg.rfind(b"\\", max(0, n - 5))
    if p >= 0 and n - p < 6 and seg[p + 1 : p + 2] == b"u":
        q = p
        while q > 0 and seg[q - 1] == _BACKSLASH:
            q -= 1
        if (p - q) % 2 == 0:
            return p
    return None


def _replace_escape(m: re.Match[bytes]) -> bytes:
    esc = m.group(1)
    if len(esc) == 5:
        return chr(int(esc[1:], 16)).encode("utf-8", "surrogatepass")
    try:
        return _SIMPLE_ESCAPES[esc]
    except KeyError:
        raise Base64FormatError(f"invalid JSON escape {m.group(0)!r}") from None


def _unescape(seg: bytes) -> bytes:
    if b"\\" not in seg:
        return seg
    if b"\\\\" not in seg:
        # The common case (a server escaping every '/'): one C-speed replace.
        seg2 = seg.replace(b"\\/", b"/")
        if b"\\" not in seg2:
            return seg2
    return _ESCAPE_RE.sub(_replace_escape, seg)


class JsonBase64Decoder:
    """Incrementally decode the content of a JSON string holding base64.

    Feed it everything after the string's opening quote; :meth:`feed` returns the decoded bytes
    available so far. Once the closing quote has been seen, :attr:`done` is true and :attr:`tail`
    collects the bytes after it (the rest of the envelope); call :meth:`finish` for the last bytes.
    Memory is bounded by the size of one fed chunk.
    """

    #: The rest of the envelope after the string is a few bytes; anything huge is not Kanboard.
    MAX_TAIL = 64 * 1024

    def __init__(self) -> None:
        self._pending = b""  # an escape sequence cut by a chunk boundary
        self._quantum = b""  # base64 characters not yet forming a multiple of 4
        self.done = False
        self.tail = b""
        self.base64_chars = 0

    def feed(self, data: bytes) -> bytes:
        if self.done:
            self.tail += data
            if len(self.tail) > self.MAX_TAIL:
                raise Base64FormatError("too much data after the result string")
            return b""
        if self._pending:
            data = self._pending + data
            self._pending = b""
        end = _unescaped_quote(data)
        if end >= 0:
            seg = data[:end]
            self.done = True
            self.tail = data[end + 1 :]
        else:
            seg = data
            cut = _incomplete_escape(seg)
            if cut is not None:
                self._pending = seg[cut:]
                seg = seg[:cut]
        seg = _unescape(seg)
        if b"\n" in seg or b" " in seg or b"\r" in seg or b"\t" in seg:
            seg = seg.translate(None, _WS)  # rare: a copy of the whole chunk otherwise
        self.base64_chars += len(seg)
        if self._quantum:
            seg = self._quantum + seg
        usable = len(seg) - len(seg) % 4
        self._quantum = seg[usable:]
        if not usable:
            return b""
        return _decode(seg[:usable] if usable != len(seg) else seg)

    def finish(self) -> bytes:
        """Decode the final partial quantum (tolerating missing padding) once :attr:`done`."""
        if not self.done:
            raise Base64FormatError("the result string is not terminated")
        rest = self._quantum
        self._quantum = b""
        if not rest:
            return b""
        if len(rest) == 1:
            raise Base64FormatError("truncated base64 data")
        return _decode(rest + b"=" * (-len(rest) % 4))


def _decode(data: bytes) -> bytes:
    try:
        # pybase64 (SIMD): 20x CPython's binascii, which made decoding the largest CPU cost
        # of a download. validate=True refuses anything but the alphabet, as strict mode did.
        return pybase64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise Base64FormatError(f"invalid base64 data: {exc}") from None


def decode_whole(text: str) -> bytes:
    """Decode a base64 result that was parsed as a whole (the non-streaming path)."""
    try:
        raw = text.encode("ascii").translate(None, _WS)
    except UnicodeEncodeError:
        raise Base64FormatError("non-ASCII character in base64 data") from None
    if len(raw) % 4 == 1:
        raise Base64FormatError("truncated base64 data")
    return _decode(raw + b"=" * (-len(raw) % 4)) if raw else b""


# --------------------------------------------------------------------------------------------
# Encoding an upload


def encoded_length(size: int) -> int:
    """Length of the padded base64 encoding of ``size`` bytes: 4 * ceil(size / 3)."""
    return 4 * ((size + 2) // 3)


def read_exactly(source: BinaryIO, n: int) -> bytes:
    """Read ``n`` bytes from ``source`` (looping over short reads); fewer only at EOF."""
    first = source.read(n)
    if first is None:
        first = b""
    if len(first) == n or not first:
        return bytes(first)
    parts = [first]
    got = len(first)
    while got < n:
        more = source.read(n - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def iter_base64(
    source: BinaryIO, size: int, chunk: int = RAW_CHUNK
) -> Iterator[Callable[[], bytes]]:
    """Yield thunks that each read the next chunk of ``source`` and return it base64-encoded.

    Thunks (rather than bytes) so the caller can run the blocking read + encode in a worker
    thread. Each reads a multiple of 3 bytes (except the last), so the pieces concatenate into one
    valid base64 string. A thunk raises EOFError if ``source`` ends before ``size`` bytes.
    """
    if chunk % 3:
        raise ValueError("chunk must be a multiple of 3")
    remaining = size
    while remaining > 0:
        want = min(chunk, remaining)

        def step(want: int = want, before: int = size - remaining) -> bytes:
            data = read_exactly(source, want)
            if len(data) != want:
                raise EOFError(f"source ended after {before + len(data)} of {size} bytes")
            return pybase64.b64encode(data)

        yield step
        remaining -= want
