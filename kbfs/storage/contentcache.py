"""File contents on local disk, keyed by what makes them immutable on the server.

Kanboard never changes a file in place (there is no update procedure), so the content of
(kind, file id, etag) never changes: a cached copy stays valid for that key forever and needs no
invalidation. Files are named by ids and etag only, never by server-supplied names, so a hostile
name cannot write outside the cache directory.

A download goes to a temporary name and is renamed into place only once complete and checked
against the record's size, so a partial download is never served as complete. Concurrent
readers of one file share one download. While ``run`` runs (the mount starts it), a download
runs in the background and a reader is served as soon as the bytes it asks for have arrived:
``head -c 100`` of a large cold file does not wait for the whole file.

``mapped_if_complete`` is the read path for complete content: one read-only map per handle.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import mmap
import os
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import trio

from kbfs.client.models import Container, FileRecord
from kbfs.client.protocol import KanboardAPI
from kbfs.client.wire import MIN_TRANSFER_RATE
from kbfs.errors import FsError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CacheStats:
    downloads: int
    hits: int
    bytes_downloaded: int
    evictions: int


class _Download:
    """One download in progress: readers wait on ``progress`` (bytes on disk so far)."""

    def __init__(self, part: Path) -> None:
        self.part = part
        self.started = trio.current_time()
        self.done = trio.Event()
        self.error: BaseException | None = None
        self.progress = 0  # written by the sink, possibly from a worker thread
        self.changed = trio.Event()  # set (and replaced) whenever more bytes are on disk

    def notify(self) -> None:
        self.changed.set()
        self.changed = trio.Event()


class _ProgressSink:
    """An unbuffered file sink that publishes how many bytes are on disk."""

    def __init__(self, fd: int, download: _Download, limit: int) -> None:
        self._file = os.fdopen(fd, "wb", buffering=0)
        self._download = download
        self._limit = limit  # the record's size: more than that is not this file

    def write(self, data: bytes) -> int:
        self.writelines((data,))
        return len(data)

    def writelines(self, pieces: Iterable[bytes]) -> None:
        for data in pieces:
            view = memoryview(data)
            while view:
                n = self._file.write(view)
                view = view[n:]
        self._download.progress = self._file.tell()
        if self._download.progress > self._limit:
            # Another file's bytes (a same-second collision, API-FACTS §7) or a server that
            # never stops: end the download now rather than fill the disk.
            raise FsError(f"the server sent more than the record's {self._limit} bytes; not served")
        # Wake readers now rather than at their next poll. RuntimeError: called on the trio
        # thread itself, not from a worker thread.
        with contextlib.suppress(RuntimeError):
            trio.from_thread.run_sync(self._download.notify)

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._file.tell()

    def seek(self, pos: int, whence: int = 0) -> int:
        return self._file.seek(pos, whence)

    def truncate(self, size: int | None = None) -> int:
        # The client rewinds and truncates before a retry: readers must wait again.
        result = self._file.truncate(size)
        self._download.progress = min(self._download.progress, result)
        return result

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class Opened:
    """Content opened for reading: a file descriptor, and the download filling it if any."""

    def __init__(self, fd: int, path: Path, size: int, download: _Download | None) -> None:
        self.fd = fd
        self.path = path
        self.size = size
        self.download = download

    async def wait_for(self, end: int, stall_timeout: float = 30.0) -> None:
        """Return once bytes up to ``end`` (capped at the file size) are on disk.

        A read that reaches the end of the file waits for the whole download and its size
        check: the first bytes of a file are served as they arrive, but no reader sees a
        complete file that the check then refuses. Fails with EIO if the download fails, makes
        no progress for ``stall_timeout``, or has not brought the bytes up to ``end`` by the
        time they take at the client's minimum rate (plus ``stall_timeout``) from its start:
        a server trickling a byte a second makes progress, but a read must not wait for it
        as long as the whole download's budget (hours, for a large file).
        """
        download = self.download
        if download is None:
            return
        end = min(end, self.size)
        whole = end >= self.size
        due = download.started + stall_timeout + -(-end // 3) * 4 / MIN_TRANSFER_RATE
        seen, since = download.progress, trio.current_time()
        while (whole or download.progress < end) and not download.done.is_set():
            changed = download.changed
            with trio.move_on_after(0.05):  # the sink also wakes us; this is a safety net
                await changed.wait()
            now = trio.current_time()
            if download.progress != seen:
                seen, since = download.progress, now
            elif now - since > stall_timeout:
                raise FsError(f"the download stalled for {stall_timeout:g} s")
            if now > due:
                raise FsError(
                    f"the download is too slow: {download.progress} of the {end} bytes this "
                    f"read needs after {now - download.started:.1f} s"
                )
        if download.error is not None and (whole or download.progress < end):
            raise FsError(f"download failed: {download.error}")


class ContentCache:
    """On-disk content cache with shared downloads and LRU eviction beyond ``max_bytes``.

    Files that are open (pinned) are never evicted.
    """

    def __init__(self, root: Path, client: KanboardAPI, *, max_bytes: int) -> None:
        self.root = root
        self.client = client
        self.max_bytes = max_bytes
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._downloads: dict[str, _Download] = {}
        self._nursery: trio.Nursery | None = None
        self._pins: dict[Path, int] = {}
        self._downloads_n = 0
        self._hits = 0
        self._bytes = 0
        self._evictions = 0
        for stale in root.glob("*.part"):
            stale.unlink(missing_ok=True)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run downloads in the background until cancelled: they outlive the request that
        started them (progressive reads). Without it each download runs in its caller."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None

    def statistics(self) -> CacheStats:
        return CacheStats(self._downloads_n, self._hits, self._bytes, self._evictions)

    @staticmethod
    def cache_name(record: FileRecord) -> str:
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
        download, run_here = self._start(container, record)
        if run_here is not None:
            await run_here()
        await download.done.wait()
        if download.error is not None:
            raise FsError(f"download failed: {download.error}") from download.error
        path = self.lookup(record)
        if path is None:
            raise FsError(f"{self.cache_name(record)}: download vanished from the cache")
        return path

    async def open(self, container: Container, record: FileRecord) -> Opened:
        """Open ``record``'s content for reading; it may still be arriving (see ``Opened``)."""
        path = self.lookup(record)
        if path is not None:
            self._hits += 1
            return Opened(os.open(path, os.O_RDONLY), path, record.size, None)
        if self._nursery is None:
            path = await self.ensure(container, record)
            return Opened(os.open(path, os.O_RDONLY), path, record.size, None)
        download, _ = self._start(container, record)
        try:
            fd = os.open(download.part, os.O_RDONLY)
        except FileNotFoundError:  # finished (or failed) between the two lines
            path = await self.ensure(container, record)
            return Opened(os.open(path, os.O_RDONLY), path, record.size, None)
        return Opened(fd, self.path_for(record), record.size, download)

    def _start(
        self, container: Container, record: FileRecord
    ) -> tuple[_Download, Callable[[], Awaitable[None]] | None]:
        """The running download of ``record``, started now if there is none.

        Without a nursery the caller gets the download's coroutine function to await itself.
        """
        key = self.cache_name(record)
        running = self._downloads.get(key)
        if running is not None:
            return running, None
        final = self.path_for(record)
        download = _Download(final.with_name(final.name + f".{os.getpid()}.part"))
        fd = os.open(download.part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self._downloads[key] = download

        async def run() -> None:
            try:
                await self._download(container, record, download, fd)
            except Exception as exc:
                download.error = exc
                log.warning("download of %s file %d failed: %s", record.kind.value, record.id, exc)
            finally:
                del self._downloads[key]
                download.done.set()

        if self._nursery is not None:
            self._nursery.start_soon(run)
            return download, None
        return download, run

    async def _download(
        self, container: Container, record: FileRecord, download: _Download, fd: int
    ) -> None:
        final = self.path_for(record)
        part = download.part
        try:
            sink = _ProgressSink(fd, download, record.size)
            try:
                written = await self.client.download_file(
                    container,
                    record.id,
                    sink,  # type: ignore[arg-type]
                    record.size,
                )
            finally:
                sink.close()
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


def mapped_if_complete(fd: int, opened: Opened) -> mmap.mmap | None:
    """A read-only map of cached content once all of it is on disk, else None.

    Only a complete file is mapped: its size is final (a cache file is written under a temporary
    name and never changed once complete), so no access can run past its end (SIGBUS).
    """
    download = opened.download
    if download is not None and not (download.done.is_set() and download.error is None):
        return None
    if opened.size == 0 or os.fstat(fd).st_size != opened.size:
        return None
    return mmap.mmap(fd, opened.size, prot=mmap.PROT_READ)
