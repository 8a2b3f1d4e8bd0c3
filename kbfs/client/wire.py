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

#: HTTP statuses Kanboard's jsonrpc.php never answers a POST with (no such page, method not
#: allowed, method not implemented): some other server is at the URL, and retrying is useless.
NOT_AN_ENDPOINT = frozenset({404, 405, 501})
NOT_KANBOARD = "this is not a Kanboard JSON-RPC endpoint"

PHP_MEMORY = "memory_limit"

#: Uploads at least this large that fail with a server error get the memory_limit hint. Kanboard
#: holds about 3x a file in memory while storing it (the JSON body, the decoded bytes, PHP's
#: copies), so with PHP's default memory_limit=128M files above ~40 MiB fail with HTTP 500 after
#: the whole body was sent; a smaller file failing is more likely something else.
LARGE_UPLOAD = 8 << 20


def too_large_hint(exc: ServerError, size: int) -> ServerError:
    """``exc`` (an upload's server error), with what is likely wrong and what can be changed
    when the file was large or PHP said it ran out of memory; else ``exc`` itself."""
    code = exc.status_code
    server_failed = code is None or code >= 500
    if not server_failed or code in NOT_AN_ENDPOINT:
        return exc
    if size < LARGE_UPLOAD and PHP_MEMORY not in exc.message:
        return exc
    mib = size / (1 << 20)
    hint = (
        f"{exc.message} after the whole {mib:.1f} MiB file was sent: most likely the server's"
        f" PHP memory_limit is too small for it (Kanboard needs about 3x a file's size, here"
        f" ~{3 * mib:.0f} MiB). The Kanboard administrator can raise memory_limit in php.ini"
        " (post_max_size and upload_max_filesize limit only the web UI's uploads);"
        " -o max_file_size= refuses such files at the write"
    )
    err = ServerError(hint, method=exc.method, status_code=code)
    err.retry_after = exc.retry_after
    return err


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
        return code not in NOT_AN_ENDPOINT and (code is None or code >= 500 or code in (408, 429))
    return False


class Redactor:
    """Removes the secret from any text that could reach a message (defence in depth)."""

    def __init__(self, secret: str) -> None:
        self._secrets = [secret] if secret else []

    def add(self, secret: str) -> None:
        """Also remove ``secret`` (a re-read token); the old ones stay removed too."""
        if secret and secret not in self._secrets:
            self._secrets.append(secret)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return text
