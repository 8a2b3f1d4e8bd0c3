"""The filesystem's operations, without pyfuse3: a facade over the components that own the state.

``fs.py`` translates kernel requests into calls of this class and its results back. Each call
finds its nodes and dispatches: what exists at which name is the namespace's
(``kbfs.namespace``), listings the refresher's (``kbfs.remote``), uploads, removals and the
recovery of unsaved bytes the uploader's (``kbfs.upload``), rename and rm ``kbfs.ops``'s, bytes
on disk the spool's and the content cache's (``kbfs.storage``). This class owns only the open
handles (``kbfs.ops.handles``, where the read path is); what the mount reports about itself is
``kbfs.ops.report``'s, when unused listings and nodes are freed ``kbfs.ops.reclaimer``'s.
SEMANTICS.md is the prose version of what each operation does.

Concurrency (trio): code between two ``await``s is atomic. docs/notes/upload-concurrency.md
says which lock guards what.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import itertools
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import trio

from kbfs.client.protocol import KanboardAPI
from kbfs.client.wire import MIN_TRANSFER_RATE
from kbfs.errors import (
    AccessDenied,
    FsError,
    InvalidArgument,
    IsADirectory,
    NoEntry,
    NotPermitted,
    RequestTimedOut,
)
from kbfs.namespace import attributes
from kbfs.namespace.attributes import Attr, Owner
from kbfs.namespace.eviction import Limits
from kbfs.namespace.names import DEFAULT_LOCAL_NAMES, check_upload_name
from kbfs.namespace.nodes import Node, NodeType
from kbfs.namespace.tree import Namespace
from kbfs.ops.handles import DirHandle, Handle, entry_ino
from kbfs.ops.lister import Lister
from kbfs.ops.mover import Mover
from kbfs.ops.readahead import ReadAhead
from kbfs.ops.reclaimer import Reclaimer
from kbfs.ops.remover import Remover
from kbfs.ops.report import Reporter
from kbfs.remote.refresher import Refresher, RefreshPolicy
from kbfs.storage.contentcache import ContentCache
from kbfs.storage.spool import PendingFile, Spool
from kbfs.upload.recovery import Recovery
from kbfs.upload.uploader import Uploader
from kbfs.upload.writeback import WriteBack

__all__ = ["DEFAULT_LOCAL_NAMES", "Attr", "DirHandle", "Handle", "Vfs", "VfsConfig"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VfsConfig:
    uid: int
    gid: int
    umask: int = 0o022
    dir_ttl: float = 5.0
    read_only: bool = False
    user_id: int | None = None  # set under user auth: project roles decide writability
    upload_drain_timeout: float = 30.0
    local_names: tuple[str, ...] = DEFAULT_LOCAL_NAMES
    op_timeout: float = 30.0  # bound on one operation's server calls, retries included
    # Memory (kbfs.namespace.eviction): records one listing may have (more: EIO); records
    # kept in all listings before unused ones go; when a listing counts as unused or idle.
    max_listing: int = 250_000
    max_records: int = Limits.max_records
    listing_min_age: float = Limits.min_age
    listing_idle: float = Limits.idle
    kernel_cache_timeout: float = 1.0  # how long the kernel trusts a name or attributes
    max_file_size: int | None = None  # -o max_file_size: writes past it fail with EFBIG
    writeback: bool = False  # -o writeback: close() hands the upload to kbfs.upload.writeback


class Vfs:
    """Kanboard attachments as a tree of nodes. See the module docstring."""

    def __init__(
        self,
        client: KanboardAPI,
        config: VfsConfig,
        content: ContentCache,
        spool: Spool,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.config = config
        self.content = content
        self.spool = spool
        self.clock = clock
        self.mounted_ns = time.time_ns()
        self._owner = Owner(config.uid, config.gid, config.umask)
        self.ns = Namespace(config.local_names)
        self.inodes = self.ns.inodes
        policy = RefreshPolicy(
            config.dir_ttl,
            config.op_timeout,
            config.user_id,
            config.max_listing,
            Limits(config.max_records, config.listing_idle, config.listing_min_age),
        )
        self.refresher = Refresher(client, self.ns, policy, clock, content.rekey)
        self.uploader = Uploader(client, self.ns, spool, content, self.refresher, clock)
        self.recovery = Recovery(self.ns, spool, self.uploader, client.endpoint, clock)
        self.writeback = WriteBack(self.uploader)
        self.recovery.deferred = self.writeback.holds
        self.lister = Lister(self.ns, self.refresher)
        self.readahead = ReadAhead(self.ns, self.refresher, content, clock)
        self.mover = Mover(
            self.ns,
            self.refresher,
            self.uploader,
            spool,
            content,
            self.lister.lookup,
            self._check_writable,
        )
        self.remover = Remover(self.ns, self.uploader)
        self._handles: dict[int, Handle] = {}
        self._dir_handles: dict[int, DirHandle] = {}
        self._next_fh = 1
        self.reporter = Reporter(
            client, self.ns, self.refresher, self.uploader, self.remover, content, spool
        )
        self.reclaimer = Reclaimer(self.ns, self.refresher, self.uploader, self._held, clock)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The core's background work: take over an earlier mount's leftovers, retry failed
        uploads, and free the nodes nothing reaches any more. Downloads run in the content
        cache's own ``run``."""
        self.recovery.start()
        task_status.started()
        while True:
            await trio.sleep(self.recovery.interval)
            await self.background_pass()

    async def background_pass(self) -> None:
        """One pass of the background loop. Whatever goes wrong in it is logged and tried
        again at the next pass: an exception here would otherwise end the whole mount."""
        try:
            await self.recovery.retry_once()
            self.drop_listings()
            self.reclaim_if_due()
        except Exception:
            log.exception("background pass failed; trying again in %g s", self.recovery.interval)

    # ------------------------------------------------------------------ helpers

    def node(self, ino: int) -> Node:
        return self.ns.node(ino)

    def path_of(self, node: Node) -> str:
        return self.ns.path_of(node)

    def is_local_name(self, name: str) -> bool:
        return self.ns.is_local_name(name)

    def is_scratch(self, node: Node) -> bool:
        return self.ns.is_scratch(node)

    def pending_files(self) -> list[Node]:
        return self.ns.pending_files()

    def _is_read_only(self, project_id: int | None) -> bool:
        if self.config.read_only:
            return True
        return project_id is not None and self.refresher.read_only(project_id)

    def _check_writable(self, node: Node) -> None:
        if self._is_read_only(node.project_id):
            raise AccessDenied(f"project {node.project_id} is read-only for this user")

    def remember(self, node: Node) -> None:
        """The kernel took a reference to ``node`` (lookup, create, readdirplus entry): once
        per entry of a readdir, so kept to one attribute update."""
        node.lookups += 1

    def forget(self, ino: int, count: int) -> None:
        self.inodes.forget(ino, count)

    async def refresh(self, ino: int) -> None:
        """Fetch a directory's listing now (after a change made behind this mount's back)."""
        await self.refresher.refresh(self.node(ino))

    async def retry_once(self) -> None:
        await self.recovery.retry_once()

    def load_spool(self) -> int:
        return self.recovery.load_spool()

    async def wait_uploads_idle(self, timeout: float) -> bool:
        """Let the uploads under way end, and what the write-back queue holds go too, for
        at most ``timeout`` (SIGTERM's grace); what is left stays in the spool."""
        deadline = trio.current_time() + timeout
        if not await self.writeback.settled(timeout):
            return False
        return await self.uploader.wait_idle(max(0.0, deadline - trio.current_time()))

    @contextlib.contextmanager
    def _within(self, what: str, transfer: int = 0) -> Iterator[None]:
        """One budget for a whole operation: ``op_timeout`` (plus ``transfer`` bytes' time at
        the client's minimum rate), every server call, retry and wait in it included.

        Each client call has the same budget of its own, but an operation can make several
        (ls tasks/: the task list, then a batched listing of every task) and used to add them
        up. The calls end a little before this deadline by themselves (see the client's
        CALLER_MARGIN), so a cached listing can still be served; what is cut off here is
        reported as EIO with a log line naming the operation.
        """
        seconds = self.config.op_timeout + transfer / MIN_TRANSFER_RATE
        with trio.move_on_after(seconds) as scope:
            yield
        if scope.cancelled_caught:
            raise RequestTimedOut(f"{what}: no answer from the server within {seconds:.1f} s")

    # ------------------------------------------------------------------ names and listings

    async def lookup(self, parent_ino: int, name: str) -> Node:
        with self._within("lookup"):
            return await self.lister.lookup(parent_ino, name)

    async def list_dir(self, ino: int) -> list[tuple[str, Node]]:
        """The entries of a directory, fetched if the cached listing is stale."""
        with self._within("listing"):
            return await self.lister.list_dir(ino)

    async def opendir(self, ino: int) -> int:
        entries = await self.list_dir(ino)
        entries.sort(key=entry_ino)
        fh = self._alloc_fh()
        self._dir_handles[fh] = DirHandle(self.node(ino), entries)
        return fh

    def dir_entries(self, fh: int, start_id: int = 0) -> Iterator[tuple[str, Node, int]]:
        """What a readdir of an open directory replies from position ``start_id`` on:
        (name, the node that name shows now, the entry's position).

        The names and positions are opendir's, the nodes are asked of the namespace at the
        moment each entry is replied. A READDIRPLUS entry becomes a kernel dentry (replacing
        the one the kernel had), and the kernel applies renames, rms and creates of the
        directory between opendir and readdir, or between two readdir calls: an entry from
        the opendir snapshot would point the name back at the inode a rename moved away
        (``open(name, "wb")`` then writes into the other name) or an rm removed (the open
        fails with ENOENT). A name that is gone meanwhile is not replied. Lazy: the caller
        replies each entry before the next is looked at, with no await in between.
        """
        handle = self._dir_handles[fh]
        entries = handle.entries
        start = bisect.bisect_right(entries, start_id, key=entry_ino) if start_id else 0
        now = self.ns.shown_now(handle.dir)
        for name, listed in itertools.islice(entries, start, None):
            node = now(name, listed)
            if node is None:
                log.debug("readdir: %r went after opendir; not replied", name)
                continue
            yield name, node, listed.ino

    def dir_and_parent(self, fh: int) -> tuple[Node, Node]:
        """The nodes ``.`` and ``..`` of an open directory stand for (the root is its own
        parent; the kernel resolves ``..`` of the mount point itself)."""
        directory = self._dir_handles[fh].dir
        try:
            return directory, self.node(directory.parent)
        except NoEntry:  # the parent was dropped meanwhile: "." still lists
            return directory, directory

    def releasedir(self, fh: int) -> None:
        self._dir_handles.pop(fh, None)

    def readlink(self, ino: int) -> str:
        node = self.node(ino)
        if node.type is not NodeType.LINK or node.link_target is None:
            raise InvalidArgument("not a symbolic link")
        return node.link_target

    # ------------------------------------------------------------------ attributes

    def getattr(self, ino: int) -> Attr:
        return self.attr(self.node(ino))

    def attr(self, node: Node) -> Attr:
        read_only = self._is_read_only(node.project_id)
        return attributes.attr_of(node, self._owner, read_only, self.mounted_ns)

    def xattrs(self, ino: int) -> dict[str, bytes]:
        return self.reporter.xattrs(self.node(ino))

    def statfs(self) -> dict[str, int]:
        return attributes.statfs()

    def status(self) -> dict[str, object]:
        """A JSON-ready snapshot for ``kbfs status`` (see kbfs.ops.report)."""
        return self.reporter.status()

    # ------------------------------------------------------------------ file handles

    def _alloc_fh(self) -> int:
        fh = self._next_fh
        self._next_fh += 1
        return fh

    def handle(self, fh: int) -> Handle:
        handle = self._handles.get(fh)
        if handle is None:
            raise FsError("bad file handle", errno.EBADF)
        return handle

    def _file(self, ino: int) -> Node:
        node = self.node(ino)
        if node.type is not NodeType.FILE:
            raise IsADirectory()
        return node

    def _add_handle(self, handle: Handle) -> Handle:
        self._handles[handle.fh] = handle
        handle.node.open_handles += 1
        if handle.writable:
            handle.node.writers += 1
        return handle

    async def open(self, ino: int, flags: int) -> Handle:
        node = self._file(ino)
        if node.discarded:
            raise NoEntry("the file was removed")
        accmode = flags & os.O_ACCMODE
        writable = accmode in (os.O_WRONLY, os.O_RDWR)
        if writable:
            self._check_writable(node)
            await self.writeback.before_change(node)
            if flags & os.O_TRUNC:
                self._set_aside_incomplete(node)
                if node.pending is None and node.record is None:
                    raise NoEntry("the file's incomplete content went to the recovery folder")
            if node.pending is None and node.record is not None:
                # Copy-on-open downloads the server's content: bounded by its size. (Local
                # content needs no server; waiting for its upload is bounded by that upload.)
                with self._within("open for writing", node.record.size):
                    pending = await self.uploader.open_for_change(
                        node, truncate=bool(flags & os.O_TRUNC)
                    )
            else:
                pending = await self.uploader.open_for_change(
                    node, truncate=bool(flags & os.O_TRUNC)
                )
            if flags & os.O_TRUNC and pending.too_large:
                pending.too_large, pending.last_error = False, None  # rewritten from zero
        if node.pending is not None:
            fd = os.open(node.pending.path, os.O_RDWR if writable else os.O_RDONLY)
            return self._add_handle(Handle(self._alloc_fh(), node, fd, writable))
        if node.record is None:
            raise NoEntry("file has no content")
        self.readahead.opened(node)
        opened = await self.content.open(node.container, node.record)
        self.content.pin(opened.path)
        # A server version's content never changes: the kernel may keep its pages.
        handle = Handle(self._alloc_fh(), node, opened.fd, writable, opened.path, True, opened)
        return self._add_handle(handle)

    async def create(self, parent_ino: int, name: str, flags: int) -> Handle:
        parent = self.node(parent_ino)
        if not parent.type.holds_files:
            raise NotPermitted("files live only in files/ and tasks/<id>/ directories")
        self._check_writable(parent)
        check_upload_name(name)
        if name in (".", ".."):
            raise InvalidArgument()
        with self._within("create"):
            await self.refresher.files(parent)
        existing = self.ns.view(parent.container).get(name)
        if existing is not None:
            self._set_aside_incomplete(self.node(existing))
            existing = self.ns.view(parent.container).get(name)
        if existing is not None:
            if flags & os.O_EXCL:
                raise FsError("exists", errno.EEXIST)
            return await self.open(existing, flags | os.O_TRUNC)
        node = self.ns.new_local_file(parent, name, self.spool.create(parent.container, name, None))
        assert node.pending is not None
        fd = os.open(node.pending.path, os.O_RDWR)
        # Even O_RDONLY|O_CREAT gets a writable handle: its close decides the new file's fate.
        return self._add_handle(Handle(self._alloc_fh(), node, fd, True))

    def _set_aside_incomplete(self, node: Node) -> None:
        """A file written anew (O_TRUNC) whose content a failed write left incomplete: that
        content goes to the recovery folder first (the retry loop would have moved it there),
        so that the new content is not taken for incomplete too (a second ``cp`` once space
        was freed). Not while another handle still writes into it."""
        pending = node.pending
        if pending is None or pending.incomplete is None or node.writers or self.is_scratch(node):
            return  # a scratch file is never uploaded: it stays, marked, until renamed
        self.recovery.recover(node, f"{pending.incomplete}; {pending.size_or_zero()} bytes kept")

    async def read(self, fh: int, offset: int, size: int) -> bytes | memoryview:
        return await self.handle(fh).read(offset, size, self.config.op_timeout)

    async def write(self, fh: int, offset: int, data: bytes) -> int:
        handle = self.handle(fh)
        pending = handle.node.pending
        if not handle.writable or pending is None:
            raise FsError("not open for writing", errno.EBADF)
        async with pending.lock:
            limit = self.config.max_file_size
            if limit is not None and offset + len(data) > limit:
                raise self._too_large(pending, limit)
            try:
                written = os.pwrite(handle.fd, data, offset)
            except OSError as exc:
                # Whatever the spool holds now is not the file being written: never upload
                # it (see Spool.mark_incomplete). The writer gets this errno, and close() too.
                reason = f"incomplete: a write failed ({exc.strerror or exc})"
                log.error("%s: %s at offset %d", self.path_of(handle.node), reason, offset)
                pending.touch()
                self.spool.mark_incomplete(pending, reason, exc.errno or errno.EIO)
                raise
            pending.touch()
        return written

    def _too_large(self, pending: PendingFile, limit: int) -> FsError:
        """EFBIG for a write past ``max_file_size``; the file is marked so that the truncated
        copy it now holds is never uploaded (see SEMANTICS.md, Writing)."""
        pending.too_large = True
        pending.last_error = f"a write passed max_file_size={limit}: not uploaded"
        return FsError(f"file larger than max_file_size ({limit} bytes)", errno.EFBIG)

    async def flush(self, fh: int) -> None:
        """On every close(): upload a dirty file, and fail the close if that fails."""
        handle = self.handle(fh)
        node = handle.node
        if not handle.writable or node.pending is None or node.discarded:
            return
        if node.pending.dirty:
            self.ns.relink(node)
            if self.config.writeback:
                await self.writeback.hand_over(node)  # uploaded in the background
            else:
                await self.uploader.upload(node)
        if node.pending is not None and node.pending.too_large:
            raise FsError(node.pending.last_error or "too large", errno.EFBIG)

    async def fsync(self, fh: int) -> None:
        """The file is on the server when this returns (in write-back mode too), or fails."""
        await self.flush(fh)
        node = self.handle(fh).node
        if self.config.writeback and node.pending is not None and not node.discarded:
            # Waits for a background upload under way (its locks); if the content is still
            # not on the server, sends it now and fails with its error. (A file cut off at
            # max_file_size failed in flush() already.)
            await self.uploader.upload(node)

    async def sync_all(self, timeout: float) -> list[tuple[str, str]]:
        """``kbfs sync``: see kbfs.upload.writeback."""
        return await self.writeback.sync_all(timeout)

    def release(self, fh: int) -> None:
        handle = self._handles.pop(fh, None)
        if handle is None:
            return
        handle.close()
        if handle.pinned is not None:
            self.content.unpin(handle.pinned)  # type: ignore[arg-type]
        if handle.arriving is not None:
            self.content.release(handle.arriving.download)
            self.readahead.closed(handle.node, handle.read_end >= handle.arriving.size)
        node = handle.node
        node.open_handles -= 1
        if handle.writable:
            node.writers -= 1
        if node.open_handles == 0:
            self.uploader.settle(node)

    # ------------------------------------------------------------------ other mutations

    async def unlink(self, parent_ino: int, name: str) -> None:
        parent = self.node(parent_ino)
        if not parent.type.holds_files:
            raise NotPermitted("projects and tasks cannot be removed through kbfs")
        node = await self.lookup(parent_ino, name)
        if node.type is not NodeType.FILE:
            raise IsADirectory()
        self._check_writable(parent)
        if await self.uploader.waited_for_upload(node):
            # The name may show the new version now, and that is what rm must remove.
            await self.unlink(parent_ino, name)
            return
        pending = node.pending
        if pending is None:
            with self._within("rm"):
                await self.remover.remove(name, node)
            return
        async with pending.lock:  # no upload may start meanwhile
            with self._within("rm"):
                await self.remover.remove(name, node)

    async def rename(
        self, parent_old: int, name_old: str, parent_new: int, name_new: str, flags: int
    ) -> None:
        """Kanboard has no rename: see kbfs.ops.mover."""
        node = await self.lookup(parent_old, name_old)
        if node.pending is not None and node.pending.incomplete is not None:
            # A move uploads the content under the new name: never content a write failed on.
            log.error("%s: not moved: %s", self.path_of(node), node.pending.incomplete)
            raise FsError(node.pending.incomplete, errno.EIO)
        await self.mover.rename(parent_old, name_old, parent_new, name_new, flags)

    async def setattr(
        self,
        ino: int,
        fh: int | None,
        *,
        size: int | None = None,
        mode: int | None = None,
        atime_ns: int | None = None,
        mtime_ns: int | None = None,
    ) -> Attr:
        node = self.node(ino)
        if size is not None:
            if node.type is not NodeType.FILE:
                raise IsADirectory()
            self._check_writable(node)
            limit = self.config.max_file_size
            await self.writeback.before_change(node)
            pending = await self.uploader.open_for_change(node, truncate=size == 0)
            async with pending.lock:
                if limit is not None and size > limit:  # refused: the content is unchanged
                    raise FsError(f"larger than max_file_size ({limit} bytes)", errno.EFBIG)
                if size != pending.size():
                    self.spool.truncate(pending, size)
                    pending.touch()
                if pending.too_large:
                    pending.too_large, pending.last_error = False, None  # back under the limit
            if fh is None and pending.dirty and not node.discarded:
                await self.uploader.upload(node)  # truncate(1) has no close() to upload on
            if fh is None and node.open_handles == 0:
                self.uploader.settle(node)
        if mode is not None:
            node.mode_override = mode & 0o7777
        if mtime_ns is not None:
            node.mtime_override_ns = mtime_ns
        if atime_ns is not None:
            node.atime_ns = atime_ns
        return self.attr(node)

    # ------------------------------------------------------------------ freeing nodes

    def reclaim_if_due(self) -> None:
        self.reclaimer.reclaim_if_due()

    def drop_listings(self) -> int:
        """Drop the listings nobody has used lately; how many went (see kbfs.ops.reclaimer)."""
        return self.reclaimer.drop_listings()

    def reclaim(self) -> int | None:
        """Free the nodes nothing reaches; how many, None if busy (see kbfs.ops.reclaimer)."""
        return self.reclaimer.reclaim()

    def _held(self) -> set[int]:
        """What a readdir still to come may reply."""
        held: set[int] = set()
        for handle in self._dir_handles.values():
            held.update(node.ino for _, node in handle.entries)
        return held
