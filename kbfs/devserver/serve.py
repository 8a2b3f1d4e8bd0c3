"""The devserver itself: store, dispatcher and knobs behind an HTTP listener, and ``kbfs server``.

How requests are read and answered (PHP's transport quirks, credentials checked before a body
is read) is :mod:`kbfs.devserver.handler`'s; this module builds the pieces, runs the
``/_devserver/`` control actions tests use to steer it (faults, statistics, configuration,
token rotation, bulk seeding), and holds the command line.
"""

from __future__ import annotations

import argparse
import base64
import hmac
import ipaddress
import os
import secrets
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from kbfs.devserver.attachments import FileKind
from kbfs.devserver.faults import FaultPlan, Stats
from kbfs.devserver.handler import DEFAULT_MAX_BODY, Handler, HTTPServer, ServerConfig
from kbfs.devserver.rpc import Dispatcher
from kbfs.devserver.sample import seed_sample_data
from kbfs.devserver.store import Store
from kbfs.devserver.versions import Release, UnsupportedVersion

__all__ = ["DEFAULT_MAX_BODY", "TOKEN_PREFIX", "DevServer", "main", "start_server"]

#: Recognisable prefix of generated app tokens (like ``sthree-``), so a leaked one is obvious.
TOKEN_PREFIX = "kbdev-"


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
        self.config = ServerConfig(latency, max_body, keep_alive, verbose)
        self.httpd = HTTPServer((host, port), Handler)
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
