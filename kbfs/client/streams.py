"""The streaming halves of file transfers: base64 in a JSON-RPC answer to sink, source to body.

A file travels as one base64 string inside the JSON-RPC envelope. Holding that string whole
would cost 4/3 of the file in memory per transfer, so downloads are decoded as the answer
arrives and uploads are encoded as the request is sent. These classes and functions only shape
bytes; the HTTP exchange, retries and the checking of the envelope stay in
:mod:`kbfs.client.transport`, which passes in what they need.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any, BinaryIO

import trio

from kbfs.client.b64stream import (
    JsonBase64Decoder,
    NotStreamable,
    decode_whole,
    encoded_length,
    find_result_string,
    iter_base64,
    skip_ws,
    value_end,
)
from kbfs.client.errors import EmptyDownload, ProtocolError, Rejected, ServerError, SourceError
from kbfs.client.wire import MAX_BODY

#: Bytes of a download response buffered while looking for the start of the result string.
HEAD_LIMIT = 64 * 1024
#: Decoded download bytes collected before one (threaded) write to the sink.
FLUSH_SIZE = 1024 * 1024
# The first decoded bytes go to the sink at once: a reader waiting for the start of a file
# (head, file(1), a thumbnailer) gets it after one network chunk, not after a MiB. Writes then
# double in size up to FLUSH_SIZE, so a sink that paces the download (see ``flush``) sees each
# step of the start of a file.
FIRST_FLUSH_SIZE = 64 * 1024

_NO_DATA = "no file data (missing, not allowed or storage error)"


class SinkWriter:
    """Hands decoded pieces to the sink in batches, in a worker thread, and undoes them for a retry.

    Pieces go to the sink as they are (writelines), not joined into one buffer: two copies of
    every byte fewer, the largest of kbfs's own costs in a download. A sink with an async
    ``pace()`` is awaited after each write and may hold the download there until its own
    reader wants more (TCP then holds the server); ``flush`` returns the seconds it waited, so
    a deadline can leave them out. The sink's starting offset
    is remembered so a failed attempt can be rewound; a non-seekable sink that already got
    bytes cannot be, and then the download is not retried.
    """

    def __init__(self, sink: BinaryIO) -> None:
        self._sink = sink
        try:
            self._origin: int | None = sink.tell() if sink.seekable() else None
        except (OSError, AttributeError, ValueError):
            self._origin = None
        #: Bytes handed to the sink so far by the current attempt.
        self.written = 0
        self._out: list[bytes] = []
        self._out_size = 0

    def add(self, piece: bytes) -> None:
        if piece:
            self._out.append(piece)
            self._out_size += len(piece)

    def flush_due(self) -> bool:
        """Whether enough is pending for a write (much less before the first one)."""
        return self._out_size >= min(FLUSH_SIZE, max(FIRST_FLUSH_SIZE, self.written))

    async def flush(self) -> float:
        """Write what is pending; the seconds the sink's ``pace`` held the download."""
        if not self._out:
            return 0.0
        pieces, size = self._out.copy(), self._out_size
        self._out.clear()
        self._out_size = 0
        await trio.to_thread.run_sync(self._sink.writelines, pieces)
        self.written += size
        pace = getattr(self._sink, "pace", None)
        if pace is None:
            return 0.0
        waited: float = await pace()
        return waited

    def rewind(self) -> bool:
        """Drop the failed attempt's bytes before a retry; False if that is impossible."""
        self._out.clear()
        self._out_size = 0
        if not self.written:
            return True
        if self._origin is None:
            return False
        self._sink.seek(self._origin)
        self._sink.truncate()
        self.written = 0
        return True


class ResultStream:
    """Finds the base64 ``result`` string in a download answer and decodes it as chunks arrive.

    Anything that is not ``{..."result":"...`` (an error object, false/null, an odd but valid
    layout) is buffered whole, up to MAX_BODY, and judged by :meth:`finish`.
    """

    def __init__(self, method: str) -> None:
        self._method = method
        self._head = bytearray()
        self._whole = False  # not {"result":"..."}: buffer the (small) document and parse it
        self._decoder: JsonBase64Decoder | None = None

    def feed(self, chunk: bytes) -> bytes:
        """The file bytes decoded from ``chunk``; empty while the string is still looked for."""
        if self._decoder is None:
            self._head += chunk
            if self._whole:
                if len(self._head) > MAX_BODY:
                    raise ServerError("response too large", method=self._method)
                return b""
            try:
                start = find_result_string(bytes(self._head))
            except NotStreamable:
                self._whole = True
                return b""
            if start is None:
                if len(self._head) > HEAD_LIMIT:
                    self._whole = True
                return b""
            chunk = bytes(self._head[start:])
            del self._head[start:]
            self._decoder = JsonBase64Decoder()
        return self._decoder.feed(chunk)

    def finish(self, check: Callable[[bytes], Any]) -> bytes:
        """The file bytes still to write once the answer has been read, after checking it.

        ``check`` parses a whole JSON-RPC document and returns its result or raises its error.
        The envelope around the streamed string is only complete at the end, so an error object
        or a wrong id is found here, before the last bytes reach the sink.
        """
        method = self._method
        decoder = self._decoder
        if decoder is None:
            # An error object, false/null/"" or an odd but valid document: parse it whole.
            result = check(bytes(self._head))
            if result in ("", False, None):
                raise EmptyDownload(_NO_DATA, method=method)
            if not isinstance(result, str):
                raise ProtocolError("download result is not a string", method=method)
            return decode_whole(result)
        if not decoder.done:
            raise ServerError("the response ended inside the file data", method=method)
        last = decoder.finish()
        check(bytes(self._head) + b'"' + decoder.tail)
        if decoder.base64_chars == 0:
            raise EmptyDownload(_NO_DATA, method=method)
        return last


class ArraySplitter:
    """Cuts a batch answer (a JSON array) into its elements as it arrives.

    Only the element being received is held, so a batch of many downloads costs the memory of
    its largest member, not of the batch. Anything that does not start with ``[`` (a single
    error object for the whole batch, an HTML page) is collected whole, up to ``limit``, and
    returned by :meth:`finish` for the caller to judge.
    """

    def __init__(self, label: str, limit: int) -> None:
        self._label = label
        self._limit = limit
        self._buf = bytearray()
        self._started = False
        self._ended = False
        self._whole = False

    def feed(self, chunk: bytes) -> list[bytes]:
        """The elements completed by ``chunk``, each as its raw JSON bytes."""
        buf = self._buf
        buf += chunk
        if self._whole or self._ended:
            if len(buf) > self._limit:
                raise ServerError("response too large", method=self._label)
            return []
        view = bytes(buf)
        out: list[bytes] = []
        pos = 0
        while True:
            i = skip_ws(view, pos)
            if i >= len(view):
                break
            if not self._started:
                if view[i] != ord("["):
                    self._whole = True
                    return []
                self._started = True
                pos = i + 1
                continue
            c = view[i]
            if c == ord(","):
                pos = i + 1
                continue
            if c == ord("]"):
                self._ended = True
                pos = i + 1
                break
            end = value_end(view, i)
            if end < 0:
                if len(view) - i > self._limit:
                    raise ServerError("a batch member is too large", method=self._label)
                break
            out.append(view[i:end])
            pos = end
        del buf[:pos]
        return out

    def finish(self) -> bytes | None:
        """At the end of the answer: the whole document if it was not an array, else None."""
        if self._whole:
            return bytes(self._buf)
        if not self._ended:
            raise ServerError("the response ended inside the batch", method=self._label)
        return None


def download_result(method: str, result: Any) -> bytes:
    """A download call's result (a whole base64 string) as file bytes."""
    if result in ("", False, None):
        raise EmptyDownload(_NO_DATA, method=method)
    if not isinstance(result, str):
        raise ProtocolError("download result is not a string", method=method)
    return decode_whole(result)


def upload_body(
    method: str, params: dict[str, Any], rid: int, source: BinaryIO, size: int
) -> tuple[int, AsyncIterator[bytes]]:
    """The Content-Length and the chunks of a request with ``blob`` streamed from ``source``.

    The body is ``{..."params":{...,"blob":"<base64>"}}``; its length is known in advance, so
    the request needs no chunked encoding (which PHP's built-in server does not take).
    """
    params_json = json.dumps(params, ensure_ascii=False, separators=(",", ":"))
    try:
        prefix = (
            f'{{"jsonrpc":"2.0","method":{json.dumps(method)},"id":{rid},'
            f'"params":{params_json[:-1]},"blob":"'
        ).encode()
    except UnicodeEncodeError:
        raise Rejected("the filename is not valid UTF-8", method=method) from None
    suffix = b'"}}'

    async def body() -> AsyncIterator[bytes]:
        yield prefix
        for step in iter_base64(source, size):
            try:
                piece = await trio.to_thread.run_sync(step)
            except EOFError as exc:
                raise SourceError(str(exc), method=method) from None
            except OSError as exc:
                raise SourceError(f"reading the source failed: {exc}", method=method) from exc
            yield piece
        yield suffix

    return len(prefix) + encoded_length(size) + len(suffix), body()
