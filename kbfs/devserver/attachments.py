"""Attachment rows and stored contents: Kanboard's FileModel (kanboard-api §3, §5-§8, §11).

Task and project files share one set of rules and differ only in table, owner column and storage
prefix, so both go through :class:`AttachmentStore` with a :data:`FileKind`.  The rules a client
can observe (same-second storage collisions, shared-path removal, byte-cut names, orphans left
by failed uploads) are reproduced on purpose, each the way the imitated release has it
(:attr:`AttachmentStore.release`, see :mod:`kbfs.devserver.versions`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import sqlite3
import threading
from pathlib import Path
from typing import Any, BinaryIO, Literal

from kbfs.devserver.database import Database
from kbfs.devserver.images import image_size
from kbfs.devserver.php import PhpTypeError, to_php_string, valid_path_id
from kbfs.devserver.versions import DEFAULT, Release

__all__ = ["AttachmentStore", "FileKind", "InvalidPathId", "is_image_name"]

FileKind = Literal["task", "project"]

IMAGE_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "gif"})
# Column order of the raw rows returned by getTaskFile / getProjectFile (kanboard-api §3).
_FILE_FIELDS: dict[str, str] = {
    "task": "id, name, path, is_image, task_id, date, user_id, size",
    "project": "id, project_id, name, path, is_image, size, user_id, date",
}
_FILE_TABLE = {"task": "task_has_files", "project": "project_has_files"}
_FILE_OWNER = {"task": "task_id", "project": "project_id"}
_FILE_PREFIX = {"task": "tasks", "project": "projects"}


class InvalidPathId(Exception):
    """FileModel::generatePath refused the owner id: PHP exception, code 0 (kanboard-api §4)."""


def is_image_name(name: str) -> bool:
    """``is_image`` comes from ``strtolower(pathinfo($name, PATHINFO_EXTENSION))`` alone."""
    base = name.rsplit("/", 1)[-1]
    if "." not in base:
        return False
    ext = base.rsplit(".", 1)[1]
    return ext.encode("utf-8", "surrogateescape").lower() in {e.encode() for e in IMAGE_EXTENSIONS}


class AttachmentStore(Database):
    """Task and project files: their rows in SQLite and their contents under ``files/``."""

    #: The Kanboard release whose rules apply (set once, before the server starts).
    release: Release = DEFAULT

    def file(self, kind: FileKind, file_id: int | None) -> dict[str, Any] | None:
        """The raw file row plus ``etag`` (getTaskFile / getProjectFile shape), or None."""
        if file_id is None:
            return None
        row = self._one(
            f"SELECT {_FILE_FIELDS[kind]} FROM {_FILE_TABLE[kind]} WHERE id = ?", file_id
        )
        if row is None:
            return None
        result = dict(row)
        if self.release.etag:
            result["etag"] = _etag(result["path"])
        return result

    def files(self, kind: FileKind, owner_id: int | None) -> list[dict[str, Any]]:
        """getAll*Files: LEFT JOIN users, ``name ASC`` in the NOCASE collation (kanboard-api §3)."""
        if owner_id is None:
            return []
        table, owner = _FILE_TABLE[kind], _FILE_OWNER[kind]
        rows = self._all(
            f"SELECT f.id, f.name, f.path, f.is_image, f.{owner}, f.date, f.user_id, f.size, "
            f"u.username, u.name AS user_name FROM {table} f "
            f"LEFT JOIN users u ON u.id = f.user_id WHERE f.{owner} = ? ORDER BY f.name ASC, f.id",
            owner_id,
        )
        result = []
        for row in rows:
            item = dict(row)
            if self.release.etag:
                item["etag"] = _etag(item["path"])
            result.append(item)
        return result

    def task_file_project_id(self, file_id: int | None) -> int | None:
        """TaskFileModel::getProjectId: file → task → project."""
        if file_id is None:
            return None
        row = self._one(
            "SELECT t.project_id FROM task_has_files f JOIN tasks t ON t.id = f.task_id "
            "WHERE f.id = ?",
            file_id,
        )
        return int(row[0]) if row else None

    def storage_path(self, path: str) -> Path:
        """Where a storage key lives on disk."""
        return self.files_dir / path

    def open_content(self, path: str) -> BinaryIO | None:
        """FileStorage::get, as an open file; None when the stored file is missing (download
        then returns ''). Stored files are replaced, never rewritten: what the open file reads
        is what was stored, whatever happens to the path meanwhile."""
        try:
            return self.storage_path(path).open("rb")
        except OSError:
            return None

    def upload(
        self, kind: FileKind, owner_ref: Any, filename: Any, data: bytes, user_id: int
    ) -> int | None:
        """FileModel::uploadContent after the base64 step (kanboard-api §5-§8, §11).

        ``owner_ref`` is the raw task/project id param (already checked by the caller for task
        files).  Raises :class:`InvalidPathId` for ids ≤ 0 or non-numeric, and
        :class:`PhpTypeError` (→ HTTP 500, orphan file left on disk) for an array filename or an
        image-named upload that is not an image.  Returns None when the FK insert fails (a project
        that does not exist), again leaving the written file orphaned.
        """
        owner_id = valid_path_id(owner_ref)
        if owner_id is None and self.release.checks_task_on_create:
            raise InvalidPathId("Invalid ID provided for file path generation")
        # Before 1.2.47 the id goes into the path as PHP prints it (projects/0/…, -1, abc):
        # the stored file is written, then the row's foreign key fails (kanboard-api §12 row 4).
        owner_dir = str(owner_id) if owner_id is not None else _path_id(owner_ref)
        bad_name = isinstance(filename, (list, dict))
        name = "Array" if bad_name else to_php_string(filename)
        name_bytes = name.encode("utf-8", "surrogatepass")
        with self.lock:
            now = self.now()
            digest = hashlib.sha1(name_bytes + str(now).encode()).hexdigest()
            path = f"{_FILE_PREFIX[kind]}/{owner_dir}/{digest}"
            self._write(path, data)
            if owner_id is None:
                return None
            if bad_name:
                raise PhpTypeError("pathinfo(): Argument #1 ($path) must be of type string")
            image = is_image_name(name)
            if image and image_size(data) is None:
                raise PhpTypeError("DivisionByZeroError in generateThumbnailFromData")
            table, owner = _FILE_TABLE[kind], _FILE_OWNER[kind]
            try:
                with self._tx() as db:
                    cur = db.execute(
                        f"INSERT INTO {table} (name, path, is_image, {owner}, date, user_id, size) "
                        "VALUES (CAST(? AS TEXT),?,?,?,?,?,?)",
                        (name_bytes[:255], path, int(image), owner_id, now, user_id, len(data)),
                    )
            except sqlite3.IntegrityError:
                return None
            return int(cur.lastrowid or 0)

    def seed_files(
        self, kind: FileKind, owner_id: int, names: list[str], data: bytes, user_id: int
    ) -> int:
        """Insert many attachments in one transaction, all sharing one stored blob (the way
        same-name same-second uploads share storage, kanboard-api §7): scale tests need 100,000
        files without 100,000 uploads. Returns how many rows were inserted."""
        table, owner = _FILE_TABLE[kind], _FILE_OWNER[kind]
        with self.lock:
            now = self.now()
            path = f"{_FILE_PREFIX[kind]}/{owner_id}/seed-{hashlib.sha1(data).hexdigest()}"
            self._write(path, data)
            with self._tx() as db:
                db.executemany(
                    f"INSERT INTO {table} (name, path, is_image, {owner}, date, user_id, size) "
                    "VALUES (?,?,0,?,?,?,?)",
                    [(name, path, owner_id, now, user_id, len(data)) for name in names],
                )
        return len(names)

    def _write(self, path: str, data: bytes) -> None:
        target = self.storage_path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{threading.get_ident()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)

    def remove_file(self, kind: FileKind, file_id: int | None) -> bool:
        """FileModel::remove: delete the stored bytes only if no other row uses the path (§7).

        A missing stored file makes the unlink throw: the result is False and the row stays.
        """
        if file_id is None:
            return False
        table = _FILE_TABLE[kind]
        with self.lock:
            row = self._one(f"SELECT id, path FROM {table} WHERE id = ?", file_id)
            if row is None:
                return False
            if not self._release_storage(table, row["path"]):
                return False
            with self._tx() as db:
                cur = db.execute(f"DELETE FROM {table} WHERE id = ?", (file_id,))
            return cur.rowcount > 0

    def remove_all_files(self, kind: FileKind, owner_id: int | None) -> bool:
        """removeAll*Files: remove each row, True only if every removal succeeded (also if none)."""
        if owner_id is None:
            return True
        table, owner = _FILE_TABLE[kind], _FILE_OWNER[kind]
        ids = [int(r[0]) for r in self._all(f"SELECT id FROM {table} WHERE {owner} = ?", owner_id)]
        results = [self.remove_file(kind, i) for i in ids]
        return all(results)

    def _release_storage(self, table: str, path: str) -> bool:
        """Unlink the stored file unless another row (in either table) still references it.

        Before 1.2.28 it is unlinked whatever other rows share it (their bytes go too), and
        before 1.2.42 a stored file already missing is no error (kanboard-api §12 row 1, §2.2).
        """
        users = sum(
            int(self._db.execute(f"SELECT COUNT(*) FROM {t} WHERE path = ?", (path,)).fetchone()[0])
            for t in _FILE_TABLE.values()
        )
        if users > 1 and self.release.keeps_shared_bytes:
            return True
        target = self.storage_path(path)
        try:
            target.unlink()
        except FileNotFoundError:
            return not self.release.refuses_missing_bytes_removal
        with contextlib.suppress(OSError):
            target.parent.rmdir()  # Kanboard drops the empty tasks/<id>/ directory
        return True

    def _purge_files(self, kind: FileKind, owner_id: int) -> None:
        """Cascade removal: rows go whatever happens to the storage (FK ON DELETE CASCADE)."""
        table, owner = _FILE_TABLE[kind], _FILE_OWNER[kind]
        for row in self._all(f"SELECT id, path FROM {table} WHERE {owner} = ?", owner_id):
            self._release_storage(table, row["path"])
            with self._tx() as db:
                db.execute(f"DELETE FROM {table} WHERE id = ?", (row["id"],))


def _path_id(value: Any) -> str:
    """An owner id as PHP's string interpolation prints it into a storage path."""
    try:
        text = to_php_string(value) or "0"
    except PhpTypeError:
        text = "Array"
    return re.sub(r"[^0-9A-Za-z_.-]|\.\.", "_", text)[:64]  # never outside files/


def _etag(path: str | None) -> str:
    return hashlib.md5((path or "").encode("utf-8", "surrogateescape")).hexdigest()
