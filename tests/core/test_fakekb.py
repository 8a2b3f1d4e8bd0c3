"""The fake server keeps Kanboard's observable rules (kanboard-api §3-§8): the core tests are
only worth what the fake's faithfulness is worth."""

from __future__ import annotations

import hashlib
import inspect
import io

import pytest
import trio

from kbfs.client.api import KanboardClient
from kbfs.client.errors import (
    EmptyDownload,
    NotFound,
    Rejected,
    RpcError,
    ServerError,
    TransportError,
)
from kbfs.client.models import Container
from kbfs.client.protocol import KanboardAPI

try:
    from fakekb import FakeKanboard
except ImportError:  # pragma: no cover
    from tests.core.fakekb import FakeKanboard

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 24


def protocol_members() -> list[str]:
    return [n for n in vars(KanboardAPI) if not n.startswith("_")]


def test_the_fake_implements_the_protocol_with_its_signatures() -> None:
    for name in protocol_members():
        wanted = getattr(KanboardAPI, name)
        assert hasattr(FakeKanboard, name), name
        if isinstance(wanted, property):
            continue
        assert inspect.signature(getattr(FakeKanboard, name)) == inspect.signature(wanted), name


def test_the_real_client_matches_the_protocol() -> None:
    """Every member the client has is the Protocol's, signature for signature (project_roles
    is being added to the client separately: compared once it is there)."""
    assert {n for n in protocol_members() if not hasattr(KanboardClient, n)} <= {"project_roles"}
    for name in protocol_members():
        wanted, real = getattr(KanboardAPI, name), getattr(KanboardClient, name, None)
        if real is None or isinstance(wanted, property):
            continue
        assert inspect.signature(real) == inspect.signature(wanted), name


def setup() -> tuple[FakeKanboard, Container, Container]:
    kb = FakeKanboard()
    project = kb.add_project("P")
    task = kb.add_task(project, "T")
    return kb, Container(project, task), Container(project)


async def upload(kb: FakeKanboard, where: Container, name: str, data: bytes) -> int:
    return await kb.create_file(where, name, io.BytesIO(data), len(data))


async def download(kb: FakeKanboard, where: Container, file_id: int) -> bytes:
    sink = io.BytesIO()
    await kb.download_file(where, file_id, sink)
    return sink.getvalue()


async def test_ids_grow_and_the_highest_is_reused_after_removal() -> None:
    kb, task, _ = setup()
    a = await upload(kb, task, "a", b"A")
    b = await upload(kb, task, "b", b"B")
    assert (a, b) == (1, 2)
    await kb.remove_file(task, a)
    assert await upload(kb, task, "c", b"C") == 3  # a lower hole is not refilled
    await kb.remove_file(task, 3)
    assert await upload(kb, task, "d", b"D") == 3  # the highest id comes back
    assert [r.name for r in await kb.list_files(task)] == ["b", "d"]


async def test_task_and_project_files_have_separate_id_sequences() -> None:
    kb, task, files = setup()
    assert await upload(kb, task, "x", b"1") == 1
    assert await upload(kb, files, "x", b"1") == 1


async def test_same_name_same_second_shares_storage_and_the_second_content_wins() -> None:
    kb, task, _ = setup()
    kb.dates.freeze()
    first = await upload(kb, task, "dup.txt", b"first content")
    second = await upload(kb, task, "dup.txt", b"second, longer!")
    one, two = await kb.get_file(task, first), await kb.get_file(task, second)
    assert one.path == two.path and one.etag == two.etag
    assert (one.size, two.size) == (13, 15)  # each row keeps its own size
    assert await download(kb, task, first) == b"second, longer!"
    # Removing one row keeps the bytes the other still uses.
    await kb.remove_file(task, second)
    assert await download(kb, task, first) == b"second, longer!"


async def test_same_name_in_another_second_or_another_name_does_not_collide() -> None:
    kb, task, _ = setup()
    kb.dates.freeze()
    a = await upload(kb, task, "n.txt", b"one")
    b = await upload(kb, task, "m.txt", b"two")
    kb.dates.advance(1)
    c = await upload(kb, task, "n.txt", b"three")
    paths = {(await kb.get_file(task, i)).path for i in (a, b, c)}
    assert len(paths) == 3
    assert await download(kb, task, a) == b"one"


@pytest.mark.parametrize("data", [b"", b"0"])
async def test_empty_and_zero_content_are_refused(data: bytes) -> None:
    kb, task, _ = setup()
    with pytest.raises(Rejected):
        await upload(kb, task, "f", data)
    assert kb.names(task) == []
    assert await upload(kb, task, "f", b"00") == 1  # only PHP empty() values are refused


async def test_task_must_exist_in_the_named_project() -> None:
    kb, task, _ = setup()
    other = kb.add_project("Q")
    with pytest.raises(Rejected):
        await upload(kb, Container(other, task.task_id), "f", b"x")
    with pytest.raises(Rejected):
        await upload(kb, Container(task.project_id, 99), "f", b"x")
    with pytest.raises(Rejected):  # a project that does not exist: the row is refused
        await upload(kb, Container(42), "f", b"x")
    with pytest.raises(RpcError):
        await upload(kb, Container(0), "f", b"x")


async def test_image_name_on_non_image_content_is_http_500_and_leaves_an_orphan() -> None:
    kb, task, _ = setup()
    with pytest.raises(ServerError):
        await upload(kb, task, "fake.PNG", b"just text")
    assert kb.names(task) == []
    assert len(kb.stored_paths()) == 1  # the bytes were written before the failure
    file_id = await upload(kb, task, "real.png", PNG)
    assert (await kb.get_file(task, file_id)).is_image
    assert not (await kb.get_file(task, await upload(kb, task, "png.txt", PNG))).is_image


async def test_records_have_kanboards_shapes() -> None:
    kb, task, _ = setup()
    kb.add_user(3, "alice", "Alice A.")
    kb.add_file(task, "b.txt", b"bb", user_id=3)
    kb.add_file(task, "A.txt", b"a")
    kb.add_file(task, "a.txt", b"aaa")
    listed = await kb.list_files(task)
    assert [r.name for r in listed] == ["A.txt", "a.txt", "b.txt"]  # NOCASE, then id
    assert [(r.username, r.user_name) for r in listed] == [
        (None, None),
        (None, None),
        ("alice", "Alice A."),
    ]
    got = await kb.get_file(task, listed[2].id)
    assert got.username is None  # get*File is the raw row, without the users join
    assert got.etag == hashlib.md5(got.path.encode()).hexdigest()
    assert got.path.startswith(f"tasks/{task.task_id}/")
    assert (got.task_id, got.project_id, got.size) == (task.task_id, None, 2)


async def test_get_download_and_remove_look_where_kanboard_looks() -> None:
    kb, task, files = setup()
    other_task = Container(task.project_id, kb.add_task(task.project_id, "U"))
    t = kb.add_file(task, "t.txt", b"task file")
    p = kb.add_file(files, "p.txt", b"project file")
    with pytest.raises(NotFound):  # the client checks the task of getTaskFile's answer
        await kb.get_file(other_task, t)
    assert await download(kb, other_task, t) == b"task file"  # the id alone decides
    with pytest.raises(EmptyDownload):
        await download(kb, Container(99), p)  # the project is compared
    with pytest.raises(NotFound):
        await kb.remove_file(Container(99), p)
    await kb.remove_file(other_task, t)  # removeTaskFile: the id alone decides
    assert kb.names(task) == []


async def test_missing_storage_downloads_empty_and_cannot_be_removed() -> None:
    kb, task, _ = setup()
    file_id = kb.add_file(task, "f.txt", b"content")
    kb.lose_storage(task, file_id)
    with pytest.raises(EmptyDownload):
        await download(kb, task, file_id)
    with pytest.raises(NotFound):
        await kb.remove_file(task, file_id)
    assert kb.names(task) == ["f.txt"]  # the row stays


async def test_names_are_cut_to_255_bytes_and_a_split_character_breaks_the_listing() -> None:
    kb, task, _ = setup()
    kb.add_file(task, "x" * 300, b"1")
    assert kb.names(task) == ["x" * 255]
    bad = kb.add_file(task, "N" * 254 + "é", b"2")
    with pytest.raises(RpcError):
        await kb.list_files(task)
    with pytest.raises(RpcError):
        await kb.get_file(task, bad)
    await kb.remove_file(task, bad)  # removal still works
    assert len(await kb.list_files(task)) == 1


async def test_fail_counts_down_per_method() -> None:
    kb, task, _ = setup()
    kb.fail("create_file", ServerError("boom", status_code=500), after=1, times=2)
    await upload(kb, task, "a", b"1")
    await kb.list_files(task)  # other methods do not count
    for name in ("b", "c"):
        with pytest.raises(ServerError):
            await upload(kb, task, name, b"2")
    await upload(kb, task, "d", b"3")
    assert kb.names(task) == ["a", "d"]  # failed calls changed nothing
    assert kb.calls["create_file"] == 4
    assert [c.outcome for c in kb.log if c.method == "create_file"] == [
        "ok",
        "injected",
        "injected",
        "ok",
    ]
    assert kb.statistics().calls == {"create_file": 4, "list_files": 1}


async def test_lost_answers_take_effect() -> None:
    kb, task, _ = setup()
    kb.lose_answer("create_file")
    with pytest.raises(TransportError) as caught:
        await upload(kb, task, "a", b"1")
    assert caught.value.request_sent
    assert kb.names(task) == ["a"]
    kb.lose_answer("remove_file")
    with pytest.raises(TransportError):
        await kb.remove_file(task, 1)
    assert kb.names(task) == []
    assert kb.mutations() == [("create", "a"), ("remove", 1)]
    with pytest.raises(ValueError):
        kb.lose_answer("list_files")


async def test_gate_holds_a_call_until_released() -> None:
    kb, task, _ = setup()
    gate = kb.gate("create_file")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(upload, kb, task, "a", b"1")
        await gate.reached.wait()
        assert kb.names(task) == []
        gate.release()
    assert kb.names(task) == ["a"]


async def test_remove_all_and_remove_task_cascade() -> None:
    kb, task, files = setup()
    kb.add_file(task, "a", b"1")
    kb.add_file(task, "b", b"2")
    kb.add_file(files, "c", b"3")
    await kb.remove_all_files(task)
    assert kb.names(task) == [] and kb.names(files) == ["c"]
    kb.add_file(task, "d", b"4")
    assert task.task_id is not None
    kb.remove_task(task.task_id)
    assert kb.names(task) == []
    assert await kb.get_all_tasks_any_status(task.project_id) == []
