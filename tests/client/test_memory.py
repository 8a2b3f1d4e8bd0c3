"""Large transfers stay in bounded memory (tracemalloc), over real sockets.

The server here is a minimal in-process HTTP responder that itself streams (it decodes uploads
and generates downloads chunk by chunk), so the measured peak is the client's working set plus a
few server buffers. The same check against the devserver lives in test_live.py.
"""

from __future__ import annotations

import base64
import hashlib
import json
import tracemalloc
from collections.abc import Iterable
from typing import Any

import trio
from mockkb import CREDS

from kbfs.client import Container, KanboardClient
from kbfs.client.b64stream import JsonBase64Decoder

SIZE = 64 * 1024 * 1024 + 1  # not a multiple of 3: exercises padding
BLOCK = hashlib.sha256(b"kbfs").digest() * (3 * 1024 * 32 // 32)  # 96 KiB, multiple of 3
PEAK_LIMIT = 8 * 1024 * 1024


def pattern(size: int) -> Any:
    """Deterministic content as an iterator of chunks (never materialised whole)."""
    left = size
    while left > 0:
        piece = BLOCK[: min(len(BLOCK), left)]
        left -= len(piece)
        yield piece


class PatternSource:
    """A read()-able file of ``size`` pattern bytes that holds one block at a time."""

    def __init__(self, size: int) -> None:
        self._it = pattern(size)
        self._buf = b""

    def read(self, n: int = -1) -> bytes:
        out = bytearray()
        while len(out) < n:
            if not self._buf:
                self._buf = next(self._it, b"")
                if not self._buf:
                    break
            take = self._buf[: n - len(out)]
            self._buf = self._buf[len(take) :]
            out += take
        return bytes(out)


class HashSink:
    def __init__(self) -> None:
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        return len(data)

    def writelines(self, pieces: Iterable[bytes]) -> None:
        for piece in pieces:
            self.write(piece)

    def seekable(self) -> bool:
        return False


def expected_hash(size: int) -> str:
    h = hashlib.sha256()
    for piece in pattern(size):
        h.update(piece)
    return h.hexdigest()


class StreamingServer:
    def __init__(self) -> None:
        self.port = 0
        self.upload_hash = ""
        self.upload_size = 0

    async def _headers(self, stream: trio.SocketStream, buf: bytearray) -> int | None:
        while b"\r\n\r\n" not in buf:
            data = await stream.receive_some(65536)
            if not data:
                return None
            buf += data
        head, _, rest = bytes(buf).partition(b"\r\n\r\n")
        buf[:] = rest
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                return int(value)
        return 0

    async def handle(self, stream: trio.SocketStream) -> None:
        buf = bytearray()
        async with stream:
            length = await self._headers(stream, buf)
            if length is None:
                return
            remaining = length
            # Envelope head: everything up to the blob (or the whole small body).
            while b'"blob":"' not in buf and len(buf) < remaining:
                buf += await stream.receive_some(65536)
            if b'"blob":"' not in buf:
                call = json.loads(bytes(buf[:remaining]))
                await self._download(stream, call["id"])
                return
            head, _, rest = bytes(buf).partition(b'"blob":"')
            rid = json.loads(head.split(b'"id":', 1)[1].split(b",", 1)[0])
            remaining -= len(head) + len(b'"blob":"')
            dec = JsonBase64Decoder()
            h = hashlib.sha256()
            size = 0
            chunk = rest
            while True:
                remaining -= len(chunk)
                out = dec.feed(chunk)
                h.update(out)
                size += len(out)
                if remaining <= 0:
                    break
                chunk = await stream.receive_some(min(65536, remaining))
            out = dec.finish()
            h.update(out)
            self.upload_hash = h.hexdigest()
            self.upload_size = size + len(out)
            body = json.dumps({"jsonrpc": "2.0", "result": 1, "id": rid}).encode()
            await stream.send_all(
                b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
                + body
            )

    async def _download(self, stream: trio.SocketStream, rid: int) -> None:
        head = b'{"jsonrpc":"2.0","result":"'
        tail = b'","id":' + str(rid).encode() + b"}"
        length = len(head) + 4 * ((SIZE + 2) // 3) + len(tail)
        await stream.send_all(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(length).encode() + b"\r\n\r\n" + head
        )
        for piece in pattern(SIZE):
            # BLOCK is a multiple of 3, so only the last piece gets padding.
            await stream.send_all(base64.b64encode(piece))
        await stream.send_all(tail)

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self.handle, listeners)


async def test_64mib_roundtrip_in_bounded_memory() -> None:
    want = expected_hash(SIZE)
    async with trio.open_nursery() as nursery:
        server = StreamingServer()
        await nursery.start(server.run)
        async with KanboardClient(f"http://127.0.0.1:{server.port}", CREDS, retries=0) as client:
            container = Container(1, 1)
            tracemalloc.start()
            try:
                tracemalloc.reset_peak()
                source: Any = PatternSource(SIZE)
                file_id = await client.create_file(container, "big.bin", source, SIZE)
                _, upload_peak = tracemalloc.get_traced_memory()
                tracemalloc.reset_peak()
                sink = HashSink()
                n = await client.download_file(container, file_id, sink)  # type: ignore[arg-type]
                _, download_peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
        nursery.cancel_scope.cancel()
    assert server.upload_size == SIZE and server.upload_hash == want
    assert n == SIZE and sink.hash.hexdigest() == want
    print(f"peaks: upload {upload_peak / 2**20:.2f} MiB, download {download_peak / 2**20:.2f} MiB")
    assert upload_peak < PEAK_LIMIT, f"upload peak {upload_peak / 2**20:.1f} MiB"
    assert download_peak < PEAK_LIMIT, f"download peak {download_peak / 2**20:.1f} MiB"
