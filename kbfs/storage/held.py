"""Copies of uploaded bytes, kept until nobody else can have overwritten them on the server.

Kanboard stores two uploads of one name to one task (or project) in the same server second at
one path; the later one overwrites the earlier one's bytes and both rows then hold it
(kanboard-api §7). A mount never does that to itself, but another client (a second mount of
the same server) can. So each confirmed upload leaves a copy of its bytes here, beside the
record the server gave them, until the collision check (``kbfs.upload.collisions``) has seen
that no other row shares that path, or that the bytes stored there are still these. A crash
leaves the entries behind; the next mount of that server checks them.

The copy is a hard link to the spool's data file (no bytes copied on the way of a save). That
file can still change after the upload (a writer that fsyncs and writes on), and its times
change whenever the cached content is read: so the entry records the sha256 of the bytes that
were uploaded, and a copy that no longer has it is never taken for them. Names are
``<serial>.copy`` and ``<serial>.record`` (never ``*.data`` or ``*.json``, which are the
spool's pending files).
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
from kbfs.storage.spool import digest, placed, placed_fields, write_json

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Held:
    """One confirmed upload waiting for its collision check."""

    key: str
    container: Container
    record: FileRecord
    copy: Path
    size: int
    digest: str  # sha256 of the uploaded bytes

    def intact(self) -> bool:
        """Whether the copy still holds the bytes that were uploaded (reads it whole: run it in
        a worker thread)."""
        try:
            return os.stat(self.copy).st_size == self.size and digest(self.copy) == self.digest
        except OSError:
            return False


class HeldCopies:
    """The held copies of one server's uploads, under ``root`` (inside the spool)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._entries: dict[str, Held] | None = None  # read from disk at first use
        self._serial = 0

    def hold(
        self, source: Path, sha256: str, container: Container, record: FileRecord
    ) -> Held | None:
        """Keep ``source`` (the uploaded bytes, whose digest is ``sha256``) for the check of
        ``record``. A failure is logged, never raised: the upload itself succeeded."""
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
            size = os.stat(copy).st_size
            fields = {**placed_fields(container, record), "held": [size, sha256]}
            write_json(self.root / f"{key}.record", fields)
        except Exception as exc:
            copy.unlink(missing_ok=True)
            log.warning(
                "could not keep a copy of file %d for its collision check: %s", record.id, exc
            )
            return None
        held = Held(key, container, record, copy, size, sha256)
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
                size, sha256 = int(fields["held"][0]), str(fields["held"][1])
                if not copy.exists():
                    raise ValueError("its copy is missing")
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("dropping the unreadable held copy %s: %s", meta_path, exc)
                meta_path.unlink(missing_ok=True)
                copy.unlink(missing_ok=True)
                continue
            key = meta_path.stem
            self._entries[key] = Held(key, container, record, copy, size, sha256)
        return self._entries
