"""Real sockets on 127.0.0.1 with a tiny trio HTTP responder: what the network really does.

Covers what MockTransport cannot: connection refused, a server that drops the connection after
reading the request, Connection: close on every answer (PHP's built-in server), keep-alive reuse
and httpx's own read timeout.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
from mockkb import CREDS

from kbfs.client import KanboardClient, RequestTimeout, TransportError

Behaviour = Callable[[trio.SocketStream, dict[str, Any]], Awaitable[bool]]


async def _read_request(stream: trio.SocketStream, buf: bytearray) -> bytes | None:
    while b"\r\n\r\n" not in buf:
        data = await stream.receive_some(65536)
        if not data:
            return None
        buf += data
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    body = bytearray(rest)
    while len(body) < length:
        data = await stream.receive_some(65536)
        if not data:
            return None
        body += data
    buf[:] = body[length:]
    return bytes(body[:length])


def _answer(result: Any, rid: Any, *, close: bool) -> bytes:
    body = json.dumps({"jsonrpc": "2.0", "result": result, "id": rid}).encode()
    head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    if close:
        head += "Connection: close\r\n"
    return head.encode() + b"\r\n" + body


class Server:
    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.connections = 0
        self.requests = 0
        self.port = 0

    async def handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        buf = bytearray()
        async with stream:
            while True:
                body = await _read_request(stream, buf)
                if body is None:
                    return
                self.requests += 1
                call = json.loads(body)
                if self.mode == "drop":
                    return
                if self.mode == "slow":
                    await trio.sleep(30)
                close = self.mode == "close"
                await stream.send_all(_answer("1.2.53", call["id"], close=close))
                if close:
                    return

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self.handle, listeners)


async def _serve(nursery: trio.Nursery, mode: str) -> Server:
    server = Server(mode)
    await nursery.start(server.run)
    return server


@pytest.mark.parametrize(("mode", "connections"), [("close", 5), ("keepalive", 1)])
async def test_connection_close_and_keepalive(mode: str, connections: int) -> None:
    async with trio.open_nursery() as nursery:
        server = await _serve(nursery, mode)
        async with KanboardClient(f"http://127.0.0.1:{server.port}", CREDS) as client:
            for _ in range(5):
                assert await client.get_version() == "1.2.53"
        assert server.requests == 5
        assert server.connections == connections
        nursery.cancel_scope.cancel()


async def test_connection_refused_is_not_sent() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    async with KanboardClient(f"http://127.0.0.1:{port}", CREDS, retries=0) as client:
        with pytest.raises(TransportError) as info:
            await client.get_version()
    assert info.value.request_sent is False
    assert type(info.value) is TransportError


async def test_dropped_answer_on_create_is_sent_and_not_retried() -> None:
    import io

    from kbfs.client import Container

    async with trio.open_nursery() as nursery:
        server = await _serve(nursery, "drop")
        async with KanboardClient(f"http://127.0.0.1:{server.port}", CREDS) as client:
            with pytest.raises(TransportError) as info:
                await client.create_file(Container(1, 1), "a.txt", io.BytesIO(b"abc"), 3)
            assert info.value.request_sent is True
            assert server.requests == 1
            with pytest.raises(TransportError):
                await client.get_version()
            assert server.requests == 5  # a get is retried 3 times
        nursery.cancel_scope.cancel()


async def test_read_timeout() -> None:
    async with trio.open_nursery() as nursery:
        server = await _serve(nursery, "slow")
        url = f"http://127.0.0.1:{server.port}/"
        async with KanboardClient(url, CREDS, timeout=0.3, retries=0) as client:
            with trio.fail_after(5):
                with pytest.raises(RequestTimeout) as info:
                    await client.get_version()
        assert info.value.request_sent is True
        nursery.cancel_scope.cancel()


async def test_short_source_over_a_socket_sends_nothing_usable() -> None:
    import io

    from kbfs.client import Container, SourceError

    async with trio.open_nursery() as nursery:
        server = await _serve(nursery, "keepalive")
        async with KanboardClient(f"http://127.0.0.1:{server.port}", CREDS) as client:
            with pytest.raises(SourceError):
                await client.create_file(Container(1, 1), "a", io.BytesIO(b"abc"), 10_000)
            assert server.requests == 0  # the body never completed
            assert await client.get_version() == "1.2.53"  # the client is still usable
        nursery.cancel_scope.cancel()


async def test_no_secret_in_debug_logs_with_real_httpcore(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import base64
    import logging

    from mockkb import TOKEN

    caplog.set_level(logging.DEBUG)
    # kbfs's log set-up quiets httpcore; a test that ran it before must not hide its records.
    caplog.set_level(logging.DEBUG, logger="httpcore")
    async with trio.open_nursery() as nursery:
        server = await _serve(nursery, "keepalive")
        async with KanboardClient(f"http://127.0.0.1:{server.port}", CREDS) as client:
            await client.get_version()
            await client.get_version()
        nursery.cancel_scope.cancel()
    basic = base64.b64encode(f"jsonrpc:{TOKEN}".encode()).decode()
    assert any(r.name.startswith("httpcore") for r in caplog.records)
    assert TOKEN not in caplog.text and basic not in caplog.text
