"""File contents on local disk, keyed by what makes them immutable on the server.

Kanboard never changes a file in place (there is no update procedure), so the content of
(kind, file id, etag) never changes: a cached copy stays valid for that key forever and needs no
invalidation. Files are named by ids and etag only, never by server-supplied names, so a hostile
name cannot write outside the cache directory.

A download goes to a temporary name and is renamed into place only once complete and checked
against the record's size, so a partial download is never served as complete. Concurrent
readers of one file share one download.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import trio

from kbfs.client.api import KanboardClient
from kbfs.client.models import Container, FileRecord
from kbfs.errors import FsError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CacheStats:
    downloads: int
    hits: int
    bytes_downloaded: int
    evictions: int


class _Download:
    def __init__(self) -> None:
        self.done = trio.Event()
        self.error: BaseException | None = None


class ContentCache:
    """On-disk content cache with shared downloads and LRU eviction beyond ``max_bytes``.

    Files that are open (pinned) are never evicted.
    """

    def __init__(self, root: Path, client: KanboardClient, *, max_bytes: int) -> None:
        self.root = root
        self.client = client
        self.max_bytes = max_bytes
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._downloads: dict[str, _Download] = {}
        self._pins: dict[Path, int] = {}
        self._downloads_n = 0
        self._hits = 0
        self._bytes = 0
        self._evictions = 0
        for stale in root.glob("*.part"):
            stale.unlink(missing_ok=True)

    def statistics(self) -> CacheStats:
        return CacheStats(self._downloads_n, self._hits, self._bytes, self._evictions)

    @staticmethod
    def cache_name(record: FileRecord) -> str:
        tag = record.etag if record.etag and record.etag.isalnum() else None
        if tag is None:
            tag = hashlib.sha256(record.version_key.encode("utf-8", "replace")).hexdigest()[:32]
        return f"{record.kind.value}-{record.id}-{tag}"

    def path_for(self, record: FileRecord) -> Path:
        return self.root / self.cache_name(record)

    def lookup(self, record: FileRecord) -> Path | None:
        """The cached content's path if complete, else None. Marks it recently used."""
        path = self.path_for(record)
        try:
            if path.stat().st_size == record.size:
                os.utime(path)
                return path
        except FileNotFoundError:
            pass
        return None

    async def ensure(self, container: Container, record: FileRecord) -> Path:
        """The path of the complete content of ``record``, downloading it if needed."""
        path = self.lookup(record)
        if path is not None:
            self._hits += 1
            return path
        key = self.cache_name(record)
        running = self._downloads.get(key)
        if running is None:
            running = _Download()
            self._downloads[key] = running
            try:
                await self._download(container, record)
            except BaseException as exc:
                running.error = exc
                raise
            finally:
                del self._downloads[key]
                running.done.set()
        else:
            await running.done.wait()
            if running.error is not None:
                raise FsError(f"shared download failed: {running.error}")
        path = self.lookup(record)
        if path is None:
            raise FsError(f"{key}: download vanished from the cache")
        return path

    async def _download(self, container: Container, record: FileRecord) -> None:
        final = self.path_for(record)
        part = final.with_name(final.name + f".{os.getpid()}.part")
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb", buffering=1024 * 1024) as sink:
                written = await self.client.download_file(container, record.id, sink)
            if written != record.size:
                # API-FACTS §7: same-name uploads in one second share storage, so a row's
                # size can disagree with its bytes. Serving them would be serving another file.
                raise FsError(
                    f"{record.kind.value} file {record.id}: server sent {written} bytes, "
                    f"its record says {record.size}"
                )
            os.replace(part, final)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        self._downloads_n += 1
        self._bytes += record.size
        log.debug("cached %s file %d (%d bytes)", record.kind.value, record.id, record.size)
        self.evict()

    def adopt(self, record: FileRecord, source: Path) -> None:
        """Take an uploaded spool file as the cached content of ``record`` (saves a download)."""
        try:
            if source.stat().st_size != record.size:
                source.unlink(missing_ok=True)
                return
            os.replace(source, self.path_for(record))
        except OSError as exc:
            log.warning("could not keep uploaded content in the cache: %s", exc)
            source.unlink(missing_ok=True)
            return
        self.evict()

    def pin(self, path: Path) -> None:
        self._pins[path] = self._pins.get(path, 0) + 1

    def unpin(self, path: Path) -> None:
        left = self._pins.get(path, 0) - 1
        if left > 0:
            self._pins[path] = left
        else:
            self._pins.pop(path, None)

    def usage(self) -> int:
        return sum(e.stat().st_size for e in os.scandir(self.root) if e.is_file())

    def evict(self) -> None:
        """Drop least recently used, unpinned files until the cache fits ``max_bytes``."""
        entries = []
        total = 0
        for entry in os.scandir(self.root):
            if not entry.is_file() or entry.name.endswith(".part"):
                continue
            st = entry.stat()
            total += st.st_size
            entries.append((st.st_mtime, st.st_size, Path(entry.path)))
        if total <= self.max_bytes:
            return
        for _mtime, size, path in sorted(entries):
            if total <= self.max_bytes:
                break
            if path in self._pins:
                continue
            path.unlink(missing_ok=True)
            total -= size
            self._evictions += 1
