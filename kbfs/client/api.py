"""KanboardClient: the async Kanboard JSON-RPC client (httpx on trio).

Usage::

    async with KanboardClient("https://kb.example.com", Credentials(token)) as kb:
        for project in await kb.get_projects():
            files = await kb.list_files(Container(project.id))
            with open("out", "wb") as sink:
                await kb.download_file(Container(project.id), files[0].id, sink)

Parameters of :class:`KanboardClient`:

* ``url`` - the Kanboard base URL in any usual form (see :func:`normalise_endpoint`).
* ``credentials`` - :class:`Credentials`: the application token (user ``jsonrpc``) or a user's
  password / personal API token.
* ``timeout`` - seconds for each of connect/read/write/pool, and the budget of each call as a
  whole, retries included (transfers get extra time in proportion to their size).
* ``retries`` - extra attempts for idempotent calls (get*, download*, batches of those) on
  transport or server errors; create*/remove* are never re-sent.
* ``verify`` - TLS verification: True (the system's CA store), False or a CA bundle
  file/directory.
* ``proxy`` - an HTTP proxy URL; proxy variables of the environment are ignored.
* ``secret_source`` - re-reads the secret (a rotated token): asked after a 401, which the call
  then retries once with the new secret, and by :meth:`KanboardClient.reload_secret`.
* ``transport`` - an httpx transport (``httpx.MockTransport`` in tests).

What each method raises beyond the common failures (TransportError, RequestTimeout,
ServerError, ProtocolError, AuthenticationError, PermissionDenied, RpcError) is listed in its
docstring. Kanboard's "nothing here" answers (kanboard-api §4) become NotFound; an empty listing
is simply ``[]``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import trio

from kbfs.client.auth import SecretSource
from kbfs.client.endpoint import normalise_endpoint
from kbfs.client.errors import (
    KanboardError,
    NotFound,
    PermissionDenied,
    ProtocolError,
    Rejected,
)
from kbfs.client.models import Container, FileRecord, Kind, Project, Task, User
from kbfs.client.servertime import ServerClock
from kbfs.client.transport import RpcTransport
from kbfs.client.versions import ServerRules

__all__ = ["ClientStats", "Credentials", "KanboardClient", "normalise_endpoint"]

#: Calls per batched HTTP request in list_files_many (Kanboard authenticates every item).
BATCH_CHUNK = 100
#: Concurrent single calls when list_files_many falls back after a whole-batch 403.
FALLBACK_CONCURRENCY = 4


@dataclass(frozen=True)
class Credentials:
    """HTTP Basic credentials. ``username`` is 'jsonrpc' for the application API token.

    The secret never appears in repr() or str().
    """

    secret: str = field(repr=False)
    username: str = "jsonrpc"

    @property
    def is_app_token(self) -> bool:
        return self.username == "jsonrpc"


@dataclass(frozen=True)
class ClientStats:
    """Counters since the client was created.

    ``http_requests`` counts HTTP requests sent (retries included); ``calls`` counts JSON-RPC
    calls per method as sent over the wire (each retry and each batch item counts once), so it
    matches what the server saw.
    """

    http_requests: int
    calls: dict[str, int]


def _with_method(exc: KanboardError, method: str) -> KanboardError:
    if exc.method is None:
        exc.method = method
    return exc


def _int_result(value: Any, method: str) -> int:
    if isinstance(value, bool):
        raise ProtocolError(f"expected an id, got {value!r}", method=method)
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise ProtocolError(f"expected an id, got {value!r:.40}", method=method)


def _list_result(value: Any, method: str) -> list[Any]:
    if isinstance(value, list):
        return value
    if value is None or value is False or value == "":
        raise NotFound("not found", method=method)
    if isinstance(value, dict) and not value:
        return []  # PHP's empty array can come out as {} from some encoders
    raise ProtocolError(f"expected a list, got {type(value).__name__}", method=method)


def _parse_files(kind: Kind, value: Any, method: str) -> list[FileRecord]:
    items = _list_result(value, method)
    try:
        return [FileRecord.from_json(kind, item) for item in items]
    except ProtocolError as exc:
        raise _with_method(exc, method) from None


def _bool_result(value: Any, method: str) -> bool:
    if isinstance(value, bool):
        return value
    if value in (0, 1, "0", "1", "", None):
        return value in (1, "1")
    raise ProtocolError(f"expected true/false, got {value!r:.40}", method=method)


class KanboardClient:
    """Async client for Kanboard's JSON-RPC API (projects, tasks and the 12 file procedures)."""

    def __init__(
        self,
        url: str,
        credentials: Credentials,
        *,
        timeout: float = 30.0,
        retries: int = 3,
        verify: bool | str = True,
        transport: Any = None,
        proxy: str | None = None,
        secret_source: SecretSource | None = None,
    ) -> None:
        self._credentials = credentials
        self._rpc = RpcTransport(
            normalise_endpoint(url),
            credentials.username,
            credentials.secret,
            timeout=timeout,
            retries=retries,
            verify=verify,
            transport=transport,
            proxy=proxy,
            secret_source=secret_source,
        )
        # The oldest rules until the server says which release it is (read_rules).
        self._rules = ServerRules.of(None)

    def __repr__(self) -> str:
        return f"KanboardClient({self.endpoint!r}, user={self._credentials.username!r})"

    async def aclose(self) -> None:
        await self._rpc.aclose()

    async def __aenter__(self) -> KanboardClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def endpoint(self) -> str:
        """The normalised ``.../jsonrpc.php`` URL."""
        return self._rpc.endpoint

    @property
    def credentials(self) -> Credentials:
        return self._credentials

    def reload_secret(self) -> bool:
        """Read the secret again from ``secret_source`` (SIGHUP); whether it changed."""
        return self._rpc.reload_secret()

    @property
    def rules(self) -> ServerRules:
        """The behaviours of the server's release (see kbfs.client.versions)."""
        return self._rules

    @property
    def server_clock(self) -> ServerClock:
        """The server's clock as its answers show it (see kbfs.client.servertime)."""
        return self._rpc.server_clock

    def statistics(self) -> ClientStats:
        return ClientStats(http_requests=self._rpc.http_requests, calls=self._rpc.call_counts())

    # ------------------------------------------------------------------------------ raw

    async def call(self, method: str, params: dict[str, Any] | list[Any] | None = None) -> Any:
        """One raw call: the ``result`` as sent (no NotFound mapping). Errors are mapped."""
        return await self._rpc.call(method, params)

    async def batch(
        self, calls: Sequence[tuple[str, dict[str, Any] | None]]
    ) -> list[Any | Exception]:
        """Raw batch in ONE HTTP request: each item's result or its exception, in order.

        Raises for the whole batch when Kanboard answers it as a whole: AuthenticationError (401)
        or PermissionDenied (403 in any item), and transport/server failures.
        """
        return await self._rpc.batch(calls)

    # ------------------------------------------------------------------------------ general

    async def get_version(self) -> str:
        result = await self._rpc.call("getVersion")
        if not isinstance(result, str):
            raise ProtocolError("version is not a string", method="getVersion")
        return result

    async def read_rules(self) -> ServerRules:
        """Ask the server's version and keep the rules it implies in ``rules``."""
        try:
            version: str | None = await self.get_version()
        except (ProtocolError, PermissionDenied):
            version = None  # unknown release: the oldest rules
        self._rules = ServerRules.of(version)
        return self._rules

    async def get_me(self) -> User:
        """The logged-in user. PermissionDenied with the app token (getMe needs user auth)."""
        result = await self._rpc.call("getMe")
        if result in (None, False):
            raise NotFound("no user", method="getMe")
        try:
            return User.from_json(result)
        except ProtocolError as exc:
            raise _with_method(exc, "getMe") from None

    async def _projects(self, method: str) -> list[Project]:
        items = _list_result(await self._rpc.call(method), method)
        try:
            return [Project.from_json(item) for item in items]
        except ProtocolError as exc:
            raise _with_method(exc, method) from None

    async def get_all_projects(self) -> list[Project]:
        """Every project (app token or app-admin; PermissionDenied for other users)."""
        return await self._projects("getAllProjects")

    async def get_my_projects(self) -> list[Project]:
        """The user's projects (PermissionDenied with the app token)."""
        return await self._projects("getMyProjects")

    async def get_projects(self) -> list[Project]:
        """The projects these credentials can see: getAllProjects for the app token,
        getMyProjects for a user (getAllProjects is admin-only and 403s for others)."""
        if self._credentials.is_app_token:
            return await self.get_all_projects()
        return await self.get_my_projects()

    async def get_project_by_id(self, project_id: int) -> Project:
        """NotFound for an unknown id (app token); PermissionDenied under user auth."""
        method = "getProjectById"
        result = await self._rpc.call(method, {"project_id": project_id})
        if result in (None, False, "") or result == []:
            raise NotFound(f"no project {project_id}", method=method)
        try:
            return Project.from_json(result)
        except ProtocolError as exc:
            raise _with_method(exc, method) from None

    async def get_project_user_role(self, project_id: int, user_id: int) -> str | None:
        """The user's role in the project ('project-manager', ...) or None for no role."""
        method = "getProjectUserRole"
        result = await self._rpc.call(method, {"project_id": project_id, "user_id": user_id})
        if result in (None, False, ""):
            return None
        if not isinstance(result, str):
            raise ProtocolError("role is not a string", method=method)
        return result

    async def project_roles(self, project_ids: list[int], user_id: int) -> list[str | None]:
        """The user's role in each project, in order, asked in ONE HTTP request (a batch).

        A mount lists all projects at once and needs every role to know which are read-only;
        one call per project would cost one round trip each.  Each answer is returned as sent
        when it is a string (Kanboard's '' means no role) and None otherwise, including a call
        that failed on its own.  Raises like :meth:`batch` when the batch fails as a whole; no
        projects means no request.
        """
        if not project_ids:
            return []
        method = "getProjectUserRole"
        results = await self.batch(
            [(method, {"project_id": pid, "user_id": user_id}) for pid in project_ids]
        )
        return [role if isinstance(role, str) else None for role in results]

    def _tasks(self, value: Any, method: str) -> list[Task]:
        items = _list_result(value, method)
        try:
            return [Task.from_json(item) for item in items]
        except ProtocolError as exc:
            raise _with_method(exc, method) from None

    async def get_all_tasks(self, project_id: int, status_id: int = 1) -> list[Task]:
        """Tasks of a project: status_id 1 = open, 0 = closed."""
        method = "getAllTasks"
        result = await self._rpc.call(method, {"project_id": project_id, "status_id": status_id})
        return self._tasks(result, method)

    async def get_all_tasks_any_status(self, project_id: int) -> list[Task]:
        """Open and closed tasks in ONE HTTP request (a 2-call batch), sorted by id."""
        method = "getAllTasks"
        results = await self._rpc.batch(
            [
                (method, {"project_id": project_id, "status_id": 1}),
                (method, {"project_id": project_id, "status_id": 0}),
            ]
        )
        tasks: dict[int, Task] = {}
        for result in results:
            if isinstance(result, Exception):
                raise result
            for task in self._tasks(result, method):
                tasks.setdefault(task.id, task)
        return [tasks[k] for k in sorted(tasks)]

    async def get_task(self, task_id: int) -> Task:
        """NotFound for an unknown id (app token); PermissionDenied under user auth."""
        method = "getTask"
        result = await self._rpc.call(method, {"task_id": task_id})
        if result in (None, False, "") or result == []:
            raise NotFound(f"no task {task_id}", method=method)
        try:
            return Task.from_json(result)
        except ProtocolError as exc:
            raise _with_method(exc, method) from None

    # ------------------------------------------------------------------------------ files

    @staticmethod
    def _list_call(container: Container) -> tuple[str, dict[str, Any]]:
        if container.task_id is None:
            return "getAllProjectFiles", {"project_id": container.project_id}
        return "getAllTaskFiles", {"task_id": container.task_id}

    async def list_files(self, container: Container) -> list[FileRecord]:
        """The container's attachments ([] when there are none; Kanboard also answers [] for a
        nonexistent task/project with the app token). A file name that is invalid UTF-8 makes
        the whole listing fail with RpcError(-32603) (kanboard-api §6)."""
        method, params = self._list_call(container)
        return _parse_files(container.kind, await self._rpc.call(method, params), method)

    async def list_files_many(
        self, containers: Sequence[Container]
    ) -> list[list[FileRecord] | Exception]:
        """list_files for many containers in batched HTTP requests (chunks of BATCH_CHUNK).

        Returns, in order, each container's files or the exception for that item. Because a 403
        in any item replaces the whole batch's answer, a whole-batch PermissionDenied falls back
        to one call per container (so one forbidden task never hides the others). Other
        whole-request failures (AuthenticationError, TransportError, ServerError...) are raised.
        """
        out: list[list[FileRecord] | Exception] = []
        for start in range(0, len(containers), BATCH_CHUNK):
            chunk = containers[start : start + BATCH_CHUNK]
            calls = [self._list_call(c) for c in chunk]
            try:
                results = await self._rpc.batch(calls)
            except PermissionDenied:
                out.extend(await self._list_each(chunk))
                continue
            for container, (method, _), result in zip(chunk, calls, results, strict=True):
                if isinstance(result, Exception):
                    out.append(result)
                    continue
                try:
                    out.append(_parse_files(container.kind, result, method))
                except KanboardError as exc:
                    out.append(exc)
        return out

    async def _list_each(
        self, containers: Sequence[Container]
    ) -> list[list[FileRecord] | Exception]:
        results: list[list[FileRecord] | Exception] = [NotFound("not listed") for _ in containers]
        limiter = trio.CapacityLimiter(FALLBACK_CONCURRENCY)

        async def one(i: int, container: Container) -> None:
            async with limiter:
                try:
                    results[i] = await self.list_files(container)
                except KanboardError as exc:
                    results[i] = exc

        async with trio.open_nursery() as nursery:
            for i, container in enumerate(containers):
                nursery.start_soon(one, i, container)
        return results

    async def get_file(self, container: Container, file_id: int) -> FileRecord:
        """One attachment's metadata. NotFound if Kanboard answers null/false (no such file,
        or a file of another project) or if the file belongs to another task."""
        if container.task_id is None:
            method = "getProjectFile"
            params: dict[str, Any] = {"project_id": container.project_id, "file_id": file_id}
        else:
            method = "getTaskFile"
            params = {"file_id": file_id}
        result = await self._rpc.call(method, params)
        if result in (None, False, "") or result == []:
            raise NotFound(f"no file {file_id} in {container}", method=method)
        try:
            record = FileRecord.from_json(container.kind, result)
        except ProtocolError as exc:
            raise _with_method(exc, method) from None
        owner = record.task_id if container.task_id is not None else record.project_id
        if owner != container.owner_id:
            raise NotFound(f"file {file_id} is not in {container}", method=method)
        return record

    @staticmethod
    def _download_call(container: Container, file_id: int) -> tuple[str, dict[str, Any]]:
        if container.task_id is None:
            return "downloadProjectFile", {"project_id": container.project_id, "file_id": file_id}
        return "downloadTaskFile", {"file_id": file_id}

    async def download_file(
        self, container: Container, file_id: int, sink: BinaryIO, size: int | None = None
    ) -> int:
        """Stream the file's content into ``sink`` (sink.writelines gets decoded pieces); the number
        of bytes written. EmptyDownload (a NotFound) when Kanboard answers "" (missing file,
        other project, storage error - a 0-byte file cannot exist). On any error ``sink`` may
        hold a partial file. Retries rewind a seekable sink to where it started. ``size``, the
        record's, bounds the whole download's time (RequestTimeout past it; see
        RpcTransport.download)."""
        method, params = self._download_call(container, file_id)
        return await self._rpc.download(method, params, sink, size)

    async def download_files(
        self,
        items: Sequence[tuple[Container, int]],
        deliver: Callable[[int, bytes | KanboardError], None],
        expected_bytes: int,
    ) -> None:
        """Download several (small) files in one request: ``deliver(i, content or error)`` for
        each item, as its member of the answer arrives. Each member is checked as a single
        download is (EmptyDownload for "", ...); a failure of the whole request is raised,
        after ``deliver`` got what had arrived. Never retried (see transport.download_batch)."""
        calls = [self._download_call(container, file_id) for container, file_id in items]
        await self._rpc.download_batch(calls, deliver, expected_bytes)

    @staticmethod
    def _create_call(container: Container, filename: str) -> tuple[str, dict[str, Any]]:
        if container.task_id is None:
            return "createProjectFile", {"project_id": container.project_id, "filename": filename}
        return "createTaskFile", {
            "project_id": container.project_id,
            "task_id": container.task_id,
            "filename": filename,
        }

    @staticmethod
    def _created(result: Any, method: str) -> int:
        if result is False or result is None or result in ("", 0, "0"):
            raise Rejected("the server refused the file", method=method)
        return _int_result(result, method)

    async def create_file(
        self, container: Container, filename: str, source: BinaryIO, size: int
    ) -> int:
        """Upload exactly ``size`` bytes from ``source``; the new file id.

        Rejected when Kanboard answers false (empty content, content exactly "0", no such task,
        task in another project) or the filename cannot be encoded. SourceError if ``source``
        ends early or fails. Never retried: a TransportError with request_sent=True means the
        file may or may not exist (check with list_files before uploading again).
        """
        method, params = self._create_call(container, filename)
        return self._created(await self._rpc.upload(method, params, source, size), method)

    async def create_files(
        self, uploads: Sequence[tuple[Container, str, BinaryIO, int]]
    ) -> list[int | KanboardError]:
        """Many uploads in one JSON-RPC batch: each one's new id, or why it failed (as
        ``create_file``). If the whole request fails, that is raised, and with
        request_sent=True any of the files may exist."""
        calls = []
        for container, filename, source, size in uploads:
            method, params = self._create_call(container, filename)
            calls.append((method, params, source, size))
        out: list[int | KanboardError] = []
        for (method, _, _, _), result in zip(
            calls, await self._rpc.upload_batch(calls), strict=True
        ):
            if isinstance(result, KanboardError):
                out.append(_with_method(result, method))
                continue
            if isinstance(result, Exception):
                out.append(ProtocolError(str(result), method=method))
                continue
            try:
                out.append(self._created(result, method))
            except KanboardError as exc:
                out.append(exc)
        return out

    async def remove_file(self, container: Container, file_id: int) -> None:
        """Delete one attachment. NotFound when Kanboard answers false: no such file (or a file
        of another project) OR a storage error that left the row in place (kanboard-api §4).
        For task files Kanboard does not check the task: the id alone decides."""
        if container.task_id is None:
            method = "removeProjectFile"
            params: dict[str, Any] = {"project_id": container.project_id, "file_id": file_id}
        else:
            method = "removeTaskFile"
            params = {"file_id": file_id}
        if not _bool_result(await self._rpc.call(method, params), method):
            raise NotFound(f"file {file_id} not removed (missing or storage error)", method=method)

    async def remove_all_files(self, container: Container) -> None:
        """Delete all of the container's attachments. Rejected when Kanboard answers false
        (some file could not be removed); true even when there was nothing to remove."""
        if container.task_id is None:
            method = "removeAllProjectFiles"
            params: dict[str, Any] = {"project_id": container.project_id}
        else:
            method = "removeAllTaskFiles"
            params = {"task_id": container.task_id}
        if not _bool_result(await self._rpc.call(method, params), method):
            raise Rejected("not all files could be removed", method=method)
