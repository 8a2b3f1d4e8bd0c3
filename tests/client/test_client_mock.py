"""KanboardClient against httpx.MockTransport: wire format, error mapping, retries, streaming."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
from typing import Any

import httpx
import pytest
import trio
from mockkb import CREDS, TOKEN, MockKanboard, client_for, envelope

from kbfs.client import (
    AuthenticationError,
    ClientStats,
    Container,
    Credentials,
    EmptyDownload,
    KanboardClient,
    KanboardError,
    Kind,
    NotFound,
    PermissionDenied,
    ProtocolError,
    Rejected,
    RequestTimeout,
    RpcError,
    ServerError,
    SourceError,
    TransportError,
    normalise_endpoint,
    streams,
    wire,
)
from kbfs.client.transport import RpcTransport

TASK = Container(project_id=1, task_id=5)
PROJ = Container(project_id=1)

FILE_ROW_STRINGS = {
    "id": "3",
    "name": "notes.md",
    "path": "tasks/5/32fc0c68c5ba966a2e2029bfc7923e4d3853d82f",
    "is_image": "0",
    "task_id": "5",
    "date": "1795373822",
    "user_id": "1",
    "size": "8",
    "username": "admin",
    "user_name": None,
    "etag": "fb26c005a677c3de2ac8c8119fc210a1",
}


# ------------------------------------------------------------------------------ URL, creds


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://kb.example.com", "https://kb.example.com/jsonrpc.php"),
        ("https://kb.example.com/", "https://kb.example.com/jsonrpc.php"),
        ("https://kb.example.com/jsonrpc.php", "https://kb.example.com/jsonrpc.php"),
        ("https://kb.example.com//jsonrpc.php/", "https://kb.example.com/jsonrpc.php"),
        ("https://x/kanboard", "https://x/kanboard/jsonrpc.php"),
        ("https://x/kanboard/", "https://x/kanboard/jsonrpc.php"),
        ("https://x/kanboard/index.php", "https://x/kanboard/jsonrpc.php"),
        (
            "https://x/kanboard/?controller=BoardViewController&action=show&project_id=1",
            "https://x/kanboard/jsonrpc.php",
        ),
        ("  http://127.0.0.1:8080/kb/jsonrpc.php  ", "http://127.0.0.1:8080/kb/jsonrpc.php"),
        ("kb.example.com", "https://kb.example.com/jsonrpc.php"),
        ("https://user:pw@kb.example.com/", "https://kb.example.com/jsonrpc.php"),
    ],
)
def test_endpoint_forms(url: str, expected: str) -> None:
    assert normalise_endpoint(url) == expected
    assert KanboardClient(url, CREDS).endpoint == expected


@pytest.mark.parametrize("url", ["", "ftp://kb.example.com", "https://"])
def test_bad_urls(url: str) -> None:
    with pytest.raises(ValueError):
        normalise_endpoint(url)


def test_credentials_repr_hides_secret() -> None:
    creds = Credentials("hunter2", "alice")
    assert "hunter2" not in repr(creds) and "hunter2" not in str(creds)
    assert not creds.is_app_token and CREDS.is_app_token
    client = KanboardClient("https://kb.test", creds)
    assert "hunter2" not in repr(client)


# ------------------------------------------------------------------------------ wire format


async def test_request_shape_sequential_ids_and_auth() -> None:
    kb = MockKanboard().on("getVersion", "1.2.53")
    async with kb.client() as client:
        assert await client.get_version() == "1.2.53"
        assert await client.get_version() == "1.2.53"
        assert await client.call("getVersion") == "1.2.53"
    ids = [b["id"] for b in kb.bodies]
    assert ids == [1, 2, 3]
    req = kb.requests[0]
    assert req.method == "POST"
    assert str(req.url) == "https://kb.test/jsonrpc.php"
    assert (
        req.headers["authorization"]
        == "Basic " + base64.b64encode(f"jsonrpc:{TOKEN}".encode()).decode()
    )
    assert "expect" not in req.headers
    assert req.headers["content-type"] == "application/json"
    assert kb.bodies[0] == {"jsonrpc": "2.0", "method": "getVersion", "id": 1}


async def test_string_typed_numbers() -> None:
    kb = MockKanboard()
    kb.on("getAllTaskFiles", [FILE_ROW_STRINGS])
    kb.on("getTaskFile", {k: v for k, v in FILE_ROW_STRINGS.items() if k != "username"})
    kb.on(
        "getAllProjects",
        [{"id": "2", "name": "p", "is_active": "0", "url": {"board": "http://x/b"}}],
    )
    kb.on("getTask", {"id": "9", "title": "t", "project_id": "2", "is_active": "1"})
    kb.on("createTaskFile", "17")
    async with kb.client() as client:
        [rec] = await client.list_files(TASK)
        assert (rec.id, rec.size, rec.task_id, rec.date, rec.is_image) == (
            3,
            8,
            5,
            1795373822,
            False,
        )
        assert rec.kind is Kind.TASK and rec.username == "admin"
        rec2 = await client.get_file(TASK, 3)
        assert rec2.id == 3 and rec2.username is None
        [proj] = await client.get_projects()
        assert proj.id == 2 and proj.is_active is False and proj.board_url == "http://x/b"
        task = await client.get_task(9)
        assert task.id == 9 and task.project_id == 2 and task.is_active
        assert await client.create_file(TASK, "a", io.BytesIO(b"x"), 1) == 17


async def test_named_params_of_every_file_procedure() -> None:
    kb = MockKanboard()
    kb.on("getAllTaskFiles", []).on("getAllProjectFiles", [])
    kb.on("getTaskFile", dict(FILE_ROW_STRINGS, id=4))
    kb.on(
        "getProjectFile",
        {"id": 4, "project_id": 1, "name": "s", "size": 1, "path": "p", "is_image": 0},
    )
    kb.on("downloadTaskFile", "QQ==").on("downloadProjectFile", "Qg==")
    kb.on("createTaskFile", 11).on("createProjectFile", 12)
    kb.on("removeTaskFile", True).on("removeProjectFile", True)
    kb.on("removeAllTaskFiles", True).on("removeAllProjectFiles", True)
    async with kb.client() as client:
        assert await client.list_files(TASK) == []
        assert await client.list_files(PROJ) == []
        assert (await client.get_file(TASK, 4)).id == 4
        assert (await client.get_file(PROJ, 4)).project_id == 1
        buf = io.BytesIO()
        assert await client.download_file(TASK, 4, buf) == 1
        assert await client.download_file(PROJ, 4, buf) == 1
        assert buf.getvalue() == b"AB"
        assert await client.create_file(TASK, "a.txt", io.BytesIO(b"hi"), 2) == 11
        assert await client.create_file(PROJ, "b.txt", io.BytesIO(b"hi"), 2) == 12
        await client.remove_file(TASK, 4)
        await client.remove_file(PROJ, 4)
        await client.remove_all_files(TASK)
        await client.remove_all_files(PROJ)
    params = [(b["method"], b.get("params")) for b in kb.bodies]
    blob = base64.b64encode(b"hi").decode()
    assert params == [
        ("getAllTaskFiles", {"task_id": 5}),
        ("getAllProjectFiles", {"project_id": 1}),
        ("getTaskFile", {"file_id": 4}),
        ("getProjectFile", {"project_id": 1, "file_id": 4}),
        ("downloadTaskFile", {"file_id": 4}),
        ("downloadProjectFile", {"project_id": 1, "file_id": 4}),
        (
            "createTaskFile",
            {"project_id": 1, "task_id": 5, "filename": "a.txt", "blob": blob},
        ),
        ("createProjectFile", {"project_id": 1, "filename": "b.txt", "blob": blob}),
        ("removeTaskFile", {"file_id": 4}),
        ("removeProjectFile", {"project_id": 1, "file_id": 4}),
        ("removeAllTaskFiles", {"task_id": 5}),
        ("removeAllProjectFiles", {"project_id": 1}),
    ]


async def test_not_found_answers() -> None:
    kb = MockKanboard()
    kb.on("getTask", None).on("getProjectById", None).on("getTaskFile", None)
    kb.on("getProjectFile", False).on("downloadTaskFile", "").on("downloadProjectFile", False)
    kb.on("removeTaskFile", False).on("removeProjectFile", False)
    kb.on("removeAllTaskFiles", False).on("createTaskFile", False).on("createProjectFile", False)
    kb.on("getAllTaskFiles", []).on("getProjectUserRole", "")
    async with kb.client() as client:
        with pytest.raises(NotFound, match="getTask"):
            await client.get_task(999)
        with pytest.raises(NotFound):
            await client.get_project_by_id(999)
        with pytest.raises(NotFound):
            await client.get_file(TASK, 999)
        with pytest.raises(NotFound):
            await client.get_file(PROJ, 999)
        sink = io.BytesIO()
        with pytest.raises(EmptyDownload):
            await client.download_file(TASK, 999, sink)
        with pytest.raises(EmptyDownload):
            await client.download_file(PROJ, 999, sink)
        assert sink.getvalue() == b""
        with pytest.raises(NotFound):
            await client.remove_file(TASK, 999)
        with pytest.raises(NotFound):
            await client.remove_file(PROJ, 999)
        with pytest.raises(Rejected):
            await client.remove_all_files(TASK)
        with pytest.raises(Rejected, match="createTaskFile"):
            await client.create_file(TASK, "x", io.BytesIO(b"0"), 1)
        with pytest.raises(Rejected):
            await client.create_file(PROJ, "x", io.BytesIO(b"0"), 1)
        assert await client.list_files(TASK) == []
        assert await client.get_project_user_role(1, 2) is None


async def test_get_file_of_another_task_is_not_found() -> None:
    kb = MockKanboard().on("getTaskFile", dict(FILE_ROW_STRINGS, task_id=6))
    async with kb.client() as client:
        with pytest.raises(NotFound):
            await client.get_file(TASK, 3)


async def test_misc_getters() -> None:
    kb = MockKanboard()
    kb.on("getMe", {"id": 2, "username": "alice", "role": "app-user", "name": None})
    kb.on("getMyProjects", [{"id": 1, "name": "a", "is_active": 1}])
    kb.on("getProjectById", {"id": 1, "name": "a", "is_active": 1})
    kb.on("getProjectUserRole", "project-member")
    async with kb.client(credentials=Credentials("pw", "alice")) as client:
        me = await client.get_me()
        assert (me.id, me.username, me.role) == (2, "alice", "app-user")
        assert [p.id for p in await client.get_projects()] == [1]  # user auth -> getMyProjects
        assert (await client.get_project_by_id(1)).name == "a"
        assert await client.get_project_user_role(1, 2) == "project-member"
    assert "getAllProjects" not in kb.methods()
    assert "getMyProjects" in kb.methods()


async def test_project_roles_is_one_request() -> None:
    roles: dict[int, Any] = {1: "project-viewer", 2: "project-member", 3: "", 4: False}
    bodies: list[Any] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        bodies.append(body)
        answers = []
        for call in body:
            assert call["method"] == "getProjectUserRole" and call["params"]["user_id"] == 7
            pid = call["params"]["project_id"]
            if pid in roles:
                answers.append(envelope(roles[pid], call["id"]))
            else:  # this call fails on its own; the others are still answered
                error = {"code": -32603, "message": "Internal error"}
                answers.append({"jsonrpc": "2.0", "error": error, "id": call["id"]})
        return httpx.Response(200, json=answers[::-1])  # a batch may be answered in any order

    async with client_for(handler) as client:
        got = await client.project_roles([3, 1, 5, 2, 4], user_id=7)
        assert got == ["", "project-viewer", None, "project-member", None]
        assert await client.project_roles([], user_id=7) == []
        assert client.statistics() == ClientStats(http_requests=1, calls={"getProjectUserRole": 5})
    assert len(bodies) == 1
    assert [c["params"]["project_id"] for c in bodies[0]] == [3, 1, 5, 2, 4]


async def test_project_roles_raises_when_the_batch_fails() -> None:
    def forbidden(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            403, json={"jsonrpc": "2.0", "error": {"code": 403, "message": "F"}, "id": None}
        )

    async with client_for(forbidden) as client:
        with pytest.raises(PermissionDenied):
            await client.project_roles([1, 2], user_id=7)


async def test_get_all_tasks_any_status_is_one_request() -> None:
    def tasks(params: dict[str, Any]) -> list[dict[str, Any]]:
        ids = [4, 1] if params["status_id"] == 1 else [3]
        return [{"id": i, "title": f"t{i}", "project_id": 1, "is_active": 1} for i in ids]

    kb = MockKanboard().on("getAllTasks", tasks)
    async with kb.client() as client:
        got = await client.get_all_tasks_any_status(1)
        assert [t.id for t in got] == [1, 3, 4]
        assert [t.id for t in await client.get_all_tasks(1, 0)] == [3]
        assert client.statistics() == ClientStats(http_requests=2, calls={"getAllTasks": 3})
    assert len(kb.requests) == 2


# ------------------------------------------------------------------------------ error mapping


def _fixed(response: httpx.Response) -> Any:
    def handler(request: httpx.Request) -> httpx.Response:
        return response

    return handler


@pytest.mark.parametrize(
    ("response", "exc_type"),
    [
        (
            httpx.Response(
                401,
                json={"jsonrpc": "2.0", "error": {"code": 401, "message": "Unauthorized"}},
                headers={"WWW-Authenticate": 'Basic realm="JsonRPC"'},
            ),
            AuthenticationError,
        ),
        (
            httpx.Response(403, json={"jsonrpc": "2.0", "error": {"code": 403, "message": "F"}}),
            PermissionDenied,
        ),
        (httpx.Response(500), ServerError),
        (httpx.Response(502, text="<html>bad gateway</html>"), ServerError),
        (httpx.Response(200, text="<b>Fatal error</b>: Allowed memory size"), ServerError),
        (httpx.Response(200, text="<html><title>Login</title></html>"), ServerError),
        (httpx.Response(200, text=""), ServerError),
        (httpx.Response(200, text="not json at all"), ServerError),
        (httpx.Response(404, text="nope"), ServerError),
        (httpx.Response(301, headers={"Location": "https://kb.test/"}), ServerError),
        (
            httpx.Response(
                200,
                json={
                    "jsonrpc": "2.0",
                    "error": {"code": -32602, "message": "Invalid params", "data": "Too many"},
                    "id": 1,
                },
            ),
            RpcError,
        ),
        (httpx.Response(200, json={"error": {"code": 0, "message": "Invalid ID"}}), RpcError),
        (httpx.Response(200, json={"jsonrpc": "2.0", "result": "x", "id": 99}), ProtocolError),
        (httpx.Response(200, json={"jsonrpc": "2.0", "result": "x"}), ProtocolError),
        (httpx.Response(200, json={"jsonrpc": "2.0", "id": 1}), ProtocolError),
        (httpx.Response(200, json=[1, 2]), ProtocolError),
        (httpx.Response(200, json={"jsonrpc": "2.0", "result": 42, "id": 1}), ProtocolError),
    ],
)
async def test_error_mapping(
    response: httpx.Response, exc_type: type[Exception], autojump_clock: Any
) -> None:
    async with client_for(_fixed(response)) as client:
        with pytest.raises(exc_type) as info:
            await client.get_version()
    assert "getVersion" in str(info.value)
    assert TOKEN not in str(info.value) and TOKEN not in repr(info.value)


async def test_rpc_error_fields() -> None:
    body = {"jsonrpc": "2.0", "error": {"code": -32603, "message": "Internal error", "data": "M"}}
    body["id"] = 1
    async with client_for(_fixed(httpx.Response(200, json=body))) as client:
        with pytest.raises(RpcError) as info:
            await client.list_files(TASK)
    assert (info.value.code, info.value.rpc_message, info.value.data) == (
        -32603,
        "Internal error",
        "M",
    )
    assert info.value.method == "getAllTaskFiles"


@pytest.mark.parametrize(
    ("result", "exc_type"),
    [
        ({"not": "a list"}, ProtocolError),
        ("string", ProtocolError),
        ([{"name": "no id", "size": 1}], ProtocolError),
        ([{"id": 1, "name": "x", "size": "big", "task_id": 5}], ProtocolError),
        (None, NotFound),
    ],
)
async def test_listing_shapes(result: Any, exc_type: type[Exception]) -> None:
    kb = MockKanboard().on("getAllTaskFiles", result)
    async with kb.client() as client:
        with pytest.raises(exc_type, match="getAllTaskFiles"):
            await client.list_files(TASK)


@pytest.mark.parametrize(
    ("exc", "exc_type", "sent"),
    [
        (httpx.ConnectError("refused"), TransportError, False),
        (httpx.ConnectTimeout("slow"), RequestTimeout, False),
        (httpx.PoolTimeout("pool"), RequestTimeout, False),
        (httpx.ReadTimeout("slow"), RequestTimeout, True),
        (httpx.WriteTimeout("slow"), RequestTimeout, True),
        (httpx.ReadError("reset"), TransportError, True),
        (httpx.RemoteProtocolError("Server disconnected"), TransportError, True),
    ],
)
async def test_transport_errors(
    exc: Exception, exc_type: type[TransportError], sent: bool, autojump_clock: Any
) -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        raise exc

    async with client_for(handler, retries=2) as client:
        with pytest.raises(exc_type) as info:
            await client.get_version()
    assert type(info.value) is exc_type
    assert info.value.request_sent is sent
    assert len(calls) == 3  # idempotent: retried
    assert isinstance(info.value.__cause__, httpx.HTTPError)


async def test_hard_timeout(autojump_clock: Any) -> None:
    """A server that never answers: the call ends after its one budget (the timeout), with
    no second attempt that would double it (#18: each attempt used to get 2 x timeout + 1 s)."""

    async def handler(request: httpx.Request) -> httpx.Response:
        await trio.sleep(1000)
        return httpx.Response(200)

    async with client_for(handler, timeout=1.0, retries=1) as client:
        started = trio.current_time()
        with pytest.raises(RequestTimeout) as info:
            await client.get_version()
        assert info.value.request_sent
        assert trio.current_time() - started == pytest.approx(1.0)
        assert client.statistics().http_requests == 1


# ------------------------------------------------------------------------------ one budget


def _trickle(prefix: bytes, every: float) -> Any:
    """Answer with ``prefix``, then one more byte of base64 every ``every`` seconds, forever."""

    def handler(request: httpx.Request) -> httpx.Response:
        async def gen() -> Any:
            yield prefix
            while True:
                await trio.sleep(every)
                yield b"A"

        return httpx.Response(200, content=gen())

    return handler


async def test_retries_stop_when_the_budget_is_spent(autojump_clock: Any) -> None:
    """Failures that each take most of the timeout: one more attempt is made only while the
    budget lasts, and the whole call ends at the timeout, not at retries x timeout."""
    calls = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        await trio.sleep(2.0)
        return httpx.Response(502)

    async with client_for(handler, timeout=3.0, retries=3) as client:
        started = trio.current_time()
        with pytest.raises(RequestTimeout):
            await client.get_version()
        assert trio.current_time() - started == pytest.approx(3.0)
    assert calls == 2  # the second attempt was cut off by the budget


async def test_no_retry_whose_pause_outlasts_the_budget(autojump_clock: Any) -> None:
    """A 503 asking to come back in 10 s, under a 3 s timeout: the 503 is the answer, at
    once, rather than a pause that could only end in a timeout."""
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(503, headers={"Retry-After": "10"})

    async with client_for(handler, timeout=3.0, retries=3) as client:
        started = trio.current_time()
        with pytest.raises(ServerError) as info:
            await client.get_version()
        assert info.value.status_code == 503
        assert trio.current_time() - started < 0.01
    assert calls == 1


async def test_retries_happen_within_the_budget(autojump_clock: Any) -> None:
    """Quick failures are still retried (with their backoff) while the budget lasts."""
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls < 3:
            return httpx.Response(500)
        return httpx.Response(200, json=envelope("1.2.3", json.loads(request.content)["id"]))

    async with client_for(handler, timeout=3.0, retries=3) as client:
        assert await client.get_version() == "1.2.3"
    assert calls == 3


async def test_a_callers_deadline_stops_retries(autojump_clock: Any) -> None:
    """Within an operation that must end sooner than the call's own budget (the mount's
    per-operation bound), no retry is started whose pause would end past that deadline."""
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(503, headers={"Retry-After": "2"})

    raised = None
    async with client_for(handler, timeout=30.0, retries=3) as client:
        with trio.move_on_after(1.0):
            try:
                await client.get_version()
            except ServerError as exc:
                raised = exc
    assert raised is not None and raised.status_code == 503  # not cancelled in a pause
    assert calls == 1


@pytest.mark.parametrize("every", [1.0, 0.001])
async def test_a_trickling_download_ends_within_its_budget(
    every: float, autojump_clock: Any
) -> None:
    """#18: a download that keeps streaming under its size, a byte a second or in a steady
    trickle: each chunk used to push the deadline, so it never ended. Now the budget is fixed
    when it starts: the timeout plus the record size's share at the minimum rate."""
    handler = _trickle(b'{"jsonrpc":"2.0","result":"', every)
    async with client_for(handler, timeout=3.0, retries=3) as client:
        started = trio.current_time()
        with pytest.raises(RequestTimeout):
            await client.download_file(TASK, 1, io.BytesIO(), size=10)
        elapsed = trio.current_time() - started
    assert elapsed == pytest.approx(3.0 + 16 / RpcTransport.MIN_TRANSFER_RATE)


async def test_a_large_download_gets_its_sizes_share(autojump_clock: Any) -> None:
    """The budget grows with the record's size: the time its base64 takes at the minimum rate."""
    handler = _trickle(b'{"jsonrpc":"2.0","result":"', 1.0)
    size = 3 * 2**20  # 4 MiB of base64: 64 s at the minimum rate
    async with client_for(handler, timeout=3.0) as client:
        started = trio.current_time()
        with pytest.raises(RequestTimeout):
            await client.download_file(TASK, 1, io.BytesIO(), size=size)
    expected = 3.0 + (size // 3 * 4) / RpcTransport.MIN_TRANSFER_RATE
    assert trio.current_time() - started == pytest.approx(expected)


# ------------------------------------------------------------------------------ retries


async def test_get_retried_after_two_500s(autojump_clock: Any) -> None:
    n = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal n
        n += 1
        if n <= 2:
            return httpx.Response(500)
        return httpx.Response(200, json=envelope("v", json.loads(request.content)["id"]))

    async with client_for(handler) as client:
        assert await client.get_version() == "v"
        stats = client.statistics()
    assert stats.http_requests == 3 and stats.calls == {"getVersion": 3}


async def test_retries_exhausted(autojump_clock: Any) -> None:
    async with client_for(_fixed(httpx.Response(503)), retries=3) as client:
        with pytest.raises(ServerError) as info:
            await client.get_version()
        assert info.value.status_code == 503
        assert client.statistics().http_requests == 4


async def test_not_retried_errors(autojump_clock: Any) -> None:
    # 501 (e.g. python -m http.server) is a 5xx that never goes away: not retried either.
    for response in (
        httpx.Response(404),
        httpx.Response(501),
        httpx.Response(401),
        httpx.Response(403),
    ):
        async with client_for(_fixed(response)) as client:
            with pytest.raises(KanboardError):
                await client.get_version()
            assert client.statistics().http_requests == 1


@pytest.mark.parametrize(
    "failure",
    [httpx.Response(500), httpx.ReadTimeout("x"), httpx.RemoteProtocolError("dropped")],
)
async def test_create_and_remove_never_retried(failure: Any, autojump_clock: Any) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if isinstance(failure, Exception):
            raise failure
        return failure

    async with client_for(handler) as client:
        with pytest.raises((ServerError, TransportError)) as info:
            await client.create_file(TASK, "a", io.BytesIO(b"abc"), 3)
        if isinstance(info.value, TransportError):
            assert info.value.request_sent
        with pytest.raises((ServerError, TransportError)):
            await client.remove_file(TASK, 1)
        with pytest.raises((ServerError, TransportError)):
            await client.call("removeAllTaskFiles", {"task_id": 1})
        assert client.statistics().http_requests == 3


async def test_connect_error_on_create_says_not_sent() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    async with client_for(handler) as client:
        with pytest.raises(TransportError) as info:
            await client.create_file(TASK, "a", io.BytesIO(b"abc"), 3)
    assert info.value.request_sent is False


# ------------------------------------------------------------------------------ batches


async def test_batch_maps_by_id_and_keeps_item_errors() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        calls = json.loads(request.content)
        out = []
        for call in reversed(calls):  # out of order on purpose
            if call["method"] == "bad":
                out.append(
                    {"jsonrpc": "2.0", "error": {"code": -32601, "message": "nf"}, "id": call["id"]}
                )
            else:
                out.append(envelope(call["params"]["x"], call["id"]))
        return httpx.Response(200, json=out)

    async with client_for(handler) as client:
        res = await client.batch([("getA", {"x": 1}), ("bad", None), ("getB", {"x": 3})])
        assert res[0] == 1 and res[2] == 3
        assert isinstance(res[1], RpcError) and res[1].code == -32601
        assert await client.batch([]) == []
        assert client.statistics().http_requests == 1


async def test_batch_missing_item_and_whole_batch_errors(autojump_clock: Any) -> None:
    def partial(request: httpx.Request) -> httpx.Response:
        calls = json.loads(request.content)
        return httpx.Response(200, json=[envelope(1, calls[0]["id"])])

    async with client_for(partial) as client:
        res = await client.batch([("getA", None), ("getB", None)])
        assert res[0] == 1 and isinstance(res[1], ProtocolError)

    for status, exc_type in ((401, AuthenticationError), (403, PermissionDenied)):
        body = {"jsonrpc": "2.0", "error": {"code": status, "message": "x"}, "id": None}
        async with client_for(_fixed(httpx.Response(status, json=body))) as client:
            with pytest.raises(exc_type):
                await client.batch([("getA", None), ("getB", None)])
    invalid = {"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"}}
    async with client_for(_fixed(httpx.Response(200, json=invalid))) as client:
        with pytest.raises(RpcError):
            await client.batch([("getA", None)])


async def test_list_files_many_batches_and_403_fallback() -> None:
    forbidden = {7}
    batches = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        calls = body if isinstance(body, list) else [body]
        if isinstance(body, list):
            batches.append(len(body))
        if any(c["params"].get("task_id") in forbidden for c in calls):
            return httpx.Response(
                403, json={"jsonrpc": "2.0", "error": {"code": 403, "message": "F"}, "id": None}
            )
        out = []
        for c in calls:
            tid = c["params"].get("task_id")
            if tid == 8:
                out.append(
                    {"jsonrpc": "2.0", "error": {"code": -32603, "message": "UTF-8"}, "id": c["id"]}
                )
                continue
            row = dict(FILE_ROW_STRINGS, task_id=tid, id=tid)
            if tid is None:
                row = {"id": 1, "project_id": c["params"]["project_id"], "name": "p", "size": 1}
            out.append(envelope([row], c["id"]))
        return httpx.Response(200, json=out if isinstance(body, list) else out[0])

    containers = [Container(1, t) for t in (5, 6, 7, 8)] + [Container(1)]
    async with client_for(handler) as client:
        res = await client.list_files_many(containers)
        assert [r[0].id for r in res if isinstance(r, list)] == [5, 6, 1]
        assert isinstance(res[2], PermissionDenied)
        assert isinstance(res[3], RpcError) and res[3].code == -32603
        assert res[4][0].kind is Kind.PROJECT  # type: ignore[index]

        forbidden.clear()
        many = [Container(1, t) for t in range(100, 350)]
        res = await client.list_files_many(many)
        assert [r[0].task_id for r in res] == list(range(100, 350))  # type: ignore[index]
        assert batches[-3:] == [100, 100, 50]
        assert await client.list_files_many([]) == []


# ------------------------------------------------------------------------------ downloads


def _streamed(body: bytes, chunk: int, status: int = 200) -> Any:
    """Answer with ``body`` (``@ID@`` replaced by the request id) in pieces of ``chunk`` bytes."""

    def handler(request: httpx.Request) -> httpx.Response:
        rid = json.loads(request.content)["id"]
        data = _chunks(body.replace(b"@ID@", str(rid).encode()), chunk)

        async def gen() -> Any:
            for p in data:
                yield p

        return httpx.Response(status, content=gen())

    return handler


def _chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 64, 1000, 10**7])
@pytest.mark.parametrize("style", ["plain", "escaped", "newlines", "reordered"])
async def test_download_streaming_variants(chunk: int, style: str) -> None:
    raw = bytes(range(256)) * 13 + b"\xff\xfe"
    b64 = base64.b64encode(raw).decode()
    if style == "escaped":
        b64 = b64.replace("/", "\\/")
    elif style == "newlines":
        b64 = "\\n".join(b64[i : i + 76] for i in range(0, len(b64), 76)) + "\\n"
    if style == "reordered":
        body = '{"id":@ID@, "jsonrpc":"2.0",\n "result" : "' + b64 + '"}'
    else:
        body = '{"jsonrpc":"2.0","result":"' + b64 + '","id":@ID@}'
    handler = _streamed(body.encode(), chunk)
    async with client_for(handler) as client:
        sink = io.BytesIO()
        assert await client.download_file(TASK, 1, sink) == len(raw)
        assert sink.getvalue() == raw


class _BatchSink(io.BytesIO):
    """Records how many bytes each writelines() call brought."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    def writelines(self, pieces: Any) -> None:
        pieces = list(pieces)
        self.batches.append(sum(len(p) for p in pieces))
        super().writelines(pieces)


async def test_download_hands_over_the_first_bytes_at_once() -> None:
    """A reader waiting for the start of a file (head) must not wait for a whole MiB."""
    raw = os.urandom(3 * 1024 * 1024 + 5)
    body = '{"jsonrpc":"2.0","result":"' + base64.b64encode(raw).decode() + '","id":@ID@}'
    async with client_for(_streamed(body.encode(), 16 * 1024)) as client:
        sink = _BatchSink()
        assert await client.download_file(TASK, 1, sink) == len(raw)
    assert sink.getvalue() == raw
    # 64 KiB first, then each write about as large as all before it, up to FLUSH_SIZE: a
    # pacing sink sees every step of a file's start (see ContentCache's sniff window).
    first, *middle, _last = sink.batches
    assert streams.FIRST_FLUSH_SIZE <= first < streams.FIRST_FLUSH_SIZE + 16 * 1024
    written = first
    for n in middle:
        due = min(streams.FLUSH_SIZE, written)
        assert due <= n < due + 16 * 1024, sink.batches
        written += n
    assert max(middle) >= streams.FLUSH_SIZE


@pytest.mark.parametrize(
    ("body", "exc_type"),
    [
        ('{"jsonrpc":"2.0","result":"","id":@ID@}', EmptyDownload),
        ('{"jsonrpc":"2.0","result":false,"id":@ID@}', EmptyDownload),
        ('{"jsonrpc":"2.0","result":null,"id":@ID@}', EmptyDownload),
        ('{"jsonrpc":"2.0","result":"QUJD","id":999}', ProtocolError),
        ('{"jsonrpc":"2.0","result":"QU!D","id":@ID@}', ProtocolError),
        ('{"jsonrpc":"2.0","result":[1],"id":@ID@}', ProtocolError),
        ('{"jsonrpc":"2.0","result":"QUJD"', ServerError),  # closing brace lost
        ('{"jsonrpc":"2.0","result":"QUJDQUJD', ServerError),  # cut inside the data
        ('{"jsonrpc":"2.0","error":{"code":1,"message":"boom"},"id":@ID@}', RpcError),
        ("<html><body>Fatal</body></html>", ServerError),
        ("", ServerError),
    ],
)
async def test_download_failures(body: str, exc_type: type[Exception], autojump_clock: Any) -> None:
    async with client_for(_streamed(body.encode(), 3), retries=1) as client:
        sink = io.BytesIO()
        with pytest.raises(exc_type, match="downloadTaskFile"):
            await client.download_file(TASK, 1, sink)


async def test_download_retry_rewinds_sink() -> None:  # no autojump: uses threads
    raw = b"x" * 3_000_000  # more than one flush
    b64 = base64.b64encode(raw)
    n = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal n
        n += 1
        rid = json.loads(request.content)["id"]
        body = b'{"jsonrpc":"2.0","result":"' + b64 + b'","id":' + str(rid).encode() + b"}"
        if n == 1:
            body = body[: len(body) - 100]  # cut inside the data, after a flush

        async def gen() -> Any:
            for p in _chunks(body, 65536):
                yield p

        return httpx.Response(200, content=gen())

    async with client_for(handler) as client:
        sink = io.BytesIO()
        sink.write(b"PREFIX")
        assert await client.download_file(TASK, 1, sink) == len(raw)
        assert sink.getvalue() == b"PREFIX" + raw
    assert n == 2


async def test_download_bad_status() -> None:
    async with client_for(_streamed(b"{}", 2, status=403)) as client:
        with pytest.raises(PermissionDenied):
            await client.download_file(TASK, 1, io.BytesIO())


# ------------------------------------------------------------------------------ uploads


class _Capture:
    def __init__(self, result: Any = 5) -> None:
        self.request: httpx.Request | None = None
        self.result = result

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.request = request
        rid = json.loads(request.content)["id"]
        return httpx.Response(200, json=envelope(self.result, rid))


@pytest.mark.parametrize("size", [1, 2, 3, 4, 786431, 786432, 786433, 2_000_000])
async def test_upload_body(size: int) -> None:
    raw = hashlib.sha256(str(size).encode()).digest() * (size // 32 + 1)
    raw = raw[:size]
    cap = _Capture()
    name = 'we"ird \\ näme\u0000/🎉.txt'
    async with client_for(cap) as client:
        assert await client.create_file(TASK, name, io.BytesIO(raw + b"trailing"), size) == 5
    req = cap.request
    assert req is not None
    assert "transfer-encoding" not in req.headers
    assert "expect" not in req.headers
    assert int(req.headers["content-length"]) == len(req.content)
    body = json.loads(req.content)
    assert body["method"] == "createTaskFile"
    assert body["params"]["filename"] == name
    assert (body["params"]["project_id"], body["params"]["task_id"]) == (1, 5)
    assert base64.b64decode(body["params"]["blob"]) == raw


async def test_upload_short_source() -> None:
    async with client_for(_Capture()) as client:
        with pytest.raises(SourceError):
            await client.create_file(TASK, "a", io.BytesIO(b"abc"), 10)


async def test_upload_read_error() -> None:
    class Broken(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, b: Any) -> int:
            raise OSError(5, "Input/output error")

    async with client_for(_Capture()) as client:
        with pytest.raises(SourceError):
            await client.create_file(TASK, "a", Broken(), 10)  # type: ignore[arg-type]


async def test_upload_unencodable_filename() -> None:
    async with client_for(_Capture()) as client:
        with pytest.raises(Rejected):
            await client.create_file(TASK, "bad\udcffname", io.BytesIO(b"abc"), 3)


@pytest.mark.parametrize("result", ["abc", True, [1], {"id": 1}])
async def test_upload_odd_results(result: Any) -> None:
    async with client_for(_Capture(result)) as client:
        with pytest.raises(ProtocolError):
            await client.create_file(TASK, "a", io.BytesIO(b"abc"), 3)


# ------------------------------------------------------------------------------ secrets


async def test_secret_never_logged_or_in_errors(
    caplog: pytest.LogCaptureFixture, autojump_clock: Any
) -> None:
    caplog.set_level(logging.DEBUG)
    responses = [
        httpx.Response(401, json={"error": {"code": 401, "message": "Unauthorized"}}),
        httpx.Response(500),
        httpx.Response(200, text=f"<html><title>{TOKEN}</title></html>"),
        httpx.Response(200, json={"error": {"code": 1, "message": f"echo {TOKEN}", "data": TOKEN}}),
    ]
    errors: list[BaseException] = []
    for creds in (CREDS, Credentials(TOKEN, "alice")):
        for response in responses:
            async with client_for(_fixed(response), credentials=creds, retries=1) as client:
                try:
                    await client.get_version()
                except KanboardError as exc:
                    errors.append(exc)
                try:
                    await client.download_file(TASK, 1, io.BytesIO())
                except KanboardError as exc:
                    errors.append(exc)
    assert len(errors) == 16
    basic = base64.b64encode(f"jsonrpc:{TOKEN}".encode()).decode()
    for exc in errors:
        for text in (str(exc), repr(exc), str(exc.args)):
            assert TOKEN not in text and basic not in text
    assert caplog.records, "expected debug logging"
    assert TOKEN not in caplog.text and basic not in caplog.text


@pytest.mark.parametrize(
    "body",
    [
        b'{"result":[{"name":"caf\\u00e9 \\/ x","id":1}]}',
        b'{"name":"lone \\ud800 surrogate"}',  # orjson refuses it, the stdlib does not
        b'{"size":NaN,"big":1e400,"huge":123456789012345678901234567890}',
        b'\xef\xbb\xbf{"bom":true}',
        '{"utf16":"é"}'.encode("utf-16"),
    ],
)
def test_response_parsing_answers_like_the_stdlib(body: bytes) -> None:
    assert repr(wire.loads_json(body)) == repr(json.loads(body))


@pytest.mark.parametrize("body", [b"{", b'{"a":1}x', b"<html>", b'"\xff"'])
def test_response_parsing_refuses_like_the_stdlib(body: bytes) -> None:
    with pytest.raises(ValueError):
        json.loads(body)
    with pytest.raises(ValueError):
        wire.loads_json(body)


def test_a_reply_nested_too_deeply_is_a_parse_failure() -> None:
    """``[`` x 100,000 makes the stdlib parser raise RecursionError: it must surface as the
    ValueError every caller handles (the transport turns it into a ServerError)."""
    from kbfs.client.wire import loads_json

    with pytest.raises(ValueError, match="nests too deeply"):
        loads_json(b"[" * 100_000)


async def test_an_upload_php_had_no_memory_for_says_what_to_change() -> None:
    """HTTP 500 after a large body, or PHP's own "Allowed memory size" page (display_errors
    on) after any body: the message names memory_limit; a small file's 500 stays plain."""
    fatal = "<br />\n<b>Fatal error</b>:  Allowed memory size of 134217728 bytes exhausted"
    big = 9 << 20
    cases = [
        (httpx.Response(500), big, "~27 MiB"),
        (httpx.Response(200, text=fatal), 1000, "memory_limit in php.ini"),
        (httpx.Response(500), 1000, None),
    ]
    for response, size, expected in cases:
        async with client_for(_fixed(response)) as client:
            with pytest.raises(ServerError) as info:
                await client.create_file(TASK, "a.bin", io.BytesIO(b"x" * size), size)
        message = str(info.value)
        if expected is None:
            assert "memory_limit" not in message, message
        else:
            assert expected in message and "max_file_size" in message, message


# ---------------------------------------------------------------- batched downloads


def _batch_handler(members: list[Any], chunk: int, order: list[int] | None = None) -> Any:
    """Answer a download batch: member i is ``members[i]`` (bytes -> its base64 result as PHP
    writes it, with ``\\/`` escapes; anything else -> that result as is), in ``order``."""

    def handler(request: httpx.Request) -> httpx.Response:
        calls = json.loads(request.content)
        out = []
        for i in order or range(len(calls)):
            value = members[i]
            if isinstance(value, bytes):
                value = base64.b64encode(value).decode()
            out.append({"jsonrpc": "2.0", "result": value, "id": calls[i]["id"]})
        body = json.dumps(out).replace("/", "\\/").encode()
        data = _chunks(body, chunk)

        async def gen() -> Any:
            for p in data:
                yield p

        return httpx.Response(200, content=gen())

    return handler


async def _batch(client: KanboardClient, n: int) -> dict[int, Any]:
    got: dict[int, Any] = {}

    def deliver(i: int, outcome: Any) -> None:
        assert i not in got
        got[i] = outcome

    await client.download_files([(TASK, 10 + i) for i in range(n)], deliver, 1000)
    return got


@pytest.mark.parametrize("chunk", [1, 7, 100, 4096, 10**7])
async def test_a_download_batch_is_cut_into_members_at_any_chunk_size(chunk: int) -> None:
    files = [os.urandom(n) for n in (1, 2, 3, 1000, 5000)]
    async with client_for(_batch_handler(list(files), chunk, order=[3, 0, 4, 1, 2])) as client:
        got = await _batch(client, len(files))
        stats = client.statistics()
    assert got == dict(enumerate(files))
    assert stats.http_requests == 1


async def test_a_download_batch_reports_each_member_that_failed() -> None:
    members: list[Any] = [b"fine", "", False, "QU!D"]
    async with client_for(_batch_handler(members, 64)) as client:
        got = await _batch(client, len(members))
    assert got[0] == b"fine"
    assert isinstance(got[1], EmptyDownload) and isinstance(got[2], EmptyDownload)
    assert isinstance(got[3], ProtocolError)


async def test_a_download_batch_missing_members_and_a_cut_answer() -> None:
    """A member the answer lacks is a ProtocolError for that member; an answer cut inside
    the array raises after delivering what had arrived."""

    def lacking(request: httpx.Request) -> httpx.Response:
        calls = json.loads(request.content)
        return httpx.Response(
            200, json=[{"jsonrpc": "2.0", "result": "QUJD", "id": calls[1]["id"]}]
        )

    async with client_for(lacking) as client:
        got = await _batch(client, 2)
    assert got[1] == b"ABC" and isinstance(got[0], ProtocolError)

    def cut(request: httpx.Request) -> httpx.Response:
        calls = json.loads(request.content)
        first = json.dumps({"jsonrpc": "2.0", "result": "QUJD", "id": calls[0]["id"]})
        return httpx.Response(200, content=("[" + first + ',{"jsonrpc":"2.0","res').encode())

    got = {}
    async with client_for(cut) as client:
        with pytest.raises(ServerError, match="ended inside the batch"):
            await client.download_files(
                [(TASK, 1), (TASK, 2)], lambda i, o: got.__setitem__(i, o), 10
            )
    assert got == {0: b"ABC"}


async def test_a_download_batch_answered_with_one_error_object_raises_it() -> None:
    def forbidden(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, json={"jsonrpc": "2.0", "error": {"code": 403, "message": "Forbidden"}, "id": None}
        )

    async with client_for(forbidden) as client:
        with pytest.raises(PermissionDenied):
            await _batch(client, 3)
