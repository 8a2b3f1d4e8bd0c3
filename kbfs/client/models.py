"""Typed records of what Kanboard answers, parsed strictly but tolerantly.

Kanboard 1.2.53 on SQLite sends JSON integers; older versions and MySQL/PostgreSQL back ends send
the same numbers as strings (``"id": "1"``). Both parse to ``int`` here. Anything else that does
not fit (a missing id, a name that is not a string) is a ``ProtocolError``: the caller gets a
clear error instead of a record with holes in it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any

from kbfs.client.errors import ProtocolError


class Kind(Enum):
    """Which of Kanboard's two attachment tables a file lives in."""

    TASK = "task"
    PROJECT = "project"


@dataclass(frozen=True, slots=True)
class Container:
    """Where attachments live: a project's own files, or one task's files.

    ``task_id`` is None for project attachments. Task-file uploads need the project id too
    (createTaskFile checks that the task belongs to it).
    """

    project_id: int
    task_id: int | None = None

    @property
    def kind(self) -> Kind:
        return Kind.PROJECT if self.task_id is None else Kind.TASK

    @property
    def owner_id(self) -> int:
        """The id that keys this container's table: the task id or the project id."""
        return self.project_id if self.task_id is None else self.task_id

    def __str__(self) -> str:
        if self.task_id is None:
            return f"project {self.project_id} files"
        return f"task {self.task_id} (project {self.project_id})"


def _int(obj: dict[str, Any], key: str, *, required: bool = True, default: int = 0) -> int:
    value = obj.get(key)
    if value is None:
        if required:
            raise ProtocolError(f"field {key!r} is missing or null")
        return default
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise ProtocolError(f"field {key!r} is not an integer: {value!r:.60}")


def _quick_int(value: Any) -> int:
    """The value of a JSON integer or ASCII digit string; -1 for anything else."""
    if type(value) is int:
        return value if value >= 0 else -1
    if type(value) is str and value.isascii() and value.isdigit():
        return int(value)
    return -1


def _str(obj: dict[str, Any], key: str, *, required: bool = True) -> str | None:
    value = obj.get(key)
    if value is None:
        if required:
            raise ProtocolError(f"field {key!r} is missing or null")
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise ProtocolError(f"field {key!r} is not a string: {value!r:.60}")


def _obj(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ProtocolError(f"{what} is not an object: {value!r:.60}")
    return value


def _version_key(etag: str | None, path: str, date: int, size: int) -> str:
    return f"{etag or path}:{date}:{size}"


@dataclass(frozen=True, slots=True)
class FileRecord:
    """One attachment row (task_has_files or project_has_files, plus etag).

    ``etag`` is md5(path) and changes only when the storage path does; an id alone does not
    identify a file over time (ids are reused), so caches key on (kind, id, etag).
    """

    kind: Kind
    id: int
    name: str
    size: int
    date: int
    is_image: bool
    path: str
    etag: str | None
    project_id: int | None
    task_id: int | None
    user_id: int
    username: str | None = None
    user_name: str | None = None
    # What distinguishes two files that carried the same id at different times. The etag
    # alone is not enough: a reused id (kanboard-api §7) with the same name uploaded in the same
    # second gets the same storage path, hence the same etag. Computed once: every cache and
    # inode lookup keys on it.
    version_key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        key = _version_key(self.etag, self.path, self.date, self.size)
        object.__setattr__(self, "version_key", key)

    @classmethod
    def from_json(cls, kind: Kind, value: Any) -> FileRecord:
        # A listing can hold 100,000 of these: the two shapes Kanboard really sends (JSON
        # integers, or digit strings from MySQL/PostgreSQL) take a quick path; anything else
        # goes through the careful one below, which explains what is wrong.
        if type(value) is dict:
            get = value.get
            ident, size, date = _quick_int(get("id")), _quick_int(get("size")), get("date", 0)
            date = _quick_int(date)
            is_image, user_id = _quick_int(get("is_image", 0)), _quick_int(get("user_id", 0))
            owner = _quick_int(get("project_id" if kind is Kind.PROJECT else "task_id"))
            name, path, etag = get("name"), get("path"), get("etag")
            username, user_name = get("username"), get("user_name")
            if (
                min(ident, size, date, is_image, user_id, owner) >= 0
                and type(name) is str
                and type(path) is str
                and (etag is None or type(etag) is str)
                and (username is None or type(username) is str)
                and (user_name is None or type(user_name) is str)
            ):
                return _quick_record(
                    kind,
                    ident,
                    name,
                    size,
                    date,
                    bool(is_image),
                    path,
                    etag,
                    owner if kind is Kind.PROJECT else None,
                    owner if kind is Kind.TASK else None,
                    user_id,
                    username,
                    user_name,
                )
        obj = _obj(value, "file record")
        size = _int(obj, "size")
        if size < 0:
            raise ProtocolError(f"negative file size {size}")
        return cls(
            kind=kind,
            id=_int(obj, "id"),
            # Kanboard stores filename null as "": accept null the same way.
            name=_str(obj, "name", required=False) or "",
            size=size,
            date=_int(obj, "date", required=False),
            is_image=bool(_int(obj, "is_image", required=False)),
            path=_str(obj, "path", required=False) or "",
            etag=_str(obj, "etag", required=False),
            project_id=_int(obj, "project_id") if kind is Kind.PROJECT else None,
            task_id=_int(obj, "task_id") if kind is Kind.TASK else None,
            user_id=_int(obj, "user_id", required=False),
            username=_str(obj, "username", required=False),
            user_name=_str(obj, "user_name", required=False),
        )


# A frozen dataclass's __init__ sets every field through object.__setattr__ by name: 3 µs a
# record, a third of the time kbfs spends on a 10,000-file listing. The quick path of
# FileRecord.from_json sets the slots through their descriptors instead (half the time); the
# result is the same object (tests/unit/test_models.py compares the two paths).
(
    _set_kind, _set_id, _set_name, _set_size, _set_date, _set_is_image, _set_path, _set_etag,
    _set_project_id, _set_task_id, _set_user_id, _set_username, _set_user_name, _set_version_key,
) = (getattr(FileRecord, f.name).__set__ for f in fields(FileRecord))  # fmt: skip
_new = object.__new__


def _quick_record(
    kind: Kind,
    ident: int,
    name: str,
    size: int,
    date: int,
    is_image: bool,
    path: str,
    etag: str | None,
    project_id: int | None,
    task_id: int | None,
    user_id: int,
    username: str | None,
    user_name: str | None,
) -> FileRecord:
    record = _new(FileRecord)
    _set_kind(record, kind)
    _set_id(record, ident)
    _set_name(record, name)
    _set_size(record, size)
    _set_date(record, date)
    _set_is_image(record, is_image)
    _set_path(record, path)
    _set_etag(record, etag)
    _set_project_id(record, project_id)
    _set_task_id(record, task_id)
    _set_user_id(record, user_id)
    _set_username(record, username)
    _set_user_name(record, user_name)
    _set_version_key(record, _version_key(etag, path, date, size))
    return record


@dataclass(frozen=True, slots=True)
class Project:
    id: int
    name: str
    is_active: bool
    description: str | None = None
    board_url: str | None = None

    @classmethod
    def from_json(cls, value: Any) -> Project:
        obj = _obj(value, "project")
        url = obj.get("url")
        board = url.get("board") if isinstance(url, dict) else None
        return cls(
            id=_int(obj, "id"),
            name=_str(obj, "name", required=False) or "",
            is_active=bool(_int(obj, "is_active", required=False, default=1)),
            description=_str(obj, "description", required=False),
            board_url=board if isinstance(board, str) else None,
        )


@dataclass(frozen=True, slots=True)
class Task:
    id: int
    title: str
    project_id: int
    is_active: bool
    url: str | None = None

    @classmethod
    def from_json(cls, value: Any) -> Task:
        obj = _obj(value, "task")
        url = obj.get("url")
        return cls(
            id=_int(obj, "id"),
            title=_str(obj, "title", required=False) or "",
            project_id=_int(obj, "project_id"),
            is_active=bool(_int(obj, "is_active", required=False, default=1)),
            url=url if isinstance(url, str) else None,
        )


@dataclass(frozen=True, slots=True)
class User:
    id: int
    username: str
    role: str | None = None
    name: str | None = None

    @classmethod
    def from_json(cls, value: Any) -> User:
        obj = _obj(value, "user")
        return cls(
            id=_int(obj, "id"),
            username=_str(obj, "username", required=False) or "",
            role=_str(obj, "role", required=False),
            name=_str(obj, "name", required=False),
        )
