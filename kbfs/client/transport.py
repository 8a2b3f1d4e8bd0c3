"""JSON-RPC over HTTP for Kanboard: one httpx pool, error mapping, timeouts, retries, statistics.

This layer knows the wire (HTTP status codes, the JSON-RPC envelope, batches, base64 streams) but
not what any procedure means; :mod:`kbfs.client.api` adds that. Every failure leaves here as one of
the classes in :mod:`kbfs.client.errors` (httpx exceptions are mapped at this boundary, with
``raise ... from``), and no message, log line or repr built here contains the secret.
The byte shaping of file transfers lives in :mod:`kbfs.client.streams`, the rules every request
shares (size caps, JSON parsing, retryable failures, the redactor) in :mod:`kbfs.client.wire`,
what an answer means (status, body, envelope) in :mod:`kbfs.client.answers`, and the time
budget and retries of a call in :mod:`kbfs.client.retries`.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, BinaryIO, TypeVar

import httpx
import trio

from kbfs.client.answers import Answers, read_capped
from kbfs.client.auth import RotatingBasicAuth, SecretSource
from kbfs.client.b64stream import Base64FormatError
from kbfs.client.endpoint import ssl_context
from kbfs.client.errors import (
    AuthenticationError,
    KanboardError,
    ProtocolError,
    RequestTimeout,
    ServerError,
)
from kbfs.client.retries import RetryPolicy
from kbfs.client.servertime import ServerClock
from kbfs.client.streams import (
    ArraySplitter,
    ResultStream,
    SinkWriter,
    download_result,
    upload_body,
)
from kbfs.client.wire import (
    JSON_HEADERS,
    MAX_BODY,
    MIN_TRANSFER_RATE,
    Params,
    Redactor,
    id_key,
    is_idempotent,
    too_large_hint,
)

log = logging.getLogger(__name__)

T = TypeVar("T")


class RpcTransport:
    """Sends JSON-RPC calls, batches and base64 transfers; maps every failure to errors.py.

    Retries (exponential backoff with jitter, see RetryPolicy) happen only for idempotent
    methods: a create* or remove* is sent exactly once, whatever happens.

    Each call has ONE time budget, attempts and the pauses between them included: ``timeout``
    seconds, plus a transfer's share at MIN_TRANSFER_RATE (see ``budget``). A retry is made
    only while the budget (or the caller's own deadline, if earlier) leaves time for its pause;
    otherwise the last failure is raised at once. httpx's per-phase timeouts alone do not bound
    anything: a server sending a byte a second never trips a read timeout.
    """

    MIN_TRANSFER_RATE = MIN_TRANSFER_RATE

    def __init__(
        self,
        endpoint: str,
        username: str,
        secret: str,
        *,
        timeout: float,
        retries: int,
        verify: bool | str,
        transport: httpx.AsyncBaseTransport | None,
        proxy: str | None = None,
        secret_source: SecretSource | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.retries = max(0, retries)
        self._redact = Redactor(secret)
        self._answers = Answers(self._redact)
        self._retry = RetryPolicy(timeout, self.retries)
        self._auth = RotatingBasicAuth(username, secret, secret_source)
        self._ids = itertools.count(1)
        self._http_requests = 0
        self._calls: Counter[str] = Counter()
        # Every answer's Date header: the server's clock, for uploads that must not share a
        # second with an earlier record of their name (see kbfs.client.servertime).
        self.server_clock = ServerClock()
        kwargs: dict[str, Any] = {}
        if transport is not None:
            kwargs["transport"] = transport
        else:
            kwargs["verify"] = ssl_context(verify)
            kwargs["proxy"] = proxy
            kwargs["limits"] = httpx.Limits(
                max_connections=16, max_keepalive_connections=8, keepalive_expiry=30.0
            )
        # trust_env=False: HTTP(S)_PROXY/ALL_PROXY from the environment would send the token
        # through a proxy nobody chose for kbfs (in clear for an http URL, even a loopback one),
        # and .netrc could replace the credentials; a proxy is used only when given. The CA
        # store does not depend on it: ssl_context() reads the system's (SSL_CERT_FILE too).
        self._client = httpx.AsyncClient(
            auth=self._auth,
            timeout=httpx.Timeout(timeout),
            headers={"User-Agent": "kbfs/0.1"},
            follow_redirects=False,
            trust_env=False,
            **kwargs,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    # ---------------------------------------------------------------------------- statistics

    @property
    def http_requests(self) -> int:
        return self._http_requests

    def call_counts(self) -> dict[str, int]:
        return dict(self._calls)

    # ---------------------------------------------------------------------------- helpers

    def budget(self, transfer_bytes: int = 0) -> float:
        """Seconds one call may take in all, retries included (see RetryPolicy.budget)."""
        return self._retry.budget(transfer_bytes)

    def _envelope(self, method: str, params: Params, rid: int) -> dict[str, Any]:
        env: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": rid}
        if params is not None:
            env["params"] = params
        return env

    async def _reauthenticating(
        self, label: str, send: Callable[[], Awaitable[T]], rewind: Callable[[], bool] | None = None
    ) -> T:
        """``send()``; after a 401, once more if the secret's source now holds another one.

        Kanboard refuses credentials before it runs anything, so even a create is safe to send
        again; ``rewind`` prepares a body that was already consumed (False: it cannot be).
        """
        used = self._auth.secret
        try:
            return await send()
        except AuthenticationError:
            if not self._auth.refresh(used) or (rewind is not None and not rewind()):
                raise
            self._redact.add(self._auth.secret)
            log.info("%s: credentials refused; retrying with the re-read token", label)
            return await send()

    def reload_secret(self) -> bool:
        """Read the secret's source again (SIGHUP); whether it changed."""
        changed = self._auth.refresh(self._auth.secret)
        if changed:
            self._redact.add(self._auth.secret)
        return changed

    async def _exchange(
        self,
        label: str,
        content: bytes | AsyncIterator[bytes],
        *,
        headers: dict[str, str],
        request_id: int | str,
    ) -> bytes:
        """POST once and return the (status-checked) body. Any failure is a KanboardError;
        the time it may take is the caller's budget (``RetryPolicy.run``)."""
        self._http_requests += 1
        started = time.monotonic()
        status = 0
        try:
            async with self._client.stream(
                "POST", self.endpoint, content=content, headers=headers
            ) as response:
                status = response.status_code
                self.server_clock.observe_http_date(response.headers.get("date"))
                body = await read_capped(response, label, MAX_BODY)
                self._answers.check_status(label, response, body)
        except httpx.HTTPError as exc:
            raise self._answers.httpx_error(exc, label) from exc
        finally:
            log.debug(
                "%s id=%s -> HTTP %s in %.3fs",
                label,
                request_id,
                status or "-",
                time.monotonic() - started,
            )
        return body

    # ---------------------------------------------------------------------------- calls

    async def call(self, method: str, params: Params = None) -> Any:
        """One JSON-RPC call; the raw result. Retried only if ``method`` is idempotent."""

        async def attempt() -> Any:
            rid = next(self._ids)
            self._calls[method] += 1
            body = json.dumps(self._envelope(method, params, rid), ensure_ascii=False).encode()
            data = await self._exchange(method, body, headers=JSON_HEADERS, request_id=rid)
            return self._answers.unwrap(method, self._answers.parse_json(method, data), rid)

        return await self._reauthenticating(
            method, lambda: self._retry.run(method, is_idempotent(method), attempt)
        )

    async def batch(self, calls: Sequence[tuple[str, Params]]) -> list[Any | Exception]:
        """One HTTP request carrying many calls; per-call results or exception instances.

        Kanboard aborts the whole batch on any 401/403 (a single error object instead of an
        array): that is raised as AuthenticationError / PermissionDenied for the whole batch.
        """
        if not calls:
            return []
        methods = {m for m, _ in calls}
        label = (
            f"batch[{len(calls)}x{next(iter(methods))}]"
            if len(methods) == 1
            else (f"batch[{len(calls)} calls]")
        )
        idempotent = all(is_idempotent(m) for m in methods)

        async def attempt() -> list[Any | Exception]:
            ids = [next(self._ids) for _ in calls]
            for m, _ in calls:
                self._calls[m] += 1
            payload = [self._envelope(m, p, rid) for (m, p), rid in zip(calls, ids, strict=True)]
            body = json.dumps(payload, ensure_ascii=False).encode()
            data = await self._exchange(
                label,
                body,
                headers=JSON_HEADERS,
                request_id=f"{ids[0]}..{ids[-1]}",
            )
            return self._batch_results(label, [m for m, _ in calls], ids, data)

        return await self._reauthenticating(
            label, lambda: self._retry.run(label, idempotent, attempt)
        )

    def _batch_results(
        self, label: str, methods: list[str], ids: list[int], data: bytes
    ) -> list[Any | Exception]:
        """Each call's result (or exception) from a batch's answer, matched by id."""
        parsed = self._answers.parse_json(label, data)
        if not isinstance(parsed, list):
            raise self._answers.not_a_batch(label, parsed)
        by_id: dict[str, Any] = {}
        for item in parsed:
            if isinstance(item, dict) and item.get("id") is not None:
                by_id.setdefault(id_key(item["id"]), item)
        results: list[Any | Exception] = []
        for m, rid in zip(methods, ids, strict=True):
            item = by_id.get(id_key(rid))
            if item is None:
                results.append(ProtocolError("no answer for this call in the batch", method=m))
                continue
            try:
                results.append(self._answers.unwrap(m, item, rid))
            except KanboardError as exc:
                results.append(exc)
        return results

    # ---------------------------------------------------------------------------- transfers

    async def download(
        self, method: str, params: Params, sink: BinaryIO, size: int | None = None
    ) -> int:
        """Call a download* procedure and stream the decoded file into ``sink``.

        The base64 result is decoded as it arrives (see streams); memory stays around
        FLUSH_SIZE plus one network chunk. Retried like any read, after rewinding ``sink`` to
        where it started (impossible for a non-seekable sink that already got bytes: then the
        first error is raised). On error, ``sink`` may hold a partial file: discard it.

        ``size`` (the record's) fixes the whole download's budget when it starts: the timeout
        plus the base64 text's time at MIN_TRANSFER_RATE, retries included. A server that
        trickles bytes, or stalls between chunks, is cut off when that runs out, however long
        it keeps sending. Without a size, each attempt gets the timeout plus its received
        bytes' share (a caller that knows nothing of the file; kbfs always passes it).
        """
        writer = SinkWriter(sink)
        budget = math.inf if size is None else self.budget(-(-size // 3) * 4)
        deadlines: list[trio.CancelScope] = []  # the budget's scope: a paused sink extends it

        async def attempt() -> int:
            rid = next(self._ids)
            self._calls[method] += 1
            self._http_requests += 1
            body = json.dumps(self._envelope(method, params, rid), ensure_ascii=False).encode()
            started = time.monotonic()
            with trio.CancelScope() as scope:
                if size is None:
                    scope.deadline = trio.current_time() + self.budget()
                try:
                    total = await self._download_attempt(
                        method, body, rid, writer, scope if size is None else None, deadlines
                    )
                except httpx.HTTPError as exc:
                    raise self._answers.httpx_error(exc, method) from exc
                except Base64FormatError as exc:
                    raise ProtocolError(f"bad file data: {exc}", method=method) from None
                finally:
                    log.debug(
                        "%s id=%s streamed %d bytes in %.3fs",
                        method,
                        rid,
                        writer.written,
                        time.monotonic() - started,
                    )
            if scope.cancelled_caught:
                raise RequestTimeout(
                    "the download did not complete in time", method=method, request_sent=True
                )
            return total

        return await self._reauthenticating(
            method,
            lambda: self._retry.run(
                method,
                True,
                attempt,
                before_retry=writer.rewind,
                budget=budget,
                on_deadline=deadlines.append,
            ),
            writer.rewind,
        )

    async def _download_attempt(
        self,
        method: str,
        body: bytes,
        rid: int,
        writer: SinkWriter,
        growing: trio.CancelScope | None,
        deadlines: list[trio.CancelScope],
    ) -> int:
        """One POST of a download. With ``growing`` (no size known), each chunk read extends
        that scope's deadline by its share of MIN_TRANSFER_RATE. Time the sink held the
        download (no reader wanted more yet) extends ``deadlines`` (the call's budget) too."""
        stream = ResultStream(method)
        async with self._client.stream(
            "POST", self.endpoint, content=body, headers=JSON_HEADERS
        ) as response:
            self.server_clock.observe_http_date(response.headers.get("date"))
            if not 200 <= response.status_code < 300:
                data = await read_capped(response, method, MAX_BODY)
                self._answers.check_status(method, response, data)
            async for chunk in response.aiter_bytes():
                if growing is not None:
                    growing.deadline += len(chunk) / self.MIN_TRANSFER_RATE
                writer.add(stream.feed(chunk))
                if writer.flush_due():
                    held = await writer.flush()
                    for scope in (growing, *deadlines):
                        if held and scope is not None:
                            scope.deadline += held

        writer.add(
            stream.finish(
                lambda doc: self._answers.unwrap(method, self._answers.parse_json(method, doc), rid)
            )
        )
        await writer.flush()
        return writer.written

    async def download_batch(
        self,
        calls: Sequence[tuple[str, Params]],
        deliver: Callable[[int, bytes | KanboardError], None],
        expected_bytes: int,
    ) -> None:
        """Many download calls in one HTTP request; ``deliver(i, bytes or error)`` once per call.

        The answer is cut into its members as it arrives (streams.ArraySplitter), so memory
        holds one member, not the batch; each member is delivered as soon as it is complete.
        Not retried: a batch is an optimisation, and its caller falls back to single downloads
        for whatever it did not get. A failure of the whole request is raised after the
        members already delivered.
        """
        if not calls:
            return
        label = f"batch[{len(calls)}x{calls[0][0]}]"
        ids = [next(self._ids) for _ in calls]
        index = {id_key(rid): i for i, rid in enumerate(ids)}
        for method, _ in calls:
            self._calls[method] += 1
        self._http_requests += 1
        payload = [self._envelope(m, p, rid) for (m, p), rid in zip(calls, ids, strict=True)]
        body = json.dumps(payload, ensure_ascii=False).encode()
        splitter = ArraySplitter(label, MAX_BODY)
        delivered: set[int] = set()
        deadline = self.budget(expected_bytes * 4 // 3)
        started = time.monotonic()
        status = 0
        try:
            with trio.fail_after(deadline):
                async with self._client.stream(
                    "POST", self.endpoint, content=body, headers=JSON_HEADERS
                ) as response:
                    status = response.status_code
                    self.server_clock.observe_http_date(response.headers.get("date"))
                    if not 200 <= status < 300:
                        data = await read_capped(response, label, MAX_BODY)
                        self._answers.check_status(label, response, data)
                    async for chunk in response.aiter_bytes():
                        for element in splitter.feed(chunk):
                            self._deliver_member(label, calls, ids, index, element, deliver,
                                                 delivered)  # fmt: skip
            whole = splitter.finish()
            if whole is not None:
                raise self._answers.not_a_batch(label, self._answers.parse_json(label, whole))
        except trio.TooSlowError:
            raise RequestTimeout(
                f"no complete answer within {deadline:.0f}s", method=label, request_sent=True
            ) from None
        except httpx.HTTPError as exc:
            raise self._answers.httpx_error(exc, label) from exc
        finally:
            log.debug(
                "%s id=%s..%s -> HTTP %s, %d of %d delivered in %.3fs",
                label, ids[0], ids[-1], status or "-", len(delivered), len(calls),
                time.monotonic() - started,
            )  # fmt: skip
        for i, (method, _) in enumerate(calls):
            if i not in delivered:
                deliver(i, ProtocolError("no answer for this call in the batch", method=method))

    def _deliver_member(
        self,
        label: str,
        calls: Sequence[tuple[str, Params]],
        ids: list[int],
        index: dict[str, int],
        element: bytes,
        deliver: Callable[[int, bytes | KanboardError], None],
        delivered: set[int],
    ) -> None:
        """Decode one member of a download batch and hand it to ``deliver``."""
        item = self._answers.parse_json(label, element)
        if not isinstance(item, dict) or item.get("id") is None:
            return
        i = index.get(id_key(item["id"]))
        if i is None or i in delivered:
            return
        delivered.add(i)
        method = calls[i][0]
        try:
            data = download_result(method, self._answers.unwrap(method, item, ids[i]))
        except Base64FormatError as exc:
            deliver(i, ProtocolError(f"bad file data: {exc}", method=method))
        except KanboardError as exc:
            deliver(i, exc)
        else:
            deliver(i, data)

    async def upload(self, method: str, params: dict[str, Any], source: BinaryIO, size: int) -> Any:
        """Call a create* procedure with ``blob`` streamed from ``source``; the raw result.

        The body is generated chunk by chunk (see streams.upload_body), with a Content-Length
        computed in advance. Never retried: if the answer is lost the file may exist, so
        TransportError(request_sent=True) is raised instead.
        """
        if size < 0:
            raise ValueError("size must be >= 0")
        start = source.tell() if getattr(source, "seekable", lambda: False)() else None

        async def send() -> Any:
            rid = next(self._ids)
            self._calls[method] += 1
            length, body = upload_body(method, params, rid, source, size)
            headers = {**JSON_HEADERS, "Content-Length": str(length)}

            async def attempt() -> bytes:
                return await self._exchange(method, body, headers=headers, request_id=rid)

            # Never retried (idempotent=False): the budget only bounds the one attempt.
            data = await self._retry.run(method, False, attempt, budget=self.budget(length))
            return self._answers.unwrap(method, self._answers.parse_json(method, data), rid)

        def rewind() -> bool:
            if start is not None:
                source.seek(start)
            return start is not None

        try:
            return await self._reauthenticating(method, send, rewind)
        except ServerError as exc:
            raise too_large_hint(exc, size) from exc.__cause__

    async def upload_batch(
        self, calls: Sequence[tuple[str, dict[str, Any], BinaryIO, int]]
    ) -> list[Any | Exception]:
        """Many create* calls in one request, each blob streamed from its source; per-call
        results or exception instances, as :meth:`batch`.

        The body is the JSON array of the calls, each encoded as :meth:`upload` does, with a
        Content-Length computed in advance. Never retried: if the answer is lost, any of the
        files may exist (TransportError with request_sent=True, for the whole batch).
        """
        if not calls:
            return []
        label = f"batch[{len(calls)}x{calls[0][0]}]"
        starts = [src.tell() for _, _, src, _ in calls]

        async def send() -> list[Any | Exception]:
            ids = [next(self._ids) for _ in calls]
            parts = []
            for (method, params, source, size), rid in zip(calls, ids, strict=True):
                self._calls[method] += 1
                parts.append(upload_body(method, params, rid, source, size))
            length = 2 + sum(n for n, _ in parts) + len(parts) - 1

            async def body() -> AsyncIterator[bytes]:
                yield b"["
                for i, (_, chunks) in enumerate(parts):
                    if i:
                        yield b","
                    async for piece in chunks:
                        yield piece
                yield b"]"

            headers = {**JSON_HEADERS, "Content-Length": str(length)}

            async def attempt() -> bytes:
                return await self._exchange(label, body(), headers=headers, request_id=ids[0])

            data = await self._retry.run(label, False, attempt, budget=self.budget(length))
            return self._batch_results(label, [m for m, _, _, _ in calls], ids, data)

        def rewind() -> bool:
            for (_, _, source, _), start in zip(calls, starts, strict=True):
                source.seek(start)
            return True

        try:
            return await self._reauthenticating(label, send, rewind)
        except ServerError as exc:
            raise too_large_hint(exc, sum(size for _, _, _, size in calls)) from exc.__cause__
