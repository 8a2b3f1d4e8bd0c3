"""Rules of the JSON-RPC wire that hold for every request, whatever the connection.

Response size caps, JSON parsing, request-id comparison, which procedures and failures may be
retried, and the redactor that keeps the secret out of messages. They are plain functions and
constants so the transport (calls and batches) and :mod:`kbfs.client.streams` (downloads and
uploads) apply exactly the same rules.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from kbfs.client.errors import KanboardError, ServerError, TransportError


def _larger_socket_reads(size: int = 1 << 20) -> None:
    """Read responses from the socket in 1 MiB steps instead of httpcore's 64 KiB: a 64 MiB
    download is ~1,400 reads on the event loop otherwise (measured: cold cat 1215 -> 975 ms).
    httpcore has no public setting for it; if the attribute ever goes away this is a no-op."""
    try:
        from httpcore._async import http11
    except ImportError:  # pragma: no cover
        return
    conn = getattr(http11, "AsyncHTTP11Connection", None)
    if conn is not None and getattr(conn, "READ_NUM_BYTES", size) < size:
        conn.READ_NUM_BYTES = size


_larger_socket_reads()

Params = dict[str, Any] | list[Any] | None

#: Largest ordinary (non-download) response body accepted; a listing of thousands of files is
#: a few MB, so anything near this is not Kanboard talking.
MAX_BODY = 64 * 1024 * 1024

JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


def loads_json(body: bytes) -> Any:
    """Parse a response body: orjson (a 10,000-file listing in 10 ms instead of the stdlib's 33),
    and the stdlib where orjson refuses what the stdlib accepts (a lone surrogate escape such
    as ``"\\ud800"``, a number beyond a double's range), so the answers stay the same."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as refused:
        try:
            return json.loads(body)
        except RecursionError:
            # A hostile reply ("[" x 100,000): a parse failure like any other, never an
            # exception that callers expecting ValueError would let through.
            raise ValueError("the response nests too deeply") from refused


def is_idempotent(method: str) -> bool:
    """Whether re-sending ``method`` is harmless: Kanboard's readers are all get*/download*."""
    return method.startswith(("get", "download"))


def id_key(value: Any) -> str:
    """A request id as compared with the answer's: as text, so ``1`` and ``"1"`` match."""
    return str(value)


#: Slowest average rate a transfer's time budget allows for (bytes/s): a call moving N bytes
#: may take ``timeout + N / MIN_TRANSFER_RATE`` seconds in all.
MIN_TRANSFER_RATE = 64 * 1024
#: How long before a caller's own deadline a call gives up by itself: its failure is then an
#: ordinary RequestTimeout the caller handles (serving a cached listing, checking whether a
#: removal happened), not a cancellation that skips all of that.
CALLER_MARGIN = 0.25


def is_retryable(exc: KanboardError) -> bool:
    """Whether a failure may go away on its own: connection trouble, 5xx, 408 and 429."""
    if isinstance(exc, TransportError):
        return True
    if isinstance(exc, ServerError):
        code = exc.status_code
        return code is None or code >= 500 or code in (408, 429)
    return False


class Redactor:
    """Removes the secret from any text that could reach a message (defence in depth)."""

    def __init__(self, secret: str) -> None:
        self._secret = secret

    def __call__(self, text: str) -> str:
        if self._secret and self._secret in text:
            text = text.replace(self._secret, "***")
        return text
