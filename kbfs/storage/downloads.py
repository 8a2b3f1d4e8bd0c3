"""A download in progress, and what its readers see of it.

The content cache (:mod:`kbfs.storage.contentcache`) starts downloads and decides their
fate; this module holds the state one download shares with the handles reading it: how far it
has come, whether a reader wants more than the first bytes (the sniff window), and the waits a
read makes for its bytes. ``mapped_if_complete`` is the read path once all of it is there.
"""

from __future__ import annotations

import contextlib
import mmap
import os
from collections.abc import Iterable
from pathlib import Path

import trio

from kbfs.client.wire import MIN_TRANSFER_RATE
from kbfs.errors import FsError


class Download:
    """One download in progress: readers wait on ``progress`` (bytes on disk so far)."""

    def __init__(self, part: Path, size: int) -> None:
        self.part = part
        self.size = size
        self.started = trio.current_time()
        self.done = trio.Event()
        self.error: BaseException | None = None
        self.progress = 0  # written by the sink, possibly from a worker thread
        self.changed = trio.Event()  # set (and replaced) whenever more bytes are on disk
        self.readers = 0  # open handles and ensure() calls waiting on it
        self.scope = trio.CancelScope()
        self.unleashed = trio.Event()  # a reader wants more than the first SNIFF_BYTES

    def want(self, end: int) -> None:
        """A reader asks for bytes up to ``end``: past the sniff window, download freely."""
        if end > SNIFF_BYTES:
            self.unleashed.set()

    def notify(self) -> None:
        self.changed.set()
        self.changed = trio.Event()


# What a content-type sniff, file(1) or a header reader takes from the start of a file. A
# download whose readers asked for no more than this pauses there (TCP then holds the server)
# until one asks for more or all leave (then it is dropped): opening a large file to look at
# its first bytes costs about this much, not the file.
SNIFF_BYTES = 256 * 1024


class ProgressSink:
    """An unbuffered file sink that publishes how many bytes are on disk."""

    def __init__(self, fd: int, download: Download, limit: int) -> None:
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
            # Another file's bytes (a same-second collision, kanboard-api §7) or a server that
            # never stops: end the download now rather than fill the disk.
            raise FsError(f"the server sent more than the record's {self._limit} bytes; not served")
        # Wake readers now rather than at their next poll. RuntimeError: called on the trio
        # thread itself, not from a worker thread.
        with contextlib.suppress(RuntimeError):
            trio.from_thread.run_sync(self._download.notify)

    async def pace(self) -> float:
        """Hold the download past the sniff window until a reader wants more; the seconds
        held (the transport leaves them out of the download's deadline)."""
        download = self._download
        if download.unleashed.is_set() or download.progress < SNIFF_BYTES:
            return 0.0
        started = trio.current_time()
        await download.unleashed.wait()
        return trio.current_time() - started

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

    def __init__(self, fd: int, path: Path, size: int, download: Download | None) -> None:
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
        download.want(end)
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
