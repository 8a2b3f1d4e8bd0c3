"""FakeKanboard: an in-memory Kanboard that implements ``kbfs.client.protocol.KanboardAPI``.

The core tests drive ``Vfs`` against this instead of a devserver over HTTP: no sockets, no
subprocess, no kernel, and every call the core makes can be counted, logged, delayed or made
to fail. That only proves something if the fake keeps the rules a real Kanboard shows (a
friendlier fake would hide exactly the bugs the core exists to avoid), so it models what
Kanboard 1.2.53 was observed to do (the § numbers of the API facts cited across kbfs):

* ids per table, ``max(id) + 1``: removing the highest id hands it out again (§7);
* storage paths ``<tasks|projects>/<owner>/sha1(name . time())``: two uploads of one name to
  one container in the same second share a path, the second overwrites the first one's bytes
  and both rows then download the second content, each row keeping its own ``size`` (§7);
  stored bytes go only with the last row using them;
* ``create*File`` answers false (the client raises Rejected) for empty content, content "0",
  a task that does not exist or is in another project, a project that does not exist (§4, §5);
  an image name (jpg/jpeg/png/gif, by extension) on content that is no image is HTTP 500
  (ServerError) and creates no row (§8); names are cut to 255 bytes (§6);
* ``downloadTaskFile`` and ``removeTaskFile`` look at the file id alone, the project
  procedures compare the project; a row whose stored bytes are gone downloads as ``""``
  (EmptyDownload) and cannot be removed (NotFound, the row stays) (§4);
* records are built as the JSON Kanboard sends (the listing shape with ``username``, the
  ``get*File`` shape without) and parsed by the client's own ``FileRecord.from_json``.

``FakeKanboard(version="1.2.20")`` keeps the older rules instead (VERSIONS.md §1): removing a
row deletes the stored bytes even when another row shares them (before 1.2.28), no ``etag``
(before 1.2.38), a row whose bytes are missing is removed anyway (before 1.2.42),
``createTaskFile`` checks no task (before 1.2.47), the project-file procedures ignore the
project (before 1.2.50). Its ``server_clock`` is the date clock itself: a wait for the next
server second moves that clock on at once, so the core tests never sleep.

Failure injection follows mountpoint-s3's countdown-failure client: a counter per method,
"let N calls of M through, then fail the next ones with E" (``fail``), plus "the call takes
effect on the server but its answer is lost" (``lose_answer``) for the calls that change
something. Every call is counted per method and logged in order (``calls``, ``log``), and
record dates come from a controllable clock (``DateClock``).
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import trio

from kbfs.client.api import ClientStats
from kbfs.client.errors import (
    EmptyDownload,
    KanboardError,
    NotFound,
    Rejected,
    RpcError,
    ServerError,
    SourceError,
    TransportError,
)
from kbfs.client.models import Container, FileRecord, Kind, Project, Task
from kbfs.client.servertime import ServerClock
from kbfs.client.versions import ServerRules

__all__ = ["Call", "DateClock", "FakeKanboard", "Gate", "ManualClock"]

ENDPOINT = "http://kanboard.fake/jsonrpc.php"
IMAGE_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "gif"})
IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a")
MALFORMED_UTF8 = "Malformed UTF-8 characters, possibly incorrectly encoded"
# Calls that change the server: only their answers can be "lost" after taking effect.
MUTATIONS = frozenset({"create_file", "create_files", "remove_file", "remove_all_files"})


class DateClock:
    """Kanboard's ``time()`` for record dates: follows the wall clock unless frozen.

    It follows real time by default because the core compares record dates with the wall-clock
    time of its own attempts (a lost create is looked for among files dated no earlier than
    it). ``freeze`` pins it (same-second collisions), ``advance`` moves it on.
    """

    def __init__(self) -> None:
        self._offset = 0.0
        self._frozen: float | None = None

    def __call__(self) -> float:
        if self._frozen is not None:
            return self._frozen
        return time.time() + self._offset

    def freeze(self, at: float | None = None) -> None:
        self._frozen = self() if at is None else at

    def unfreeze(self) -> None:
        if self._frozen is not None:
            self._offset = self._frozen - time.time()
        self._frozen = None

    def advance(self, seconds: float) -> None:
        if self._frozen is not None:
            self._frozen += seconds
        else:
            self._offset += seconds


class FakeServerClock(ServerClock):
    """The fake server's clock as the core sees it: exactly its DateClock. Waiting for a
    second to pass moves the DateClock on (time "passes" at once), counted in ``waits``."""

    def __init__(self, dates: DateClock) -> None:
        super().__init__()
        self.dates = dates

    def observe(self, server_seconds: float) -> None:
        pass  # the fake knows its own clock

    def now(self) -> float | None:
        return self.dates()

    async def wait_past(self, second: int) -> float:
        delay = second + 1 - self.dates()
        if delay <= 0:
            return 0.0
        self.waits += 1
        self.waited += delay
        self.dates.advance(delay)
        await trio.lowlevel.checkpoint()
        return delay


class ManualClock:
    """A monotonic clock that moves only when told to (the Vfs's cache ages and retry times)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Call:
    """One call the client made, in order: what it asked and how it ended."""

    method: str
    args: tuple[Any, ...]
    outcome: str = "pending"  # ok | refused (the server said no) | injected | lost


@dataclass
class _Fault:
    method: str
    exc: BaseException | Callable[[], BaseException]
    countdown: int  # calls still let through before this fault fires
    remaining: int | None  # failures still to inject (None: forever)
    applied: bool  # the call takes effect before the failure (a lost answer)

    def error(self) -> BaseException:
        return self.exc if isinstance(self.exc, BaseException) else self.exc()


class Gate:
    """Holds the next call of one method until ``release`` (to act while it is in flight)."""

    def __init__(self) -> None:
        self.reached = trio.Event()
        self._open = trio.Event()

    def release(self) -> None:
        self._open.set()

    async def wait(self) -> None:
        self.reached.set()
        await self._open.wait()


@dataclass
class _Row:
    kind: Kind
    id: int
    owner: int  # task id or project id
    name: str  # as stored: cut to 255 bytes, possibly invalid UTF-8 (surrogate escapes)
    path: str
    is_image: bool
    date: int
    user_id: int
    size: int


@dataclass
class _Project:
    id: int
    name: str
    is_active: bool = True


@dataclass
class _Task:
    id: int
    project_id: int
    title: str
    is_active: bool = True


@dataclass
class _Tables:
    projects: dict[int, _Project] = field(default_factory=dict)
    tasks: dict[int, _Task] = field(default_factory=dict)
    files: dict[Kind, dict[int, _Row]] = field(
        default_factory=lambda: {Kind.TASK: {}, Kind.PROJECT: {}}
    )
    storage: dict[str, bytes] = field(default_factory=dict)  # path -> stored bytes
    users: dict[int, tuple[str, str | None]] = field(default_factory=dict)  # username, name
    roles: dict[tuple[int, int], str] = field(default_factory=dict)  # (project, user) -> role


def _next_id(table: dict[int, Any]) -> int:
    """SQLite's INTEGER PRIMARY KEY without AUTOINCREMENT: one more than the largest id."""
    return max(table, default=0) + 1


def _is_image_name(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return "." in base and base.rsplit(".", 1)[1].lower() in IMAGE_EXTENSIONS


def _etag(path: str) -> str:
    return hashlib.md5(path.encode("utf-8", "surrogateescape")).hexdigest()


class FakeKanboard:
    """An in-memory Kanboard (see the module docstring). Uses the app token: uploads get
    ``user_id`` 0 unless ``user_id`` is given, and no project-level permission checks run."""

    def __init__(
        self, *, user_id: int = 0, dates: DateClock | None = None, version: str = "1.2.53"
    ) -> None:
        self.dates = dates or DateClock()
        self._rules = ServerRules.of(version)
        self._server_clock = FakeServerClock(self.dates)
        self.user_id = user_id
        self.calls: Counter[str] = Counter()
        self.log: list[Call] = []
        self._db = _Tables()
        self._faults: list[_Fault] = []
        self._gates: dict[str, Gate] = {}

    # ------------------------------------------------------------------ KanboardAPI

    @property
    def endpoint(self) -> str:
        return ENDPOINT

    @property
    def rules(self) -> ServerRules:
        return self._rules

    @property
    def server_clock(self) -> FakeServerClock:
        return self._server_clock

    def statistics(self) -> ClientStats:
        return ClientStats(http_requests=sum(self.calls.values()), calls=dict(self.calls))

    async def get_projects(self) -> list[Project]:
        async with self._call("get_projects") as call:
            projects = [self._project_json(p) for p in sorted(self._db.projects.values(), key=_id)]
            call.outcome = "ok"
        return [Project.from_json(p) for p in projects]

    async def project_roles(self, project_ids: list[int], user_id: int) -> list[str | None]:
        async with self._call("project_roles", tuple(project_ids), user_id) as call:
            call.outcome = "ok"
            return [self._db.roles.get((pid, user_id)) for pid in project_ids]

    async def get_all_tasks_any_status(self, project_id: int) -> list[Task]:
        async with self._call("get_all_tasks_any_status", project_id) as call:
            tasks = [
                Task.from_json(self._task_json(t))
                for t in sorted(self._db.tasks.values(), key=_id)
                if t.project_id == project_id
            ]
            call.outcome = "ok"
        return tasks

    async def get_task(self, task_id: int) -> Task:
        async with self._call("get_task", task_id) as call:
            task = self._db.tasks.get(task_id)
            if task is None:
                call.outcome = "refused"
                raise NotFound(f"no task {task_id}", method="get_task")
            call.outcome = "ok"
            return Task.from_json(self._task_json(task))

    async def list_files(self, container: Container) -> list[FileRecord]:
        async with self._call("list_files", container) as call:
            records = self._listing(container)
            call.outcome = "ok"
        return records

    async def list_files_many(
        self, containers: Sequence[Container]
    ) -> list[list[FileRecord] | Exception]:
        async with self._call("list_files_many", tuple(containers)) as call:
            out: list[list[FileRecord] | Exception] = []
            for container in containers:
                try:
                    out.append(self._listing(container))
                except RpcError as exc:  # one bad item fails alone, as in a batch
                    out.append(exc)
            call.outcome = "ok"
        return out

    async def get_file(self, container: Container, file_id: int) -> FileRecord:
        async with self._call("get_file", container, file_id) as call:
            row = self._db.files[container.kind].get(file_id)
            if row is None or row.owner != container.owner_id:
                # getTaskFile (and getProjectFile before 1.2.50) answers any container's file;
                # the client then checks the owner.
                call.outcome = "refused"
                raise NotFound(f"no file {file_id} in {container}", method="get_file")
            self._check_utf8(row.name, "get_file")
            call.outcome = "ok"
            return FileRecord.from_json(container.kind, self._row_json(row, listing=False))

    async def download_file(
        self, container: Container, file_id: int, sink: BinaryIO, size: int | None = None
    ) -> int:
        async with self._call("download_file", container, file_id) as call:
            row = self._db.files[container.kind].get(file_id)
            if (
                row is not None
                and container.task_id is None
                and row.owner != container.owner_id
                and self._rules.checks_project_files
            ):
                row = None  # downloadProjectFile compares the project; downloadTaskFile not
            data = self._db.storage.get(row.path) if row is not None else None
            if not data:
                call.outcome = "refused"
                raise EmptyDownload("no file data", method="download_file")
            call.outcome = "ok"
        sink.writelines([data])
        return len(data)

    async def download_files(
        self,
        items: Sequence[tuple[Container, int]],
        deliver: Callable[[int, bytes | KanboardError], None],
        expected_bytes: int,
    ) -> None:
        """One batch request (counted as ``download_files``): each member as download_file
        answers it. A fault injected for ``download_files`` fails the whole request."""
        async with self._call("download_files", tuple(fid for _, fid in items)) as call:
            call.outcome = "ok"
        for i, (container, file_id) in enumerate(items):
            row = self._db.files[container.kind].get(file_id)
            if row is not None and container.task_id is None and row.owner != container.owner_id:
                row = None
            data = self._db.storage.get(row.path) if row is not None else None
            if data:
                deliver(i, data)
            else:
                deliver(i, EmptyDownload("no file data", method="download_files"))

    async def create_file(
        self, container: Container, filename: str, source: BinaryIO, size: int
    ) -> int:
        data = source.read(size)
        if len(data) != size:
            raise SourceError(f"the source ended after {len(data)} of {size} bytes")
        async with self._call("create_file", container, filename, size) as call:
            new_id = self._upload(container, filename, data, self.user_id)
            if new_id is None:
                call.outcome = "refused"
                raise Rejected("the server refused the file", method="create_file")
            call.outcome = "ok"
            return new_id

    async def create_files(
        self, uploads: Sequence[tuple[Container, str, BinaryIO, int]]
    ) -> list[int | KanboardError]:
        """One batch request (counted as ``create_files``): each member as create_file
        answers it. A fault injected for ``create_files`` fails the whole request; an
        "applied" one (answer lost) after every member was created."""
        blobs = [source.read(size) for _, _, source, size in uploads]
        names = tuple(name for _, name, _, _ in uploads)
        out: list[int | KanboardError] = []
        async with self._call("create_files", names) as call:
            for (container, filename, _, size), data in zip(uploads, blobs, strict=True):
                if len(data) != size:
                    out.append(SourceError(f"the source ended after {len(data)} of {size} bytes"))
                    continue
                new_id = self._upload(container, filename, data, self.user_id)
                if new_id is None:
                    out.append(Rejected("the server refused the file", method="create_file"))
                else:
                    out.append(new_id)
            call.outcome = "ok"
        return out

    async def remove_file(self, container: Container, file_id: int) -> None:
        async with self._call("remove_file", container, file_id) as call:
            if not self._remove(container, file_id):
                call.outcome = "refused"
                raise NotFound(f"file {file_id} not removed", method="remove_file")
            call.outcome = "ok"

    async def remove_all_files(self, container: Container) -> None:
        async with self._call("remove_all_files", container) as call:
            rows = self._db.files[container.kind]
            ids = [r.id for r in list(rows.values()) if r.owner == container.owner_id]
            results = [self._remove(container, i) for i in ids]
            if not all(results):
                call.outcome = "refused"
                raise Rejected("not all files could be removed", method="remove_all_files")
            call.outcome = "ok"

    # ------------------------------------------------------------------ failure injection

    def fail(
        self,
        method: str,
        exc: BaseException | Callable[[], BaseException],
        *,
        after: int = 0,
        times: int | None = 1,
    ) -> None:
        """Let the next ``after`` calls of ``method`` through, then fail ``times`` calls
        (None: all later ones) with ``exc`` (an exception, or a function making one) before
        they reach the server: nothing changes there."""
        self._add_fault(method, exc, after, times, applied=False)

    def lose_answer(
        self,
        method: str,
        *,
        after: int = 0,
        times: int | None = 1,
        exc: BaseException | Callable[[], BaseException] | None = None,
    ) -> None:
        """Like ``fail``, but each failing call first takes effect on the server (the file is
        created or removed) and only its answer is lost: by default a TransportError with
        ``request_sent=True``, as when a connection drops after the request went out."""
        if method not in MUTATIONS:
            raise ValueError(f"only a call that changes something can lose its answer: {method}")
        if exc is None:

            def exc() -> BaseException:
                return TransportError("connection lost after sending", request_sent=True)

        self._add_fault(method, exc, after, times, applied=True)

    def clear_faults(self) -> None:
        self._faults.clear()

    def gate(self, method: str) -> Gate:
        """Hold the next call of ``method`` (before it acts) until the gate is released."""
        gate = self._gates[method] = Gate()
        return gate

    def _add_fault(
        self,
        method: str,
        exc: BaseException | Callable[[], BaseException],
        after: int,
        times: int | None,
        *,
        applied: bool,
    ) -> None:
        if not hasattr(self, method) or method.startswith("_"):
            raise ValueError(f"no such call: {method}")
        self._faults.append(_Fault(method, exc, after, times, applied))

    def _due_fault(self, method: str) -> _Fault | None:
        """The fault this call of ``method`` triggers, counting it against every countdown."""
        due = None
        for fault in self._faults:
            if fault.method != method:
                continue
            if fault.countdown > 0:
                fault.countdown -= 1
            elif due is None and (fault.remaining is None or fault.remaining > 0):
                due = fault
                if fault.remaining is not None:
                    fault.remaining -= 1
        return due

    # ------------------------------------------------------------------ the call wrapper

    def _call(self, method: str, *args: Any) -> _CallScope:
        return _CallScope(self, method, args)

    # ------------------------------------------------------------------ server-side setup

    def add_project(self, name: str = "project", *, active: bool = True) -> int:
        project_id = _next_id(self._db.projects)
        self._db.projects[project_id] = _Project(project_id, name, active)
        return project_id

    def add_task(self, project_id: int, title: str = "task", *, active: bool = True) -> int:
        if project_id not in self._db.projects:
            raise ValueError(f"no project {project_id}")
        task_id = _next_id(self._db.tasks)
        self._db.tasks[task_id] = _Task(task_id, project_id, title, active)
        return task_id

    def remove_task(self, task_id: int) -> None:
        """removeTask: its files go with it, whatever happens to their storage (§10)."""
        self._db.tasks.pop(task_id)
        rows = self._db.files[Kind.TASK]
        for row in [r for r in rows.values() if r.owner == task_id]:
            self._release(row)
            del rows[row.id]

    def move_task(self, task_id: int, project_id: int) -> None:
        """moveTaskToProject: the task and its files (same ids, same paths) change project."""
        self._db.tasks[task_id].project_id = project_id

    def remove_file_out_of_band(self, container: Container, file_id: int) -> None:
        """Another client removes a file (its row and, unless shared, its bytes)."""
        assert self._remove(container, file_id)

    def add_user(self, user_id: int, username: str, name: str | None = None) -> None:
        self._db.users[user_id] = (username, name)

    def set_role(self, project_id: int, user_id: int, role: str) -> None:
        self._db.roles[(project_id, user_id)] = role

    def add_file(
        self, container: Container, name: str, data: bytes, *, user_id: int | None = None
    ) -> int:
        """An upload by someone else (the web UI, another client): not counted as a call."""
        new_id = self._upload(container, name, data, self.user_id if user_id is None else user_id)
        if new_id is None:
            raise ValueError(f"Kanboard would refuse {name!r} in {container}")
        return new_id

    def lose_storage(self, container: Container, file_id: int) -> None:
        """The stored bytes of a file vanish (deleted out of band): its row stays, a download
        answers "", a removal answers false (§4)."""
        row = self._db.files[container.kind][file_id]
        self._db.storage.pop(row.path, None)

    # ------------------------------------------------------------------ inspection

    def count(self, *methods: str) -> int:
        """Calls made so far of the given methods (all methods if none given)."""
        if not methods:
            return sum(self.calls.values())
        return sum(self.calls[m] for m in methods)

    def mutations(self) -> list[tuple[str, Any]]:
        """The creates and removals that reached the server, in order: ("create", name) and
        ("remove", file id). For asserting the order of a replace or a move."""
        out: list[tuple[str, Any]] = []
        for call in self.log:
            if call.outcome not in ("ok", "lost"):
                continue
            if call.method == "create_file":
                out.append(("create", call.args[1]))
            elif call.method == "remove_file":
                out.append(("remove", call.args[1]))
        return out

    def records(self, container: Container) -> list[FileRecord]:
        """The container's files in id order, as get*File shows them (no call counted)."""
        rows = sorted(self._rows(container), key=_id)
        return [FileRecord.from_json(container.kind, self._row_json(r, False)) for r in rows]

    def names(self, container: Container) -> list[str]:
        """The names of the container's files, in id order."""
        return [r.name for r in sorted(self._rows(container), key=_id)]

    def contents(self, container: Container) -> dict[str, bytes]:
        """name -> what a download of it gives (b"" if its storage is gone). Asserts that the
        names are unique: a duplicate is always a finding in these tests."""
        out: dict[str, bytes] = {}
        for row in sorted(self._rows(container), key=_id):
            assert row.name not in out, f"duplicate {row.name!r} in {container}"
            out[row.name] = self._db.storage.get(row.path, b"")
        return out

    def content(self, container: Container, file_id: int) -> bytes:
        row = self._db.files[container.kind][file_id]
        return self._db.storage.get(row.path, b"")

    def stored_paths(self) -> set[str]:
        """Storage keys that hold bytes (orphans included)."""
        return set(self._db.storage)

    # ------------------------------------------------------------------ the model

    def _rows(self, container: Container) -> list[_Row]:
        return [r for r in self._db.files[container.kind].values() if r.owner == container.owner_id]

    def _listing(self, container: Container) -> list[FileRecord]:
        """getAll*Files: ``ORDER BY name`` with NOCASE (ASCII case folding), then id."""
        rows = sorted(self._rows(container), key=lambda r: (_nocase(r.name), r.id))
        for row in rows:
            self._check_utf8(row.name, "list_files")  # one bad name fails the whole listing
        return [FileRecord.from_json(container.kind, self._row_json(r, True)) for r in rows]

    def _upload(self, container: Container, filename: str, data: bytes, user_id: int) -> int | None:
        """createTaskFile / createProjectFile after the base64 step: the new id, or None for
        Kanboard's ``false``. Raises what the client would raise for the other answers."""
        try:
            name_bytes = filename.encode("utf-8")
        except UnicodeEncodeError:
            return None  # the client cannot send it; it refuses the same way
        if container.task_id is not None and self._rules.checks_task_on_create:
            task = self._db.tasks.get(container.task_id)
            if task is None or task.project_id != container.project_id:
                return None
        elif container.project_id <= 0:
            raise RpcError(0, "Invalid ID provided for file path generation", method="create_file")
        if data in (b"", b"0"):  # PHP empty()
            return None
        now = int(self.dates())
        prefix = "projects" if container.task_id is None else "tasks"
        digest = hashlib.sha1(name_bytes + str(now).encode()).hexdigest()
        path = f"{prefix}/{container.owner_id}/{digest}"
        self._db.storage[path] = data  # written before any check below: failures orphan it
        if _is_image_name(filename) and not data.startswith(IMAGE_MAGIC):
            raise ServerError("HTTP 500 with an empty body", status_code=500, method="create_file")
        if container.task_id is None and container.project_id not in self._db.projects:
            return None  # the foreign key refuses the row; the stored file stays
        if container.task_id is not None and container.task_id not in self._db.tasks:
            return None  # before 1.2.47: the foreign key refuses it, the stored file stays
        rows = self._db.files[container.kind]
        new_id = _next_id(rows)
        rows[new_id] = _Row(
            kind=container.kind,
            id=new_id,
            owner=container.owner_id,
            name=name_bytes[:255].decode("utf-8", "surrogateescape"),
            path=path,
            is_image=_is_image_name(filename),
            date=now,
            user_id=user_id,
            size=len(data),
        )
        return new_id

    def _remove(self, container: Container, file_id: int) -> bool:
        """FileModel::remove behind remove*File: False for Kanboard's ``false``."""
        rows = self._db.files[container.kind]
        row = rows.get(file_id)
        if row is None:
            return False
        if (
            container.task_id is None
            and row.owner != container.owner_id
            and self._rules.checks_project_files
        ):
            return False  # removeProjectFile compares the project; removeTaskFile does not
        if not self._release(row):
            return False
        del rows[file_id]
        return True

    def _release(self, row: _Row) -> bool:
        """Drop the stored bytes unless another row uses them; False if they are missing."""
        users = sum(1 for t in self._db.files.values() for r in t.values() if r.path == row.path)
        if users > 1 and self._rules.keeps_shared_bytes:
            return True
        gone = self._db.storage.pop(row.path, None) is None
        return not (gone and self._rules.refuses_missing_bytes_removal)

    def _row_json(self, row: _Row, listing: bool) -> dict[str, Any]:
        owner_key = "task_id" if row.kind is Kind.TASK else "project_id"
        out: dict[str, Any] = {
            "id": row.id,
            "name": row.name,
            "path": row.path,
            "is_image": int(row.is_image),
            owner_key: row.owner,
            "date": row.date,
            "user_id": row.user_id,
            "size": row.size,
        }
        if listing:  # getAll*Files LEFT JOINs users; get*File is the raw row
            username, user_name = self._db.users.get(row.user_id, (None, None))
            out["username"], out["user_name"] = username, user_name
        if self._rules.has_etag:
            out["etag"] = _etag(row.path)
        return out

    @staticmethod
    def _project_json(project: _Project) -> dict[str, Any]:
        board = f"http://localhost/?controller=BoardViewController&project_id={project.id}"
        return {
            "id": project.id,
            "name": project.name,
            "is_active": int(project.is_active),
            "description": None,
            "url": {"board": board, "list": board},
        }

    @staticmethod
    def _task_json(task: _Task) -> dict[str, Any]:
        return {
            "id": task.id,
            "title": task.title,
            "project_id": task.project_id,
            "is_active": int(task.is_active),
            "url": f"http://localhost/?controller=TaskViewController&task_id={task.id}",
        }

    @staticmethod
    def _check_utf8(name: str, method: str) -> None:
        if any("\udc80" <= ch <= "\udcff" for ch in name):
            raise RpcError(-32603, "Internal error", MALFORMED_UTF8, method=method)


class _CallScope:
    """Counts and logs one call, applies the gate and any fault due, and yields like a
    network round trip would (other tasks run while a call is "on the wire")."""

    def __init__(self, fake: FakeKanboard, method: str, args: tuple[Any, ...]) -> None:
        self.fake, self.method = fake, method
        self.call = Call(method, args)
        self.fault: _Fault | None = None

    async def __aenter__(self) -> Call:
        fake = self.fake
        fake.calls[self.method] += 1
        fake.log.append(self.call)
        self.fault = fake._due_fault(self.method)
        await trio.lowlevel.checkpoint()
        gate = fake._gates.pop(self.method, None)
        if gate is not None:
            await gate.wait()
        if self.fault is not None and not self.fault.applied:
            self.call.outcome = "injected"
            raise self.fault.error()
        return self.call

    async def __aexit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if exc_type is None and self.fault is not None and self.fault.applied:
            self.call.outcome = "lost"
            await trio.lowlevel.checkpoint()
            raise self.fault.error()


def _id(item: Any) -> int:
    return int(item.id)


def _nocase(name: str) -> str:
    """SQLite's NOCASE: only ASCII letters fold."""
    return "".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in name)
