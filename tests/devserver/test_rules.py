"""Kanboard rules of the devserver, driven in-process through ``Dispatcher.handle`` (fast).

These cover behaviour the transcript shows only once or not at all: storage sharing, orphans,
cascades on disk, lockout expiry, role matrices, PHP value juggling.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kbfs.devserver.faults import FaultPlan
from kbfs.devserver.images import image_size, make_png
from kbfs.devserver.php import base64_decode, is_empty_content, sql_id
from kbfs.devserver.rpc import Dispatcher
from kbfs.devserver.store import Store

TOKEN = "kbdev-unit"


class Clock:
    """A settable clock for the store (PHP ``time()``)."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class Rpc:
    """Minimal client over ``Dispatcher.handle``."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.d = dispatcher
        self.store = dispatcher.store

    @staticmethod
    def header(user: str, password: str) -> str:
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def raw(self, body: Any, user: str = "jsonrpc", password: str = TOKEN) -> tuple[int, Any]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        status, _headers, answer = self.d.handle(data, self.header(user, password))
        out = bytes(answer)
        return status, (json.loads(out) if out else out)

    def answer(self, method: str, params: Any = None, **auth: str) -> tuple[int, Any]:
        req: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": 7}
        if params is not None:
            req["params"] = params
        return self.raw(req, **auth)

    def __call__(self, method: str, params: Any = None, **auth: str) -> Any:
        status, payload = self.answer(method, params, **auth)
        assert status == 200, (status, payload)
        assert "error" not in payload, payload
        return payload["result"]

    def upload(self, project: int, task: int, name: Any, data: bytes, **auth: str) -> Any:
        return self(
            "createTaskFile", [project, task, name, base64.b64encode(data).decode()], **auth
        )

    def download(self, file_id: int) -> bytes:
        return base64.b64decode(self("downloadTaskFile", [file_id]))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def rpc(tmp_path: Path, clock: Clock) -> Iterator[Rpc]:
    store = Store(tmp_path, clock=clock, admin_password="admin")
    yield Rpc(Dispatcher(store, TOKEN, FaultPlan()))
    store.close()


def setup_project(rpc: Rpc) -> tuple[int, int]:
    pid = rpc("createProject", {"name": "p"})
    return pid, rpc("createTask", {"project_id": pid, "title": "t"})


# -- PHP helpers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("blob", "raw"),
    [
        ("SGVsbG8=", b"Hello"),
        ("SGVs!!bG8*", b"Hello"),
        ("SGVsbG8", b"Hello"),
        ("SGVs\nbG8=\n", b"Hello"),
        ("-__-", b""),
        ("####", b""),
        ("QQ", b"A"),
        ("QUJDR", b"ABC"),
    ],
)
def test_lenient_base64(blob: str, raw: bytes) -> None:
    assert base64_decode(blob) == raw


def test_plain_text_blob_and_empty_rule() -> None:
    assert len(base64_decode("plain text, not base64")) == 13
    assert is_empty_content(b"0") and is_empty_content(b"")
    assert not is_empty_content(b"00") and not is_empty_content(b"\x00")


@pytest.mark.parametrize(
    ("value", "ident"),
    [(1, 1), ("1", 1), (1.0, 1), (True, 1), ("abc", None), (None, None), ([1], None), ({}, None)],
)
def test_sql_id(value: Any, ident: int | None) -> None:
    assert sql_id(value) == ident


def test_image_sniffing() -> None:
    assert image_size(make_png(40, 30, (1, 2, 3))) == (40, 30)
    assert image_size(b"GIF89a\x05\x00\x07\x00rest") == (5, 7)
    assert image_size(b"GIF89a\x00\x00\x07\x00rest") is None
    jpeg = b"\xff\xd8\xff\xe0\x00\x04ab\xff\xc0\x00\x0b\x08\x00\x02\x00\x03\x01\x01\x11\x00"
    assert image_size(jpeg) == (3, 2)
    assert image_size(b"x") is None


# -- files --------------------------------------------------------------------------------------


def test_same_second_upload_shares_storage(rpc: Rpc, clock: Clock) -> None:
    pid, tid = setup_project(rpc)
    first = rpc.upload(pid, tid, "dup.txt", b"first version")
    second = rpc.upload(pid, tid, "dup.txt", b"second version!!")
    a, b = rpc("getTaskFile", [first]), rpc("getTaskFile", [second])
    assert a["path"] == b["path"] and a["etag"] == b["etag"]
    assert (a["size"], b["size"]) == (13, 16)
    assert rpc.download(first) == rpc.download(second) == b"second version!!"
    clock.now += 1
    third = rpc.upload(pid, tid, "dup.txt", b"later")
    assert rpc("getTaskFile", [third])["path"] != a["path"]
    # Removing one sharer keeps the bytes for the other; removing the last deletes them.
    assert rpc("removeTaskFile", [first]) is True
    assert rpc.download(second) == b"second version!!"
    assert rpc("removeTaskFile", [second]) is True
    assert not (rpc.store.files_dir / a["path"]).exists()


def test_ids_are_reused(rpc: Rpc) -> None:
    pid, tid = setup_project(rpc)
    ids = [rpc.upload(pid, tid, f"f{i}", b"x") for i in range(3)]
    assert ids == [1, 2, 3]
    assert rpc("removeTaskFile", [3]) is True
    assert rpc.upload(pid, tid, "again", b"y") == 3
    assert rpc("removeTask", [tid]) is True
    assert rpc("createTask", {"project_id": pid, "title": "t2"}) == tid


def test_names_cut_to_255_bytes(rpc: Rpc) -> None:
    pid, tid = setup_project(rpc)
    ok = rpc.upload(pid, tid, "a" * 300, b"x")
    assert rpc("getTaskFile", [ok])["name"] == "a" * 255
    bad = rpc.upload(pid, tid, "N" * 254 + "é", b"x")
    status, payload = rpc.answer("getTaskFile", [bad])
    assert status == 200
    assert payload["error"] == {
        "code": -32603,
        "message": "Internal error",
        "data": "Malformed UTF-8 characters, possibly incorrectly encoded",
    }
    assert rpc.answer("getAllTaskFiles", [tid])[1]["error"]["code"] == -32603
    assert rpc("removeTaskFile", [bad]) is True
    assert [f["id"] for f in rpc("getAllTaskFiles", [tid])] == [ok]


def test_filename_conversions_and_order(rpc: Rpc) -> None:
    pid, tid = setup_project(rpc)
    for name in [None, 12345, "UPPER.txt", "lower.txt", "résumé", "dir/sub/file.txt", "."]:
        rpc.upload(pid, tid, name, b"data")
    names = [f["name"] for f in rpc("getAllTaskFiles", [tid])]
    assert names == ["", ".", "12345", "dir/sub/file.txt", "lower.txt", "résumé", "UPPER.txt"]


def test_json_output_is_unescaped(rpc: Rpc) -> None:
    pid, tid = setup_project(rpc)
    rpc.upload(pid, tid, "a/b 日本.txt", b"\xff" * 30)
    body = rpc.d.handle(
        json.dumps(
            {"jsonrpc": "2.0", "method": "getAllTaskFiles", "id": 1, "params": [tid]}
        ).encode(),
        rpc.header("jsonrpc", TOKEN),
    ).body
    assert isinstance(body, bytes)
    assert "a/b 日本.txt".encode() in body and b"\\/" not in body


def test_is_image_by_extension_and_bad_image(rpc: Rpc) -> None:
    pid, tid = setup_project(rpc)
    png = make_png(4, 4, (9, 9, 9))
    for name, flag in [("a.PNG", 1), ("b.JpEg", 1), ("c.gif", 1), ("d.webp", 0), ("noext", 0)]:
        fid = rpc.upload(pid, tid, name, png)
        assert rpc("getTaskFile", [fid])["is_image"] == flag
    before = set((rpc.store.files_dir / f"tasks/{tid}").iterdir())
    blob = base64.b64encode(b"not an image").decode()
    status, payload = rpc.answer("createTaskFile", [pid, tid, "fake.png", blob])
    assert (status, payload) == (500, b"")
    orphans = set((rpc.store.files_dir / f"tasks/{tid}").iterdir()) - before
    assert len(orphans) == 1  # the data file stays on disk, no row
    assert len(rpc("getAllTaskFiles", [tid])) == 5


def test_project_file_orphan_and_invalid_id(rpc: Rpc) -> None:
    blob = base64.b64encode(b"x").decode()
    assert rpc("createProjectFile", [99, "x.txt", blob]) is False
    assert list((rpc.store.files_dir / "projects/99").iterdir())
    for bad in (0, -1, "abc"):
        _, payload = rpc.answer("createProjectFile", [bad, "x.txt", blob])
        assert payload["error"] == {
            "code": 0,
            "message": "Invalid ID provided for file path generation",
        }
    assert rpc("createProjectFile", [0, "x.txt", ""]) is False  # empty content is checked first


def test_missing_storage(rpc: Rpc) -> None:
    pid, tid = setup_project(rpc)
    fid = rpc.upload(pid, tid, "v.txt", b"vanish")
    (rpc.store.files_dir / rpc("getTaskFile", [fid])["path"]).unlink()
    assert rpc("downloadTaskFile", [fid]) == ""
    assert rpc("removeTaskFile", [fid]) is False
    assert rpc("getTaskFile", [fid]) is not None
    assert rpc("removeTask", [tid]) is True
    assert rpc("getTaskFile", [fid]) is None


def test_remove_project_cascades_to_disk(rpc: Rpc) -> None:
    pid, tid = setup_project(rpc)
    closed = rpc("createTask", {"project_id": pid, "title": "closed"})
    assert rpc("closeTask", [closed]) is True
    rpc.upload(pid, tid, "a.txt", b"a")
    rpc.upload(pid, closed, "b.txt", b"b")
    pfid = rpc("createProjectFile", [pid, "p.txt", base64.b64encode(b"p").decode()])
    assert rpc("removeProject", [pid]) is True
    assert rpc("getProjectFile", [pid, pfid]) is False
    assert rpc("getAllProjectFiles", [pid]) == []
    leftovers = [p for p in rpc.store.files_dir.rglob("*") if p.is_file()]
    assert leftovers == []


def test_duplicate_and_move_keep_paths(rpc: Rpc) -> None:
    pid, tid = setup_project(rpc)
    other = rpc("createProject", {"name": "other"})
    fid = rpc.upload(pid, tid, "m.txt", b"moving")
    assert rpc("moveTaskToProject", {"task_id": tid, "project_id": other}) is True
    assert rpc("getTaskFile", [fid])["path"].startswith(f"tasks/{tid}/")
    assert rpc.upload(pid, tid, "x", b"x") is False  # old project id no longer matches
    copy = rpc("duplicateTaskToProject", {"task_id": tid, "project_id": pid})
    [dup] = rpc("getAllTaskFiles", [copy])
    assert dup["path"] == rpc("getTaskFile", [fid])["path"]
    assert rpc("removeTask", [tid]) is True
    assert rpc.download(dup["id"]) == b"moving"


def test_wrong_types_and_nonexistent_with_token(rpc: Rpc) -> None:
    pid, tid = setup_project(rpc)
    rpc.upload(pid, tid, "a", b"a")
    assert rpc("getTaskFile", ["1"])["id"] == 1
    assert rpc("getTaskFile", [True])["id"] == 1
    assert rpc("getTaskFile", [[1]]) is None
    assert rpc("getAllTaskFiles", ["abc"]) == []
    assert rpc("removeAllTaskFiles", [999]) is True
    assert rpc("getProjectById", [999]) is None
    assert rpc("getAllTasks", [999]) == []
    status, payload = rpc.answer("createTaskFile", [pid, tid, "x", ["QUJD"]])
    assert (status, payload) == (500, b"")
    assert rpc("createTaskFile", [pid, tid, "int.txt", 1234]) is not False


# -- protocol -----------------------------------------------------------------------------------


def test_param_binding(rpc: Rpc) -> None:
    def data(method: str, params: Any) -> Any:
        return rpc.answer(method, params)[1]["error"]["data"]

    assert data("getTaskFile", {}) == "Wrong number of arguments"
    assert data("getTaskFile", [1, 2]) == "Too many arguments"
    assert data("getTaskFile", {"file_id": 1, "x": 2}) == "Too many arguments"
    assert data("getProjectFile", {"project_id": 1, "id": 1}) == "Missing argument: file_id"
    assert rpc("getTaskFile", {"file_id": None}) is None  # a null value still counts as given
    assert rpc("getTaskFile", {"0": 1}) is None  # numeric keys are positional in PHP
    assert rpc("getAllTasks", {"project_id": 1}) == []


def test_notifications_and_batches(rpc: Rpc) -> None:
    assert rpc.raw({"jsonrpc": "2.0", "method": "getVersion"}) == (200, b"")
    assert rpc.raw({"jsonrpc": "2.0", "method": "nope", "id": None}) == (200, b"")
    invalid = {
        "jsonrpc": "2.0",
        "error": {"code": -32600, "message": "Invalid Request"},
        "id": None,
    }
    assert rpc.raw({"jsonrpc": "1.0", "method": "getVersion"}) == (200, invalid)
    assert rpc.raw([{"jsonrpc": "2.0", "method": "getVersion"}] * 2) == (200, b"")
    assert rpc.raw([]) == (200, invalid)
    _, payload = rpc.raw([1])
    assert payload == [
        {"jsonrpc": "2.0", "error": {"code": -32700, "message": "Parse error"}, "id": None}
    ]
    _, payload = rpc.raw(b'{"jsonrpc": "2.0", "method": "x\\ud800", "id": 1}')
    assert payload["error"]["code"] == -32700
    assert rpc.raw(b"5")[1]["error"]["code"] == -32700
    assert (
        rpc.raw(b'{"jsonrpc": "2.0", "method": "getVersion", "id": NaN}')[1]["error"]["code"]
        == -32700
    )


def test_auth_checked_per_call_after_parsing(rpc: Rpc) -> None:
    status, payload = rpc.raw(b"{bad", user="nobody", password="x")
    assert (status, payload["error"]["code"]) == (200, -32700)
    batch = [{"jsonrpc": "1.0"}, {"jsonrpc": "2.0", "method": "getVersion", "id": 1}]
    status, payload = rpc.raw(batch, user="jsonrpc", password="wrong")
    assert (status, payload["error"]["code"], payload["id"]) == (401, 401, None)


# -- users and roles ----------------------------------------------------------------------------


def make_users(rpc: Rpc) -> tuple[int, int]:
    pid, tid = setup_project(rpc)
    for name, role in [
        ("vic", "project-viewer"),
        ("meg", "project-member"),
        ("man", "project-manager"),
    ]:
        uid = rpc("createUser", {"username": name, "password": name + "-pass"})
        assert rpc("addProjectUser", [pid, uid, role]) is True
    rpc("createUser", {"username": "out", "password": "out-pass"})
    return pid, tid


@pytest.mark.parametrize(
    ("user", "allowed"),
    [
        ("vic", {"getAllTaskFiles", "downloadTaskFile", "getProjectById", "getAllTasks"}),
        ("meg", {"getAllTaskFiles", "downloadTaskFile", "getProjectById", "getAllTasks",
                 "createTaskFile", "removeAllTaskFiles"}),
        ("man", {"getAllTaskFiles", "downloadTaskFile", "getProjectById", "getAllTasks",
                 "createTaskFile", "removeAllTaskFiles", "disableProject"}),
        ("out", set()),
        ("admin", set()),
    ],
)  # fmt: skip
def test_project_roles(rpc: Rpc, user: str, allowed: set[str]) -> None:
    pid, tid = make_users(rpc)
    rpc.upload(pid, tid, "f.txt", b"data")
    calls = {
        "getAllTaskFiles": [tid],
        "downloadTaskFile": [1],
        "getProjectById": [pid],
        "getAllTasks": [pid],
        "createTaskFile": [pid, tid, "n.txt", "eA=="],
        "removeAllTaskFiles": [tid],
        "disableProject": [pid],
    }
    password = "admin" if user == "admin" else user + "-pass"
    for method, params in calls.items():
        status, _ = rpc.answer(method, params, user=user, password=password)
        assert (status == 200) == (method in allowed), (user, method, status)


def test_app_roles(rpc: Rpc) -> None:
    rpc("createUser", {"username": "usr", "password": "usr-pass"})
    rpc("createUser", {"username": "mgr", "password": "mgr-pass", "role": "app-manager"})
    assert rpc.answer("getAllProjects", user="usr", password="usr-pass")[0] == 403
    assert rpc.answer("createProject", ["x"], user="usr", password="usr-pass")[0] == 403
    pid = rpc("createProject", ["mine"], user="mgr", password="mgr-pass")
    assert rpc("getProjectById", [pid], user="mgr", password="mgr-pass")["owner_id"] == 3
    assert rpc("getMyProjectsList", user="mgr", password="mgr-pass") == {str(pid): "mine"}
    assert rpc("getMyProjectsList", user="usr", password="usr-pass") == []
    assert rpc.answer("getMe")[0] == 403
    assert rpc("getAllProjects", user="admin", password="admin")[0]["name"] == "mine"
    token_pid = rpc("createProject", ["by token"])
    assert rpc("getProjectById", [token_pid])["owner_id"] == 0


def test_lockout_and_personal_token(rpc: Rpc, clock: Clock) -> None:
    uid = rpc("createUser", {"username": "dave", "password": "davepass"})
    for _ in range(7):
        assert rpc.answer("getVersion", user="dave", password="bad")[0] == 401
    assert rpc.answer("getVersion", user="dave", password="davepass")[0] == 401
    clock.now += 15 * 60 + 1
    assert rpc.answer("getVersion", user="dave", password="davepass")[0] == 200
    me = rpc("getMe", user="dave", password="davepass")
    assert me["nb_failed_login"] == 0 and me["role"] == "app-user"
    rpc.store.set_user_fields(uid, api_access_token="personal-token")
    assert rpc("getMe", user="dave", password="personal-token")["id"] == uid
