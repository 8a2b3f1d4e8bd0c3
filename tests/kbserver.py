"""Synchronous helper that runs the devserver as a subprocess for tests and the benchmark.

It talks plain JSON-RPC through httpx on purpose and never imports :mod:`kbfs.client`: tests that
set up state with it must not depend on the code under test.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

__all__ = ["KanboardServer", "RpcFailure"]


class RpcFailure(Exception):
    """A JSON-RPC error object or a non-200 answer."""

    def __init__(self, status: int, payload: Any) -> None:
        super().__init__(f"HTTP {status}: {payload!r}")
        self.status = status
        self.payload = payload


class KanboardServer:
    """One devserver subprocess: ``start()`` it, call it, ``stop()`` it."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.base_url = ""
        self.token = ""
        self.token_file = Path()
        self.data_dir = Path()
        self.passwords: dict[str, str] = {}  # of the users the server created, as it printed them
        self._http: httpx.Client | None = None
        self._next_id = 0
        self.kanboard_version = "1.2.53"  # the release whose rules the server keeps

    # -- lifecycle ------------------------------------------------------------------------------

    def start(
        self,
        tmp_path: Path,
        sample_data: bool = False,
        extra_args: Sequence[str] = (),
        timeout: float = 120,
        kanboard_version: str | None = None,
    ) -> KanboardServer:
        """Launch ``python -m kbfs.devserver`` on a free loopback port and wait until it listens.

        ``timeout`` bounds each HTTP call; the benchmark moves files big enough to need more.
        """
        self.data_dir = tmp_path / "kb-data"
        self.token = "kbdev-test-" + secrets.token_hex(12)
        self.token_file = tmp_path / "kb-token"
        fd = os.open(self.token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(self.token + "\n")
        args = [
            sys.executable, "-m", "kbfs.devserver",
            "--listen", "127.0.0.1:0",
            "--data", str(self.data_dir),
            "--token-file", str(self.token_file),
        ]  # fmt: skip
        if sample_data:
            args.append("--sample-data")
        if kanboard_version is not None:
            args += ["--kanboard-version", kanboard_version]
            self.kanboard_version = kanboard_version
        args.extend(extra_args)
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # blocks until the server prints or dies
        while line.startswith("kbfs devserver: user "):
            *_, user, _, password = line.split()
            self.passwords[user] = password
            line = self.proc.stdout.readline()
        prefix = "kbfs devserver listening on "
        if not line.startswith(prefix):
            self.stop()
            raise RuntimeError(f"devserver did not start: {line!r}")
        self.url = line[len(prefix) :].strip()
        self.base_url = self.url.rsplit("/", 1)[0]
        self._http = httpx.Client(timeout=timeout)
        return self

    def connect(self, url: str, token_file: Path, timeout: float = 120) -> KanboardServer:
        """Talk to a server that already runs (e.g. a real Kanboard): no subprocess to start.

        The benchmark measures against such a server with the same calls as against the
        built-in one; ``stop()`` then only closes the HTTP client.
        """
        self.url = url
        self.base_url = url.rsplit("/", 1)[0]
        self.token_file = token_file
        self.token = token_file.read_text().strip()
        self._http = httpx.Client(timeout=timeout)
        return self

    def stop(self) -> None:
        """Terminate the subprocess (kill if it lingers) and close the HTTP client."""
        if self._http is not None:
            self._http.close()
            self._http = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self.proc = None

    def __enter__(self) -> KanboardServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def before(self, release: str) -> bool:
        """Whether the imitated Kanboard is older than ``release`` (e.g. "1.2.47")."""

        def number(text: str) -> tuple[int, ...]:
            return tuple(int(x) for x in text.split("."))

        return number(self.kanboard_version) < number(release)

    def storage_file(self, path: str) -> Path:
        """Where the server keeps the bytes of a file row's ``path``."""
        return self.data_dir / "files" / path

    @property
    def port(self) -> int:
        """The TCP port the server listens on."""
        return int(self.base_url.rsplit(":", 1)[1])

    # -- raw access -----------------------------------------------------------------------------

    @property
    def http(self) -> httpx.Client:
        """The shared httpx client."""
        assert self._http is not None, "server not started"
        return self._http

    def _auth(self, user: str | None, password: str | None) -> tuple[str, str]:
        if user is None:
            return ("jsonrpc", self.token)
        return (user, password or "")

    def raw(
        self, body: bytes | str | Any, auth: tuple[str, str] | str | None = "token"
    ) -> tuple[int, Any]:
        """POST ``body`` (bytes/str as-is, anything else JSON-encoded); returns (status, payload).

        ``auth`` is ``"token"`` (default), None (no header) or a (user, password) pair.  The
        payload is the decoded JSON, or the text when the body is not JSON (e.g. "" for 500).
        """
        if isinstance(body, str):
            content = body.encode()
        elif isinstance(body, bytes):
            content = body
        else:
            content = json.dumps(body).encode()
        basic = ("jsonrpc", self.token) if auth == "token" else auth
        resp = self.http.post(self.url, content=content, auth=basic)  # type: ignore[arg-type]
        try:
            return resp.status_code, resp.json()
        except ValueError:
            return resp.status_code, resp.text

    def rpc(
        self,
        method: str,
        params: Any = None,
        *,
        user: str | None = None,
        password: str | None = None,
    ) -> Any:
        """Call one procedure (app token unless ``user`` is given); raise RpcFailure on errors."""
        self._next_id += 1
        request: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": self._next_id}
        if params is not None:
            request["params"] = params
        status, payload = self.raw(request, auth=self._auth(user, password))
        if status != 200 or not isinstance(payload, dict) or "error" in payload:
            raise RpcFailure(status, payload)
        return payload["result"]

    def rpc_batch(self, calls: list[tuple[str, Any]]) -> list[Any]:
        """Several calls in one JSON-RPC batch (app token); results in order, raise on errors."""
        batch = []
        for method, params in calls:
            self._next_id += 1
            batch.append(
                {"jsonrpc": "2.0", "method": method, "id": self._next_id, "params": params}
            )
        status, payload = self.raw(batch, auth=self._auth(None, None))
        if status != 200 or not isinstance(payload, list):
            raise RpcFailure(status, payload)
        if any("error" in item for item in payload):
            raise RpcFailure(status, payload)
        return [item["result"] for item in payload]

    # -- control endpoints --------------------------------------------------------------------

    def _control(self, name: str, data: dict[str, Any] | None = None) -> Any:
        url = f"{self.base_url}/_devserver/{name}"
        auth = ("jsonrpc", self.token)
        if data is None:
            resp = self.http.get(url, auth=auth)
        else:
            resp = self.http.post(url, json=data, auth=auth)
        resp.raise_for_status()
        return resp.json()

    def stats(self) -> dict[str, Any]:
        """``{"http_requests": N, "response_bytes": B, "calls": {method: count}}``."""
        return dict(self._control("stats"))

    def reset_stats(self) -> None:
        """Zero the counters."""
        self._control("reset-stats", {})

    def fault(self, method: str, kind: str, count: int = 1, delay: float | None = None) -> None:
        """Give the next ``count`` calls of ``method`` (or ``*``) the fault ``kind``."""
        data: dict[str, Any] = {"method": method, "kind": kind, "count": count}
        if delay is not None:
            data["delay"] = delay
        self._control("faults", data)

    def chaos(
        self,
        rate: float,
        kinds: list[str] | None = None,
        methods: list[str] | None = None,
        seed: int = 0,
    ) -> None:
        """Random faults on a ``rate`` share of calls (0 stops them); see FaultPlan.chaos."""
        self._control("chaos", {"rate": rate, "kinds": kinds, "methods": methods, "seed": seed})

    def clear_faults(self) -> None:
        """Drop all pending faults."""
        self._control("clear-faults", {})

    def rotate_token(self, token: str | None = None) -> str:
        """Replace the app token (a new random one if None); later helper calls use the new one."""
        self.token = str(self._control("rotate-token", {"token": token})["token"])
        return self.token

    def config(self, **knobs: Any) -> dict[str, Any]:
        """Change run-time knobs (``latency``, ``max_body``, ``bandwidth``, ``send_buffer``);
        returns the current values."""
        return dict(self._control("config", knobs))

    # -- builders -------------------------------------------------------------------------------

    def seed_task_files(self, task_id: int, count: int, prefix: str = "file-") -> int:
        """``count`` attachments ``<prefix>000000.txt``... in one go (one shared blob)."""
        data = {"task_id": task_id, "count": count, "prefix": prefix}
        return int(self._control("seed-files", data)["created"])

    def project(self, name: str) -> int:
        """Create a project (app token) and return its id."""
        return int(self.rpc("createProject", {"name": name}))

    def task(self, project_id: int, title: str) -> int:
        """Create an open task and return its id."""
        return int(self.rpc("createTask", {"project_id": project_id, "title": title}))

    def upload_task_file(self, project_id: int, task_id: int, name: str, data: bytes) -> int:
        """createTaskFile; returns the new file id (raises if Kanboard answered false)."""
        result = self.rpc(
            "createTaskFile",
            [project_id, task_id, name, base64.b64encode(data).decode()],
        )
        if result is False:
            raise RpcFailure(200, result)
        return int(result)

    def upload_project_file(self, project_id: int, name: str, data: bytes) -> int:
        """createProjectFile; returns the new file id."""
        result = self.rpc("createProjectFile", [project_id, name, base64.b64encode(data).decode()])
        if result is False:
            raise RpcFailure(200, result)
        return int(result)

    def task_files(self, task_id: int) -> list[dict[str, Any]]:
        """getAllTaskFiles."""
        return list(self.rpc("getAllTaskFiles", {"task_id": task_id}))

    def project_files(self, project_id: int) -> list[dict[str, Any]]:
        """getAllProjectFiles."""
        return list(self.rpc("getAllProjectFiles", {"project_id": project_id}))

    def download_task_file(self, file_id: int) -> bytes:
        """downloadTaskFile, decoded."""
        return base64.b64decode(self.rpc("downloadTaskFile", {"file_id": file_id}))

    def download_project_file(self, project_id: int, file_id: int) -> bytes:
        """downloadProjectFile, decoded."""
        return base64.b64decode(
            self.rpc("downloadProjectFile", {"project_id": project_id, "file_id": file_id})
        )

    def wait_until_second_boundary(self) -> None:
        """Sleep until just after a wall-clock second starts (for same-second collision tests)."""
        time.sleep(1.0 - (time.time() % 1.0) + 0.01)
