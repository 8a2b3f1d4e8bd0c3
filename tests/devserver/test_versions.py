"""``kbfs server --kanboard-version V``: each difference between Kanboard 1.2.20 and 1.2.53 that
a client can observe through the procedures kbfs uses, on each side of the release that brought
it (docs/kanboard-api.md §12 numbers them: #N below is row N of its table).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kbfs.devserver.faults import FaultPlan
from kbfs.devserver.rpc import Dispatcher
from kbfs.devserver.serve import main as server_main
from kbfs.devserver.store import Store
from kbfs.devserver.versions import Release, UnsupportedVersion

try:
    from test_rules import TOKEN, Clock, Rpc, setup_project
except ImportError:  # pragma: no cover
    from tests.devserver.test_rules import TOKEN, Clock, Rpc, setup_project

NX = 99999999
Server = Callable[[str], Rpc]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """A factory: the in-process server imitating one release, on a settable clock."""
    stores: list[Store] = []

    def make(version: str) -> Rpc:
        store = Store(tmp_path / version, clock=Clock())
        store.release = Release.parse(version)
        stores.append(store)
        return Rpc(Dispatcher(store, TOKEN, FaultPlan()))

    yield make
    for store in stores:
        store.close()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_release_numbers() -> None:
    assert str(Release.parse("v1.2.20")) == "1.2.20"
    for bad in ("1.2.19", "1.2.54", "main.abc", ""):
        with pytest.raises(UnsupportedVersion):
            Release.parse(bad)
    with pytest.raises(SystemExit):  # refused before anything is created
        server_main(["--data", "/nonexistent/x", "--kanboard-version", "1.2.9"])


@pytest.mark.parametrize("version", ["1.2.20", "1.2.53"])
def test_get_version(server: Server, version: str) -> None:
    assert server(version)("getVersion").startswith(version)


# #1 (1.2.28), kanboard-api §12 row 1: removing one of two rows that share a storage path


@pytest.mark.parametrize(("version", "survivor"), [("1.2.20", b""), ("1.2.27", b""),
                                                   ("1.2.28", b"version 2 longer"),
                                                   ("1.2.53", b"version 2 longer")])  # fmt: skip
def test_overwrite_pattern_in_one_second(server: Server, version: str, survivor: bytes) -> None:
    rpc = server(version)
    pid, tid = setup_project(rpc)
    old = rpc.upload(pid, tid, "ow.txt", b"version 1")
    new = rpc.upload(pid, tid, "ow.txt", b"version 2 longer")
    assert rpc("getTaskFile", [old])["path"] == rpc("getTaskFile", [new])["path"]
    assert rpc("removeTaskFile", [old]) is True
    assert rpc.download(new) == survivor
    assert rpc("getTaskFile", [new])["size"] == 16  # the row stays on every version
    assert rpc("removeTaskFile", [new]) is True  # C1f/C1g


@pytest.mark.parametrize("version", ["1.2.20", "1.2.53"])
def test_one_second_apart_no_collision(server: Server, version: str) -> None:
    rpc = server(version)
    pid, tid = setup_project(rpc)
    old = rpc.upload(pid, tid, "ow.txt", b"version 1")
    rpc.store.clock.now += 1.1  # type: ignore[attr-defined]
    new = rpc.upload(pid, tid, "ow.txt", b"version 2")
    assert rpc("removeTaskFile", [old]) is True
    assert rpc.download(new) == b"version 2"  # C3


@pytest.mark.parametrize(("version", "lost"), [("1.2.20", True), ("1.2.53", False)])
def test_project_files_share_paths_too(server: Server, version: str, lost: bool) -> None:
    rpc = server(version)
    pid, _ = setup_project(rpc)
    old = rpc("createProjectFile", [pid, "pow.txt", b64(b"p version 1")])
    new = rpc("createProjectFile", [pid, "pow.txt", b64(b"p version 2")])
    assert rpc("removeProjectFile", [pid, old]) is True
    content = base64.b64decode(rpc("downloadProjectFile", [pid, new]))
    assert content == (b"" if lost else b"p version 2")  # C6


# #2 (1.2.38), kanboard-api §12 row 2: etag


@pytest.mark.parametrize(("version", "etag"), [("1.2.20", False), ("1.2.28", False),
                                               ("1.2.38", True), ("1.2.53", True)])  # fmt: skip
def test_etag(server: Server, version: str, etag: bool) -> None:
    rpc = server(version)
    pid, tid = setup_project(rpc)
    fid = rpc.upload(pid, tid, "hello.txt", b"hello")
    pfid = rpc("createProjectFile", [pid, "spec.txt", b64(b"spec")])
    rows = [
        rpc("getTaskFile", [fid]),
        rpc("getAllTaskFiles", [tid])[0],
        rpc("getProjectFile", [pid, pfid]),
        rpc("getAllProjectFiles", [pid])[0],
    ]
    assert all(("etag" in row) is etag for row in rows)  # F02b, F03b, G02b
    assert all(row["path"] for row in rows)


# #3 (1.2.42), kanboard-api §12 row 3: a row whose stored bytes are missing


@pytest.mark.parametrize(("version", "removed"),
                         [("1.2.20", True), ("1.2.40", True), ("1.2.42", False),
                          ("1.2.53", False)])  # fmt: skip
def test_missing_bytes_removal(server: Server, version: str, removed: bool) -> None:
    rpc = server(version)
    pid, tid = setup_project(rpc)
    gone = rpc.upload(pid, tid, "gone.txt", b"gone")
    rpc.store.clock.now += 1  # type: ignore[attr-defined]
    also = rpc.upload(pid, tid, "also.txt", b"also")
    for fid in (gone, also):
        rpc.store.storage_path(rpc("getTaskFile", [fid])["path"]).unlink()
    assert rpc("removeTaskFile", [gone]) is removed  # F31b
    assert (rpc("getTaskFile", [gone]) is None) is removed  # F31c
    assert rpc("removeAllTaskFiles", [tid]) is removed  # F33
    assert (rpc("getAllTaskFiles", [tid]) == []) is removed


# #4, #5 (1.2.47), kanboard-api §12 row 4: createTaskFile checks


def test_create_task_file_before_1_2_47(server: Server) -> None:
    rpc = server("1.2.46")
    pa, ta = setup_project(rpc)
    pb = rpc("createProject", {"name": "b"})
    moved = rpc.upload(pb, ta, "x.txt", b"x")  # F11: a task of another project
    assert rpc("getTaskFile", [moved])["task_id"] == ta
    assert rpc.upload(pa, NX, "nx.txt", b"x") is False  # F10: false ...
    assert list((rpc.store.files_dir / "tasks" / str(NX)).iterdir())  # ... and an orphan
    answer = rpc("createProjectFile", [0, "o.txt", b64(b"x")])
    assert answer is False and (rpc.store.files_dir / "projects" / "0").is_dir()  # G13a


def test_create_task_file_from_1_2_47(server: Server) -> None:
    rpc = server("1.2.47")
    _pa, ta = setup_project(rpc)
    pb = rpc("createProject", {"name": "b"})
    assert rpc.upload(pb, ta, "x.txt", b"x") is False
    assert rpc.upload(pb, NX, "nx.txt", b"x") is False
    assert not (rpc.store.files_dir / "tasks" / str(NX)).exists()
    _, payload = rpc.answer("createProjectFile", [0, "o.txt", b64(b"x")])
    assert payload["error"]["message"] == "Invalid ID provided for file path generation"


# #6, #7 (1.2.50), kanboard-api §12 row 6: project_id of the project-file procedures


@pytest.mark.parametrize("version", ["1.2.20", "1.2.49", "1.2.50", "1.2.53"])
def test_project_file_procedures_and_the_project(server: Server, version: str) -> None:
    rpc = server(version)
    checks = Release.parse(version).checks_project_files
    pa, _ = setup_project(rpc)
    pb = rpc("createProject", {"name": "b"})
    g1 = rpc("createProjectFile", [pa, "spec.txt", b64(b"project spec")])
    assert rpc("getProjectFile", [pa, NX]) is (False if checks else None)  # G05
    row = rpc("getProjectFile", [pb, g1])  # G07
    assert row is False if checks else row["project_id"] == pa
    content = base64.b64decode(rpc("downloadProjectFile", [pb, g1]))  # G08
    assert content == (b"" if checks else b"project spec")
    assert rpc("removeProjectFile", [pb, g1]) is (not checks)  # G14
    assert (rpc("getProjectFile", [pa, g1]) in (None, False)) is (not checks)  # G14b


# #8 (1.2.36), #9 (1.2.29), kanboard-api §12 rows 7-8: shapes


@pytest.mark.parametrize(("version", "none"), [("1.2.28", None), ("1.2.36", "")])
def test_project_user_role_for_no_role(server: Server, version: str, none: object) -> None:
    rpc = server(version)
    pid, _ = setup_project(rpc)
    assert rpc("getProjectUserRole", {"project_id": pid, "user_id": 1}) == none  # Q05


@pytest.mark.parametrize(("version", "theme"), [("1.2.28", False), ("1.2.29", True)])
def test_theme_in_user_rows(server: Server, version: str, theme: bool) -> None:
    rpc = server(version)
    assert ("theme" in rpc("getUser", {"user_id": 1})) is theme  # U03
    admin = rpc.store.new_passwords["admin"]  # random since the store made it
    assert ("theme" in rpc("getMe", user="admin", password=admin)) is theme
