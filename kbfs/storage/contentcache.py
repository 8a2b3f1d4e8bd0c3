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

A download nobody waits for any more is dropped (``release``): a file manager sniffing a
content type or a thumbnailer reading a header opens a file, reads its first bytes and closes
it, and must not pull the whole file. It is finished instead when it is nearly done or small,
where starting again would cost more than finishing.

A download in progress and its readers' view of it are in :mod:`kbfs.storage.downloads`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import trio

from kbfs.client.errors import KanboardError, NotFound
from kbfs.client.models import Container, FileRecord
from kbfs.client.protocol import KanboardAPI
from kbfs.errors import FsError
from kbfs.storage.downloads import Download, Opened, ProgressSink
from kbfs.storage.private import open_nofollow, owned_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CacheStats:
    downloads: int
    hits: int
    bytes_downloaded: int
    evictions: int


class ContentCache:
    """On-disk content cache with shared downloads and LRU eviction beyond ``max_bytes``.

    Files that are open (pinned) are never evicted.
    """

    # A download its last reader left is finished anyway when it is this far along, or this
    # small and arriving: dropping it would save little and cost a new request if the file is
    # read again.
    FINISH_FRACTION = 0.75
    FINISH_BELOW = 256 * 1024
    BATCH_PAUSE = 60.0  # no batched reads for this long after one failed
    RESCAN = 5.0  # the longest the cache directory goes unlooked at (see ``_usage``)

    def __init__(self, root: Path, client: KanboardAPI, *, max_bytes: int) -> None:
        self.root = root
        self.client = client
        self.max_bytes = max_bytes
        owned_dir(root, "cache directory")
        self._downloads: dict[str, Download] = {}
        self._nursery: trio.Nursery | None = None
        self._pins: dict[Path, int] = {}
        self._downloads_n = 0
        self._hits = 0
        self._bytes = 0
        self._evictions = 0
        # The cache's bytes as of the last look at the directory, plus what this mount put
        # in since: the directory is looked at again only when that passes max_bytes, or
        # RESCAN seconds later (another mount may share it), not at every file (a look costs
        # a stat per cached file).
        self._usage: int | None = None
        self._looked_at = 0.0
        self._serial = 0
        self._prefetching: dict[str, trio.Event] = {}  # set once a batch member is settled
        self._batches = 0
        self._batch_failed_at: float | None = None
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
        fd = self._open_complete(record)
        if fd is None:
            return None
        os.close(fd)
        return self.path_for(record)

    def _open_complete(self, record: FileRecord) -> int | None:
        """A descriptor of the complete cached content of ``record``, else None.

        Checked on the opened file, not on the name: a regular file of this user holding
        exactly the record's size. Anything else there (a symlink, another user's file, a
        truncated copy) is not served; the download that follows replaces it.
        """
        path = self.path_for(record)
        try:
            fd = open_nofollow(path, os.O_RDONLY)
        except OSError:  # missing, or ELOOP: a symlink is never followed
            return None
        if not _servable(os.fstat(fd), record):
            os.close(fd)
            return None
        os.utime(fd)
        return fd

    async def ensure(self, container: Container, record: FileRecord) -> Path:
        """The path of the complete content of ``record``, downloading it if needed."""
        await self._prefetched(record)
        path = self.lookup(record)
        if path is not None:
            self._hits += 1
            return path
        download, run_here = self._start(container, record)
        download.readers += 1
        download.want(record.size)
        try:
            if run_here is not None:
                await run_here()
            await download.done.wait()
        finally:
            self.release(download)
        if download.error is not None:
            raise FsError(f"download failed: {download.error}") from download.error
        path = self.lookup(record)
        if path is None:
            raise FsError(f"{self.cache_name(record)}: download vanished from the cache")
        return path

    async def open(self, container: Container, record: FileRecord) -> Opened:
        """Open ``record``'s content for reading; it may still be arriving (see ``Opened``)."""
        await self._prefetched(record)
        fd = self._open_complete(record)
        if fd is not None:
            self._hits += 1
            return Opened(fd, self.path_for(record), record.size, None)
        if self._nursery is None:
            return await self._open_after_download(container, record)
        download, _ = self._start(container, record)
        try:
            fd = open_nofollow(download.part, os.O_RDONLY)
        except FileNotFoundError:  # finished (or failed) between the two lines
            return await self._open_after_download(container, record)
        download.readers += 1
        return Opened(fd, self.path_for(record), record.size, download)

    async def _open_after_download(self, container: Container, record: FileRecord) -> Opened:
        path = await self.ensure(container, record)
        fd = self._open_complete(record)
        if fd is None:
            raise FsError(f"{self.cache_name(record)}: download vanished from the cache")
        return Opened(fd, path, record.size, None)

    def release(self, download: Download | None) -> None:
        """A reader of ``download`` is gone (a handle closed). The last one leaving drops the
        download unless it is nearly done or small: its partial bytes are deleted and the
        next open starts again."""
        if download is None:
            return
        download.readers -= 1
        if download.readers > 0 or download.done.is_set():
            return
        if download.progress >= self.FINISH_FRACTION * download.size:
            return
        if download.size <= self.FINISH_BELOW and download.progress > 0:
            return  # small and flowing: cheaper to finish than to ask again
        # (Nothing arrived yet: a stalled server. The next open asks afresh rather than join
        # a request its last reader gave up on.)
        log.debug(
            "dropping a download nobody reads: %d of %d bytes arrived",
            download.progress,
            download.size,
        )
        download.scope.cancel()

    def _start(
        self, container: Container, record: FileRecord
    ) -> tuple[Download, Callable[[], Awaitable[None]] | None]:
        """The running download of ``record``, started now if there is none.

        Without a nursery the caller gets the download's coroutine function to await itself.
        """
        key = self.cache_name(record)
        running = self._downloads.get(key)
        if running is not None and not running.scope.cancel_called:
            return running, None
        download = Download(self._new_part(record), record.size)
        fd = open_nofollow(download.part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        self._downloads[key] = download

        async def run() -> None:
            try:
                with download.scope:
                    await self._download(container, record, download, fd)
                if download.scope.cancelled_caught:
                    download.error = FsError("dropped: no reader was left")
            except Exception as exc:
                download.error = exc
                log.warning("download of %s file %d failed: %s", record.kind.value, record.id, exc)
            finally:
                if self._downloads.get(key) is download:
                    del self._downloads[key]
                download.done.set()

        if self._nursery is not None:
            self._nursery.start_soon(run)
            return download, None
        return download, run

    def _new_part(self, record: FileRecord) -> Path:
        """A fresh temporary name beside ``record``'s cache file: a dropped download may still
        be cleaning up its own, and a batch member may land meanwhile."""
        self._serial += 1
        final = self.path_for(record)
        return final.with_name(f"{final.name}.{os.getpid()}.{self._serial}.part")

    async def _download(
        self, container: Container, record: FileRecord, download: Download, fd: int
    ) -> None:
        final = self.path_for(record)
        part = download.part
        try:
            if container.task_id is None and not self.client.rules.checks_project_files:
                await self._check_project_file(container, record)
            sink = ProgressSink(fd, download, record.size)
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
                # kanboard-api §7: same-name uploads in one second share storage, so a row's
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
        self._added(record.size)
        log.debug("cached %s file %d (%d bytes)", record.kind.value, record.id, record.size)
        self.evict()

    # -- batched prefetch --------------------------------------------------------------------

    def fetching(self, record: FileRecord) -> bool:
        """Whether ``record``'s content is complete here or on its way."""
        key = self.cache_name(record)
        if key in self._downloads or key in self._prefetching:
            return True
        try:
            return _servable(os.lstat(self.path_for(record)), record)
        except FileNotFoundError:
            return False

    @property
    def prefetching(self) -> bool:
        """A batch is in flight (the read-ahead keeps one at a time)."""
        return self._batches > 0

    def prefetch(self, items: list[tuple[Container, FileRecord]]) -> None:
        """Fetch small files likely to be read next in one batched request, in the background.

        Each member lands in the cache as it arrives, checked against its record's size as a
        single download is. An open of a member waits for it; whatever the batch does not
        deliver (a failed member, a failed request) is downloaded singly when it is opened.
        """
        if self._nursery is None:
            return
        failed = self._batch_failed_at
        if failed is not None and trio.current_time() - failed < self.BATCH_PAUSE:
            return  # a server that cannot answer batches is not asked again at every open
        # Before 1.2.50 a project file's download must follow a look at its row (see
        # _check_project_file): those are left to single downloads.
        checked = self.client.rules.checks_project_files
        todo = [
            (c, r) for c, r in items if not self.fetching(r) and (c.task_id is not None or checked)
        ]
        if not todo:
            return
        for _, record in todo:
            self._prefetching[self.cache_name(record)] = trio.Event()
        self._batches += 1
        self._nursery.start_soon(self._prefetch, todo)

    async def _prefetched(self, record: FileRecord) -> None:
        waiting = self._prefetching.get(self.cache_name(record))
        if waiting is not None:
            await waiting.wait()

    async def _prefetch(self, todo: list[tuple[Container, FileRecord]]) -> None:
        def settle(key: str) -> None:
            event = self._prefetching.pop(key, None)
            if event is not None:
                event.set()

        def deliver(i: int, outcome: bytes | KanboardError) -> None:
            record = todo[i][1]
            key = self.cache_name(record)
            try:
                if isinstance(outcome, bytes):
                    self._keep(record, outcome)
                else:
                    kind = record.kind.value
                    log.debug("batched read of %s file %d: %s", kind, record.id, outcome)
            finally:
                settle(key)

        try:
            await self.client.download_files(
                [(c, r.id) for c, r in todo], deliver, sum(r.size for _, r in todo)
            )
        except KanboardError as exc:
            self._batch_failed_at = trio.current_time()
            log.info(
                "a batched read failed (%s): files are read one by one for %g s",
                exc,
                self.BATCH_PAUSE,
            )
        except Exception:  # a background task must not end the mount
            self._batch_failed_at = trio.current_time()
            log.exception("a batched read failed unexpectedly")
        finally:
            for _, record in todo:
                settle(self.cache_name(record))
            self._batches -= 1
        self.evict()

    def _keep(self, record: FileRecord, data: bytes) -> None:
        """A batch member's content, into the cache if its length is the record's."""
        if len(data) != record.size:
            log.warning(
                "%s file %d: server sent %d bytes, its record says %d; not cached",
                record.kind.value, record.id, len(data), record.size,
            )  # fmt: skip
            return
        part = self._new_part(record)
        try:
            fd = open_nofollow(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(part, self.path_for(record))
        except OSError as exc:
            part.unlink(missing_ok=True)
            log.warning("could not keep a batched read in the cache: %s", exc)
            return
        self._downloads_n += 1
        self._bytes += record.size
        self._added(record.size)

    async def _check_project_file(self, container: Container, record: FileRecord) -> None:
        """Before Kanboard 1.2.50 downloadProjectFile sends any project's file of that id
        (kanboard-api §12 row 6), and ids are reused (kanboard-api §7): look at the row
        first, so that another project's file is never served under this name."""
        current = await self.client.get_file(container, record.id)  # checks the project
        if current.version_key != record.version_key:
            raise NotFound(
                f"project file {record.id} is no longer {record.name!r}", method="getProjectFile"
            )

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
        self._added(record.size)
        self.evict()

    def rekey(self, old: FileRecord, new: FileRecord) -> None:
        """An upload known by id only (``old``, kbfs.namespace.provisional) was listed with
        its full record ``new``: its bytes, adopted under the old key, move to the new one
        (saves downloading what this mount uploaded)."""
        if old.size != new.size:
            return
        try:
            os.replace(self.path_for(old), self.path_for(new))
        except FileNotFoundError:
            pass  # not adopted (a writer still had it open), or evicted since
        except OSError as exc:
            log.warning("could not keep uploaded content in the cache: %s", exc)

    def forget(self, record: FileRecord) -> None:
        """Drop the cached content of ``record``: the server no longer holds these bytes for
        it (another upload overwrote them in the same second, kanboard-api §7). A reader that
        has it open keeps reading its copy; the next open downloads again."""
        try:
            self.path_for(record).unlink(missing_ok=True)
        except OSError as exc:
            log.warning("could not drop the cached content of file %d: %s", record.id, exc)

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

    def _added(self, size: int) -> None:
        if self._usage is not None:
            self._usage += size

    def evict(self) -> None:
        """Drop least recently used, unpinned files until the cache fits ``max_bytes``."""
        now = time.monotonic()
        if (
            self._usage is not None
            and self._usage <= self.max_bytes
            and now - self._looked_at < self.RESCAN
        ):
            return
        self._looked_at = now
        self._usage = self._evict()

    def _evict(self) -> int:
        """One look at the directory: the LRU files dropped; the bytes left."""
        entries = []
        total = 0
        for entry in os.scandir(self.root):
            if not entry.is_file() or entry.name.endswith(".part"):
                continue
            st = entry.stat()
            total += st.st_size
            entries.append((st.st_mtime, st.st_size, Path(entry.path)))
        if total <= self.max_bytes:
            return total
        for _mtime, size, path in sorted(entries):
            if total <= self.max_bytes:
                break
            if path in self._pins:
                continue
            path.unlink(missing_ok=True)
            total -= size
            self._evictions += 1
        return total


def _servable(st: os.stat_result, record: FileRecord) -> bool:
    """Whether a cache file is the complete content of ``record``: a regular file of this
    user holding exactly the record's size (a symlink, another user's file or a truncated
    copy never is)."""
    return stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid() and st.st_size == record.size
