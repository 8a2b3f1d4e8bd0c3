"""Copies of uploaded bytes, kept until nobody else can have overwritten them on the server.

Kanboard stores two uploads of one name to one task (or project) in the same server second at
one path; the later one overwrites the earlier one's bytes and both rows then hold it
(kanboard-api §7). A mount never does that to itself, but another client (a second mount of
the same server) can. So each confirmed upload leaves a copy of its bytes here, beside the
record the server gave them, until the collision check (``kbfs.upload.collisions``) has seen
that no other row shares that path, or that the bytes stored there are still these. A crash
leaves the entries behind; the next mount of that server checks them.

The copy is a hard link to the spool's data file (no bytes copied on the way of a save). That
file can still change after the upload (a writer that fsyncs and writes on): the entry records
the size and modification time the copy had, so a changed copy is recognised and never taken
for the bytes that were acknowledged. Names are ``<serial>.copy`` and ``<serial>.record``
(never ``*.data`` or ``*.json``, which are the spool's pending files).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from kbfs.client.models import Container, FileRecord
from kbfs.storage.private import owned_dir
from kbfs.storage.spool import placed, placed_fields, write_json

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Held:
    """One confirmed upload waiting for its collision check."""

    key: str
    container: Container
    record: FileRecord
    copy: Path
    size: int
    mtime_ns: int

    def intact(self) -> bool:
        """Whether the copy still holds the bytes that were uploaded (unchanged since)."""
        try:
            st = os.stat(self.copy)
        except OSError:
            return False
        return st.st_size == self.size and st.st_mtime_ns == self.mtime_ns


class HeldCopies:
    """The held copies of one server's uploads, under ``root`` (inside the spool)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._entries: dict[str, Held] | None = None  # read from disk at first use
        self._serial = 0

    def hold(self, source: Path, container: Container, record: FileRecord) -> Held | None:
        """Keep ``source`` (the uploaded bytes) for the check of ``record``. A failure is
        logged, never raised: the upload itself succeeded."""
        entries = self._load()
        self._serial += 1
        key = f"{time.time_ns():x}-{os.getpid()}-{self._serial}"
        copy = self.root / f"{key}.copy"
        try:
            owned_dir(self.root, "directory of held copies")
            try:
                os.link(source, copy)
            except OSError:
                shutil.copyfile(source, copy)  # a filesystem without hard links
            st = os.stat(copy)
            fields = {**placed_fields(container, record), "held": [st.st_size, st.st_mtime_ns]}
            write_json(self.root / f"{key}.record", fields)
        except Exception as exc:
            copy.unlink(missing_ok=True)
            log.warning(
                "could not keep a copy of file %d for its collision check: %s", record.id, exc
            )
            return None
        held = Held(key, container, record, copy, st.st_size, st.st_mtime_ns)
        entries[key] = held
        return held

    def entries(self) -> list[Held]:
        """The copies not checked yet, oldest first."""
        return sorted(self._load().values(), key=lambda h: h.key)

    def release(self, held: Held) -> None:
        """The check passed (or is moot): the copy goes."""
        self._load().pop(held.key, None)
        (self.root / f"{held.key}.record").unlink(missing_ok=True)
        held.copy.unlink(missing_ok=True)

    def _load(self) -> dict[str, Held]:
        """What an earlier mount left, read once."""
        if self._entries is not None:
            return self._entries
        self._entries = {}
        for meta_path in sorted(self.root.glob("*.record")) if self.root.is_dir() else []:
            copy = meta_path.with_suffix(".copy")
            try:
                fields = json.loads(meta_path.read_text())
                container, record = placed(fields)
                size, mtime_ns = (int(v) for v in fields["held"])
                if not copy.exists():
                    raise ValueError("its copy is missing")
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("dropping the unreadable held copy %s: %s", meta_path, exc)
                meta_path.unlink(missing_ok=True)
                copy.unlink(missing_ok=True)
                continue
            key = meta_path.stem
            self._entries[key] = Held(key, container, record, copy, size, mtime_ns)
        return self._entries
