"""HTTP front end of the devserver: ``/jsonrpc.php`` plus the ``/_devserver/`` control endpoints.

Apart from the server (:mod:`kbfs.devserver.serve`) because this part imitates a web server,
not Kanboard: what is done with a request is the :class:`Backend`'s.

It imitates the transport quirks of PHP's built-in web server that a client must cope with
(kanboard-api §0, §1, §9): ``Connection: close`` on every answer unless ``--keep-alive`` (nginx +
php-fpm style), no ``100 Continue``, any HTTP method, Content-Type ignored, and HTTP 500 with an
empty body for request bodies past the memory limit (``--max-body``, DEFAULT_MAX_BODY unless
set).

Unlike PHP it looks at the credentials before it reads a body: any local user can reach a
loopback port, and a body is read into memory. A request whose credentials are refused gets at
most UNAUTHENTICATED_BODY bytes read (enough for Kanboard's order of answers, where a parse
error comes before authentication); past that it is answered 401 and the connection closed
without reading the rest.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import urlsplit

from kbfs.devserver.faults import Stats
from kbfs.devserver.rpc import DROP, Dispatcher, StreamedAnswer, TrickledAnswer

_CHUNK = 1 << 20
#: Largest request body read by default: room for the 256 MiB file (341 MiB in base64) of the
#: benchmark's round trip, a bound on the memory one request can take.
DEFAULT_MAX_BODY = 512 << 20
#: Largest body read from a request whose credentials are refused.
UNAUTHENTICATED_BODY = 64 << 10


@dataclass
class ServerConfig:
    """The knobs of the transport, changed at run time through ``/_devserver/config``."""

    latency: float = 0.0
    max_body: int | None = DEFAULT_MAX_BODY
    keep_alive: bool = False
    verbose: bool = False
    bandwidth: int | None = None  # bytes per second for response bodies (tests of streaming)
    # Bytes the kernel may queue on a connection (SO_SNDBUF): on loopback it grows to MiBs, so
    # a client that stops reading would seem to cost that much. A network's in-flight data
    # is bounded by its bandwidth-delay product instead; this emulates that bound.
    send_buffer: int | None = None


class Backend(Protocol):
    """What the handler needs of the server behind it (:class:`kbfs.devserver.serve.DevServer`)."""

    config: ServerConfig
    stats: Stats
    dispatcher: Dispatcher

    def control_auth_ok(self, header: str | None) -> bool: ...

    def control(self, action: str, data: dict[str, Any]) -> dict[str, Any]: ...


class _TooLarge(Exception):
    pass


class Handler(BaseHTTPRequestHandler):
    """One connection's requests, read and answered as PHP's server would."""

    protocol_version = "HTTP/1.1"
    # As nginx (tcp_nodelay on) does: a response's headers and body go out as two writes, and
    # on a kept-alive connection Nagle's algorithm would hold the body back until the client's
    # delayed ACK of the headers (40 ms a request).
    disable_nagle_algorithm = True
    server: HTTPServer

    def version_string(self) -> str:
        return "kbfs-devserver"

    # PHP's built-in server never answers "Expect: 100-continue": the client must send the body.
    def handle_expect_100(self) -> bool:
        return True

    def do_POST(self) -> None:
        self._dispatch()

    do_GET = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = do_POST

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.devserver.config.verbose:
            super().log_message(format, *args)

    # -- plumbing ---------------------------------------------------------------------------

    def _dispatch(self) -> None:
        path = urlsplit(self.path).path
        if path.endswith("/jsonrpc.php"):
            self._jsonrpc()
        elif path.startswith("/_devserver/"):
            self._control(path[len("/_devserver/") :])
        else:
            self._drain(None)
            self._send(404, {"Content-Type": "text/plain"}, b"Not Found\n")

    def _drain(self, limit: int | None, excess: bool = True) -> bytes:
        """Read the whole request body (Content-Length or chunked); raise _TooLarge past limit.

        With ``excess`` the body is always consumed, so the client never sees a reset while
        still sending; without it, reading stops at ``limit`` (the connection must be closed).
        """
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts: list[bytes] = []
            total, too_large = 0, False
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunk = self.rfile.read(size)
                self.rfile.readline(65537)
                total += len(chunk)
                if limit is not None and total > limit:
                    if not excess:
                        raise _TooLarge
                    too_large = True
                    parts.clear()
                elif not too_large:
                    parts.append(chunk)
            if too_large:
                raise _TooLarge
            return b"".join(parts)
        length = int(self.headers.get("Content-Length") or 0)
        if limit is not None and length > limit:
            if not excess:
                raise _TooLarge
            remaining = length
            while remaining > 0:
                got = self.rfile.read(min(_CHUNK, remaining))
                if not got:
                    break
                remaining -= len(got)
            raise _TooLarge
        return self.rfile.read(length) if length > 0 else b""

    def _send(
        self,
        status: int,
        headers: dict[str, str],
        answer: bytes | StreamedAnswer | TrickledAnswer,
        counted: bool = False,
    ) -> None:
        """Answer; with ``counted``, the body bytes actually written go to the stats (what a
        client cost: a download it abandons stops counting when it closes the connection)."""
        keep_alive = self.server.devserver.config.keep_alive
        rate = self.server.devserver.config.bandwidth
        trickle = 0.0
        body: bytes | StreamedAnswer
        if isinstance(answer, TrickledAnswer):
            body, trickle = bytes(answer), answer.every
        else:
            body = answer
        if rate and isinstance(body, StreamedAnswer):
            body = bytes(body)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        if not keep_alive or self.close_connection:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command == "HEAD" or not body:
            return
        send_buffer = self.server.devserver.config.send_buffer
        if send_buffer:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
        try:
            if trickle:
                self._trickle(bytes(body), trickle)
            else:
                self._write_body(body, rate, counted)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away (a download it cancelled)

    def _trickle(self, body: bytes, every: float) -> None:
        """One byte, then a pause: until the body is sent or the client has gone."""
        for i in range(len(body)):
            self.wfile.write(body[i : i + 1])
            self.wfile.flush()
            time.sleep(every)

    def _write_body(self, body: bytes | StreamedAnswer, rate: int | None, counted: bool) -> None:
        stats = self.server.devserver.stats

        def count(n: int) -> None:
            if counted:
                stats.count_response(n)

        if isinstance(body, StreamedAnswer):
            pieces = body.pieces()
            try:
                for piece in pieces:
                    self.wfile.write(piece)
                    count(len(piece))
            finally:
                pieces.close()  # closes the stored file at once, also when the client left
            return
        if not rate:
            self.wfile.write(body)
            count(len(body))
            return
        step = max(1, min(_CHUNK, rate // 20))
        for start in range(0, len(body), step):
            piece = body[start : start + step]
            self.wfile.write(piece)
            self.wfile.flush()
            count(len(piece))
            time.sleep(step / rate)

    # -- /jsonrpc.php -------------------------------------------------------------------------

    def _jsonrpc(self) -> None:
        dev = self.server.devserver
        dev.stats.count_request()
        config = dev.config
        if not dev.dispatcher.credentials_ok(self.headers.get("Authorization")):
            try:
                body = self._drain(UNAUTHENTICATED_BODY, excess=False)
            except _TooLarge:
                self._refuse(b'{"jsonrpc":"2.0","error":{"code":401,"message":"Unauthorized"}}')
                return
        else:
            try:
                body = self._drain(config.max_body)
            except _TooLarge:
                # PHP dies reading php://input past memory_limit: HTTP 500, empty body.
                if config.latency:
                    time.sleep(config.latency)
                self._send(500, {"Content-Type": "text/html; charset=UTF-8"}, b"")
                return
        self._answer(body)

    def _refuse(self, body: bytes) -> None:
        """401 before the body is read, and the connection closed: its rest is never read."""
        self.close_connection = True
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("WWW-Authenticate", 'Basic realm="JsonRPC"')
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        with contextlib.suppress(OSError):
            self.wfile.write(body)
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)

    def _answer(self, body: bytes) -> None:
        dev = self.server.devserver
        config = dev.config
        reply = dev.dispatcher.handle(body, self.headers.get("Authorization"))
        if config.latency:
            time.sleep(config.latency)
        if reply.status == DROP:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        self._send(reply.status, reply.headers, reply.body, counted=True)

    # -- /_devserver/ -------------------------------------------------------------------------

    def _control(self, action: str) -> None:
        dev = self.server.devserver
        if not dev.control_auth_ok(self.headers.get("Authorization")):
            self.close_connection = True  # the body is not read
            self._json(
                401,
                {"error": "Unauthorized: use HTTP Basic with user jsonrpc and the app token"},
                {"WWW-Authenticate": 'Basic realm="kbfs devserver"'},
            )
            return
        try:
            raw = self._drain(16 << 20)
        except _TooLarge:
            self._json(413, {"error": "body too large"})
            return
        try:
            data = json.loads(raw) if raw.strip() else {}
            if not isinstance(data, dict):
                raise ValueError("expected a JSON object")
            result = dev.control(action, data)
        except KeyError:
            self._json(404, {"error": f"unknown control endpoint {action!r}"})
            return
        except (ValueError, TypeError) as exc:
            self._json(400, {"error": str(exc)})
            return
        self._json(200, result)

    def _json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(obj).encode()
        self._send(status, {"Content-Type": "application/json", **(headers or {})}, body)


class HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    devserver: Backend
