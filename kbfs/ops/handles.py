"""Open files and directories: what each holds between open() and release().

The facade (``kbfs.vfs``) numbers the handles and decides what an open does; a handle itself
knows its descriptor, the cached content it pins, and how its bytes are read, so that the read
path (the hottest one: every ``cat``) is one small piece of code apart from the operations.
"""

from __future__ import annotations

import contextlib
import mmap
import os
from dataclasses import dataclass

from kbfs.namespace.nodes import Node
from kbfs.storage.downloads import Opened, mapped_if_complete


@dataclass(eq=False)
class DirHandle:
    """An open directory: what its opendir listed, sorted by inode. The inodes are the readdir
    positions (stable whatever changes meanwhile); which node a name shows is asked again at
    each readdir (see ``Vfs.dir_entries``)."""

    dir: Node
    entries: list[tuple[str, Node]]


def entry_ino(entry: tuple[str, Node]) -> int:
    """The sort key of a DirHandle's entries."""
    return entry[1].ino


@dataclass(eq=False)
class Handle:
    """An open file: the spool's file for local content, else the content cache's."""

    fh: int
    node: Node
    fd: int
    writable: bool
    pinned: os.PathLike[str] | None = None
    keep_cache: bool = False
    arriving: Opened | None = None  # content still downloading: reads wait for their bytes
    mapped: mmap.mmap | None = None  # complete cached content, mapped once for reads
    read_end: int = 0  # the furthest byte a read asked for (the read-ahead's "read whole")

    async def read(self, offset: int, size: int, timeout: float) -> bytes | memoryview:
        """``size`` bytes at ``offset``, waiting (up to ``timeout``) for a download to bring
        them."""
        if offset + size > self.read_end:
            self.read_end = offset + size
        arriving = self.arriving
        if arriving is None:
            return os.pread(self.fd, size, offset)
        if self.mapped is None:
            await arriving.wait_for(offset + size, timeout)
            self.mapped = mapped_if_complete(self.fd, arriving)
            if self.mapped is None:
                return os.pread(self.fd, size, offset)
        # A complete cache file never changes: the reply is copied straight from its pages
        # (one copy and one allocation fewer per request than pread).
        return memoryview(self.mapped)[offset : offset + size]

    def close(self) -> None:
        if self.mapped is not None:
            # A read's reply still holding a view would make close() fail: the map then
            # goes with its last reference instead.
            with contextlib.suppress(BufferError):
                self.mapped.close()
            self.mapped = None
        os.close(self.fd)
