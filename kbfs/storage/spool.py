"""Local content that has not reached the server yet.

Kanboard takes a file only whole (create*File), so everything written to the mount lands here
first: one data file per pending file, plus a small JSON record of what it is for (server,
container, name, the file it replaces). Both live under the state directory (mode 0700, files
0600) and are named by a serial number, never by the user's or the server's file name.

A pending file is *dirty* while it holds content the server does not have. An upload that fails
leaves it dirty and on disk: the bytes are never deleted because an upload failed.

Content is *incomplete* once a write into it failed (a full disk): it is not the file its
writer meant and is never uploaded. The description says so (or, when the disk is too full to
rewrite it, a ``<serial>.incomplete`` marker beside it), and so does a data file shorter than
the size its description recorded (bytes lost in a crash). Content is *refused* once the server
refused it for good: it stays in the mount, local only, until the user renames or removes it.

Concurrency: a pending file's ``lock`` is held for a whole upload, and writers take it too, so
an upload always sends one consistent snapshot of the content.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from kbfs.client.models import Container, FileRecord
from kbfs.storage.private import open_nofollow, owned_dir

log = logging.getLogger(__name__)


@dataclass(eq=False)
class PendingFile:
    serial: str
    path: Path
    meta_path: Path
    version: int = 0  # bumped by every change
    uploaded_version: int = -1  # the version the server has, if any
    mtime_ns: int = field(default_factory=time.time_ns)
    lock: trio.Lock = field(default_factory=trio.Lock)
    last_error: str | None = None
    failures: int = 0
    next_retry: float = 0.0  # time.monotonic() before which the background retry waits
    # Creates whose answer never came (wall-clock time sent, size, sha256 of the content or
    # None if unknown): the file may exist on the server, so the next attempt first looks for
    # it, adopts it if it holds the current content, and removes it otherwise (never twice).
    attempts: list[tuple[float, int, str | None]] = field(default_factory=list)
    permanent: bool = False  # the server refuses these bytes for good: recover, don't retry
    created: float = field(default_factory=time.time)
    # Left by an earlier mount (a crash): before it is uploaded, the server is checked for a
    # newer version of the file made meanwhile (see Uploader._check_conflict).
    from_earlier_mount: bool = False
    # A write was refused for passing max_file_size: what is here is a truncated copy, never
    # to be uploaded, until the file is truncated below the limit (or rewritten from zero).
    too_large: bool = False
    # Why this content must never be uploaded (a write into it failed), and that write's errno.
    incomplete: str | None = None
    incomplete_errno: int = errno.EIO
    # Why the server refuses this content for good; it stays in the mount as a local-only
    # file (with a copy in the recovery folder, ``recovered_copy``) until renamed or removed.
    refused: str | None = None
    recovered_copy: str | None = None
    conflict: bool = False  # the server got a newer version meanwhile: recover, never show
    # The version a write-back close() acknowledged (kbfs.upload.writeback): until it is on
    # the server, a new writer waits for its upload instead of changing those bytes. Kept in
    # the description: a crash does not make acknowledged content changeable in place.
    handed_over: int = -1
    description: dict[str, Any] | None = None  # the record last written by Spool.describe

    @property
    def dirty(self) -> bool:
        return self.version != self.uploaded_version

    @property
    def acknowledged(self) -> bool:
        """Whether a write-back close() acknowledged this very content (see handed_over)."""
        return self.handed_over == self.version

    def size_or_zero(self) -> int:
        """The content's size, 0 if its data file is gone (for log lines and status)."""
        try:
            return self.size()
        except OSError:
            return 0

    def size(self) -> int:
        return self.path.stat().st_size

    def touch(self) -> None:
        self.version += 1
        self.mtime_ns = time.time_ns()
        # New content: whether the server takes it is asked again at its next upload.
        self.refused = None
        self.recovered_copy = None

    @property
    def marker_path(self) -> Path:
        """Beside the data: says "incomplete" when the description could not be rewritten."""
        return self.path.with_suffix(".incomplete")


class Spool:
    """Creates, describes and discards pending files under ``root``."""

    def __init__(self, root: Path, server: str) -> None:
        self.root = root
        self.server = server
        owned_dir(root, "state directory")
        self._serial = 0

    def _next_serial(self) -> str:
        self._serial += 1
        return f"{time.time_ns():x}-{os.getpid()}-{self._serial}"

    def create(
        self,
        container: Container,
        name: str,
        replaces: FileRecord | None,
        initial: Path | None = None,
    ) -> PendingFile:
        """A new pending file, empty or holding a copy of ``initial``."""
        serial = self._next_serial()
        path = self.root / f"{serial}.data"
        fd = open_nofollow(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        os.close(fd)
        if initial is not None:
            shutil.copyfile(initial, path)
        pending = PendingFile(serial=serial, path=path, meta_path=self.root / f"{serial}.json")
        self.describe(pending, container, name, replaces)
        return pending

    def describe(
        self,
        pending: PendingFile,
        container: Container,
        name: str,
        replaces: FileRecord | None,
        supersedes: Sequence[tuple[Container, FileRecord]] = (),
    ) -> None:
        """(Re)write what a pending file is for, so its bytes can be identified later.

        ``supersedes``: other server files its upload replaces (the source of a rename made
        while the file was open for writing): after a crash, the next mount removes them once
        the upload is confirmed, instead of leaving them as duplicates under their old names.
        """
        if not pending.path.exists():
            return  # discarded meanwhile (removed, or moved away by a rename): nothing to keep
        record = {
            "server": self.server,
            "project_id": container.project_id,
            "task_id": container.task_id,
            "name": name,
            "replaces_file_id": replaces.id if replaces else None,
            "replaces_etag": replaces.etag if replaces else None,
            "replaces_name": replaces.name if replaces else None,
            "replaces_size": replaces.size if replaces else None,
            "replaces_date": replaces.date if replaces else None,
            "replaces_path": replaces.path if replaces else None,
            "created": pending.created,
            "supersedes": [_placed_fields(c, r) for c, r in supersedes],
            "lost_attempts": [list(entry) for entry in pending.attempts],
            "failures": pending.failures,
            "last_error": pending.last_error,
            "too_large": pending.too_large,
            # What the data file held when described: shorter after a crash means lost bytes.
            "size": pending.size_or_zero(),
            "incomplete": pending.incomplete,
            "refused": pending.refused,
            "recovered_copy": pending.recovered_copy,
            "acknowledged": pending.acknowledged,
        }
        pending.description = record
        _write_json(pending.meta_path, record)

    def redescribe(self, pending: PendingFile) -> None:
        """Rewrite the last description with the pending file's current size and state."""
        if pending.description is None or not pending.path.exists():
            return
        record = {
            **pending.description,
            "size": pending.size_or_zero(),
            "incomplete": pending.incomplete,
            "refused": pending.refused,
            "recovered_copy": pending.recovered_copy,
            "acknowledged": pending.acknowledged,
        }
        pending.description = record
        _write_json(pending.meta_path, record)

    def truncate(self, pending: PendingFile, size: int) -> None:
        """Set the content's size; a shrink is written into the description too, so a later
        mount does not take the shorter data file for bytes lost in a crash."""
        before = pending.size_or_zero()
        os.truncate(pending.path, size)
        if size < before:
            self.redescribe(pending)

    def mark_incomplete(self, pending: PendingFile, reason: str, err: int) -> None:
        """A write into ``pending`` failed: never upload it, and make that durable. The disk
        is likely full, so when the description cannot be rewritten an empty marker file
        (no data block) says it instead."""
        pending.incomplete = reason
        pending.incomplete_errno = err
        try:
            self.redescribe(pending)
            if pending.description is not None:
                return
        except OSError as exc:
            log.warning("could not rewrite the description of %s: %s", pending.path, exc)
        try:
            os.close(os.open(pending.marker_path, os.O_WRONLY | os.O_CREAT, 0o600))
        except OSError as exc:
            log.error("could not mark %s as incomplete: %s", pending.path, exc)

    def sync(self, pending: PendingFile) -> None:
        """Make the bytes and their description durable (before close() returns)."""
        for path in (pending.path, pending.meta_path):
            try:
                fd = open_nofollow(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(self.root)

    def load_leftovers(self) -> list[tuple[PendingFile, dict[str, Any]]]:
        """Pending files an earlier mount of this server left behind (crash, failed upload)."""
        found = []
        for meta_path in sorted(self.root.glob("*.json")):
            data_path = meta_path.with_suffix(".data")
            try:
                meta = json.loads(meta_path.read_text())
                if not data_path.exists() or not isinstance(meta, dict):
                    raise ValueError("incomplete")
                int(meta["project_id"])
                str(meta["name"])
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("ignoring unreadable spool entry %s: %s", meta_path, exc)
                continue
            pending = PendingFile(
                serial=meta_path.stem,
                path=data_path,
                meta_path=meta_path,
                version=1,
                uploaded_version=0,
                last_error=meta.get("last_error"),
                failures=int(meta.get("failures") or 0),
                attempts=[
                    (float(e[0]), int(e[1]), e[2] if isinstance(e[2], str) else None)
                    for e in meta.get("lost_attempts") or []
                    if isinstance(e, list) and len(e) == 3
                ],
                created=float(meta.get("created") or time.time()),
                from_earlier_mount=True,
                too_large=bool(meta.get("too_large")),
                incomplete=_incomplete(meta, data_path),
                refused=None if meta.get("refused") is None else str(meta["refused"]),
                recovered_copy=meta.get("recovered_copy"),
                handed_over=1 if meta.get("acknowledged") is True else -1,
                description=meta,
            )
            found.append((pending, meta))
        return found

    @property
    def recovered_root(self) -> Path:
        return self.root.parent / "recovered"

    def recover(self, pending: PendingFile, name: str, reason: str, meta: dict[str, Any]) -> Path:
        """Move bytes that must never be uploaded out of the spool, where a person finds them."""
        root = self.recovered_root
        owned_dir(root, "state directory")
        stamp = time.strftime("%Y%m%d-%H%M%S")
        safe = "".join(c if c.isalnum() or c in "._- " else "_" for c in name)[:100] or "file"
        target = root / f"{stamp}-{pending.serial}-{safe}"
        # The description first: on a full disk it fails, and then nothing has moved yet.
        record = {**meta, "reason": reason, "size": pending.size_or_zero()}
        _write_json(target.with_name(target.name + ".json"), record)
        os.replace(pending.path, target)
        pending.meta_path.unlink(missing_ok=True)
        pending.marker_path.unlink(missing_ok=True)
        _fsync_dir(root)
        return target

    def keep_copy(self, pending: PendingFile, name: str, reason: str, meta: dict[str, Any]) -> Path:
        """A copy of refused bytes in the recovery folder, while the spool keeps them for the
        mount (they stay there as a local-only file)."""
        root = self.recovered_root
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        safe = "".join(c if c.isalnum() or c in "._- " else "_" for c in name)[:100] or "file"
        # The version too: new content refused again within the second is a copy of its own.
        target = root / f"{stamp}-{pending.serial}-v{pending.version}-{safe}"
        tmp = target.with_name(target.name + ".tmp")
        shutil.copyfile(pending.path, tmp)
        os.chmod(tmp, 0o600)
        record = {**meta, "reason": reason, "size": pending.size_or_zero(), "copy": True}
        _write_json(target.with_name(target.name + ".json"), record)
        os.replace(tmp, target)
        _fsync_dir(root)
        return target

    def recovered(self) -> list[dict[str, Any]]:
        out = []
        for meta_path in sorted(self.recovered_root.glob("*.json")):
            try:
                meta = json.loads(meta_path.read_text())
            except (OSError, ValueError):
                continue
            out.append({**meta, "file": str(meta_path.with_suffix(""))})
        return out

    def discard(self, pending: PendingFile) -> None:
        pending.path.unlink(missing_ok=True)
        pending.meta_path.unlink(missing_ok=True)
        pending.marker_path.unlink(missing_ok=True)

    def release_data(self, pending: PendingFile) -> Path:
        """Forget the record of a pending file whose content the server now has.

        Returns the data file so the caller can move it into the content cache.
        """
        pending.meta_path.unlink(missing_ok=True)
        pending.marker_path.unlink(missing_ok=True)
        return pending.path

    # -- the cleanup journal -------------------------------------------------------------------
    #
    # Server files this mount still has to remove once it can: versions superseded by a
    # confirmed upload whose removal failed or has not run yet, and files that creates whose
    # answer was lost may have made. Kept here so that a crash (kill -9, power loss) does not
    # leave them behind as duplicates: the next mount reads the journal and finishes the work,
    # checking each file is still the one meant (ids are reused) before removing it.

    @property
    def journal_path(self) -> Path:
        return self.root / "cleanup.journal"  # not *.json: those describe pending files

    def save_journal(
        self,
        removals: list[tuple[Container, FileRecord]],
        lost: list[tuple[Container, str, float, int, str | None]],
    ) -> None:
        """Write the journal (atomically, fsync'ed); an empty one is deleted."""
        if not removals and not lost:
            self.journal_path.unlink(missing_ok=True)
            return
        data = {
            "server": self.server,
            "removals": [_placed_fields(c, r) for c, r in removals],
            "lost": [
                {**_container_fields(c), "name": n, "started": t, "size": z, "digest": d}
                for c, n, t, z, d in lost
            ],
        }
        _write_json(self.journal_path, data, durable=True)

    def load_journal(
        self,
    ) -> tuple[
        list[tuple[Container, FileRecord]], list[tuple[Container, str, float, int, str | None]]
    ]:
        """What an earlier mount of this server left to clean up (nothing if unreadable)."""
        try:
            data = json.loads(self.journal_path.read_text())
            removals = [_placed(e) for e in data.get("removals", [])]
            lost = [
                (
                    _container(e),
                    str(e["name"]),
                    float(e["started"]),
                    int(e["size"]),
                    None if e.get("digest") is None else str(e["digest"]),
                )
                for e in data.get("lost", [])
            ]
        except FileNotFoundError:
            return [], []
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring the unreadable cleanup journal %s: %s", self.journal_path, exc)
            return [], []
        return removals, lost

    def leftovers(self) -> list[Path]:
        """Data files present in the spool (pending uploads from this or an earlier mount)."""
        return sorted(self.root.glob("*.data"))


def _incomplete(meta: dict[str, Any], data_path: Path) -> str | None:
    """Why a leftover must never be uploaded, if it must not: a write into it failed (said by
    its description or its marker), or its data file is shorter than the description says."""
    if meta.get("incomplete"):
        return str(meta["incomplete"])
    if data_path.with_suffix(".incomplete").exists():
        return "incomplete: a write failed"
    described = meta.get("size")
    actual = data_path.stat().st_size
    if isinstance(described, int) and actual < described:
        return f"incomplete: {actual} of {described} bytes survived a crash"
    return None


def _write_json(path: Path, record: dict[str, Any], *, durable: bool = False) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = open_nofollow(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(record, f)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk: leave no empty half-written file behind
        raise


def superseded(meta: dict[str, Any]) -> list[tuple[Container, FileRecord]]:
    """The ``supersedes`` of a spool description (see Spool.describe); [] for older ones.

    An unreadable entry is skipped with a warning, never the whole description: the bytes
    still get uploaded, at worst beside a version that should have gone.
    """
    entries = meta.get("supersedes")
    out = []
    for entry in entries if isinstance(entries, list) else []:
        try:
            out.append(_placed(entry))
        except (KeyError, TypeError, ValueError, AttributeError):
            log.warning("ignoring an unreadable 'supersedes' entry of a spool file: %.200r", entry)
    return out


def _placed_fields(container: Container, record: FileRecord) -> dict[str, Any]:
    """A server file and where it lives, as the journal and spool descriptions store it."""
    return {**_container_fields(container), **_record_fields(record)}


def _placed(entry: dict[str, Any]) -> tuple[Container, FileRecord]:
    """The inverse of _placed_fields; raises on an unreadable entry."""
    container = _container(entry)
    return container, _record(container, entry)


def _container_fields(container: Container) -> dict[str, Any]:
    return {"project_id": container.project_id, "task_id": container.task_id}


def _container(entry: dict[str, Any]) -> Container:
    task_id = entry.get("task_id")
    return Container(int(entry["project_id"]), None if task_id is None else int(task_id))


def _record_fields(record: FileRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "name": record.name,
        "size": record.size,
        "date": record.date,
        "path": record.path,
        "etag": record.etag,
    }


def _record(container: Container, entry: dict[str, Any]) -> FileRecord:
    return FileRecord(
        kind=container.kind,
        id=int(entry["id"]),
        name=str(entry["name"]),
        size=int(entry["size"]),
        date=int(entry["date"]),
        is_image=False,
        path=str(entry.get("path") or ""),
        etag=entry.get("etag"),
        project_id=container.project_id if container.task_id is None else None,
        task_id=container.task_id,
        user_id=0,
    )


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def digest(path: Path) -> str:
    """sha256 of a file, read in chunks (run it in a worker thread for large files)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


# One format for a placed record and one way to write a description, for the other store of
# this package that keeps files beside the spool's (kbfs.storage.held).
placed_fields = _placed_fields
placed = _placed
write_json = _write_json
