"""The JSON-RPC dispatcher: Kanboard's ``jsonrpc.php`` minus PHP (kanboard-api §1, §2, §4).

:meth:`Dispatcher.handle` takes the raw request body and ``Authorization`` header and returns the
complete HTTP answer.  It has no sockets, so tests can drive it in-process.  The processing order
copies Kanboard's JsonRPC library because clients can observe it:

1. parse (-32700), batch split, per-item format validation (-32600, even for notifications);
2. per call: fault injection, authentication (401 aborts the whole request, even inside a batch);
3. method lookup (-32601), app-level authorization (403), argument binding (-32602);
4. the procedure, with its own project-level 403, ``false``/``null``/``""`` results and PHP errors
   (HTTP 500 with an empty body).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import re
import sys
import time
import traceback
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from kbfs.devserver import file_procedures, project_procedures
from kbfs.devserver.faults import FaultPlan, Stats
from kbfs.devserver.file_procedures import Content
from kbfs.devserver.php import PhpTypeError
from kbfs.devserver.registry import Call, Denied, RpcError
from kbfs.devserver.store import Store

__all__ = [
    "DROP",
    "Dispatcher",
    "Reply",
    "StreamedAnswer",
    "TrickledAnswer",
    "dumps",
    "procedure_names",
]

#: ``Reply.status`` value asking the HTTP layer to close the connection without answering.
DROP = 0

JSON_HEADERS = {"Content-Type": "application/json"}
HTML_FATAL = (
    b"<br />\n<b>Fatal error</b>:  Allowed memory size of 134217728 bytes exhausted (tried to "
    b"allocate 89481216 bytes) in <b>libs/jsonrpc/src/JsonRPC/Server.php</b> on line "
    b"<b>143</b><br />\n"
)
GARBAGE = b'<?php // not JSON \x00\xff{"jsonrpc": 2.0, result: [oops'
MALFORMED_UTF8 = "Malformed UTF-8 characters, possibly incorrectly encoded"


class StreamedAnswer:
    """The body of a download answer, sent piece by piece.

    Encoding a 256 MiB file whole, then wrapping it in the JSON envelope, held the GIL for the
    whole file and made three copies of 341 MiB: one download kept every other request of this
    one-process server waiting. In pieces, sends (which release the GIL) interleave.
    """

    def __init__(self, prefix: bytes, content: Content, suffix: bytes) -> None:
        self.prefix, self.content, self.suffix = prefix, content, suffix

    def __len__(self) -> int:
        return len(self.prefix) + self.content.encoded_length() + len(self.suffix)

    def pieces(self) -> Generator[bytes, None, None]:
        yield self.prefix
        yield from self.content.encoded()
        yield self.suffix

    def __bytes__(self) -> bytes:
        return b"".join(self.pieces())


class TrickledAnswer:
    """A body to send one byte every ``every`` seconds (the ``slow`` fault): each read of the
    client gets a byte in time, so no read timeout fires, however long the whole takes."""

    def __init__(self, body: bytes | StreamedAnswer, every: float) -> None:
        self.body, self.every = body, every

    def __len__(self) -> int:
        return len(self.body)

    def __bytes__(self) -> bytes:
        return bytes(self.body)


class Reply(NamedTuple):
    """A complete HTTP answer; ``status == DROP`` means: close the connection, send nothing."""

    status: int
    headers: dict[str, str]
    body: bytes | StreamedAnswer | TrickledAnswer


class _HttpFault(Exception):
    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


class _ParseError(Exception):
    pass


def dumps(obj: Any) -> bytes:
    """``json_encode($x, JSON_UNESCAPED_SLASHES|JSON_UNESCAPED_UNICODE)``.

    Raises UnicodeEncodeError for strings that are not valid UTF-8 (names cut mid-character).
    """
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    if "\u2028" in text or "\u2029" in text:  # PHP escapes these even with UNESCAPED_UNICODE
        text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return text.encode("utf-8")


def _error_obj(code: int, message: str, ident: Any = None, data: Any = None) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    return {"jsonrpc": "2.0", "error": err, "id": ident}


_INVALID_REQUEST = _error_obj(-32600, "Invalid Request")
_PARSE_ERROR = _error_obj(-32700, "Parse error")
_LOCAL_BODIES = {
    401: dumps(_error_obj(401, "Unauthorized")),
    403: dumps(_error_obj(403, "Forbidden")),
}


def _has_surrogate(obj: Any) -> bool:
    if isinstance(obj, str):
        return any("\ud800" <= ch <= "\udfff" for ch in obj)
    if isinstance(obj, list):
        return any(_has_surrogate(x) for x in obj)
    if isinstance(obj, dict):
        return any(_has_surrogate(k) or _has_surrogate(v) for k, v in obj.items())
    return False


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _reject_constant(name: str) -> Any:
    raise _ParseError(name)


def parse_body(body: bytes) -> Any:
    """PHP ``json_decode($body, true)``: strict UTF-8, no NaN, no unpaired surrogates."""
    try:
        text = body.decode("utf-8")
        payload = json.loads(text, parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _ParseError(str(exc)) from exc
    if _SURROGATE_ESCAPE.search(body) and _has_surrogate(payload):
        # json_decode fails on unpaired surrogates; paired ones arrive here combined already.
        raise _ParseError("unpaired surrogate")
    return payload


def parse_basic_auth(header: str | None) -> tuple[str | None, str | None]:
    """PHP_AUTH_USER / PHP_AUTH_PW from an ``Authorization: Basic`` header."""
    if not header:
        return None, None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None, None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8", "surrogateescape")
    except (binascii.Error, ValueError):
        return None, None
    user, sep, password = decoded.partition(":")
    if not sep:
        return None, None
    return user, password


_PROCEDURES = {**project_procedures.PROCEDURES, **file_procedures.PROCEDURES}


@dataclass
class _Request:
    username: str | None
    password: str | None
    truncate: bool = False
    trickle: float = 0.0
    callers: dict[str, Call] = field(default_factory=dict)


def _result_bytes(result: Any, ident: Any) -> bytes | StreamedAnswer:
    if isinstance(result, Content):
        return StreamedAnswer(
            b'{"jsonrpc":"2.0","result":"', result, b'","id":' + dumps(ident) + b"}"
        )
    try:
        return dumps({"jsonrpc": "2.0", "result": result, "id": ident})
    except UnicodeEncodeError:
        return dumps(_error_obj(-32603, "Internal error", ident, MALFORMED_UTF8))


class Dispatcher:
    """Kanboard's JSON-RPC endpoint over a :class:`Store`; thread-safe."""

    def __init__(
        self,
        store: Store,
        token: str,
        faults: FaultPlan | None = None,
        stats: Stats | None = None,
    ) -> None:
        self.store = store
        self.token = token
        self.faults = faults if faults is not None else FaultPlan()
        self.stats = stats if stats is not None else Stats()

    def handle(self, body: bytes, auth_header: str | None) -> Reply:
        """Answer one HTTP request to ``/jsonrpc.php``."""
        username, password = parse_basic_auth(auth_header)
        request = _Request(username, password)
        try:
            try:
                payload = parse_body(body)
            except _ParseError:
                return Reply(200, dict(JSON_HEADERS), dumps(_PARSE_ERROR))
            out: bytes | StreamedAnswer
            if not isinstance(payload, (dict, list)):
                out = dumps(_PARSE_ERROR)
            elif isinstance(payload, list) and payload:
                items = [self._item(x, request) for x in payload]
                kept = [bytes(x) for x in items if x is not None]
                out = b"[" + b",".join(kept) + b"]" if kept else b""
            else:
                out = self._item(payload, request) or b""
        except Denied as exc:
            headers = dict(JSON_HEADERS)
            if exc.status == 401:
                headers["WWW-Authenticate"] = 'Basic realm="JsonRPC"'
            return Reply(exc.status, headers, _LOCAL_BODIES[exc.status])
        except _HttpFault as exc:
            return self._fault_reply(exc.kind)
        except PhpTypeError:
            return Reply(500, {"Content-Type": "text/html; charset=UTF-8"}, b"")
        except Exception:  # a devserver bug: answer like a PHP fatal error, but say why
            traceback.print_exc(file=sys.stderr)
            return Reply(500, {"Content-Type": "text/html; charset=UTF-8"}, b"")
        if request.truncate:
            full = bytes(out) or dumps(_error_obj(-32603, "Internal error"))
            out = full[: len(full) // 2]
        if request.trickle:
            return Reply(200, dict(JSON_HEADERS), TrickledAnswer(out, request.trickle))
        return Reply(200, dict(JSON_HEADERS), out)

    def _fault_reply(self, kind: str) -> Reply:
        if kind == "drop":
            return Reply(DROP, {}, b"")
        if kind == "http500":
            return Reply(500, {"Content-Type": "text/html; charset=UTF-8"}, b"")
        if kind == "html":
            return Reply(200, {"Content-Type": "text/html; charset=UTF-8"}, HTML_FATAL)
        if kind == "garbage":
            return Reply(200, dict(JSON_HEADERS), GARBAGE)
        status = 401 if kind == "http401" else 403
        headers = dict(JSON_HEADERS)
        if status == 401:
            headers["WWW-Authenticate"] = 'Basic realm="JsonRPC"'
        return Reply(status, headers, _LOCAL_BODIES[status])

    def _item(self, item: Any, request: _Request) -> bytes | StreamedAnswer | None:
        """RequestParser::parse for one call: encoded response, or None for a notification."""
        if not isinstance(item, (dict, list)):
            return dumps(_PARSE_ERROR)
        if (
            not isinstance(item, dict)
            or item.get("jsonrpc") != "2.0"
            or not isinstance(item.get("method"), str)
            or (item.get("params") is not None and not isinstance(item["params"], (dict, list)))
        ):
            return dumps(_INVALID_REQUEST)
        method: str = item["method"]
        ident = item.get("id")
        notification = ident is None
        self.stats.count_call(method)
        fault = self.faults.take(method)
        if fault is not None:
            if fault.kind == "delay":
                time.sleep(fault.delay)
            elif fault.kind == "truncated":
                request.truncate = True
            elif fault.kind == "slow":
                request.trickle = max(request.trickle, fault.delay)
            elif fault.kind in ("false", "empty", "rpc_error"):
                if notification:
                    return None
                if fault.kind == "rpc_error":
                    return dumps(_error_obj(-32603, "Internal error", ident, "injected fault"))
                return _result_bytes(False if fault.kind == "false" else "", ident)
            else:
                raise _HttpFault(fault.kind)
        call = self._authenticate(request)
        try:
            result = self._execute(call, method, item.get("params"))
        except RpcError as exc:
            if notification:
                return None
            return dumps({"jsonrpc": "2.0", "error": exc.error(), "id": ident})
        if notification:
            return None
        return _result_bytes(result, ident)

    def credentials_ok(self, auth_header: str | None) -> bool:
        """Whether the header's credentials would be accepted now; changes nothing (no failed
        login is counted), so the HTTP layer may ask before it reads a body."""
        username, password = parse_basic_auth(auth_header)
        if username is None or password is None:
            return False
        if username == "jsonrpc":
            return hmac.compare_digest(
                password.encode("utf-8", "surrogateescape"), self.token.encode()
            )
        return self.store.check_credentials(username, password)

    def _authenticate(self, request: _Request) -> Call:
        """AuthenticationMiddleware, run for every call like Kanboard does."""
        username, password = request.username, request.password
        if username is None or password is None:
            raise Denied(401)
        if username == "jsonrpc":
            if hmac.compare_digest(
                password.encode("utf-8", "surrogateescape"), self.token.encode()
            ):
                return Call(self.store, None)
            raise Denied(401)
        user = self.store.authenticate(username, password)
        if user is None:
            raise Denied(401)
        return Call(self.store, user)

    def _execute(self, call: Call, method: str, params: Any) -> Any:
        proc = _PROCEDURES.get(method)
        if proc is None:
            raise RpcError(-32601, "Method not found")
        proc.authorize(call.user)
        return proc.fn(call, *proc.bind(params))


def procedure_names() -> list[str]:
    """The procedures the devserver implements."""
    return sorted(_PROCEDURES)
