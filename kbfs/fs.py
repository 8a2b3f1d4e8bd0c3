"""The pyfuse3 adapter: kernel requests in, ``Vfs`` calls, kernel replies out. No logic.

Every handler is wrapped by ``fuse_errors``: pyfuse3 lets only ``FUSEError`` leave a handler
(anything else ends ``pyfuse3.main()`` and kills the mount), so every other exception is turned
into an errno here (by ``kbfs.errors``, which alone decides which errno and whether the
condition is expected), logged (with a traceback when it is not expected), and counted.

Kernel caching is chosen here: entries and attributes are cached for ``attr_timeout`` (small but
not zero: zero makes every ``stat`` a round trip, and Linux misbehaves at exactly zero). No
entry invalidations are ever sent: the kernel takes the directory's lock to apply one, and a
request in flight holds that lock, so a daemon killed at that moment could never exit (its
notification thread stuck in the kernel, the request never answered: processes hang in D state
until the connection is aborted by hand; seen under the crash stress test). Name changes the
kernel did not make itself show after ``attr_timeout`` instead. Negative lookups are cached for
``negative_timeout``; the page cache is kept across opens only for server versions, whose
content never changes.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, ParamSpec, TypeVar

import pyfuse3

from kbfs.errors import NoEntry, NotPermitted, is_expected, to_errno
from kbfs.namespace.nodes import Node
from kbfs.vfs import Attr, Vfs

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

error_counts: Counter[str] = Counter()

DOTS = 2  # readdir positions taken by "." and ".." before a directory's entries


def fuse_errors(
    fn: Callable[P, Coroutine[Any, Any, R]],
) -> Callable[P, Coroutine[Any, Any, R]]:
    """Let only FUSEError out of a handler; log and map everything else with ``to_errno``.

    A full spool disk during a write thus reaches the writer as ENOSPC, a bug as EIO.
    """

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except Exception as exc:
            number = to_errno(exc)
            error_counts[fn.__name__] += 1
            if isinstance(exc, NoEntry):
                pass
            elif is_expected(exc):
                log.warning("%s: %s (%s)", fn.__name__, exc, errno.errorcode.get(number, number))
            else:
                log.error(
                    "%s failed unexpectedly; answering %s",
                    fn.__name__,
                    errno.errorcode.get(number, number),
                    exc_info=True,
                )
            raise pyfuse3.FUSEError(number) from None

    return wrapper


def _name(raw: bytes) -> str:
    return os.fsdecode(raw)


class Operations(pyfuse3.Operations):
    """pyfuse3 operations backed by a ``Vfs``."""

    enable_writeback_cache = False
    enable_acl = False

    def __init__(
        self,
        vfs: Vfs,
        *,
        attr_timeout: float = 1.0,
        negative_timeout: float = 1.0,
        xattrs: bool = True,
    ) -> None:
        super().__init__()
        self.vfs = vfs
        self.attr_timeout = attr_timeout
        self.negative_timeout = negative_timeout
        # Without xattrs, ENOSYS makes the kernel stop asking: two round trips fewer per file
        # in ls -l (which asks for ACLs and SELinux labels).
        self.xattr_errno = pyfuse3.ENOATTR if xattrs else errno.ENOSYS

    def _entry(self, attr: Attr) -> pyfuse3.EntryAttributes:
        entry = pyfuse3.EntryAttributes()
        entry.st_ino = pyfuse3.InodeT(attr.ino)
        entry.generation = 0
        entry.entry_timeout = self.attr_timeout
        entry.attr_timeout = self.attr_timeout
        entry.st_mode = pyfuse3.ModeT(attr.mode)
        entry.st_nlink = attr.nlink
        entry.st_uid = attr.uid
        entry.st_gid = attr.gid
        entry.st_rdev = 0
        entry.st_size = attr.size
        entry.st_blksize = 1024 * 1024
        entry.st_blocks = (attr.size + 511) // 512
        entry.st_atime_ns = attr.atime_ns
        entry.st_mtime_ns = attr.mtime_ns
        entry.st_ctime_ns = attr.ctime_ns
        return entry

    def _node_entry(self, node: Node) -> pyfuse3.EntryAttributes:
        return self._entry(self.vfs.attr(node))

    # ---------------------------------------------------------------- lookups and attributes

    @fuse_errors
    async def lookup(
        self, parent_inode: int, name: bytes, ctx: Any = None
    ) -> pyfuse3.EntryAttributes:
        try:
            node = await self.vfs.lookup(parent_inode, _name(name))
            log.debug("lookup %d %r -> %d", parent_inode, name, node.ino)
        except NoEntry:
            log.debug("lookup %d %r -> ENOENT", parent_inode, name)
            # st_ino 0 is a negative entry the kernel may cache for entry_timeout.
            entry = pyfuse3.EntryAttributes()
            entry.st_ino = pyfuse3.InodeT(0)
            entry.entry_timeout = self.negative_timeout
            return entry
        self.vfs.remember(node)
        return self._node_entry(node)

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        for ino, count in inode_list:
            self.vfs.forget(ino, count)

    @fuse_errors
    async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
        return self._entry(self.vfs.getattr(inode))

    @fuse_errors
    async def setattr(
        self, inode: int, attr: pyfuse3.EntryAttributes, fields: Any, fh: int | None, ctx: Any
    ) -> pyfuse3.EntryAttributes:
        result = await self.vfs.setattr(
            inode,
            fh,
            size=attr.st_size if fields.update_size else None,
            mode=attr.st_mode if fields.update_mode else None,
            atime_ns=attr.st_atime_ns if fields.update_atime else None,
            mtime_ns=attr.st_mtime_ns if fields.update_mtime else None,
        )
        return self._entry(result)

    @fuse_errors
    async def statfs(self, ctx: Any) -> pyfuse3.StatvfsData:
        data = pyfuse3.StatvfsData()
        for key, value in self.vfs.statfs().items():
            setattr(data, key, value)
        return data

    # ---------------------------------------------------------------- extended attributes

    @fuse_errors
    async def getxattr(self, inode: int, name: bytes, ctx: Any) -> bytes:
        if self.xattr_errno == errno.ENOSYS:
            raise pyfuse3.FUSEError(errno.ENOSYS)
        if not name.startswith(b"user."):
            # ls -l asks every file for its SELinux label and ACL. "Not supported" (rather
            # than "no such attribute") is the truth for these namespaces, and it makes ls
            # (coreutils' per-device cache) stop asking: two round trips per file saved.
            raise pyfuse3.FUSEError(errno.EOPNOTSUPP)
        if not name.startswith((b"user.kanboard.", b"user.kbfs.")):
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        value = self.vfs.xattrs(inode).get(os.fsdecode(name))
        if value is None:
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        return value

    @fuse_errors
    async def listxattr(self, inode: int, ctx: Any) -> list[bytes]:
        if self.xattr_errno == errno.ENOSYS:
            raise pyfuse3.FUSEError(errno.ENOSYS)
        return [os.fsencode(name) for name in self.vfs.xattrs(inode)]

    @fuse_errors
    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx: Any) -> None:
        raise pyfuse3.FUSEError(errno.ENOTSUP)  # Kanboard has nowhere to keep them

    @fuse_errors
    async def removexattr(self, inode: int, name: bytes, ctx: Any) -> None:
        raise pyfuse3.FUSEError(errno.ENOTSUP)

    # ---------------------------------------------------------------- directories

    @fuse_errors
    async def opendir(self, inode: int, ctx: Any) -> int:
        return await self.vfs.opendir(inode)

    @fuse_errors
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        # Positions: 1 after ".", 2 after "..", then 2 + the inode of each of opendir's
        # entries: stable even if the directory changes between calls (never a list index).
        # A listing of 100,000 files takes ~30 calls: each starts by bisecting, not by
        # skipping what earlier ones sent. Each entry names the node its name shows now (see
        # Vfs.dir_entries): no await in this loop.
        if start_id < DOTS:
            directory, parent = self.vfs.dir_and_parent(fh)
            for position, dots, node in ((1, b".", directory), (2, b"..", parent)):
                if position <= start_id:
                    continue
                # The kernel makes no dentry of these and counts no lookup (fuse_direntplus_link
                # skips them): nothing to remember.
                if not pyfuse3.readdir_reply(token, dots, self._node_entry(node), position):
                    return
        for name, node, position in self.vfs.dir_entries(fh, max(start_id - DOTS, 0)):
            entry = self._node_entry(node)
            if not pyfuse3.readdir_reply(token, os.fsencode(name), entry, position + DOTS):
                break
            self.vfs.remember(node)  # READDIRPLUS: each accepted entry is a lookup

    @fuse_errors
    async def releasedir(self, fh: int) -> None:
        self.vfs.releasedir(fh)

    @fuse_errors
    async def mkdir(self, parent_inode: int, name: bytes, mode: int, ctx: Any) -> Any:
        raise NotPermitted("projects and tasks cannot be created through kbfs")

    @fuse_errors
    async def rmdir(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        await self.vfs.lookup(parent_inode, _name(name))  # ENOENT for names that do not exist
        raise NotPermitted("projects and tasks cannot be removed through kbfs")

    @fuse_errors
    async def readlink(self, inode: int, ctx: Any) -> bytes:
        return os.fsencode(self.vfs.readlink(inode))

    @fuse_errors
    async def symlink(self, parent_inode: int, name: bytes, target: bytes, ctx: Any) -> Any:
        raise NotPermitted("Kanboard has no symbolic links")

    @fuse_errors
    async def link(self, inode: int, new_parent_inode: int, new_name: bytes, ctx: Any) -> Any:
        raise NotPermitted("Kanboard has no hard links")

    @fuse_errors
    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: Any) -> Any:
        raise NotPermitted("only regular files can be stored")

    # ---------------------------------------------------------------- files

    @fuse_errors
    async def open(self, inode: int, flags: int, ctx: Any) -> pyfuse3.FileInfo:
        handle = await self.vfs.open(inode, flags)
        return pyfuse3.FileInfo(fh=pyfuse3.FileHandleT(handle.fh), keep_cache=handle.keep_cache)

    @fuse_errors
    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: Any
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        handle = await self.vfs.create(parent_inode, _name(name), flags)
        self.vfs.remember(handle.node)
        info = pyfuse3.FileInfo(fh=pyfuse3.FileHandleT(handle.fh), keep_cache=False)
        return info, self._node_entry(handle.node)

    @fuse_errors
    async def read(  # type: ignore[override]  # pyfuse3 takes any buffer, not only bytes
        self, fh: int, off: int, size: int
    ) -> bytes | memoryview:
        return await self.vfs.read(fh, off, size)

    @fuse_errors
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        return await self.vfs.write(fh, off, buf)

    @fuse_errors
    async def flush(self, fh: int) -> None:
        await self.vfs.flush(fh)

    @fuse_errors
    async def fsync(self, fh: int, datasync: bool) -> None:
        await self.vfs.fsync(fh)

    @fuse_errors
    async def release(self, fh: int) -> None:
        self.vfs.release(fh)

    @fuse_errors
    async def unlink(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        await self.vfs.unlink(parent_inode, _name(name))

    @fuse_errors
    async def rename(
        self,
        parent_inode_old: int,
        name_old: bytes,
        parent_inode_new: int,
        name_new: bytes,
        flags: int,
        ctx: Any,
    ) -> None:
        await self.vfs.rename(
            parent_inode_old, _name(name_old), parent_inode_new, _name(name_new), flags
        )
