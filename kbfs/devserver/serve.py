"""HTTP front end of the devserver: ``/jsonrpc.php`` plus the ``/_devserver/`` control endpoints.

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

import argparse
import base64
import contextlib
import hmac
import ipaddress
import json
import os
import secrets
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

from kbfs.devserver.attachments import FileKind
from kbfs.devserver.faults import FaultPlan, Stats
from kbfs.devserver.rpc import DROP, Dispatcher, StreamedAnswer, TrickledAnswer
from kbfs.devserver.sample import seed_sample_data
from kbfs.devserver.store import Store
from kbfs.devserver.versions import Release, UnsupportedVersion

__all__ = ["TOKEN_PREFIX", "DevServer", "main", "start_server"]

#: Recognisable prefix of generated app tokens (like ``sthree-``), so a leaked one is obvious.
TOKEN_PREFIX = "kbdev-"
_CHUNK = 1 << 20
#: Largest request body read by default: room for the 256 MiB file (341 MiB in base64) of the
#: benchmark's round trip, a bound on the memory one request can take.
DEFAULT_MAX_BODY = 512 << 20
#: Largest body read from a request whose credentials are refused.
UNAUTHENTICATED_BODY = 64 << 10


@dataclass
class _Config:
    latency: float = 0.0
    max_body: int | None = DEFAULT_MAX_BODY
    keep_alive: bool = False
    verbose: bool = False
    bandwidth: int | None = None  # bytes per second for response bodies (tests of streaming)
    # Bytes the kernel may queue on a connection (SO_SNDBUF): on loopback it grows to MiBs, so
    # a client that stops reading would seem to cost that much. A network's in-flight data
    # is bounded by its bandwidth-delay product instead; this emulates that bound.
    send_buffer: int | None = None


class _TooLarge(Exception):
    pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

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


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    devserver: DevServer


class DevServer:
    """A running (or ready to run) devserver: store, dispatcher, knobs and the HTTP listener."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        token: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: float = 0.0,
        max_body: int | None = DEFAULT_MAX_BODY,
        keep_alive: bool = False,
        sample_data: bool = False,
        verbose: bool = False,
        kanboard_version: str | None = None,
    ) -> None:
        self.store = Store(data_dir)
        #: Passwords of the users created by this start (shown once, at start); empty when
        #: the data directory already had its users.
        self.passwords = dict(self.store.new_passwords)
        if kanboard_version is not None:
            self.store.release = Release.parse(kanboard_version)
        if sample_data and self.store.is_new:
            self.passwords.update(seed_sample_data(self.store))
        self.token = token
        self.faults = FaultPlan()
        self.stats = Stats()
        self.dispatcher = Dispatcher(self.store, token, self.faults, self.stats)
        self.config = _Config(latency, max_body, keep_alive, verbose)
        self.httpd = _HTTPServer((host, port), _Handler)
        self.httpd.devserver = self
        self.host = host
        self.port: int = self.httpd.server_address[1]
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def url(self) -> str:
        """The JSON-RPC endpoint URL."""
        return f"{self.base_url}/jsonrpc.php"

    def control_auth_ok(self, header: str | None) -> bool:
        """Control endpoints need the app token (user ``jsonrpc``)."""
        if not header or not header.lower().startswith("basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:].strip()).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return user == "jsonrpc" and hmac.compare_digest(password.encode(), self.token.encode())

    def control(self, action: str, data: dict[str, Any]) -> dict[str, Any]:
        """Run one control action; KeyError for unknown actions, ValueError for bad input."""
        if action == "stats":
            return self.stats.snapshot()
        if action == "reset-stats":
            self.stats.reset()
            return {"ok": True}
        if action == "faults":
            if "kind" in data:
                self.faults.add(
                    str(data.get("method", "*")),
                    str(data["kind"]),
                    int(data.get("count", 1)),
                    None if data.get("delay") is None else float(data["delay"]),
                )
            return {"ok": True, "pending": self.faults.pending()}
        if action == "clear-faults":
            self.faults.clear()
            self.faults.chaos(0)
            return {"ok": True}
        if action == "chaos":
            self.faults.chaos(
                float(data.get("rate", 0)),
                data.get("kinds"),
                data.get("methods"),
                int(data.get("seed", 0)),
            )
            return {"ok": True}
        if action == "rotate-token":
            # An administrator replacing the app token (Settings > API > reset): the old one
            # is refused from the next request on.
            token = str(data.get("token") or TOKEN_PREFIX + secrets.token_hex(20))
            self.token = self.dispatcher.token = token
            return {"ok": True, "token": token}
        if action == "seed-files":
            # Test set-up only: many attachments at once (see Store.seed_files).
            kind: FileKind = "task" if data.get("task_id") is not None else "project"
            owner = int(data["task_id"] if kind == "task" else data["project_id"])
            count = int(data.get("count", 0))
            if not 0 < count <= 1_000_000:
                raise ValueError("count must be between 1 and 1,000,000")
            prefix = str(data.get("prefix", "file-"))
            names = [f"{prefix}{i:06d}.txt" for i in range(count)]
            content = str(data.get("content", "seeded\n")).encode()
            return {"ok": True, "created": self.store.seed_files(kind, owner, names, content, 1)}
        if action == "config":
            if "latency" in data:
                latency = float(data["latency"] or 0)
                if latency < 0:
                    raise ValueError("latency must be >= 0")
                self.config.latency = latency
            if "max_body" in data:
                value = data["max_body"]
                self.config.max_body = None if value is None else int(value)
            if "bandwidth" in data:
                value = data["bandwidth"]
                self.config.bandwidth = None if not value else int(value)
            if "send_buffer" in data:
                value = data["send_buffer"]
                self.config.send_buffer = None if not value else int(value)
            return {
                "latency": self.config.latency,
                "max_body": self.config.max_body,
                "bandwidth": self.config.bandwidth,
                "send_buffer": self.config.send_buffer,
            }
        raise KeyError(action)

    def serve_forever(self) -> None:
        """Serve in the calling thread until :meth:`stop`."""
        self.httpd.serve_forever(poll_interval=0.2)

    def start(self) -> DevServer:
        """Serve in a daemon thread; returns self."""
        self._thread = threading.Thread(target=self.serve_forever, name="kbfs-devserver")
        self._thread.daemon = True
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the database."""
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self.httpd.server_close()
        self.store.close()


def load_or_create_token(token_file: str | os.PathLike[str]) -> str:
    """Read the app token from ``token_file``, creating it (mode 0600) if it does not exist."""
    path = Path(token_file)
    if path.exists():
        token = path.read_text().strip()
        if not token:
            raise ValueError(f"token file {path} is empty")
        return token
    token = TOKEN_PREFIX + secrets.token_hex(20)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    return token


def start_server(
    data_dir: str | os.PathLike[str],
    *,
    token: str | None = None,
    token_file: str | os.PathLike[str] | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    sample_data: bool = False,
    latency: float = 0.0,
    max_body: int | None = DEFAULT_MAX_BODY,
    keep_alive: bool = False,
    kanboard_version: str | None = None,
) -> DevServer:
    """Start a devserver in-process on a background thread (for tests and benchmarks)."""
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    if token is None:
        token = load_or_create_token(token_file or Path(data_dir) / "api-token")
    server = DevServer(
        data_dir,
        token,
        host=host,
        port=port,
        latency=latency,
        max_body=max_body,
        keep_alive=keep_alive,
        sample_data=sample_data,
        kanboard_version=kanboard_version,
    )
    return server.start()


def _parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep:
        raise argparse.ArgumentTypeError("expected HOST:PORT, e.g. 127.0.0.1:0")
    host = host.strip("[]")
    try:
        if not ipaddress.ip_address(host).is_loopback:
            raise argparse.ArgumentTypeError("the devserver only listens on loopback addresses")
        return host, int(port)
    except ValueError as exc:
        if host == "localhost":
            return "127.0.0.1", int(port)
        raise argparse.ArgumentTypeError(f"bad --listen value {value!r}: {exc}") from exc


def _kanboard_version(value: str) -> str:
    try:
        return str(Release.parse(value))
    except UnsupportedVersion as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kbfs server",
        description="Kanboard-compatible JSON-RPC server for kbfs development and tests.",
    )
    parser.add_argument(
        "--listen",
        type=_parse_listen,
        default=("127.0.0.1", 0),
        help="loopback HOST:PORT (PORT 0 picks a free port; default 127.0.0.1:0)",
    )
    parser.add_argument(
        "--data",
        required=True,
        type=Path,
        help="data directory (SQLite database and file contents; kept across runs)",
    )
    parser.add_argument(
        "--token-file",
        type=Path,
        help="app API token file (user 'jsonrpc'); created 0600 if missing "
        "(default DATA/api-token)",
    )
    parser.add_argument(
        "--sample-data",
        action="store_true",
        help="seed sample projects, tasks and attachments into a new data dir (users' random"
        " passwords are printed at start)",
    )
    parser.add_argument(
        "--latency",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="delay added to every /jsonrpc.php request",
    )
    parser.add_argument(
        "--max-body",
        type=int,
        default=DEFAULT_MAX_BODY,
        metavar="BYTES",
        help="request bodies larger than this get HTTP 500 (PHP memory_limit; default"
        f" {DEFAULT_MAX_BODY >> 20} MiB; 0: no bound)",
    )
    parser.add_argument(
        "--keep-alive",
        action="store_true",
        help="keep connections open (nginx+php-fpm) instead of Connection: close",
    )
    parser.add_argument(
        "--kanboard-version",
        type=_kanboard_version,
        default=None,
        metavar="VERSION",
        help="imitate this Kanboard release's rules, 1.2.20 to 1.2.53 (default 1.2.53)",
    )
    parser.add_argument("--port-file", type=Path, help="write the chosen port here once listening")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    return parser


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """``kbfs server ARGS`` / ``python -m kbfs.devserver ARGS``; returns the exit status."""
    args = _parser().parse_args(argv)
    host, port = args.listen
    args.data.mkdir(parents=True, exist_ok=True)
    try:
        token = load_or_create_token(args.token_file or args.data / "api-token")
        server = DevServer(
            args.data,
            token,
            host=host,
            port=port,
            latency=args.latency,
            max_body=args.max_body or None,
            keep_alive=args.keep_alive,
            sample_data=args.sample_data,
            verbose=args.verbose,
            kanboard_version=args.kanboard_version,
        )
    except (OSError, ValueError) as exc:
        print(f"kbfs devserver: {exc}", file=sys.stderr)
        return 1
    if args.port_file:
        tmp = args.port_file.with_name(args.port_file.name + ".tmp")
        tmp.write_text(f"{server.port}\n")
        os.replace(tmp, args.port_file)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    for user, password in server.passwords.items():
        print(f"kbfs devserver: user {user} password {password}")
    print(f"kbfs devserver listening on {server.url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        # Ctrl-C reaches the whole process group, and `kbfs demo` then sends SIGTERM too:
        # a second interrupt must not break off the closing of the database.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        server.httpd.server_close()
        server.store.close()
    return 0
