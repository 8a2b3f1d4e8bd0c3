"""HTTP transport quirks and test knobs of the devserver (in-process ``start_server``)."""

from __future__ import annotations

import base64
import http.client
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kbfs.devserver.serve import DevServer, start_server

TOKEN = "kbdev-transport"
CALL = {"jsonrpc": "2.0", "method": "getVersion", "id": 1}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[DevServer]:
    srv = start_server(tmp_path / "data", token=TOKEN)
    yield srv
    srv.stop()


def post(srv: DevServer, body: Any, **kw: Any) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(srv.url, content=content, auth=("jsonrpc", TOKEN), timeout=30, **kw)


def raw_exchange(port: int, request: bytes, pause: float = 0.0, rest: bytes = b"") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        if pause:
            sock.settimeout(pause)
            try:
                early = sock.recv(100)
            except TimeoutError:
                early = b""
            assert early == b"", f"server answered before the body: {early!r}"
            sock.settimeout(10)
        sock.sendall(rest)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def auth_header() -> str:
    return "Basic " + base64.b64encode(f"jsonrpc:{TOKEN}".encode()).decode()


def test_any_method_and_content_type(server: DevServer) -> None:
    for method in ("GET", "PUT", "POST"):
        resp = httpx.request(
            method,
            server.url,
            content=json.dumps(CALL).encode(),
            headers={"Content-Type": "text/plain"},
            auth=("jsonrpc", TOKEN),
        )
        assert resp.json()["result"].startswith("1.2.53")
        assert resp.headers["content-type"] == "application/json"
        assert resp.headers["connection"] == "close"
    resp = httpx.get(server.url, auth=("jsonrpc", TOKEN))
    assert resp.json()["error"]["code"] == -32700
    assert httpx.get(f"{server.base_url}/other").status_code == 404


def test_chunked_body(server: DevServer) -> None:
    def chunks() -> Iterator[bytes]:
        body = json.dumps(CALL).encode()
        yield body[:10]
        yield body[10:]

    resp = httpx.post(server.url, content=chunks(), auth=("jsonrpc", TOKEN))
    assert resp.json()["id"] == 1


def test_no_100_continue(server: DevServer) -> None:
    body = json.dumps(CALL).encode()
    head = (
        f"POST /jsonrpc.php HTTP/1.1\r\nHost: x\r\nAuthorization: {auth_header()}\r\n"
        f"Expect: 100-continue\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    answer = raw_exchange(server.port, head, pause=0.3, rest=body)
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert b"100 Continue" not in answer


def test_keep_alive(tmp_path: Path) -> None:
    srv = start_server(tmp_path / "d", token=TOKEN, keep_alive=True)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
        for _ in range(3):
            conn.request("POST", "/jsonrpc.php", json.dumps(CALL), {"Authorization": auth_header()})
            resp = conn.getresponse()
            assert resp.getheader("Connection") is None
            assert json.loads(resp.read())["id"] == 1
        conn.close()
        assert srv.stats.snapshot()["http_requests"] == 3
    finally:
        srv.stop()


def test_latency_and_max_body(server: DevServer) -> None:
    server.control("config", {"latency": 0.3})
    start = time.monotonic()
    post(server, CALL)
    assert time.monotonic() - start >= 0.3
    server.control("config", {"latency": 0, "max_body": 100})
    resp = post(server, b" " * 200 + json.dumps(CALL).encode())
    assert (resp.status_code, resp.content) == (500, b"")
    assert post(server, CALL).status_code == 200


@pytest.mark.parametrize(
    ("kind", "status", "check"),
    [
        ("http500", 500, lambda r: r.content == b""),
        ("html", 200, lambda r: b"<b>Fatal error</b>" in r.content),
        ("garbage", 200, lambda r: not _is_json(r.content)),
        ("truncated", 200, lambda r: not _is_json(r.content) and r.content.startswith(b"{")),
        ("http401", 401, lambda r: r.headers["www-authenticate"] == 'Basic realm="JsonRPC"'),
        ("http403", 403, lambda r: r.json()["error"]["code"] == 403),
        ("false", 200, lambda r: r.json()["result"] is False),
        ("empty", 200, lambda r: r.json()["result"] == ""),
        ("rpc_error", 200, lambda r: r.json()["error"]["code"] == -32603),
    ],
)
def test_fault_kinds(server: DevServer, kind: str, status: int, check: Any) -> None:
    server.control("faults", {"method": "getVersion", "kind": kind, "count": 1})
    other = post(server, {"jsonrpc": "2.0", "method": "getAllProjects", "id": 2})
    assert other.json()["result"] == []  # other methods are not affected
    resp = post(server, CALL)
    assert resp.status_code == status
    assert check(resp)
    assert post(server, CALL).json()["result"].startswith("1.2.53")  # count=1 consumed
    assert server.stats.snapshot()["calls"] == {"getAllProjects": 1, "getVersion": 2}


def _is_json(data: bytes) -> bool:
    try:
        json.loads(data)
    except ValueError:
        return False
    return True


def test_drop_and_delay(server: DevServer) -> None:
    server.control("faults", {"method": "*", "kind": "drop", "count": 1})
    with pytest.raises(httpx.RemoteProtocolError):
        post(server, CALL)
    server.control("faults", {"method": "getVersion", "kind": "delay", "delay": 0.3})
    start = time.monotonic()
    assert post(server, CALL).status_code == 200
    assert time.monotonic() - start >= 0.3


def test_slow_trickles_the_answer(server: DevServer) -> None:
    """The slow fault sends the answer a byte at a time: every read gets a byte in time, so no
    read timeout fires, however long the whole answer takes."""
    server.control("faults", {"method": "getVersion", "kind": "slow", "delay": 0.01})
    pieces: list[bytes] = []
    start = time.monotonic()
    with httpx.stream("POST", server.url, json=CALL, auth=("jsonrpc", TOKEN), timeout=1) as resp:
        pieces.extend(resp.iter_raw())
    body = b"".join(pieces)
    assert json.loads(body)["result"]
    assert len(pieces) > len(body) // 2  # arrived in (nearly) single bytes
    assert time.monotonic() - start >= 0.01 * len(body)


def test_truncated_still_executes(server: DevServer) -> None:
    server.control("faults", {"method": "createProject", "kind": "truncated"})
    resp = post(server, {"jsonrpc": "2.0", "method": "createProject", "id": 1, "params": ["x"]})
    assert not _is_json(resp.content)
    assert server.store.project(1) is not None


def test_control_validation(server: DevServer) -> None:
    url = f"{server.base_url}/_devserver/faults"
    resp = httpx.post(url, json={"method": "x", "kind": "nope"}, auth=("jsonrpc", TOKEN))
    assert resp.status_code == 400
    resp = httpx.post(f"{server.base_url}/_devserver/bogus", json={}, auth=("jsonrpc", TOKEN))
    assert resp.status_code == 404
    resp = httpx.post(f"{server.base_url}/_devserver/reset-stats", json={}, auth=("admin", "admin"))
    assert resp.status_code == 401


def test_cli_port_file_and_sigterm(tmp_path: Path) -> None:
    port_file = tmp_path / "port"
    proc = subprocess.Popen(
        [sys.executable, "-m", "kbfs.devserver", "--listen", "127.0.0.1:0", "--data",
         str(tmp_path / "data"), "--port-file", str(port_file), "--latency", "0.01"],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().split()
        assert first[:3] == ["kbfs", "devserver:", "user"] and first[3:5] == ["admin", "password"]
        admin_password = first[5]
        line = proc.stdout.readline()
        port = int(port_file.read_text())
        assert line == f"kbfs devserver listening on http://127.0.0.1:{port}/jsonrpc.php\n"
        token_file = tmp_path / "data" / "api-token"
        token = token_file.read_text().strip()
        assert token.startswith("kbdev-") and token_file.stat().st_mode & 0o777 == 0o600
        url = line.split(" on ", 1)[1].strip()
        assert httpx.post(url, json=CALL, auth=("jsonrpc", token)).status_code == 200
        # A fresh server's admin has the password it printed (random), not Kanboard's "admin".
        me = {"jsonrpc": "2.0", "method": "getMe", "id": 1}
        assert httpx.post(url, json=me, auth=("admin", admin_password)).status_code == 200
        assert httpx.post(url, json=me, auth=("admin", "admin")).status_code == 401
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()


def test_cli_refuses_non_loopback(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "kbfs.devserver", "--listen", "0.0.0.0:0", "--data", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2 and "loopback" in result.stderr
