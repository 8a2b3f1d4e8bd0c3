"""SQLite model of the Kanboard rules kbfs depends on (kanboard-api §1, §2, §6, §10).

:class:`Store` is the whole data model: users, projects and tasks here, attachments inherited from
:class:`~kbfs.devserver.attachments.AttachmentStore`.  It knows nothing about JSON-RPC or
authentication: :mod:`kbfs.devserver.rpc` turns calls into store operations.  Every rule that a
client could observe (id reuse, brute-force lockout, cascades) is implemented on purpose, because
a friendlier fake would hide client bugs.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import sqlite3
import time
from collections.abc import Callable
from typing import Any

from kbfs.devserver.attachments import AttachmentStore
from kbfs.devserver.schema import (
    APP_ROLES,
    COLORS,
    DEFAULT_COLUMNS,
    PROJECT_FIELDS,
    PROJECT_ROLES,
    TASK_FIELDS,
    USER_FIELDS,
)

__all__ = ["Store", "hash_password"]

LOCKOUT_AFTER = 6  # BRUTEFORCE_LOCKDOWN: locked when failures exceed this
LOCKOUT_SECONDS = 15 * 60  # BRUTEFORCE_LOCKDOWN_DURATION


def hash_password(password: str, salt: str | None = None) -> str:
    """A salted sha256; Kanboard uses bcrypt, but the devserver must stay fast under user auth."""
    salt = salt if salt is not None else os.urandom(8).hex()
    digest = hashlib.sha256((salt + "$" + password).encode("utf-8", "surrogatepass")).hexdigest()
    return f"sha256${salt}${digest}"


def _verify_password(stored: str | None, password: str) -> bool:
    if not stored or not stored.startswith("sha256$"):
        return False
    _, salt, _ = stored.split("$", 2)
    return hmac.compare_digest(hash_password(password, salt).encode(), stored.encode())


def _accepted(row: sqlite3.Row, password: str) -> bool:
    """The password or the personal API token matches, compared in constant time."""
    token = row["api_access_token"]
    token_ok = bool(token) and hmac.compare_digest(
        str(token).encode(), password.encode("utf-8", "surrogatepass")
    )
    return _verify_password(row["password"], password) or token_ok


def _user_dict(row: sqlite3.Row) -> dict[str, Any]:
    user = dict(row)
    user["is_ldap_user"] = bool(user["is_ldap_user"])
    user["twofactor_activated"] = bool(user["twofactor_activated"])
    return user


class Store(AttachmentStore):
    """The Kanboard data model over one data directory; thread-safe like its database."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        clock: Callable[[], float] = time.time,
        admin_password: str | None = None,
    ):
        super().__init__(data_dir, clock)
        #: Passwords of the users this store created itself (to show them once).
        self.new_passwords: dict[str, str] = {}
        if self._db.execute("SELECT COUNT(*) FROM users").fetchone()[0] == 0:
            # Kanboard's installer creates admin/admin as the first app-admin; here the password
            # is random unless given, as any local user can reach a loopback port.
            password = admin_password or secrets.token_urlsafe(12)
            self.create_user("admin", password, None, None, "app-admin")
            self.new_passwords["admin"] = password

    # -- users --------------------------------------------------------------------------------

    def create_user(
        self,
        username: str,
        password: str | None,
        name: str | None,
        email: str | None,
        role: str = "app-user",
    ) -> int | None:
        """Insert a user; None when the username is taken or invalid."""
        if not username or role not in APP_ROLES:
            return None
        hashed = hash_password(password) if password else None
        try:
            with self._tx() as db:
                cur = db.execute(
                    "INSERT INTO users (username, password, name, email, role) VALUES (?,?,?,?,?)",
                    (username, hashed, name or None, email or None, role),
                )
        except sqlite3.IntegrityError:
            return None
        return int(cur.lastrowid or 0)

    def user_by_name(self, username: str) -> dict[str, Any] | None:
        """The user row (without the password) or None."""
        row = self._one(f"SELECT {USER_FIELDS} FROM users WHERE username = ?", username)
        return _user_dict(row) if row else None

    def user_by_id(self, user_id: int) -> dict[str, Any] | None:
        """The user row (without the password) or None."""
        row = self._one(f"SELECT {USER_FIELDS} FROM users WHERE id = ?", user_id)
        return _user_dict(row) if row else None

    def set_user_fields(self, user_id: int, **fields: Any) -> None:
        """Direct column update, for tests and sample data (e.g. ``api_access_token``)."""
        if "password" in fields and fields["password"] is not None:
            fields["password"] = hash_password(fields["password"])
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self._tx() as db:
            db.execute(f"UPDATE users SET {cols} WHERE id = ?", (*fields.values(), user_id))

    def check_credentials(self, username: str, password: str) -> bool:
        """Whether :meth:`authenticate` would accept these now, without counting a failure."""
        row = self._one(
            "SELECT password, api_access_token, is_active, lock_expiration_date "
            "FROM users WHERE username = ?",
            username,
        )
        if row is None or (
            row["lock_expiration_date"] and row["lock_expiration_date"] > self.now()
        ):
            return False
        return bool(row["is_active"]) and _accepted(row, password)

    def authenticate(self, username: str, password: str) -> dict[str, Any] | None:
        """Password or personal-token login with Kanboard's brute-force lockout (kanboard-api §1).

        A locked user fails without touching the counter; a failure with an existing username
        increments ``nb_failed_login`` and locks the account for 15 minutes once it exceeds 6; a
        success resets both.
        """
        now = self.now()
        with self._tx() as db:
            row = db.execute(
                "SELECT id, password, api_access_token, is_active, lock_expiration_date, "
                "nb_failed_login FROM users WHERE username = ?",
                (username,),
            ).fetchone()
            if row is None:
                return None
            if row["lock_expiration_date"] and row["lock_expiration_date"] > now:
                return None
            ok = bool(row["is_active"]) and _accepted(row, password)
            if ok and (row["nb_failed_login"] or row["lock_expiration_date"]):
                db.execute(
                    "UPDATE users SET nb_failed_login = 0, lock_expiration_date = 0 WHERE id = ?",
                    (row["id"],),
                )
            elif not ok:
                failures = row["nb_failed_login"] + 1
                lock = now + LOCKOUT_SECONDS if failures > LOCKOUT_AFTER else 0
                db.execute(
                    "UPDATE users SET nb_failed_login = ?, lock_expiration_date = ? WHERE id = ?",
                    (failures, lock, row["id"]),
                )
                return None
            user_id = int(row["id"])
        return self.user_by_id(user_id)

    # -- projects -----------------------------------------------------------------------------

    def create_project(
        self,
        name: str,
        description: str | None = None,
        owner_id: int = 0,
        identifier: str = "",
        start_date: str = "",
        end_date: str = "",
        email: str | None = None,
        manager_id: int = 0,
    ) -> int | None:
        """Create a project with Kanboard's default columns and swimlane; None if invalid.

        ``manager_id`` is the user who created it under user auth: Kanboard adds them as
        project-manager.  App-token projects have no members at all (kanboard-api §2).
        """
        if not name:
            return None
        identifier = (identifier or "").upper()
        now = self.now()
        with self._tx() as db:
            if (
                identifier
                and db.execute(
                    "SELECT 1 FROM projects WHERE identifier = ?", (identifier,)
                ).fetchone()
            ):
                return None
            cur = db.execute(
                "INSERT INTO projects (name, description, owner_id, identifier, start_date, "
                "end_date, email, last_modified) VALUES (?,?,?,?,?,?,?,?)",
                (name, description, owner_id, identifier, start_date, end_date, email, now),
            )
            project_id = int(cur.lastrowid or 0)
            for pos, title in enumerate(DEFAULT_COLUMNS, 1):
                db.execute(
                    "INSERT INTO columns (title, position, project_id) VALUES (?,?,?)",
                    (title, pos, project_id),
                )
            db.execute(
                "INSERT INTO swimlanes (name, position, project_id) VALUES (?,?,?)",
                ("Default swimlane", 1, project_id),
            )
            if manager_id:
                db.execute(
                    "INSERT OR REPLACE INTO project_has_users (project_id, user_id, role) "
                    "VALUES (?,?,?)",
                    (project_id, manager_id, "project-manager"),
                )
        return project_id

    def project(self, project_id: int | None) -> dict[str, Any] | None:
        """The projects row in Kanboard's column order, or None."""
        if project_id is None:
            return None
        row = self._one(f"SELECT {PROJECT_FIELDS} FROM projects WHERE id = ?", project_id)
        return dict(row) if row else None

    def projects(self, ids: list[int] | None = None) -> list[dict[str, Any]]:
        """All projects (or those with the given ids), ordered by name like ProjectModel::getAll."""
        rows = self._all(f"SELECT {PROJECT_FIELDS} FROM projects ORDER BY name, id")
        result = [dict(r) for r in rows]
        if ids is not None:
            wanted = set(ids)
            result = [p for p in result if p["id"] in wanted]
        return result

    def user_project_ids(self, user_id: int, active_only: bool = False) -> list[int]:
        """Projects where the user has any role."""
        sql = (
            "SELECT p.id FROM projects p JOIN project_has_users pu ON pu.project_id = p.id "
            "WHERE pu.user_id = ?"
        )
        if active_only:
            sql += " AND p.is_active = 1"
        return [int(r[0]) for r in self._all(sql, user_id)]

    def set_project_active(self, project_id: int | None, active: bool) -> bool:
        """enableProject / disableProject."""
        if project_id is None:
            return False
        with self._tx() as db:
            cur = db.execute(
                "UPDATE projects SET is_active = ?, last_modified = ? WHERE id = ?",
                (1 if active else 0, self.now(), project_id),
            )
        return cur.rowcount > 0

    def remove_project(self, project_id: int | None) -> bool:
        """Remove a project, its project files and every task with its files (kanboard-api §10)."""
        if project_id is None:
            return False
        with self.lock:
            if self.project(project_id) is None:
                return False
            for row in self._all("SELECT id FROM tasks WHERE project_id = ?", project_id):
                self._purge_files("task", int(row["id"]))
            self._purge_files("project", project_id)
            with self._tx() as db:
                cur = db.execute("DELETE FROM projects WHERE id = ?", (project_id,))
        return cur.rowcount > 0

    def add_project_user(self, project_id: int | None, user_id: int | None, role: str) -> bool:
        """Grant a project role; False for unknown ids, an unknown role or an existing member."""
        if project_id is None or user_id is None or role not in PROJECT_ROLES:
            return False
        try:
            with self._tx() as db:
                db.execute(
                    "INSERT INTO project_has_users (project_id, user_id, role) VALUES (?,?,?)",
                    (project_id, user_id, role),
                )
        except sqlite3.IntegrityError:
            return False
        return True

    def project_role(self, project_id: int | None, user_id: int) -> str:
        """The user's role in the project, or '' (none for app-admins by right: kanboard-api §2)."""
        if project_id is None:
            return ""
        row = self._one(
            "SELECT role FROM project_has_users WHERE project_id = ? AND user_id = ?",
            project_id,
            user_id,
        )
        return str(row["role"]) if row else ""

    # -- tasks --------------------------------------------------------------------------------

    def create_task(
        self,
        project_id: int | None,
        title: str,
        *,
        color_id: str = "",
        column_id: int = 0,
        owner_id: int = 0,
        creator_id: int = 0,
        description: str = "",
        reference: str = "",
        swimlane_id: int | None = None,
        date_due: int = 0,
        score: int = 0,
        priority: int = 0,
        category_id: int = 0,
    ) -> int | None:
        """Create an open task at the end of its column; None when the project does not exist."""
        if project_id is None or not title:
            return None
        now = self.now()
        with self._tx() as db:
            if not db.execute("SELECT 1 FROM projects WHERE id = ?", (project_id,)).fetchone():
                return None
            column = self._column_for(db, project_id, column_id)
            swimlane = self._swimlane_for(db, project_id, swimlane_id)
            position = self._next_position(db, project_id, column, swimlane)
            cur = db.execute(
                "INSERT INTO tasks (title, description, date_creation, color_id, project_id, "
                "column_id, owner_id, position, creator_id, date_modification, reference, "
                "swimlane_id, date_moved, date_due, score, priority, category_id) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    title,
                    description or "",
                    now,
                    color_id if color_id in COLORS else "yellow",
                    project_id,
                    column,
                    owner_id,
                    position,
                    creator_id,
                    now,
                    reference or "",
                    swimlane,
                    now,
                    date_due or 0,
                    score or 0,
                    priority or 0,
                    category_id or 0,
                ),
            )
        return int(cur.lastrowid or 0)

    @staticmethod
    def _column_for(db: sqlite3.Connection, project_id: int, column_id: int | None) -> int:
        if (
            column_id
            and db.execute(
                "SELECT 1 FROM columns WHERE id = ? AND project_id = ?", (column_id, project_id)
            ).fetchone()
        ):
            return column_id
        row = db.execute(
            "SELECT id FROM columns WHERE project_id = ? ORDER BY position LIMIT 1", (project_id,)
        ).fetchone()
        return int(row[0]) if row else 0

    @staticmethod
    def _swimlane_for(db: sqlite3.Connection, project_id: int, swimlane_id: int | None) -> int:
        if (
            swimlane_id
            and db.execute(
                "SELECT 1 FROM swimlanes WHERE id = ? AND project_id = ?", (swimlane_id, project_id)
            ).fetchone()
        ):
            return swimlane_id
        row = db.execute(
            "SELECT id FROM swimlanes WHERE project_id = ? ORDER BY position LIMIT 1",
            (project_id,),
        ).fetchone()
        return int(row[0]) if row else 0

    @staticmethod
    def _next_position(db: sqlite3.Connection, project_id: int, column: int, swimlane: int) -> int:
        row = db.execute(
            "SELECT MAX(position) FROM tasks WHERE project_id = ? AND column_id = ? "
            "AND swimlane_id = ?",
            (project_id, column, swimlane),
        ).fetchone()
        return int(row[0] or 0) + 1

    def task(self, task_id: int | None) -> dict[str, Any] | None:
        """The tasks row in Kanboard's column order, or None."""
        if task_id is None:
            return None
        row = self._one(f"SELECT {TASK_FIELDS} FROM tasks WHERE id = ?", task_id)
        return dict(row) if row else None

    def tasks(self, project_id: int | None, is_active: int | None) -> list[dict[str, Any]]:
        """Tasks of a project with the given status, in id order."""
        if project_id is None or is_active is None:
            return []
        rows = self._all(
            f"SELECT {TASK_FIELDS} FROM tasks WHERE project_id = ? AND is_active = ? ORDER BY id",
            project_id,
            is_active,
        )
        return [dict(r) for r in rows]

    def task_project_id(self, task_id: int | None) -> int | None:
        """TaskFinderModel::getProjectId."""
        task = self.task(task_id)
        return int(task["project_id"]) if task else None

    def set_task_status(self, task_id: int | None, active: bool) -> bool:
        """openTask / closeTask; files are never touched (kanboard-api §10)."""
        if task_id is None:
            return False
        now = self.now()
        with self._tx() as db:
            cur = db.execute(
                "UPDATE tasks SET is_active = ?, date_completed = ?, date_modification = ? "
                "WHERE id = ?",
                (1 if active else 0, None if active else now, now, task_id),
            )
        return cur.rowcount > 0

    def remove_task(self, task_id: int | None) -> bool:
        """Remove a task with its file rows and (unshared) stored contents."""
        if task_id is None:
            return False
        with self.lock:
            if self.task(task_id) is None:
                return False
            self._purge_files("task", task_id)
            with self._tx() as db:
                cur = db.execute("DELETE FROM tasks WHERE id = ?", (task_id,))
        return cur.rowcount > 0

    def move_task(self, task_id: int | None, project_id: int | None) -> bool:
        """moveTaskToProject: the task keeps its id and its files keep ``tasks/<id>/`` paths."""
        if task_id is None or project_id is None:
            return False
        now = self.now()
        with self._tx() as db:
            if not db.execute("SELECT 1 FROM tasks WHERE id = ?", (task_id,)).fetchone():
                return False
            if not db.execute("SELECT 1 FROM projects WHERE id = ?", (project_id,)).fetchone():
                return False
            column = self._column_for(db, project_id, None)
            swimlane = self._swimlane_for(db, project_id, None)
            position = self._next_position(db, project_id, column, swimlane)
            db.execute(
                "UPDATE tasks SET project_id = ?, column_id = ?, swimlane_id = ?, position = ?, "
                "date_moved = ?, date_modification = ? WHERE id = ?",
                (project_id, column, swimlane, position, now, now, task_id),
            )
        return True

    def duplicate_task(self, task_id: int | None, project_id: int | None) -> int | None:
        """duplicateTaskToProject: a new task whose file rows share the source's storage paths."""
        source = self.task(task_id)
        if source is None or project_id is None:
            return None
        new_id = self.create_task(
            project_id,
            source["title"],
            color_id=source["color_id"],
            owner_id=source["owner_id"],
            creator_id=source["creator_id"],
            description=source["description"],
            reference=source["reference"],
            date_due=source["date_due"],
            score=source["score"],
            priority=source["priority"],
        )
        if new_id is None:
            return None
        with self._tx() as db:
            rows = db.execute(
                "SELECT CAST(name AS BLOB), path, is_image, date, user_id, size "
                "FROM task_has_files WHERE task_id = ? ORDER BY id",
                (task_id,),
            ).fetchall()
            for row in rows:
                db.execute(
                    "INSERT INTO task_has_files (name, path, is_image, task_id, date, user_id, "
                    "size) VALUES (CAST(? AS TEXT),?,?,?,?,?,?)",
                    (row[0], row[1], row[2], new_id, row[3], row[4], row[5]),
                )
        return new_id
