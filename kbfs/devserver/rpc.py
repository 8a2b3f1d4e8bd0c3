"""The JSON-RPC dispatcher: Kanboard's ``jsonrpc.php`` minus PHP (API-FACTS §1, §2, §4).

:meth:`Dispatcher.handle` takes the raw request body and ``Authorization`` header and returns the
complete HTTP answer.  It has no sockets, so tests can drive it in-process.  The processing order
copies Kanboard's JsonRPC library because clients can observe it:

1. parse (-32700), batch split, per-item format validation (-32600, even for notifications);
2. per call: fault injection, authentication (401 aborts the whole request, even inside a batch);
3. method lookup (-32601), app-level authorization (403), argument binding (-32602);
4. the procedure, with its own project-level 403, ``false``/``null``/``""`` results and PHP errors
   (HTTP 500 with an empty body).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import inspect
import json
import os
import re
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO, NamedTuple

from kbfs.devserver.faults import FaultPlan, Stats
from kbfs.devserver.php import (
    PhpTypeError,
    base64_decode,
    is_empty_content,
    sql_id,
    to_php_string,
)
from kbfs.devserver.store import BASE_URL, COLORS, PROJECT_ROLES, FileKind, InvalidPathId, Store

__all__ = ["DROP", "VERSION", "Dispatcher", "Reply", "StreamedAnswer", "dumps"]

#: getVersion's answer: the Kanboard release we imitate, tagged so nobody mistakes us for it.
VERSION = "1.2.53-kbfs-devserver"
#: ``Reply.status`` value asking the HTTP layer to close the connection without answering.
DROP = 0

JSON_HEADERS = {"Content-Type": "application/json"}
HTML_FATAL = (
    b"<br />\n<b>Fatal error</b>:  Allowed memory size of 134217728 bytes exhausted (tried to "
    b"allocate 89481216 bytes) in <b>libs/jsonrpc/src/JsonRPC/Server.php</b> on line "
    b"<b>143</b><br />\n"
)
GARBAGE = b'<?php // not JSON \x00\xff{"jsonrpc": 2.0, result: [oops'
MALFORMED_UTF8 = "Malformed UTF-8 characters, possibly incorrectly encoded"


class Content:
    """A download result: a stored file, base64-encoded only as the answer is sent."""

    PIECE = 3 * 256 * 1024  # bytes encoded at a time (a multiple of 3: no padding inside)

    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh
        self.size = os.fstat(fh.fileno()).st_size

    def encoded_length(self) -> int:
        return 4 * ((self.size + 2) // 3)

    def encoded(self) -> Iterator[bytes]:
        try:
            while piece := self.fh.read(self.PIECE):
                yield binascii.b2a_base64(piece, newline=False)
        finally:
            self.fh.close()


class StreamedAnswer:
    """The body of a download answer, sent piece by piece.

    Encoding a 256 MiB file whole, then wrapping it in the JSON envelope, held the GIL for the
    whole file and made three copies of 341 MiB: one download kept every other request of this
    one-process server waiting. In pieces, sends (which release the GIL) interleave.
    """

    def __init__(self, prefix: bytes, content: Content, suffix: bytes) -> None:
        self.prefix, self.content, self.suffix = prefix, content, suffix

    def __len__(self) -> int:
        return len(self.prefix) + self.content.encoded_length() + len(self.suffix)

    def pieces(self) -> Iterator[bytes]:
        yield self.prefix
        yield from self.content.encoded()
        yield self.suffix

    def __bytes__(self) -> bytes:
        return b"".join(self.pieces())


class Reply(NamedTuple):
    """A complete HTTP answer; ``status == DROP`` means: close the connection, send nothing."""

    status: int
    headers: dict[str, str]
    body: bytes | StreamedAnswer


class _RpcError(Exception):
    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code, self.message, self.data = code, message, data

    def error(self) -> dict[str, Any]:
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            err["data"] = self.data
        return err


class _LocalError(Exception):
    """AuthenticationFailure / AccessDenied: escapes batches and becomes the whole answer."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _HttpFault(Exception):
    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


class _ParseError(Exception):
    pass


def dumps(obj: Any) -> bytes:
    """``json_encode($x, JSON_UNESCAPED_SLASHES|JSON_UNESCAPED_UNICODE)``.

    Raises UnicodeEncodeError for strings that are not valid UTF-8 (names cut mid-character).
    """
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    if "\u2028" in text or "\u2029" in text:  # PHP escapes these even with UNESCAPED_UNICODE
        text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return text.encode("utf-8")


def _error_obj(code: int, message: str, ident: Any = None, data: Any = None) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    return {"jsonrpc": "2.0", "error": err, "id": ident}


_INVALID_REQUEST = _error_obj(-32600, "Invalid Request")
_PARSE_ERROR = _error_obj(-32700, "Parse error")
_LOCAL_BODIES = {
    401: dumps(_error_obj(401, "Unauthorized")),
    403: dumps(_error_obj(403, "Forbidden")),
}


def _has_surrogate(obj: Any) -> bool:
    if isinstance(obj, str):
        return any("\ud800" <= ch <= "\udfff" for ch in obj)
    if isinstance(obj, list):
        return any(_has_surrogate(x) for x in obj)
    if isinstance(obj, dict):
        return any(_has_surrogate(k) or _has_surrogate(v) for k, v in obj.items())
    return False


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _reject_constant(name: str) -> Any:
    raise _ParseError(name)


def parse_body(body: bytes) -> Any:
    """PHP ``json_decode($body, true)``: strict UTF-8, no NaN, no unpaired surrogates."""
    try:
        text = body.decode("utf-8")
        payload = json.loads(text, parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _ParseError(str(exc)) from exc
    if _SURROGATE_ESCAPE.search(body) and _has_surrogate(payload):
        # json_decode fails on unpaired surrogates; paired ones arrive here combined already.
        raise _ParseError("unpaired surrogate")
    return payload


def parse_basic_auth(header: str | None) -> tuple[str | None, str | None]:
    """PHP_AUTH_USER / PHP_AUTH_PW from an ``Authorization: Basic`` header."""
    if not header:
        return None, None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None, None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8", "surrogateescape")
    except (binascii.Error, ValueError):
        return None, None
    user, sep, password = decoded.partition(":")
    if not sep:
        return None, None
    return user, password


# -- procedures ---------------------------------------------------------------------------------

_ROLE_RANK = {"": 0, **PROJECT_ROLES}
_APP_RANK = {"app-user": 1, "app-manager": 2, "app-admin": 3}
VIEWER, MEMBER, MANAGER = "project-viewer", "project-member", "project-manager"


@dataclass
class _Procedure:
    name: str
    fn: Callable[..., Any]
    params: list[tuple[str, bool, Any]]  # (name, has_default, default)
    app_role: str = "app-user"
    user_only: bool = False

    @property
    def required(self) -> int:
        return sum(1 for _, has_default, _ in self.params if not has_default)


_REGISTRY: dict[str, _Procedure] = {}


def _procedure(
    name: str, *, app_role: str = "app-user", user_only: bool = False
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a procedure; its Python signature (after ``call``) is the PHP signature."""

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        params = []
        for p in list(inspect.signature(fn).parameters.values())[1:]:
            has_default = p.default is not inspect.Parameter.empty
            params.append((p.name, has_default, p.default if has_default else None))
        _REGISTRY[name] = _Procedure(name, fn, params, app_role, user_only)
        return fn

    return register


@dataclass
class _Call:
    """What a procedure sees: the store and who is calling (``user`` None = the app token)."""

    store: Store
    user: dict[str, Any] | None

    @property
    def user_id(self) -> int:
        return int(self.user["id"]) if self.user else 0

    def require_project(self, project_id: Any, minimum: str) -> None:
        """ProjectAuthorization: only under user auth; unknown projects resolve to 403."""
        if self.user is None:
            return
        pid = sql_id(project_id)
        role = self.store.project_role(pid, self.user_id) if pid and pid > 0 else ""
        if _ROLE_RANK[role] < _ROLE_RANK[minimum]:
            raise _LocalError(403)

    def require_task(self, task_id: Any, minimum: str) -> None:
        """TaskAuthorization: task → project."""
        if self.user is not None:
            self.require_project(self.store.task_project_id(sql_id(task_id)), minimum)

    def require_task_file(self, file_id: Any, minimum: str) -> None:
        """TaskFileAuthorization: file → task → project."""
        if self.user is not None:
            self.require_project(self.store.task_file_project_id(sql_id(file_id)), minimum)

    def upload(self, kind: FileKind, owner: Any, filename: Any, blob: Any) -> Any:
        """FileModel::uploadContent: decode, refuse empty content, store (API-FACTS §5)."""
        if isinstance(blob, (list, dict)):
            raise PhpTypeError("base64_decode(): Argument #1 ($string) must be of type string")
        data = base64_decode(to_php_string(blob))
        if is_empty_content(data):
            return False
        try:
            file_id = self.store.upload(kind, owner, filename, data, self.user_id)
        except InvalidPathId as exc:
            raise _RpcError(0, str(exc)) from exc
        return file_id if file_id is not None else False


def _php_int(value: Any) -> int:
    """PHP ``(int)$value``."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value == value and abs(value) < 2**63 else 0
    if isinstance(value, str):
        match = re.match(r"\s*[+-]?[0-9]+", value)
        return int(match.group()) if match else 0
    if isinstance(value, (list, dict)):
        return 1 if value else 0
    return 0


def _loose_equals_int(number: int, value: Any) -> bool:
    """PHP 8 ``$number == $value`` for an int on the left."""
    if isinstance(value, bool):
        return bool(number) == value
    if isinstance(value, (int, float)):
        return number == value
    if value is None:
        return number == 0
    if isinstance(value, str):
        ident = sql_id(value)
        return ident == number if ident is not None else str(number) == value
    return False


def _project_out(project: dict[str, Any] | None) -> dict[str, Any] | None:
    if project is None:
        return None
    pid = project["id"]
    out = dict(project)
    out["url"] = {
        "board": f"{BASE_URL}?controller=BoardViewController&action=show&project_id={pid}",
        "list": f"{BASE_URL}?controller=TaskListController&action=show&project_id={pid}",
    }
    return out


def _task_out(task: dict[str, Any] | None) -> dict[str, Any] | None:
    if task is None:
        return None
    out = dict(task)
    out["url"] = f"{BASE_URL}?controller=TaskViewController&action=show&task_id={task['id']}"
    name, background, border = COLORS.get(task["color_id"], COLORS["yellow"])
    out["color"] = {"name": name, "background": background, "border": border}
    return out


# Application


@_procedure("getVersion")
def get_version(call: _Call) -> str:
    return VERSION


@_procedure("getMe", user_only=True)
def get_me(call: _Call) -> Any:
    return call.user


@_procedure("getMyProjects", user_only=True)
def get_my_projects(call: _Call) -> Any:
    return [_project_out(p) for p in call.store.projects(call.store.user_project_ids(call.user_id))]


@_procedure("getMyProjectsList", user_only=True)
def get_my_projects_list(call: _Call) -> Any:
    ids = call.store.user_project_ids(call.user_id, active_only=True)
    listing = {str(p["id"]): p["name"] for p in call.store.projects(ids)}
    return listing or []


# Users


@_procedure("createUser", app_role="app-admin")
def create_user(
    call: _Call,
    username: Any,
    password: Any,
    name: Any = "",
    email: Any = "",
    role: Any = "app-user",
) -> Any:
    if not isinstance(username, str) or not isinstance(password, str) or len(password) < 6:
        return False
    user_id = call.store.create_user(
        username, password, to_php_string(name) or None, to_php_string(email) or None, str(role)
    )
    return user_id if user_id is not None else False


@_procedure("getUser", app_role="app-admin")
def get_user(call: _Call, user_id: Any) -> Any:
    ident = sql_id(user_id)
    return call.store.user_by_id(ident) if ident is not None else None


# Projects


@_procedure("getAllProjects", app_role="app-admin")
def get_all_projects(call: _Call) -> Any:
    return [_project_out(p) for p in call.store.projects()]


@_procedure("getProjectById")
def get_project_by_id(call: _Call, project_id: Any) -> Any:
    call.require_project(project_id, VIEWER)
    return _project_out(call.store.project(sql_id(project_id)))


@_procedure("getProjectByName")
def get_project_by_name(call: _Call, name: Any) -> Any:
    found = [p for p in call.store.projects() if p["name"] == name]
    project = found[0] if found else None
    call.require_project(project["id"] if project else None, VIEWER)
    return _project_out(project)


@_procedure("createProject", app_role="app-manager")
def create_project(
    call: _Call,
    name: Any,
    description: Any = None,
    owner_id: Any = 0,
    identifier: Any = None,
    start_date: Any = None,
    end_date: Any = None,
    priority_default: Any = None,
    priority_start: Any = None,
    priority_end: Any = None,
    email: Any = None,
) -> Any:
    if not isinstance(name, str) or not name:
        return False
    owner = sql_id(owner_id) or 0
    if call.user is not None and not owner:
        owner = call.user_id
    project_id = call.store.create_project(
        name,
        None if description is None else to_php_string(description),
        owner,
        to_php_string(identifier or ""),
        to_php_string(start_date or ""),
        to_php_string(end_date or ""),
        None if email is None else to_php_string(email),
        manager_id=call.user_id,
    )
    return project_id if project_id is not None else False


@_procedure("removeProject")
def remove_project(call: _Call, project_id: Any) -> Any:
    call.require_project(project_id, MANAGER)
    return call.store.remove_project(sql_id(project_id))


@_procedure("enableProject")
def enable_project(call: _Call, project_id: Any) -> Any:
    call.require_project(project_id, MANAGER)
    return call.store.set_project_active(sql_id(project_id), True)


@_procedure("disableProject")
def disable_project(call: _Call, project_id: Any) -> Any:
    call.require_project(project_id, MANAGER)
    return call.store.set_project_active(sql_id(project_id), False)


@_procedure("addProjectUser")
def add_project_user(
    call: _Call, project_id: Any, user_id: Any, role: Any = "project-member"
) -> Any:
    call.require_project(project_id, MANAGER)
    return call.store.add_project_user(sql_id(project_id), sql_id(user_id), str(role))


@_procedure("getProjectUserRole")
def get_project_user_role(call: _Call, project_id: Any, user_id: Any) -> Any:
    call.require_project(project_id, VIEWER)
    ident = sql_id(user_id)
    return call.store.project_role(sql_id(project_id), ident) if ident is not None else ""


# Tasks


@_procedure("getAllTasks")
def get_all_tasks(call: _Call, project_id: Any, status_id: Any = 1) -> Any:
    call.require_project(project_id, VIEWER)
    return [_task_out(t) for t in call.store.tasks(sql_id(project_id), sql_id(status_id) or 0)]


@_procedure("getTask")
def get_task(call: _Call, task_id: Any) -> Any:
    call.require_task(task_id, VIEWER)
    return _task_out(call.store.task(sql_id(task_id)))


@_procedure("createTask")
def create_task(
    call: _Call,
    title: Any,
    project_id: Any,
    color_id: Any = "",
    column_id: Any = 0,
    owner_id: Any = 0,
    creator_id: Any = 0,
    date_due: Any = "",
    description: Any = "",
    category_id: Any = 0,
    score: Any = 0,
    swimlane_id: Any = None,
    priority: Any = 0,
    recurrence_status: Any = 0,
    recurrence_trigger: Any = 0,
    recurrence_factor: Any = 0,
    recurrence_timeframe: Any = 0,
    recurrence_basedate: Any = 0,
    reference: Any = "",
    tags: Any = None,
    date_started: Any = "",
    time_spent: Any = None,
    time_estimated: Any = None,
) -> Any:
    call.require_project(project_id, MEMBER)
    if not isinstance(title, str) or not title:
        return False
    creator = sql_id(creator_id) or call.user_id
    task_id = call.store.create_task(
        sql_id(project_id),
        title,
        color_id=str(color_id or ""),
        column_id=sql_id(column_id) or 0,
        owner_id=sql_id(owner_id) or 0,
        creator_id=creator,
        description=to_php_string(description) if not isinstance(description, list) else "",
        reference=to_php_string(reference) if not isinstance(reference, list) else "",
        swimlane_id=sql_id(swimlane_id),
        score=sql_id(score) or 0,
        priority=sql_id(priority) or 0,
        category_id=sql_id(category_id) or 0,
    )
    return task_id if task_id is not None else False


@_procedure("openTask")
def open_task(call: _Call, task_id: Any) -> Any:
    call.require_task(task_id, MEMBER)
    return call.store.set_task_status(sql_id(task_id), True)


@_procedure("closeTask")
def close_task(call: _Call, task_id: Any) -> Any:
    call.require_task(task_id, MEMBER)
    return call.store.set_task_status(sql_id(task_id), False)


@_procedure("removeTask")
def remove_task(call: _Call, task_id: Any) -> Any:
    call.require_task(task_id, MEMBER)
    return call.store.remove_task(sql_id(task_id))


@_procedure("moveTaskToProject")
def move_task_to_project(
    call: _Call,
    task_id: Any,
    project_id: Any,
    swimlane_id: Any = None,
    column_id: Any = None,
    category_id: Any = None,
    owner_id: Any = None,
) -> Any:
    call.require_task(task_id, MEMBER)
    call.require_project(project_id, MEMBER)
    return call.store.move_task(sql_id(task_id), sql_id(project_id))


@_procedure("duplicateTaskToProject")
def duplicate_task_to_project(
    call: _Call,
    task_id: Any,
    project_id: Any,
    swimlane_id: Any = None,
    column_id: Any = None,
    category_id: Any = None,
    owner_id: Any = None,
) -> Any:
    call.require_task(task_id, MEMBER)
    call.require_project(project_id, MEMBER)
    new_id = call.store.duplicate_task(sql_id(task_id), sql_id(project_id))
    return new_id if new_id is not None else False


# Task files


@_procedure("createTaskFile")
def create_task_file(call: _Call, project_id: Any, task_id: Any, filename: Any, blob: Any) -> Any:
    call.require_project(project_id, MEMBER)
    task = call.store.task(sql_id(task_id))
    if task is None or not _loose_equals_int(int(task["project_id"]), project_id):
        return False
    call.require_task(task_id, MEMBER)
    return call.upload("task", task_id, filename, blob)


@_procedure("getAllTaskFiles")
def get_all_task_files(call: _Call, task_id: Any) -> Any:
    call.require_task(task_id, VIEWER)
    return call.store.files("task", sql_id(task_id))


@_procedure("getTaskFile")
def get_task_file(call: _Call, file_id: Any) -> Any:
    call.require_task_file(file_id, VIEWER)
    return call.store.file("task", sql_id(file_id))


@_procedure("downloadTaskFile")
def download_task_file(call: _Call, file_id: Any) -> Any:
    call.require_task_file(file_id, VIEWER)
    row = call.store.file("task", sql_id(file_id))
    fh = call.store.open_content(row["path"]) if row else None
    return Content(fh) if fh is not None else ""


@_procedure("removeTaskFile")
def remove_task_file(call: _Call, file_id: Any) -> Any:
    call.require_task_file(file_id, MEMBER)
    return call.store.remove_file("task", sql_id(file_id))


@_procedure("removeAllTaskFiles")
def remove_all_task_files(call: _Call, task_id: Any) -> Any:
    call.require_task(task_id, MEMBER)
    return call.store.remove_all_files("task", sql_id(task_id))


# Project files


def _project_file(call: _Call, project_id: Any, file_id: Any) -> dict[str, Any] | None:
    row = call.store.file("project", sql_id(file_id))
    if row is None or int(row["project_id"]) != _php_int(project_id):
        return None
    return row


@_procedure("createProjectFile")
def create_project_file(call: _Call, project_id: Any, filename: Any, blob: Any) -> Any:
    call.require_project(project_id, MEMBER)
    return call.upload("project", project_id, filename, blob)


@_procedure("getAllProjectFiles")
def get_all_project_files(call: _Call, project_id: Any) -> Any:
    call.require_project(project_id, VIEWER)
    return call.store.files("project", sql_id(project_id))


@_procedure("getProjectFile")
def get_project_file(call: _Call, project_id: Any, file_id: Any) -> Any:
    call.require_project(project_id, VIEWER)
    row = _project_file(call, project_id, file_id)
    return row if row is not None else False


@_procedure("downloadProjectFile")
def download_project_file(call: _Call, project_id: Any, file_id: Any) -> Any:
    call.require_project(project_id, VIEWER)
    row = _project_file(call, project_id, file_id)
    fh = call.store.open_content(row["path"]) if row else None
    return Content(fh) if fh is not None else ""


@_procedure("removeProjectFile")
def remove_project_file(call: _Call, project_id: Any, file_id: Any) -> Any:
    call.require_project(project_id, MEMBER)
    row = _project_file(call, project_id, file_id)
    return call.store.remove_file("project", row["id"]) if row else False


@_procedure("removeAllProjectFiles")
def remove_all_project_files(call: _Call, project_id: Any) -> Any:
    call.require_project(project_id, MEMBER)
    return call.store.remove_all_files("project", sql_id(project_id))


# -- dispatcher ---------------------------------------------------------------------------------


@dataclass
class _Request:
    username: str | None
    password: str | None
    truncate: bool = False
    callers: dict[str, _Call] = field(default_factory=dict)


def _result_bytes(result: Any, ident: Any) -> bytes | StreamedAnswer:
    if isinstance(result, Content):
        return StreamedAnswer(
            b'{"jsonrpc":"2.0","result":"', result, b'","id":' + dumps(ident) + b"}"
        )
    try:
        return dumps({"jsonrpc": "2.0", "result": result, "id": ident})
    except UnicodeEncodeError:
        return dumps(_error_obj(-32603, "Internal error", ident, MALFORMED_UTF8))


class Dispatcher:
    """Kanboard's JSON-RPC endpoint over a :class:`Store`; thread-safe."""

    def __init__(
        self,
        store: Store,
        token: str,
        faults: FaultPlan | None = None,
        stats: Stats | None = None,
    ) -> None:
        self.store = store
        self.token = token
        self.faults = faults if faults is not None else FaultPlan()
        self.stats = stats if stats is not None else Stats()

    def handle(self, body: bytes, auth_header: str | None) -> Reply:
        """Answer one HTTP request to ``/jsonrpc.php``."""
        username, password = parse_basic_auth(auth_header)
        request = _Request(username, password)
        try:
            try:
                payload = parse_body(body)
            except _ParseError:
                return Reply(200, dict(JSON_HEADERS), dumps(_PARSE_ERROR))
            if not isinstance(payload, (dict, list)):
                out = dumps(_PARSE_ERROR)
            elif isinstance(payload, list) and payload:
                items = [self._item(x, request) for x in payload]
                kept = [bytes(x) for x in items if x is not None]
                out = b"[" + b",".join(kept) + b"]" if kept else b""
            else:
                out = self._item(payload, request) or b""
        except _LocalError as exc:
            headers = dict(JSON_HEADERS)
            if exc.status == 401:
                headers["WWW-Authenticate"] = 'Basic realm="JsonRPC"'
            return Reply(exc.status, headers, _LOCAL_BODIES[exc.status])
        except _HttpFault as exc:
            return self._fault_reply(exc.kind)
        except PhpTypeError:
            return Reply(500, {"Content-Type": "text/html; charset=UTF-8"}, b"")
        except Exception:  # a devserver bug: answer like a PHP fatal error, but say why
            traceback.print_exc(file=sys.stderr)
            return Reply(500, {"Content-Type": "text/html; charset=UTF-8"}, b"")
        if request.truncate:
            full = bytes(out) or dumps(_error_obj(-32603, "Internal error"))
            out = full[: len(full) // 2]
        return Reply(200, dict(JSON_HEADERS), out)

    def _fault_reply(self, kind: str) -> Reply:
        if kind == "drop":
            return Reply(DROP, {}, b"")
        if kind == "http500":
            return Reply(500, {"Content-Type": "text/html; charset=UTF-8"}, b"")
        if kind == "html":
            return Reply(200, {"Content-Type": "text/html; charset=UTF-8"}, HTML_FATAL)
        if kind == "garbage":
            return Reply(200, dict(JSON_HEADERS), GARBAGE)
        status = 401 if kind == "http401" else 403
        headers = dict(JSON_HEADERS)
        if status == 401:
            headers["WWW-Authenticate"] = 'Basic realm="JsonRPC"'
        return Reply(status, headers, _LOCAL_BODIES[status])

    def _item(self, item: Any, request: _Request) -> bytes | StreamedAnswer | None:
        """RequestParser::parse for one call: encoded response, or None for a notification."""
        if not isinstance(item, (dict, list)):
            return dumps(_PARSE_ERROR)
        if (
            not isinstance(item, dict)
            or item.get("jsonrpc") != "2.0"
            or not isinstance(item.get("method"), str)
            or (item.get("params") is not None and not isinstance(item["params"], (dict, list)))
        ):
            return dumps(_INVALID_REQUEST)
        method: str = item["method"]
        ident = item.get("id")
        notification = ident is None
        self.stats.count_call(method)
        fault = self.faults.take(method)
        if fault is not None:
            if fault.kind == "delay":
                time.sleep(fault.delay)
            elif fault.kind == "truncated":
                request.truncate = True
            elif fault.kind in ("false", "empty", "rpc_error"):
                if notification:
                    return None
                if fault.kind == "rpc_error":
                    return dumps(_error_obj(-32603, "Internal error", ident, "injected fault"))
                return _result_bytes(False if fault.kind == "false" else "", ident)
            else:
                raise _HttpFault(fault.kind)
        call = self._authenticate(request)
        try:
            result = self._execute(call, method, item.get("params"))
        except _RpcError as exc:
            if notification:
                return None
            return dumps({"jsonrpc": "2.0", "error": exc.error(), "id": ident})
        if notification:
            return None
        return _result_bytes(result, ident)

    def _authenticate(self, request: _Request) -> _Call:
        """AuthenticationMiddleware, run for every call like Kanboard does."""
        username, password = request.username, request.password
        if username is None or password is None:
            raise _LocalError(401)
        if username == "jsonrpc":
            if hmac.compare_digest(
                password.encode("utf-8", "surrogateescape"), self.token.encode()
            ):
                return _Call(self.store, None)
            raise _LocalError(401)
        user = self.store.authenticate(username, password)
        if user is None:
            raise _LocalError(401)
        return _Call(self.store, user)

    def _execute(self, call: _Call, method: str, params: Any) -> Any:
        proc = _REGISTRY.get(method)
        if proc is None:
            raise _RpcError(-32601, "Method not found")
        if call.user is None:
            if proc.user_only:
                raise _LocalError(403)
        elif _APP_RANK.get(call.user["role"], 0) < _APP_RANK[proc.app_role]:
            raise _LocalError(403)
        args = _bind(proc, params)
        return proc.fn(call, *args)


def _bind(proc: _Procedure, params: Any) -> list[Any]:
    """ProcedureHandler::getArguments: count first, then positional or by name."""
    if not params:
        params = {}
    count = len(params)
    if count < proc.required:
        raise _RpcError(-32602, "Invalid params", "Wrong number of arguments")
    if count > len(proc.params):
        raise _RpcError(-32602, "Invalid params", "Too many arguments")
    if isinstance(params, dict) and list(params) == [str(i) for i in range(count)]:
        params = list(params.values())  # PHP turns numeric string keys into a list
    if isinstance(params, list):
        return params + [default for _, _, default in proc.params[count:]]
    args = []
    for name, has_default, default in proc.params:
        if name in params:
            args.append(params[name])
        elif has_default:
            args.append(default)
        else:
            raise _RpcError(-32602, "Invalid params", f"Missing argument: {name}")
    return args


def procedure_names() -> list[str]:
    """The procedures the devserver implements."""
    return sorted(_REGISTRY)
