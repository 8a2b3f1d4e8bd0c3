"""JSON-RPC procedures of task and project attachments (kanboard-api §3, §5-§8, §11).

Where Kanboard releases differ, the procedure asks ``call.store.release`` (see
:mod:`kbfs.devserver.versions`; docs/kanboard-api.md §12 numbers the differences).

Downloads return a :class:`Content` rather than a string: the dispatcher streams it base64-encoded
into the answer, so a large file never sits in memory as one encoded string.
"""

from __future__ import annotations

import binascii
import os
from collections.abc import Iterator
from typing import Any, BinaryIO

from kbfs.devserver.attachments import FileKind, InvalidPathId
from kbfs.devserver.php import (
    PhpTypeError,
    base64_decode,
    is_empty_content,
    loose_equals_int,
    php_int,
    sql_id,
    to_php_string,
)
from kbfs.devserver.registry import MEMBER, VIEWER, Call, ProcedureTable, RpcError

__all__ = ["PROCEDURES", "Content"]

PROCEDURES = ProcedureTable()


class Content:
    """A download result: a stored file, base64-encoded only as the answer is sent."""

    PIECE = 3 * 256 * 1024  # bytes encoded at a time (a multiple of 3: no padding inside)

    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh
        self.size = os.fstat(fh.fileno()).st_size

    def encoded_length(self) -> int:
        """The length of the base64 text, known before encoding (for Content-Length)."""
        return 4 * ((self.size + 2) // 3)

    def encoded(self) -> Iterator[bytes]:
        """The base64 text piece by piece; the file is closed when the pieces run out."""
        try:
            while piece := self.fh.read(self.PIECE):
                yield binascii.b2a_base64(piece, newline=False)
        finally:
            self.fh.close()


def _upload(call: Call, kind: FileKind, owner: Any, filename: Any, blob: Any) -> Any:
    """FileModel::uploadContent: decode, refuse empty content, store (kanboard-api §5)."""
    if isinstance(blob, (list, dict)):
        raise PhpTypeError("base64_decode(): Argument #1 ($string) must be of type string")
    data = base64_decode(to_php_string(blob))
    if is_empty_content(data):
        return False
    try:
        file_id = call.store.upload(kind, owner, filename, data, call.user_id)
    except InvalidPathId as exc:
        raise RpcError(0, str(exc)) from exc
    return file_id if file_id is not None else False


# Task files


@PROCEDURES.procedure("createTaskFile")
def create_task_file(call: Call, project_id: Any, task_id: Any, filename: Any, blob: Any) -> Any:
    call.require_project(project_id, MEMBER)
    if not call.store.release.checks_task_on_create:
        # Before 1.2.47 (#4): the task is not looked at, only the project's permission; a
        # task of another project gets the file, a missing one leaves an orphan stored file.
        return _upload(call, "task", task_id, filename, blob)
    task = call.store.task(sql_id(task_id))
    if task is None or not loose_equals_int(int(task["project_id"]), project_id):
        return False
    call.require_task(task_id, MEMBER)
    return _upload(call, "task", task_id, filename, blob)


@PROCEDURES.procedure("getAllTaskFiles")
def get_all_task_files(call: Call, task_id: Any) -> Any:
    call.require_task(task_id, VIEWER)
    return call.store.files("task", sql_id(task_id))


@PROCEDURES.procedure("getTaskFile")
def get_task_file(call: Call, file_id: Any) -> Any:
    call.require_task_file(file_id, VIEWER)
    return call.store.file("task", sql_id(file_id))


@PROCEDURES.procedure("downloadTaskFile")
def download_task_file(call: Call, file_id: Any) -> Any:
    call.require_task_file(file_id, VIEWER)
    row = call.store.file("task", sql_id(file_id))
    fh = call.store.open_content(row["path"]) if row else None
    return Content(fh) if fh is not None else ""


@PROCEDURES.procedure("removeTaskFile")
def remove_task_file(call: Call, file_id: Any) -> Any:
    call.require_task_file(file_id, MEMBER)
    return call.store.remove_file("task", sql_id(file_id))


@PROCEDURES.procedure("removeAllTaskFiles")
def remove_all_task_files(call: Call, task_id: Any) -> Any:
    call.require_task(task_id, MEMBER)
    return call.store.remove_all_files("task", sql_id(task_id))


# Project files


def _project_file(call: Call, project_id: Any, file_id: Any) -> dict[str, Any] | None:
    """The file row if it is in that project; before 1.2.50 (#6) any project's file."""
    row = call.store.file("project", sql_id(file_id))
    if row is None:
        return None
    if call.store.release.checks_project_files and int(row["project_id"]) != php_int(project_id):
        return None
    return row


@PROCEDURES.procedure("createProjectFile")
def create_project_file(call: Call, project_id: Any, filename: Any, blob: Any) -> Any:
    call.require_project(project_id, MEMBER)
    return _upload(call, "project", project_id, filename, blob)


@PROCEDURES.procedure("getAllProjectFiles")
def get_all_project_files(call: Call, project_id: Any) -> Any:
    call.require_project(project_id, VIEWER)
    return call.store.files("project", sql_id(project_id))


@PROCEDURES.procedure("getProjectFile")
def get_project_file(call: Call, project_id: Any, file_id: Any) -> Any:
    call.require_project(project_id, VIEWER)
    row = _project_file(call, project_id, file_id)
    if row is None:
        # #7: the procedure's own false from 1.2.50, PicoDb's findOne() null before.
        return False if call.store.release.checks_project_files else None
    return row


@PROCEDURES.procedure("downloadProjectFile")
def download_project_file(call: Call, project_id: Any, file_id: Any) -> Any:
    call.require_project(project_id, VIEWER)
    row = _project_file(call, project_id, file_id)
    fh = call.store.open_content(row["path"]) if row else None
    return Content(fh) if fh is not None else ""


@PROCEDURES.procedure("removeProjectFile")
def remove_project_file(call: Call, project_id: Any, file_id: Any) -> Any:
    call.require_project(project_id, MEMBER)
    row = _project_file(call, project_id, file_id)
    return call.store.remove_file("project", row["id"]) if row else False


@PROCEDURES.procedure("removeAllProjectFiles")
def remove_all_project_files(call: Call, project_id: Any) -> Any:
    call.require_project(project_id, MEMBER)
    return call.store.remove_all_files("project", sql_id(project_id))
