"""The built-in server on a shared machine: every local user can reach its loopback port.

Sample users get random passwords, a request whose credentials are refused is answered before
its body is read, bodies have a default bound, and secrets are compared in constant time.
"""

from __future__ import annotations

import base64
import hmac
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kbfs.devserver import store as store_module
from kbfs.devserver.serve import DEFAULT_MAX_BODY, DevServer, start_server

try:
    from kbserver import KanboardServer
except ImportError:  # pragma: no cover
    from tests.kbserver import KanboardServer

TOKEN = "kbdev-hardening"
GET_ME = {"jsonrpc": "2.0", "method": "getMe", "id": 1}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[DevServer]:
    srv = start_server(tmp_path / "data", token=TOKEN)
    yield srv
    srv.stop()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def huge_request(path: str, authorization: str, chunked: bool = False) -> bytes:
    """Headers announcing a 400 MB body, and none of the body."""
    length = "Transfer-Encoding: chunked" if chunked else "Content-Length: 400000000"
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {authorization}\r\n"
        f"Content-Type: application/json\r\n{length}\r\n\r\n"
    ).encode()
    # A chunked body starts with 1 MiB of it, more than the server reads without credentials.
    return head + (b"100000\r\n" + b"x" * 0x100000 + b"\r\n" if chunked else b"")


def answer_without_body(port: int, request: bytes) -> bytes:
    """Send ``request`` and read until the server closes; a server waiting for the 400 MB
    it was promised never closes, and the read times out (the test fails)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_sample_users_get_random_passwords_printed_at_start(kb_sample: KanboardServer) -> None:
    assert set(kb_sample.passwords) == {"admin", "alice", "bob"}
    fixed = {"admin": "admin", "alice": "alice-password", "bob": "bob-password"}
    for user, password in kb_sample.passwords.items():
        assert len(password) >= 12 and password != fixed[user]
        assert kb_sample.rpc("getMe", user=user, password=password)["username"] == user
        status, _ = kb_sample.raw(GET_ME, auth=(user, fixed[user]))
        assert status == 401


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize(
    "authorization",
    ["Basic " + base64.b64encode(b"jsonrpc:wrong").decode(), "Bearer x"],
    ids=["wrong-token", "no-basic"],
)
def test_refused_credentials_are_answered_before_a_huge_body(
    server: DevServer, authorization: str, chunked: bool
) -> None:
    answer = answer_without_body(server.port, huge_request("/jsonrpc.php", authorization, chunked))
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 401 ")
    assert b"Connection: close" in head
    assert b'"code":401' in body
    # The server is still there for everyone else.
    ok = httpx.post(server.url, json=GET_ME, auth=("jsonrpc", TOKEN), timeout=10)
    assert ok.status_code == 403  # getMe with the app token: Forbidden, but answered


def test_control_endpoint_refuses_before_the_body(server: DevServer) -> None:
    request = huge_request("/_devserver/stats", basic("admin", "admin"))
    assert answer_without_body(server.port, request).startswith(b"HTTP/1.1 401 ")


def test_user_credentials_are_checked_without_counting_a_failure(server: DevServer) -> None:
    """The early check must not lock an account: Kanboard counts one failure per request."""
    uid = server.store.create_user("carol", "carol-secret", None, None)
    assert uid is not None
    request = huge_request("/jsonrpc.php", basic("carol", "wrong"))
    for _ in range(8):  # more than the 6 failures that lock an account
        assert answer_without_body(server.port, request).startswith(b"HTTP/1.1 401 ")
    answer = httpx.post(server.url, json=GET_ME, auth=("carol", "carol-secret"), timeout=10)
    assert answer.json()["result"]["username"] == "carol"


def test_a_small_unauthenticated_body_is_still_answered_as_kanboard_does(
    server: DevServer,
) -> None:
    """Kanboard parses before it authenticates: invalid JSON without credentials is -32700."""
    answer = httpx.post(server.url, content=b"{not json", timeout=10)
    assert answer.status_code == 200 and answer.json()["error"]["code"] == -32700


def test_request_bodies_have_a_default_bound(tmp_path: Path) -> None:
    srv = DevServer(tmp_path, TOKEN)
    try:
        assert srv.config.max_body == DEFAULT_MAX_BODY
    finally:
        srv.httpd.server_close()
        srv.store.close()
    limited = DevServer(tmp_path, TOKEN, max_body=1000)
    try:
        assert limited.config.max_body == 1000
    finally:
        limited.httpd.server_close()
        limited.store.close()


def test_passwords_and_tokens_are_compared_in_constant_time(
    server: DevServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    compared: list[Any] = []
    original = hmac.compare_digest

    def recording(a: Any, b: Any) -> bool:
        compared.append((a, b))
        return original(a, b)

    monkeypatch.setattr(store_module.hmac, "compare_digest", recording)
    uid = server.store.create_user("dave", "dave-secret", None, None)
    assert uid is not None
    server.store.set_user_fields(uid, api_access_token="personal-token-of-dave")
    assert server.store.authenticate("dave", "personal-token-of-dave") is not None
    assert any(b"personal-token-of-dave" in pair for pair in compared)
    compared.clear()
    assert server.store.authenticate("dave", "dave-secret") is not None
    assert compared  # the password's hash too
