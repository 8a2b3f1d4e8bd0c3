"""What a Kanboard answer means: HTTP statuses, JSON bodies and JSON-RPC envelopes to results
or to the errors of :mod:`kbfs.client.errors`.

Every request kind (a call, a batch, a streamed download, an upload) reads its answer with the
same rules, so they live here apart from the sending (:mod:`kbfs.client.transport`). Every
server text that can reach a message passes the redactor first: a proxy or a PHP error page
may echo the credentials.
"""

from __future__ import annotations

import re
from typing import Any

import httpx

from kbfs.client.endpoint import tls_failure
from kbfs.client.errors import (
    AuthenticationError,
    KanboardError,
    PermissionDenied,
    ProtocolError,
    RequestTimeout,
    RpcError,
    ServerError,
    TransportError,
)
from kbfs.client.wire import NOT_AN_ENDPOINT, NOT_KANBOARD, PHP_MEMORY, Redactor, id_key, loads_json


class Answers:
    """Reads answers for one transport; ``redact`` removes its secrets from server text."""

    def __init__(self, redact: Redactor) -> None:
        self._redact = redact

    def httpx_error(self, exc: httpx.HTTPError, label: str) -> KanboardError:
        """The most specific client error for an httpx failure (cf. map_httpcore_exceptions)."""
        detail = self._redact(str(exc) or type(exc).__name__)
        tls = tls_failure(exc)
        if tls is not None:
            return TransportError(tls, method=label)
        if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
            return RequestTimeout(f"timed out connecting: {detail}", method=label)
        if isinstance(exc, httpx.TimeoutException):
            return RequestTimeout(
                f"timed out waiting for the server: {detail}", method=label, request_sent=True
            )
        if isinstance(exc, httpx.ConnectError | httpx.UnsupportedProtocol | httpx.ProxyError):
            return TransportError(f"cannot connect: {detail}", method=label)
        if isinstance(exc, httpx.DecodingError):
            return ServerError(f"undecodable response: {detail}", method=label)
        return TransportError(f"connection failed: {detail}", method=label, request_sent=True)

    def check_status(self, label: str, response: httpx.Response, body: bytes) -> None:
        """Raise the error a non-2xx status means (a 2xx passes)."""
        status = response.status_code
        if status == 401:
            raise AuthenticationError("HTTP 401: credentials refused", method=label)
        if status == 403:
            raise PermissionDenied("HTTP 403: forbidden", method=label)
        if 200 <= status < 300:
            return
        if 300 <= status < 400:
            where = self._redact(response.headers.get("location", "?"))[:200]
            raise ServerError(
                f"HTTP {status} redirect to {where}; use that URL", method=label, status_code=status
            )
        reason = response.reason_phrase or ""
        text = f"HTTP {status} {reason}".rstrip()
        if status in NOT_AN_ENDPOINT:
            # Kanboard's jsonrpc.php takes any POST; these come from something else at the URL.
            text = f"{NOT_KANBOARD} ({text})"
        err = ServerError(text, method=label, status_code=status)
        retry_after = response.headers.get("retry-after", "")
        err.retry_after = float(retry_after) if retry_after.isdigit() else None
        raise err

    def parse_json(self, label: str, body: bytes) -> Any:
        """The JSON of ``body``; what else it is (an HTML page, PHP's error) in the error."""
        if not body.strip():
            raise ServerError("empty response body", method=label)
        try:
            return loads_json(body)
        except ValueError:
            head = body.lstrip()[:200].decode("utf-8", "replace")
            if "Allowed memory size" in head:  # PHP's fatal error with display_errors=On
                raise ServerError(f"PHP ran out of memory ({PHP_MEMORY})", method=label) from None
            if head.startswith("<") or "<b>" in head or "<html" in head.lower():
                m = re.search(r"<title>(.*?)</title>", head, re.I | re.S)
                hint = f" ({self._redact(m.group(1).strip())[:80]})" if m else ""
                text = f"an HTML page instead of JSON{hint}"
                if re.match(r"<(!doctype|html)", head, re.I):
                    # A whole document: a web site or a login page. A PHP error in Kanboard
                    # is a fragment (``<br /><b>Fatal error</b>...``) and keeps the plain text.
                    text = f"{NOT_KANBOARD} ({text})"
                raise ServerError(text, method=label) from None
            raise ServerError("the response is not JSON", method=label) from None

    def rpc_error(self, label: str, err: Any) -> KanboardError:
        """The client error for a JSON-RPC ``error`` member."""
        if not isinstance(err, dict):
            return ProtocolError("malformed JSON-RPC error member", method=label)
        code_raw = err.get("code")
        try:
            code = int(code_raw)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            code = 0
        message = self._redact(str(err.get("message", "")))[:300]
        if code == 401:
            return AuthenticationError("credentials refused", method=label)
        if code == 403:
            return PermissionDenied("forbidden", method=label)
        data = err.get("data")
        if isinstance(data, str):
            data = self._redact(data)[:300]
        return RpcError(code, message, data, method=label)

    def not_a_batch(self, label: str, parsed: Any) -> KanboardError:
        """The error for a batch answered with something other than an array: Kanboard answers
        a whole batch with one error object on any 401/403."""
        if isinstance(parsed, dict):
            if parsed.get("error") is not None:
                return self.rpc_error(label, parsed["error"])
            return ProtocolError("a batch was answered with a single object", method=label)
        return ProtocolError("a batch was not answered with an array", method=label)

    def unwrap(self, label: str, envelope: Any, rid: int) -> Any:
        """The ``result`` of one JSON-RPC response object, or the error it carries, raised."""
        if not isinstance(envelope, dict):
            raise ProtocolError("the response is not a JSON-RPC object", method=label)
        if "error" in envelope and envelope["error"] is not None:
            raise self.rpc_error(label, envelope["error"])
        if "result" not in envelope:
            raise ProtocolError("the response has neither result nor error", method=label)
        if "id" not in envelope or id_key(envelope["id"]) != id_key(rid):
            raise ProtocolError(
                f"response id {envelope.get('id')!r:.20} does not match request id {rid}",
                method=label,
            )
        return envelope["result"]


async def read_capped(response: httpx.Response, label: str, limit: int) -> bytes:
    """The body of ``response``, failing as soon as it passes ``limit`` bytes."""
    parts: list[bytes] = []
    total = 0
    async for chunk in response.aiter_bytes():
        total += len(chunk)
        if total > limit:
            raise ServerError(f"response larger than {limit} bytes", method=label)
        parts.append(chunk)
    return b"".join(parts)
