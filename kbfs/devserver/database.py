"""The devserver's data directory: one SQLite database plus the stored file contents.

:class:`Database` holds only the plumbing (connection, lock, clock, transactions) that the
attachment rules in :mod:`kbfs.devserver.attachments` and the records in
:mod:`kbfs.devserver.store` share, so neither has to know how the other talks to SQLite.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kbfs.devserver.schema import SCHEMA

__all__ = ["Database"]


def _decode_text(raw: bytes) -> str:
    # Names cut inside a UTF-8 sequence are stored as-is (like PHP's substr); surrogateescape keeps
    # them round-trippable and makes the JSON encoder fail exactly where PHP's json_encode fails.
    return raw.decode("utf-8", "surrogateescape")


class Database:
    """One SQLite database and the directory of file contents under ``DATA/files``.

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
        self._db.executescript(SCHEMA)

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
