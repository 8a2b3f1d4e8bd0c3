"""SQLite model of the Kanboard rules kbfs depends on (API-FACTS §3, §6, §7, §10).

The store owns the database and the file contents under ``DATA/files``.  It knows nothing about
JSON-RPC or authentication: :mod:`kbfs.devserver.rpc` turns calls into store operations.  Every rule
that a client could observe (id reuse, same-second storage collisions, shared-path removal, byte-cut
names, cascades) is implemented here on purpose, because a friendlier fake would hide client bugs.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Literal

from kbfs.devserver.images import image_size
from kbfs.devserver.php import PhpTypeError, to_php_string, valid_path_id

__all__ = ["FileKind", "InvalidPathId", "Store", "hash_password"]

FileKind = Literal["task", "project"]

LOCKOUT_AFTER = 6  # BRUTEFORCE_LOCKDOWN: locked when failures exceed this
LOCKOUT_SECONDS = 15 * 60  # BRUTEFORCE_LOCKDOWN_DURATION
BASE_URL = "http://localhost/"  # Kanboard with an empty application_url
IMAGE_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "gif"})
DEFAULT_COLUMNS = ("Backlog", "Ready", "Work in progress", "Done")
COLORS = {
    "yellow": ("Yellow", "rgb(245, 247, 196)", "rgb(223, 227, 45)"),
    "blue": ("Blue", "rgb(219, 235, 255)", "rgb(168, 207, 255)"),
    "green": ("Green", "rgb(189, 244, 203)", "rgb(74, 227, 113)"),
    "purple": ("Purple", "rgb(223, 176, 255)", "rgb(205, 133, 254)"),
    "red": ("Red", "rgb(255, 187, 187)", "rgb(255, 151, 151)"),
    "orange": ("Orange", "rgb(255, 215, 179)", "rgb(255, 172, 98)"),
    "grey": ("Grey", "rgb(238, 238, 238)", "rgb(204, 204, 204)"),
}
PROJECT_ROLES = {"project-viewer": 1, "project-member": 2, "project-manager": 3}
APP_ROLES = ("app-user", "app-manager", "app-admin")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    password TEXT,
    is_ldap_user INTEGER DEFAULT 0,
    name TEXT,
    email TEXT,
    google_id TEXT,
    github_id TEXT,
    notifications_enabled INTEGER DEFAULT 0,
    timezone TEXT,
    language TEXT,
    disable_login_form INTEGER DEFAULT 0,
    twofactor_activated INTEGER DEFAULT 0,
    twofactor_secret TEXT,
    token TEXT DEFAULT '',
    notifications_filter INTEGER DEFAULT 4,
    nb_failed_login INTEGER DEFAULT 0,
    lock_expiration_date INTEGER DEFAULT 0,
    gitlab_id INTEGER,
    role TEXT NOT NULL DEFAULT 'app-user',
    is_active INTEGER DEFAULT 1,
    avatar_path TEXT,
    api_access_token TEXT,
    filter TEXT,
    theme TEXT DEFAULT 'light'
);
CREATE TABLE IF NOT EXISTS projects (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    is_active INTEGER DEFAULT 1,
    token TEXT DEFAULT '',
    last_modified INTEGER DEFAULT 0,
    is_public INTEGER DEFAULT 0,
    is_private INTEGER DEFAULT 0,
    is_everybody_allowed INTEGER DEFAULT 0,
    default_swimlane TEXT DEFAULT 'Default swimlane',
    show_default_swimlane INTEGER DEFAULT 1,
    description TEXT,
    identifier TEXT DEFAULT '',
    start_date TEXT DEFAULT '',
    end_date TEXT DEFAULT '',
    owner_id INTEGER DEFAULT 0,
    priority_default INTEGER DEFAULT 0,
    priority_start INTEGER DEFAULT 0,
    priority_end INTEGER DEFAULT 3,
    email TEXT,
    predefined_email_subjects TEXT,
    per_swimlane_task_limits INTEGER DEFAULT 0,
    task_limit INTEGER DEFAULT 0,
    enable_global_tags INTEGER DEFAULT 1
);
CREATE TABLE IF NOT EXISTS columns (
    id INTEGER PRIMARY KEY,
    title TEXT NOT NULL,
    position INTEGER,
    project_id INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS swimlanes (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    position INTEGER DEFAULT 1,
    project_id INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS project_has_users (
    project_id INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role TEXT NOT NULL,
    PRIMARY KEY (project_id, user_id)
);
CREATE TABLE IF NOT EXISTS tasks (
    id INTEGER PRIMARY KEY,
    title TEXT NOT NULL,
    description TEXT DEFAULT '',
    date_creation INTEGER,
    color_id TEXT DEFAULT 'yellow',
    project_id INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    column_id INTEGER,
    owner_id INTEGER DEFAULT 0,
    position INTEGER,
    is_active INTEGER DEFAULT 1,
    date_completed INTEGER,
    score INTEGER DEFAULT 0,
    date_due INTEGER DEFAULT 0,
    category_id INTEGER DEFAULT 0,
    creator_id INTEGER DEFAULT 0,
    date_modification INTEGER,
    reference TEXT DEFAULT '',
    date_started INTEGER DEFAULT 0,
    time_spent REAL,
    time_estimated REAL,
    swimlane_id INTEGER,
    date_moved INTEGER,
    recurrence_status INTEGER DEFAULT 0,
    recurrence_trigger INTEGER DEFAULT 0,
    recurrence_factor INTEGER DEFAULT 0,
    recurrence_timeframe INTEGER DEFAULT 0,
    recurrence_basedate INTEGER DEFAULT 0,
    recurrence_parent INTEGER,
    recurrence_child INTEGER,
    priority INTEGER DEFAULT 0,
    external_provider TEXT,
    external_uri TEXT
);
CREATE TABLE IF NOT EXISTS task_has_files (
    id INTEGER PRIMARY KEY,
    name TEXT COLLATE NOCASE NOT NULL,
    path TEXT,
    is_image INTEGER DEFAULT 0,
    task_id INTEGER NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    date INTEGER,
    user_id INTEGER,
    size INTEGER
);
CREATE TABLE IF NOT EXISTS project_has_files (
    id INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    name TEXT COLLATE NOCASE NOT NULL,
    path TEXT,
    is_image INTEGER DEFAULT 0,
    size INTEGER,
    user_id INTEGER,
    date INTEGER
);
"""

_TASK_FIELDS = (
    "id, title, description, date_creation, color_id, project_id, column_id, owner_id, position, "
    "is_active, date_completed, score, date_due, category_id, creator_id, date_modification, "
    "reference, date_started, time_spent, time_estimated, swimlane_id, date_moved, "
    "recurrence_status, recurrence_trigger, recurrence_factor, recurrence_timeframe, "
    "recurrence_basedate, recurrence_parent, recurrence_child, priority, external_provider, "
    "external_uri"
)
_PROJECT_FIELDS = (
    "id, name, is_active, token, last_modified, is_public, is_private, is_everybody_allowed, "
    "default_swimlane, show_default_swimlane, description, identifier, start_date, end_date, "
    "owner_id, priority_default, priority_start, priority_end, email, predefined_email_subjects, "
    "per_swimlane_task_limits, task_limit, enable_global_tags"
)
_USER_FIELDS = (
    "id, username, is_ldap_user, name, email, google_id, github_id, notifications_enabled, "
    "timezone, language, disable_login_form, twofactor_activated, twofactor_secret, token, "
    "notifications_filter, nb_failed_login, lock_expiration_date, gitlab_id, role, is_active, "
    "avatar_path, api_access_token, filter, theme"
)
# Column order of the raw rows returned by getTaskFile / getProjectFile (API-FACTS §3).
_FILE_FIELDS: dict[str, str] = {
    "task": "id, name, path, is_image, task_id, date, user_id, size",
    "project": "id, project_id, name, path, is_image, size, user_id, date",
}
_FILE_TABLE = {"task": "task_has_files", "project": "project_has_files"}
_FILE_OWNER = {"task": "task_id", "project": "project_id"}
_FILE_PREFIX = {"task": "tasks", "project": "projects"}


class InvalidPathId(Exception):
    """FileModel::generatePath refused the owner id: a PHP exception with code 0 (API-FACTS §4)."""


def hash_password(password: str, salt: str | None = None) -> str:
    """A salted sha256; Kanboard uses bcrypt, but the devserver must stay fast under user auth."""
    salt = salt if salt is not None else os.urandom(8).hex()
    digest = hashlib.sha256((salt + "$" + password).encode("utf-8", "surrogatepass")).hexdigest()
    return f"sha256${salt}${digest}"


def _verify_password(stored: str | None, password: str) -> bool:
    if not stored or not stored.startswith("sha256$"):
        return False
    _, salt, _ = stored.split("$", 2)
    return hash_password(password, salt) == stored


def _decode_text(raw: bytes) -> str:
    # Names cut inside a UTF-8 sequence are stored as-is (like PHP's substr); surrogateescape keeps
    # them round-trippable and makes the JSON encoder fail exactly where PHP's json_encode fails.
    return raw.decode("utf-8", "surrogateescape")


def is_image_name(name: str) -> bool:
    """``is_image`` comes from ``strtolower(pathinfo($name, PATHINFO_EXTENSION))`` alone."""
    base = name.rsplit("/", 1)[-1]
    if "." not in base:
        return False
    ext = base.rsplit(".", 1)[1]
    return ext.encode("utf-8", "surrogateescape").lower() in {e.encode() for e in IMAGE_EXTENSIONS}


class Store:
    """The Kanboard data model: one SQLite database plus a directory of file contents.

    All methods are thread-safe (one lock: the devserver favours exactness over parallelism).
    ``clock`` returns epoch seconds and may be replaced by tests.
    """

    def __init__(self, data_dir: str | os.PathLike[str], clock: Callable[[], float] = time.time):
        self.data_dir = Path(data_dir)
        self.files_dir = self.data_dir / "files"
        self.files_dir.mkdir(parents=True, exist_ok=True)
        self.clock = clock
        self.lock = threading.RLock()
        db_path = self.data_dir / "kanboard.sqlite"
        self.is_new = not db_path.exists()
        self._db = sqlite3.connect(db_path, check_same_thread=False, isolation_level=None)
        self._db.text_factory = _decode_text
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA foreign_keys = ON")
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = NORMAL")
        self._db.executescript(_SCHEMA)
        if self._db.execute("SELECT COUNT(*) FROM users").fetchone()[0] == 0:
            # Kanboard's installer creates admin/admin as the first app-admin.
            self.create_user("admin", "admin", None, None, "app-admin")

    # -- plumbing -----------------------------------------------------------------------------

    def close(self) -> None:
        """Close the database (the files need no closing)."""
        with self.lock:
            self._db.close()

    def now(self) -> int:
        """PHP ``time()``."""
        return int(self.clock())

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self.lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _one(self, sql: str, *args: Any) -> sqlite3.Row | None:
        with self.lock:
            row: sqlite3.Row | None = self._db.execute(sql, args).fetchone()
            return row

    def _all(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        with self.lock:
            return list(self._db.execute(sql, args).fetchall())

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
        row = self._one(f"SELECT {_USER_FIELDS} FROM users WHERE username = ?", username)
        return _user_dict(row) if row else None

    def user_by_id(self, user_id: int) -> dict[str, Any] | None:
        """The user row (without the password) or None."""
        row = self._one(f"SELECT {_USER_FIELDS} FROM users WHERE id = ?", user_id)
        return _user_dict(row) if row else None

    def set_user_fields(self, user_id: int, **fields: Any) -> None:
        """Direct column update, for tests and sample data (e.g. ``api_access_token``)."""
        if "password" in fields and fields["password"] is not None:
            fields["password"] = hash_password(fields["password"])
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self._tx() as db:
            db.execute(f"UPDATE users SET {cols} WHERE id = ?", (*fields.values(), user_id))

    def authenticate(self, username: str, password: str) -> dict[str, Any] | None:
        """Password or personal-token login with Kanboard's brute-force lockout (API-FACTS §1).

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
            token = row["api_access_token"]
            ok = bool(row["is_active"]) and (
                _verify_password(row["password"], password) or (bool(token) and token == password)
            )
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
        project-manager.  App-token projects have no members at all (API-FACTS §2).
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
        row = self._one(f"SELECT {_PROJECT_FIELDS} FROM projects WHERE id = ?", project_id)
        return dict(row) if row else None

    def projects(self, ids: list[int] | None = None) -> list[dict[str, Any]]:
        """All projects (or those with the given ids), ordered by name like ProjectModel::getAll."""
        rows = self._all(f"SELECT {_PROJECT_FIELDS} FROM projects ORDER BY name, id")
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
        """Remove a project, its project files and every task with its files (API-FACTS §10)."""
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
        """The user's role in the project, or '' (app-admins get nothing for free: API-FACTS §2)."""
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
        row = self._one(f"SELECT {_TASK_FIELDS} FROM tasks WHERE id = ?", task_id)
        return dict(row) if row else None

    def tasks(self, project_id: int | None, is_active: int | None) -> list[dict[str, Any]]:
        """Tasks of a project with the given status, in id order."""
        if project_id is None or is_active is None:
            return []
        rows = self._all(
            f"SELECT {_TASK_FIELDS} FROM tasks WHERE project_id = ? AND is_active = ? ORDER BY id",
            project_id,
            is_active,
        )
        return [dict(r) for r in rows]

    def task_project_id(self, task_id: int | None) -> int | None:
        """TaskFinderModel::getProjectId."""
        task = self.task(task_id)
        return int(task["project_id"]) if task else None

    def set_task_status(self, task_id: int | None, active: bool) -> bool:
        """openTask / closeTask; files are never touched (API-FACTS §10)."""
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

    # -- files --------------------------------------------------------------------------------

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
        result["etag"] = _etag(result["path"])
        return result

    def files(self, kind: FileKind, owner_id: int | None) -> list[dict[str, Any]]:
        """getAll*Files: LEFT JOIN users, ``name ASC`` with the NOCASE collation (API-FACTS §3)."""
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
        """FileModel::uploadContent after the base64 step (API-FACTS §5-§8, §11).

        ``owner_ref`` is the raw task/project id param (already checked by the caller for task
        files).  Raises :class:`InvalidPathId` for ids ≤ 0 or non-numeric, and
        :class:`PhpTypeError` (→ HTTP 500, orphan file left on disk) for an array filename or an
        image-named upload that is not an image.  Returns None when the FK insert fails (a project
        that does not exist), again leaving the written file orphaned.
        """
        owner_id = valid_path_id(owner_ref)
        if owner_id is None:
            raise InvalidPathId("Invalid ID provided for file path generation")
        bad_name = isinstance(filename, (list, dict))
        name = "Array" if bad_name else to_php_string(filename)
        name_bytes = name.encode("utf-8", "surrogatepass")
        with self.lock:
            now = self.now()
            digest = hashlib.sha1(name_bytes + str(now).encode()).hexdigest()
            path = f"{_FILE_PREFIX[kind]}/{owner_id}/{digest}"
            self._write(path, data)
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
        same-name same-second uploads share storage, API-FACTS §7): scale tests need 100,000
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
        """Unlink the stored file unless another row (in either table) still references it."""
        users = sum(
            int(self._db.execute(f"SELECT COUNT(*) FROM {t} WHERE path = ?", (path,)).fetchone()[0])
            for t in _FILE_TABLE.values()
        )
        if users > 1:
            return True
        target = self.storage_path(path)
        try:
            target.unlink()
        except FileNotFoundError:
            return False
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


def _etag(path: str | None) -> str:
    return hashlib.md5((path or "").encode("utf-8", "surrogateescape")).hexdigest()


def _user_dict(row: sqlite3.Row) -> dict[str, Any]:
    user = dict(row)
    user["is_ldap_user"] = bool(user["is_ldap_user"])
    user["twofactor_activated"] = bool(user["twofactor_activated"])
    return user
