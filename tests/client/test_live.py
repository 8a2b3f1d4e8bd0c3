"""KanboardClient over real HTTP against the devserver subprocess (tests/kbserver.py).

State is arranged and checked with ``kb.rpc`` (which never imports kbfs.client), and the
client is exercised through every procedure, both auth modes, injected faults and big files.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import sqlite3
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_memory import HashSink, PatternSource, expected_hash

from kbfs.client import (
    AuthenticationError,
    Container,
    Credentials,
    EmptyDownload,
    KanboardClient,
    KanboardError,
    NotFound,
    PermissionDenied,
    Rejected,
    RequestTimeout,
    RpcError,
    ServerError,
    TransportError,
)

try:
    from kbserver import KanboardServer
except ImportError:  # pragma: no cover
    from tests.kbserver import KanboardServer


def client(kb: KanboardServer, **kw: Any) -> KanboardClient:
    creds = kw.pop("credentials", None) or Credentials(kb.token)
    kw.setdefault("timeout", 10.0)
    return KanboardClient(kw.pop("url", kb.url), creds, **kw)


def add_user(kb: KanboardServer, name: str, project_id: int | None, role: str) -> int:
    uid = int(kb.rpc("createUser", {"username": name, "password": f"{name}-pw"}))
    if project_id is not None:
        kb.rpc("addProjectUser", {"project_id": project_id, "user_id": uid, "role": role})
    return uid


@pytest.fixture
def world(kb: KanboardServer) -> Iterator[dict[str, int]]:
    pid = kb.project("alpha")
    other = kb.project("beta")
    t1 = kb.task(pid, "open one")
    t2 = kb.task(pid, "to close")
    t3 = kb.task(other, "beta task")
    kb.rpc("closeTask", {"task_id": t2})
    yield {"pid": pid, "other": other, "t1": t1, "t2": t2, "t3": t3}


# ------------------------------------------------------------------------------ procedures


async def test_every_procedure_with_app_token(kb: KanboardServer, world: dict[str, int]) -> None:
    pid, t1, t2 = world["pid"], world["t1"], world["t2"]
    task_c, proj_c = Container(pid, t1), Container(pid)
    odd_name = 'dir/sub "quoted" \\ résumé 🎉.txt'
    async with client(kb) as kc:
        assert isinstance(await kc.get_version(), str)
        projects = await kc.get_projects()
        assert {p.name for p in projects} == {"alpha", "beta"}
        assert [p.id for p in await kc.get_all_projects()] == [p.id for p in projects]
        assert (await kc.get_project_by_id(pid)).name == "alpha"
        assert [t.id for t in await kc.get_all_tasks(pid)] == [t1]
        assert [t.id for t in await kc.get_all_tasks(pid, 0)] == [t2]
        kb.reset_stats()
        both = await kc.get_all_tasks_any_status(pid)
        assert [t.id for t in both] == sorted([t1, t2])
        assert [t.is_active for t in both] == [True, False]
        assert kb.stats()["calls"] == {"getAllTasks": 2}
        assert kb.stats()["http_requests"] == 1
        assert (await kc.get_task(t2)).title == "to close"

        assert await kc.list_files(task_c) == []
        fid = await kc.create_file(task_c, odd_name, io.BytesIO(b"hello\n"), 6)
        pfid = await kc.create_file(proj_c, "spec.txt", io.BytesIO(b"spec!"), 5)
        assert kb.download_task_file(fid) == b"hello\n"
        [rec] = await kc.list_files(task_c)
        assert (rec.id, rec.name, rec.size, rec.task_id) == (fid, odd_name, 6, t1)
        [prec] = await kc.list_files(proj_c)
        assert (prec.id, prec.name, prec.project_id) == (pfid, "spec.txt", pid)
        assert (await kc.get_file(task_c, fid)).etag == rec.etag
        assert (await kc.get_file(proj_c, pfid)).size == 5
        sink = io.BytesIO()
        assert await kc.download_file(task_c, fid, sink) == 6
        assert await kc.download_file(proj_c, pfid, sink) == 5
        assert sink.getvalue() == b"hello\nspec!"
        many = await kc.list_files_many([task_c, Container(pid, t2), proj_c])
        assert [[f.id for f in r] for r in many] == [[fid], [], [pfid]]  # type: ignore[union-attr]

        await kc.remove_file(task_c, fid)
        await kc.remove_file(proj_c, pfid)
        assert kb.task_files(t1) == [] and kb.project_files(pid) == []
        await kc.create_file(task_c, "a", io.BytesIO(b"a"), 1)
        await kc.create_file(proj_c, "b", io.BytesIO(b"b"), 1)
        await kc.remove_all_files(task_c)
        await kc.remove_all_files(proj_c)
        assert kb.task_files(t1) == [] and kb.project_files(pid) == []


async def test_create_files_sends_many_uploads_in_one_request(
    kb: KanboardServer, world: dict[str, int]
) -> None:
    """create_files: one HTTP request, each file's id or its own refusal (a "0" content, a
    task of another project), the others created with their exact bytes."""
    pid, t1, t3 = world["pid"], world["t1"], world["t3"]
    blobs = [bytes([n]) * (1000 + n) for n in range(5)]
    uploads = [
        (Container(pid, t1), f"f{n}.bin", io.BytesIO(b), len(b)) for n, b in enumerate(blobs)
    ]
    uploads.insert(2, (Container(pid, t1), "zero.txt", io.BytesIO(b"0"), 1))
    uploads.append((Container(pid, t3), "elsewhere.txt", io.BytesIO(b"x"), 1))
    uploads.append((Container(pid), "project.txt", io.BytesIO(b"for the project"), 15))
    async with client(kb) as kc:
        kb.reset_stats()
        results = await kc.create_files(uploads)
        assert kb.stats()["http_requests"] == 1
    assert isinstance(results[2], Rejected) and isinstance(results[-2], Rejected)
    ids = [r for r in results if isinstance(r, int)]
    assert len(ids) == 6
    assert [kb.download_task_file(i) for i in ids[:5]] == blobs
    assert kb.download_project_file(pid, ids[5]) == b"for the project"


async def test_not_found_answers(kb: KanboardServer, world: dict[str, int]) -> None:
    pid, other, t1 = world["pid"], world["other"], world["t1"]
    async with client(kb) as kc:
        with pytest.raises(NotFound):
            await kc.get_task(999)
        with pytest.raises(NotFound):
            await kc.get_project_by_id(999)
        with pytest.raises(NotFound):
            await kc.get_file(Container(pid, t1), 999)
        with pytest.raises(NotFound):
            await kc.get_file(Container(pid), 999)
        sink = io.BytesIO()
        with pytest.raises(EmptyDownload):
            await kc.download_file(Container(pid, t1), 999, sink)
        with pytest.raises(EmptyDownload):
            await kc.download_file(Container(pid), 999, sink)
        assert sink.getvalue() == b""
        with pytest.raises(NotFound):
            await kc.remove_file(Container(pid, t1), 999)
        with pytest.raises(NotFound):
            await kc.remove_file(Container(pid), 999)
        with pytest.raises(Rejected):  # task of another project
            await kc.create_file(Container(other, t1), "x", io.BytesIO(b"x"), 1)
        with pytest.raises(Rejected):  # PHP empty("0")
            await kc.create_file(Container(pid, t1), "zero", io.BytesIO(b"0"), 1)
        with pytest.raises(RpcError):  # project id 0: a PHP exception
            await kc.create_file(Container(0), "x", io.BytesIO(b"x"), 1)
        assert await kc.list_files(Container(pid, 999)) == []
        # a file of project 1 asked for through project 2
        pfid = await kc.create_file(Container(pid), "p", io.BytesIO(b"p"), 1)
        with pytest.raises(NotFound):
            await kc.get_file(Container(other), pfid)
        with pytest.raises(EmptyDownload):
            await kc.download_file(Container(other), pfid, io.BytesIO())
        with pytest.raises(PermissionDenied):
            await kc.get_me()  # getMe needs user auth


@pytest.mark.parametrize("form", ["base", "slash", "endpoint", "index"])
async def test_base_url_forms(kb: KanboardServer, form: str) -> None:
    url = {
        "base": kb.base_url,
        "slash": kb.base_url + "/",
        "endpoint": kb.url,
        "index": kb.base_url + "/index.php",
    }[form]
    async with client(kb, url=url) as kc:
        assert kc.endpoint == kb.url
        assert await kc.get_version()


async def test_keep_alive_server(tmp_path: Path) -> None:
    with KanboardServer().start(tmp_path, extra_args=["--keep-alive"]) as kb:
        pid = kb.project("ka")
        async with client(kb) as kc:
            for _ in range(5):
                await kc.get_version()
            fid = await kc.create_file(Container(pid), "k", io.BytesIO(b"k" * 1000), 1000)
            sink = io.BytesIO()
            assert await kc.download_file(Container(pid), fid, sink) == 1000


# ------------------------------------------------------------------------------ auth modes


async def test_user_auth_with_password(kb: KanboardServer, world: dict[str, int]) -> None:
    pid, other, t1, t3 = world["pid"], world["other"], world["t1"], world["t3"]
    uid = add_user(kb, "alice", pid, "project-member")
    fid = kb.upload_task_file(pid, t1, "a.txt", b"alice!")
    async with client(kb, credentials=Credentials("alice-pw", "alice")) as kc:
        me = await kc.get_me()
        assert (me.id, me.username) == (uid, "alice")
        kb.reset_stats()
        assert [p.id for p in await kc.get_projects()] == [pid]
        assert kb.stats()["calls"] == {"getMyProjects": 1}
        with pytest.raises(PermissionDenied):
            await kc.get_all_projects()
        assert await kc.get_project_user_role(pid, uid) == "project-member"
        [rec] = await kc.list_files(Container(pid, t1))
        assert rec.id == fid
        new = await kc.create_file(Container(pid, t1), "b.txt", io.BytesIO(b"bb"), 2)
        assert (await kc.get_file(Container(pid, t1), new)).user_id == uid
        with pytest.raises(PermissionDenied):
            await kc.list_files(Container(other, t3))
        with pytest.raises(PermissionDenied):
            await kc.create_file(Container(other, t3), "x", io.BytesIO(b"x"), 1)

        # One forbidden container must not hide the others (whole-batch 403 -> fallback).
        kb.reset_stats()
        res = await kc.list_files_many([Container(pid, t1), Container(other, t3), Container(pid)])
        assert isinstance(res[0], list) and {f.id for f in res[0]} == {fid, new}
        assert isinstance(res[1], PermissionDenied)
        assert res[2] == []
        stats = kb.stats()
        assert stats["http_requests"] == 4  # the failed batch, then one call each
        # Kanboard stops at the forbidden item: the batch ran 2 calls, the fallback 3.
        assert stats["calls"] == {"getAllTaskFiles": 4, "getAllProjectFiles": 1}


async def test_viewer_cannot_write(kb: KanboardServer, world: dict[str, int]) -> None:
    pid, t1 = world["pid"], world["t1"]
    add_user(kb, "bob", pid, "project-viewer")
    fid = kb.upload_task_file(pid, t1, "a.txt", b"data")
    async with client(kb, credentials=Credentials("bob-pw", "bob")) as kc:
        sink = io.BytesIO()
        assert await kc.download_file(Container(pid, t1), fid, sink) == 4
        with pytest.raises(PermissionDenied):
            await kc.create_file(Container(pid, t1), "x", io.BytesIO(b"x"), 1)
        with pytest.raises(PermissionDenied):
            await kc.remove_file(Container(pid, t1), fid)
        assert await kc.get_project_user_role(pid, 0) is None


async def test_user_auth_with_personal_token(kb: KanboardServer, world: dict[str, int]) -> None:
    pid = world["pid"]
    uid = add_user(kb, "carol", pid, "project-manager")
    personal = "personal-token-" + hashlib.sha1(b"carol").hexdigest()
    with sqlite3.connect(kb.data_dir / "kanboard.sqlite") as db:
        db.execute("UPDATE users SET api_access_token = ? WHERE id = ?", (personal, uid))
    async with client(kb, credentials=Credentials(personal, "carol")) as kc:
        assert (await kc.get_me()).username == "carol"
        assert [p.id for p in await kc.get_projects()] == [pid]


@pytest.mark.parametrize(
    "creds",
    [
        Credentials("wrong-token"),
        Credentials("wrong-pw", "alice"),
        Credentials("x", "nobody"),
        Credentials("TOKEN", "admin"),
    ],
    ids=["token", "password", "user", "admin-with-token"],
)
async def test_wrong_credentials(kb: KanboardServer, creds: Credentials) -> None:
    add_user(kb, "alice", None, "")
    if creds.secret == "TOKEN":
        creds = Credentials(kb.token, "admin")
    async with client(kb, credentials=creds) as kc:
        with pytest.raises(AuthenticationError):
            await kc.get_version()
        with pytest.raises(AuthenticationError):
            await kc.list_files_many([Container(1, 1), Container(1)])
        assert kc.statistics().http_requests == 2  # never retried


# ------------------------------------------------------------------------------ faults


async def test_get_retried_after_two_500s(kb: KanboardServer) -> None:
    kb.reset_stats()
    kb.fault("getVersion", "http500", count=2)
    async with client(kb) as kc:
        assert await kc.get_version()
        assert kc.statistics().http_requests == 3
    assert kb.stats()["calls"] == {"getVersion": 3}


@pytest.mark.parametrize(
    ("kind", "exc_type"),
    [
        ("http500", ServerError),
        ("html", ServerError),
        ("garbage", ServerError),
        ("truncated", ServerError),
        ("drop", TransportError),
        ("http401", AuthenticationError),
        ("http403", PermissionDenied),
        ("rpc_error", RpcError),
    ],
)
async def test_faults_on_gets(kb: KanboardServer, kind: str, exc_type: type[Exception]) -> None:
    kb.fault("getVersion", kind, count=10)
    async with client(kb, retries=1) as kc:
        with pytest.raises(exc_type):
            await kc.get_version()
    kb.clear_faults()


async def test_result_faults(kb: KanboardServer, world: dict[str, int]) -> None:
    pid, t1 = world["pid"], world["t1"]
    fid = kb.upload_task_file(pid, t1, "f", b"f")
    async with client(kb) as kc:
        kb.fault("getTask", "false")
        with pytest.raises(NotFound):
            await kc.get_task(t1)
        kb.fault("downloadTaskFile", "empty")
        with pytest.raises(EmptyDownload):
            await kc.download_file(Container(pid, t1), fid, io.BytesIO())
        kb.fault("getAllTaskFiles", "rpc_error")
        with pytest.raises(RpcError) as info:
            await kc.list_files(Container(pid, t1))
        assert info.value.code == -32603
        kb.fault("removeAllTaskFiles", "false")
        with pytest.raises(Rejected):
            await kc.remove_all_files(Container(pid, t1))


async def test_create_with_500_is_not_retried(kb: KanboardServer, world: dict[str, int]) -> None:
    pid, t1 = world["pid"], world["t1"]
    kb.reset_stats()
    kb.fault("createTaskFile", "http500", count=5)
    async with client(kb) as kc:
        with pytest.raises(ServerError):
            await kc.create_file(Container(pid, t1), "a", io.BytesIO(b"abc"), 3)
    assert kb.stats()["calls"] == {"createTaskFile": 1}
    assert kb.stats()["http_requests"] == 1
    kb.clear_faults()


async def test_create_with_dropped_answer(kb: KanboardServer, world: dict[str, int]) -> None:
    pid, t1 = world["pid"], world["t1"]
    kb.upload_task_file(pid, t1, "existing", b"e")
    kb.reset_stats()
    kb.fault("createTaskFile", "drop")
    async with client(kb) as kc:
        with pytest.raises(TransportError) as info:
            await kc.create_file(Container(pid, t1), "new", io.BytesIO(b"abc"), 3)
        assert info.value.request_sent is True
    assert kb.stats()["calls"] == {"createTaskFile": 1}
    assert len(kb.task_files(t1)) == 1  # no second attempt, no duplicate


async def test_create_with_truncated_answer_leaves_one_file(
    kb: KanboardServer, world: dict[str, int]
) -> None:
    pid, t1 = world["pid"], world["t1"]
    kb.fault("createTaskFile", "truncated")
    async with client(kb) as kc:
        with pytest.raises(ServerError):
            await kc.create_file(Container(pid, t1), "new", io.BytesIO(b"abc"), 3)
    [row] = kb.task_files(t1)  # executed once, answer lost, never re-sent
    assert row["name"] == "new"


async def test_truncated_download_is_retried(kb: KanboardServer, world: dict[str, int]) -> None:
    pid, t1 = world["pid"], world["t1"]
    data = bytes(range(256)) * 5000
    fid = kb.upload_task_file(pid, t1, "big", data)
    kb.reset_stats()
    kb.fault("downloadTaskFile", "truncated")
    async with client(kb) as kc:
        sink = io.BytesIO()
        assert await kc.download_file(Container(pid, t1), fid, sink) == len(data)
        assert sink.getvalue() == data
    assert kb.stats()["calls"] == {"downloadTaskFile": 2}


async def test_timeout(kb: KanboardServer) -> None:
    kb.fault("getVersion", "delay", count=1, delay=2.0)
    async with client(kb, timeout=0.5, retries=0) as kc:
        with pytest.raises(RequestTimeout) as info:
            await kc.get_version()
        assert info.value.request_sent is True
    # The timeout is the call's whole budget: a slow answer is not retried past it...
    kb.fault("getVersion", "delay", count=1, delay=1.0)
    kb.reset_stats()
    async with client(kb, timeout=0.5, retries=2) as kc:
        with pytest.raises(RequestTimeout):
            await kc.get_version()
    assert kb.stats()["calls"] == {"getVersion": 1}
    # ...while a quick failure is, within it.
    kb.fault("getVersion", "http500", count=1)
    async with client(kb, timeout=0.5, retries=2) as kc:
        assert await kc.get_version()


# ------------------------------------------------------------------------------ secrets


async def test_secrets_never_leak(
    kb: KanboardServer, world: dict[str, int], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    add_user(kb, "alice", world["pid"], "project-member")
    secrets_ = [kb.token, "alice-pw"]
    creds_list = [Credentials(kb.token), Credentials("alice-pw", "alice")]
    errors: list[KanboardError] = []
    for creds in creds_list:
        async with client(kb, credentials=creds, retries=1) as kc:
            await kc.get_version()
            for kind in ("http500", "html", "garbage", "drop", "http401", "http403"):
                kb.fault("*", kind, count=2)
                try:
                    await kc.list_files(Container(world["pid"], world["t1"]))
                except KanboardError as exc:
                    errors.append(exc)
                kb.clear_faults()
            try:
                await kc.list_files(Container(world["other"], world["t3"]))
            except KanboardError as exc:
                errors.append(exc)
    assert len(errors) >= 12
    for secret in secrets_:
        for user in ("jsonrpc", "alice"):
            basic = base64.b64encode(f"{user}:{secret}".encode()).decode()
            for exc in errors:
                for text in (str(exc), repr(exc)):
                    assert secret not in text and basic not in text
            assert secret not in caplog.text and basic not in caplog.text
    assert "alice-pw" not in repr(creds_list[1])


# ------------------------------------------------------------------------------ big files


async def test_64mib_through_the_devserver_in_bounded_memory(
    kb: KanboardServer, world: dict[str, int]
) -> None:
    size = 64 * 1024 * 1024 + 2
    pid, t1 = world["pid"], world["t1"]
    want = expected_hash(size)
    async with client(kb, timeout=60.0) as kc:
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            fid = await kc.create_file(
                Container(pid, t1),
                "big.bin",
                PatternSource(size),  # type: ignore[arg-type]
                size,
            )
            _, up_peak = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            sink = HashSink()
            got = await kc.download_file(Container(pid, t1), fid, sink)  # type: ignore[arg-type]
            _, down_peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert (await kc.get_file(Container(pid, t1), fid)).size == size
    assert got == size and sink.hash.hexdigest() == want
    assert up_peak < 8 * 2**20, f"upload peak {up_peak / 2**20:.1f} MiB"
    assert down_peak < 8 * 2**20, f"download peak {down_peak / 2**20:.1f} MiB"
