"""The filesystem's logic, without pyfuse3: what each operation does against Kanboard.

``fs.py`` translates kernel requests into calls of this class and its results back; everything
that decides something lives here, so it can be driven directly by tests. SEMANTICS.md is the
prose version of this module.

Concurrency contract (trio): code between two ``await``s is atomic. Directory refreshes of one
directory are shared (a lock per directory, freshness re-checked after acquiring it); uploads of
one name in one directory are serialised (API-FACTS §7: same-name uploads within one second share
a storage path); a pending file's lock is held for its whole upload and by writers.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import logging
import mmap
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple, NoReturn

import trio

from kbfs.client.api import KanboardClient
from kbfs.client.errors import (
    AuthenticationError,
    KanboardError,
    NotFound,
    PermissionDenied,
    TransportError,
)
from kbfs.client.models import Container, FileRecord, Kind
from kbfs.contentcache import ContentCache, Opened
from kbfs.directories import Directories
from kbfs.errors import (
    AccessDenied,
    FsError,
    InvalidArgument,
    IsADirectory,
    NameTooLong,
    NoEntry,
    NotADirectory,
    NotPermitted,
)
from kbfs.inodes import (
    ROOT_INO,
    InodeTable,
    Node,
    NodeType,
    doom_key,
    id_text,
)
from kbfs.listings import ContainerDir, Listing, ProjectList, TaskList
from kbfs.names import assign_names, upload_name_error
from kbfs.renaming import Renaming
from kbfs.saving import Saving, _size_or_zero
from kbfs.spool import PendingFile, Spool

log = logging.getLogger(__name__)

# Scratch files of editors and desktops: they stay in this mount and never reach Kanboard.
DEFAULT_LOCAL_NAMES = (
    ".*.sw[a-p]",  # vim swap files (.name.swp, .swo, ...)
    ".*.sw[a-p][a-z]",
    "4913",  # vim's "can I create files here" probe
    "*~",  # backups (vim, emacs, gedit)
    ".#*",  # emacs lock files
    "#*#",  # emacs auto-save files
    ".~lock.*#",  # LibreOffice lock files
    ".goutputstream-*",  # GIO/gedit atomic-save temporaries
    ".*.kate-swp",  # Kate swap files
)
# What file managers look for in every directory; answered from any cached listing.
PROBE_NAMES = (
    ".hidden",
    ".directory",
    ".Trash",
    ".Trash-*",
    "autorun.inf",
    "desktop.ini",
    ".DS_Store",
    ".thumbnails",
    ".sh_thumbnails",
    "Thumbs.db",
    ".xdg-volume-info",
)


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
    op_timeout: float = 30.0  # bound on one listing, retries included
    kernel_cache_timeout: float = 1.0  # how long the kernel trusts a name or attributes


class Attr(NamedTuple):
    """What stat shows. A tuple: a listing builds 10,000 of these, and a frozen dataclass's
    __init__ costs six times as much."""

    ino: int
    mode: int
    nlink: int
    size: int
    uid: int
    gid: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int


@dataclass(eq=False)
class Handle:
    fh: int
    node: Node
    fd: int
    writable: bool
    pinned: os.PathLike[str] | None = None
    keep_cache: bool = False
    arriving: Opened | None = None  # content still downloading: reads wait for their bytes
    mapped: mmap.mmap | None = None  # complete cached content, mapped once for reads

    def close(self) -> None:
        if self.mapped is not None:
            # A read's reply still holding a view would make close() fail: the map then
            # goes with its last reference instead.
            with contextlib.suppress(BufferError):
                self.mapped.close()
            self.mapped = None
        os.close(self.fd)


@dataclass
class VfsStats:
    uploads: int = 0
    upload_failures: int = 0
    removals: int = 0
    listings: int = 0
    reclaimed: int = 0  # file nodes freed (see Vfs.reclaim)


class Vfs(Directories, Saving, Renaming):
    """Kanboard attachments as a tree of nodes. See the module docstring."""

    def __init__(
        self,
        client: KanboardClient,
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
        self.inodes = InodeTable()
        self.stats = VfsStats()
        self.mounted_ns = time.time_ns()
        self._projects = ProjectList()
        self._tasks: dict[int, TaskList] = {}
        self._dirs: dict[Container, ContainerDir] = {}
        self._handles: dict[int, Handle] = {}
        self._dir_handles: dict[int, list[tuple[str, Node]]] = {}
        self._next_fh = 1
        self._name_locks: dict[tuple[Container, str], trio.Lock] = {}
        self._uploads_in_flight = 0
        self._uploads_idle = trio.Event()
        self._uploads_idle.set()
        self._provisional: dict[tuple[Kind, int], int] = {}
        self._stale_removals: list[tuple[Container, FileRecord]] = []
        # Superseded versions whose removal is under way (in the journal until done).
        self._removing: list[tuple[Container, FileRecord]] = []
        # Versions known only from an earlier mount's spool: checked before being removed.
        self._unverified: set[tuple[object, ...]] = set()
        self._reclaim_mark = 0  # inodes.forgotten at the last reclaim pass
        self._reclaimed_at = clock()
        self.projects_node = self.inodes.ensure(
            ("projects",), NodeType.PROJECTS, name="projects", parent=ROOT_INO
        )
        self.by_name_node = self.inodes.ensure(
            ("by-name",), NodeType.BY_NAME, name="by-name", parent=ROOT_INO
        )

    # ------------------------------------------------------------------ helpers

    def node(self, ino: int) -> Node:
        node = self.inodes.get(ino)
        if node is None:
            raise NoEntry(f"no inode {ino}")
        return node

    def _fresh(self, listing: Listing) -> bool:
        return self.clock() - listing.fetched_at < self.config.dir_ttl

    def _dir_state(self, node: Node) -> ContainerDir:
        container = node.container
        state = self._dirs.get(container)
        if state is None:
            state = self._dirs[container] = ContainerDir()
        return state

    def _is_read_only(self, project_id: int | None) -> bool:
        if self.config.read_only:
            return True
        return project_id is not None and project_id in self._projects.read_only

    def _check_writable(self, node: Node) -> None:
        if self._is_read_only(node.project_id):
            raise AccessDenied(f"project {node.project_id} is read-only for this user")

    def path_of(self, node: Node) -> str:
        """A readable path for log lines."""
        parts: list[str] = []
        seen = 0
        current: Node | None = node
        while current is not None and current.ino != ROOT_INO and seen < 16:
            parts.append(current.name)
            current = self.inodes.get(current.parent)
            seen += 1
        return "/" + "/".join(reversed(parts))

    # ------------------------------------------------------------------ namespace ops

    async def lookup(self, parent_ino: int, name: str) -> Node:
        parent = self.node(parent_ino)
        kind = parent.type
        if kind is NodeType.FILE:
            raise NotADirectory()
        if name == ".":
            return parent
        if name == "..":
            return self.node(parent.parent)
        if kind is NodeType.ROOT:
            if name == "projects":
                return self.projects_node
            if name == "by-name":
                return self.by_name_node
            raise NoEntry()
        if kind in (NodeType.BY_NAME, NodeType.TASKS_BY_TITLE):
            if self._is_probe(name):
                raise NoEntry()
            for entry_name, node in await self.list_dir(parent_ino):
                if entry_name == name:
                    return node
            raise NoEntry()
        if kind is NodeType.PROJECTS:
            project_id = _parse_id(name)
            if project_id is None:
                raise NoEntry()
            await self._refresh_projects()
            if project_id not in self._projects.projects:
                self._missing(self._projects, name)
            return self._project_node(project_id)
        assert parent.project_id is not None
        if kind is NodeType.PROJECT:
            if name == "files":
                return self._files_dir_node(parent.project_id)
            if name == "tasks":
                return self._tasks_dir_node(parent.project_id)
            if name == "tasks-by-title":
                return self._titles_dir_node(parent.project_id)
            raise NoEntry()
        if kind is NodeType.TASKS:
            task_id = _parse_id(name)
            if task_id is None:
                raise NoEntry()
            listing = await self._refresh_tasks(parent.project_id)
            if task_id not in listing.tasks:
                self._missing(listing, name)
            return self._task_node(parent.project_id, task_id)
        state = self._dir_state(parent)
        if not (state.fetched_at > -1e17 and self._is_probe(name)):
            state = await self._refresh_dir(parent)
        ino = self._view(state).get(name)
        if ino is None:
            self._missing(state, name)
        return self.node(ino)

    @staticmethod
    def _missing(listing: Listing, name: str) -> NoReturn:
        """ENOENT, unless the listing could not be refreshed: then nobody knows (EIO), and
        the kernel must not cache the name as absent."""
        if listing.failing:
            raise FsError(f"cannot tell whether {name!r} exists: the server is unreachable")
        raise NoEntry()

    def _is_probe(self, name: str) -> bool:
        """Names file managers and editors test for everywhere, which we need not re-fetch."""
        return _matches(name, PROBE_NAMES) or self.is_local_name(name)

    def is_local_name(self, name: str) -> bool:
        return _matches(name, self.config.local_names)

    def is_scratch(self, node: Node) -> bool:
        """A file kept in this mount only by design: a scratch name, never on the server."""
        return node.record is None and self.is_local_name(node.name)

    async def list_dir(self, ino: int) -> list[tuple[str, Node]]:
        """The entries of a directory, fetched if the cached listing is stale."""
        node = self.node(ino)
        if not node.type.is_dir:
            raise NotADirectory()
        if node.type is NodeType.ROOT:
            return [("projects", self.projects_node), ("by-name", self.by_name_node)]
        if node.type is NodeType.PROJECTS:
            await self._refresh_projects()
            return [(str(pid), self._project_node(pid)) for pid in self._projects.projects]
        if node.type is NodeType.BY_NAME:
            await self._refresh_projects()
            named = assign_names((p.id, p.name, p) for p in self._projects.projects.values())
            return [
                (name, self._link(("link", "project", p.id), node, name, f"../projects/{p.id}"))
                for name, p in named.items()
            ]
        assert node.project_id is not None
        if node.type is NodeType.PROJECT:
            return [
                ("files", self._files_dir_node(node.project_id)),
                ("tasks", self._tasks_dir_node(node.project_id)),
                ("tasks-by-title", self._titles_dir_node(node.project_id)),
            ]
        if node.type is NodeType.TASKS_BY_TITLE:
            listing = await self._refresh_tasks(node.project_id)
            named = assign_names((t.id, t.title, t) for t in listing.tasks.values())
            return [
                (name, self._link(("link", "task", t.id), node, name, f"../tasks/{t.id}"))
                for name, t in named.items()
            ]
        if node.type is NodeType.TASKS:
            listing = await self._refresh_tasks(node.project_id)
            entries = [(str(tid), self._task_node(node.project_id, tid)) for tid in listing.tasks]
            await self._prefetch([task_node for _, task_node in entries])
            return entries
        state = await self._refresh_dir(node)
        return [(name, self.node(i)) for name, i in self._view(state).items()]

    async def opendir(self, ino: int) -> int:
        entries = await self.list_dir(ino)
        entries.sort(key=lambda e: e[1].ino)
        fh = self._alloc_fh()
        self._dir_handles[fh] = entries
        return fh

    def dir_entries(self, fh: int) -> list[tuple[str, Node]]:
        return self._dir_handles[fh]

    def releasedir(self, fh: int) -> None:
        self._dir_handles.pop(fh, None)

    def getattr(self, ino: int) -> Attr:
        return self.attr(self.node(ino))

    def attr(self, node: Node) -> Attr:
        cfg = self.config
        if node.type is NodeType.LINK:
            size = len(os.fsencode(node.link_target or ""))
            t = self.mounted_ns
            return Attr(node.ino, stat.S_IFLNK | 0o777, 1, size, cfg.uid, cfg.gid, t, t, t)
        if node.type.is_dir:
            if node.type.holds_files:
                perm = 0o777
                if self._is_read_only(node.project_id):
                    perm = 0o555
            else:
                perm = 0o555  # structural: nothing can be created here
            mode = stat.S_IFDIR | (perm & ~cfg.umask)
            t = self.mounted_ns
            return Attr(node.ino, mode, 2, 0, cfg.uid, cfg.gid, t, t, t)
        perm = 0o666 & ~cfg.umask
        if self._is_read_only(node.project_id):
            perm &= ~0o222
        if node.mode_override is not None:
            perm = node.mode_override
        if node.pending is not None:
            try:
                size = node.pending.size()
            except FileNotFoundError:
                size = 0
            mtime = node.pending.mtime_ns
        elif node.record is not None:
            size = node.record.size
            mtime = node.record.date * 1_000_000_000
        else:
            size, mtime = 0, node.created_ns
        ctime = mtime
        if node.mtime_override_ns is not None:
            mtime = node.mtime_override_ns
        atime = node.atime_ns if node.atime_ns is not None else mtime
        mode = stat.S_IFREG | (perm & 0o7777)
        return Attr(node.ino, mode, 1, size, cfg.uid, cfg.gid, atime, mtime, ctime)

    def forget(self, ino: int, count: int) -> None:
        self.inodes.forget(ino, count)

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

    async def _make_pending(self, node: Node, *, truncate: bool) -> PendingFile:
        """Give ``node`` local content to change: copy-on-open, or empty for O_TRUNC."""
        if node.pending is not None:
            if truncate:
                async with node.pending.lock:
                    os.truncate(node.pending.path, 0)
                    node.pending.touch()
            return node.pending
        initial = None
        if not truncate and node.record is not None:
            initial = await self.content.ensure(node.container, node.record)
        pending = self.spool.create(node.container, node.name, node.record, initial)
        if truncate and node.record is not None and node.record.size > 0:
            pending.touch()  # emptying a non-empty file is a change
        elif node.record is not None:
            pending.uploaded_version = pending.version  # same content as the server's
        node.pending = pending
        return pending

    async def open(self, ino: int, flags: int) -> Handle:
        node = self._file(ino)
        if node.discarded:
            raise NoEntry("the file was removed")
        accmode = flags & os.O_ACCMODE
        writable = accmode in (os.O_WRONLY, os.O_RDWR)
        if writable:
            self._check_writable(node)
            await self._make_pending(node, truncate=bool(flags & os.O_TRUNC))
        pinned = None
        keep_cache = False
        if node.pending is not None:
            fd = os.open(node.pending.path, os.O_RDWR if writable else os.O_RDONLY)
        elif node.record is not None:
            opened = await self.content.open(node.container, node.record)
            fd = opened.fd
            self.content.pin(opened.path)
            pinned = opened.path
            keep_cache = True  # a server version's content never changes
        else:
            raise NoEntry("file has no content")
        handle = Handle(self._alloc_fh(), node, fd, writable, pinned, keep_cache)
        if node.pending is None and node.record is not None:
            handle.arriving = opened
        self._handles[handle.fh] = handle
        node.open_handles += 1
        return handle

    async def create(self, parent_ino: int, name: str, flags: int) -> Handle:
        parent = self.node(parent_ino)
        if not parent.type.holds_files:
            raise NotPermitted("files live only in files/ and tasks/<id>/ directories")
        self._check_writable(parent)
        problem = upload_name_error(name)
        if problem is not None:
            if "255" in problem:
                raise NameTooLong(problem)
            raise FsError(problem, errno.EILSEQ)
        if name in (".", ".."):
            raise InvalidArgument()
        state = await self._refresh_dir(parent)
        existing = self._view(state).get(name)
        if existing is not None:
            if flags & os.O_EXCL:
                raise FsError("exists", errno.EEXIST)
            return await self.open(existing, flags | os.O_TRUNC)
        node = self.inodes.new_local(
            name=name,
            parent=parent.ino,
            project_id=parent.project_id,
            task_id=parent.task_id,
        )
        node.pending = self.spool.create(parent.container, name, None)
        state.local[name] = node.ino
        log.debug("create %s -> inode %d", name, node.ino)
        fd = os.open(node.pending.path, os.O_RDWR)
        # Even O_RDONLY|O_CREAT gets a writable handle: its close decides the new file's fate.
        handle = Handle(self._alloc_fh(), node, fd, True)
        self._handles[handle.fh] = handle
        node.open_handles += 1
        return handle

    async def read(self, fh: int, offset: int, size: int) -> bytes | memoryview:
        handle = self.handle(fh)
        arriving = handle.arriving
        if arriving is None:
            return os.pread(handle.fd, size, offset)
        if handle.mapped is None:
            await arriving.wait_for(offset + size, self.config.op_timeout)
            handle.mapped = _map_complete(handle.fd, arriving)
            if handle.mapped is None:
                return os.pread(handle.fd, size, offset)
        # A complete cache file never changes: the reply is copied straight from its pages
        # (one copy and one allocation fewer per request than pread).
        return memoryview(handle.mapped)[offset : offset + size]

    async def write(self, fh: int, offset: int, data: bytes) -> int:
        handle = self.handle(fh)
        pending = handle.node.pending
        if not handle.writable or pending is None:
            raise FsError("not open for writing", errno.EBADF)
        async with pending.lock:
            written = os.pwrite(handle.fd, data, offset)
            pending.touch()
        return written

    async def flush(self, fh: int) -> None:
        """On every close(): upload a dirty file, and fail the close if that fails."""
        handle = self.handle(fh)
        node = handle.node
        if not handle.writable or node.pending is None or node.discarded:
            return
        if node.pending.dirty:
            self._relink(node)
            await self.upload(node)

    async def fsync(self, fh: int) -> None:
        await self.flush(fh)

    def release(self, fh: int) -> None:
        handle = self._handles.pop(fh, None)
        if handle is None:
            return
        handle.close()
        if handle.pinned is not None:
            self.content.unpin(handle.pinned)  # type: ignore[arg-type]
        node = handle.node
        node.open_handles -= 1
        if node.open_handles == 0:
            self._settle(node)

    def _settle(self, node: Node) -> None:
        """Drop local content that is no longer needed once the last handle is closed."""
        pending = node.pending
        if pending is None:
            return
        if node.discarded:
            self.spool.discard(pending)
            node.pending = None
        elif not pending.dirty and node.record is not None:
            data = self.spool.release_data(pending)
            self.content.adopt(node.record, data)
            node.pending = None

    # ------------------------------------------------------------------ uploads

    # ------------------------------------------------------------------ durability

    # ------------------------------------------------------------------ other mutations

    async def unlink(self, parent_ino: int, name: str) -> None:
        parent = self.node(parent_ino)
        if not parent.type.holds_files:
            raise NotPermitted("projects and tasks cannot be removed through kbfs")
        node = await self.lookup(parent_ino, name)
        if node.type is not NodeType.FILE:
            raise IsADirectory()
        self._check_writable(parent)
        if await self._waited_for_upload(node):
            # The name may show the new version now, and that is what rm must remove.
            await self.unlink(parent_ino, name)
            return
        pending = node.pending
        if pending is None:
            await self._unlink_node(parent, name, node)
            return
        async with pending.lock:  # no upload may start meanwhile
            await self._unlink_node(parent, name, node)

    async def _waited_for_upload(self, node: Node) -> bool:
        """If an upload of ``node`` is under way, wait for it to end and say so: it changes
        what names show, so the caller (rm, mv) must look at them again."""
        pending = node.pending
        if pending is None or not pending.lock.locked():
            return False
        async with pending.lock:
            pass
        return True

    async def _unlink_node(self, parent: Node, name: str, node: Node) -> None:
        log.debug("unlink %s (inode %d, file %s)", name, node.ino, id_text(node.record))
        state = self._dir_state(parent)
        record = node.record
        if record is not None:
            # The server file this entry shows or is about to replace (even if a pending move
            # or save already took it out of the listing: then check it is still that file).
            gone = True
            if self._listed(parent.container, record):
                await self._remove_remote(parent.container, record)
            else:
                gone = await self._remove_replaced(parent.container, record, node, verify=True)
            state.note_remove(record.id)
            if gone:
                state.doomed.discard(doom_key(record))
            # else: its removal is queued and it stays hidden until then
            self.stats.removals += 1
        for where, stale in node.stale:
            # Sources of a move still waiting for its upload: the user removed the result.
            await self._remove_replaced(where, stale, node, verify=True)
        node.stale = []
        if node.hides is not None:
            where, hidden = node.hides
            await self._remove_remote(where, hidden)
            self._dirs.get(where, ContainerDir()).hidden.pop(hidden.id, None)
            self._dirs.get(where, ContainerDir()).note_remove(hidden.id)
            node.hides = None
            self.stats.removals += 1
        state.local.pop(name, None)
        node.linked = False
        node.discarded = True
        if node.record is not None:
            # Never reuse this inode for that record should a listing show it again.
            self.inodes.rekey(node, ("removed", node.ino))
        self._apply_records(parent, state)
        if node.open_handles == 0:
            self._settle(node)

    async def _remove_remote(self, container: Container, record: FileRecord) -> None:
        """remove*File, and when its answer says nothing certain, look at the file itself.

        ``false`` means "no such file" or a storage error; a lost or garbled answer may hide a
        removal that happened. Either way get*File tells: gone (or the id now names another
        file) is success, still there is EIO.
        """
        try:
            await self.client.remove_file(container, record.id)
            return
        except (AuthenticationError, PermissionDenied):
            raise
        except TransportError as exc:
            if not exc.request_sent:
                raise
            failure: KanboardError = exc
        except KanboardError as exc:
            failure = exc
        try:
            current = await self.client.get_file(container, record.id)
        except NotFound:
            return  # gone: the unlink's goal is met
        if record.path and current.version_key != record.version_key:
            return  # the id now belongs to another file; ours is gone
        if isinstance(failure, NotFound):
            raise FsError(f"the server refused to remove file {record.id}", errno.EIO)
        raise failure

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
            pending = await self._make_pending(node, truncate=size == 0)
            async with pending.lock:
                if size != pending.size():
                    os.truncate(pending.path, size)
                    pending.touch()
            if fh is None and pending.dirty and not node.discarded:
                await self.upload(node)  # truncate(1) has no close() to upload on
            if fh is None and node.open_handles == 0:
                self._settle(node)
        if mode is not None:
            node.mode_override = mode & 0o7777
        if mtime_ns is not None:
            node.mtime_override_ns = mtime_ns
        if atime_ns is not None:
            node.atime_ns = atime_ns
        return self.attr(node)

    def web_url(self, node: Node) -> str | None:
        """The page of a task or project in Kanboard's web UI (derived from the endpoint)."""
        base = self.client.endpoint.removesuffix("jsonrpc.php")
        if node.task_id is not None:
            return f"{base}?controller=TaskViewController&action=show&task_id={node.task_id}"
        if node.project_id is not None:
            return f"{base}?controller=BoardViewController&action=show&project_id={node.project_id}"
        return None

    def xattrs(self, ino: int) -> dict[str, bytes]:
        """Read-only ``user.kanboard.*`` attributes: what Kanboard knows beyond the bytes."""
        node = self.node(ino)
        out: dict[str, str] = {}
        if node.type is NodeType.FILE:
            record = node.record
            if record is not None and node.pending is None:
                out["user.kanboard.id"] = str(record.id)
                out["user.kanboard.uploader"] = record.username or (
                    "" if record.user_id == 0 else str(record.user_id)
                )
                out["user.kanboard.date"] = time.strftime(
                    "%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.date)
                )
                out["user.kanboard.is_image"] = "1" if record.is_image else "0"
            url = self.web_url(node)
            if url and record is not None:
                out["user.kanboard.url"] = url
        elif node.type is NodeType.TASK:
            task = self._tasks.get(node.project_id or 0, TaskList()).tasks.get(node.task_id or 0)
            if task is not None:
                out["user.kanboard.title"] = task.title
                out["user.kanboard.status"] = "open" if task.is_active else "closed"
            out["user.kanboard.id"] = str(node.task_id)
            out["user.kanboard.url"] = self.web_url(node) or ""
        elif node.type in (NodeType.PROJECT, NodeType.PROJECT_FILES, NodeType.TASKS):
            project = self._projects.projects.get(node.project_id or 0)
            if project is not None:
                out["user.kanboard.name"] = project.name
            out["user.kanboard.id"] = str(node.project_id)
            out["user.kanboard.url"] = self.web_url(node) or ""
        return {k: v.encode("utf-8", "surrogateescape") for k, v in out.items()}

    def statfs(self) -> dict[str, int]:
        block = 4096
        total = 1 << 40  # Kanboard reports no quota: advertise plenty so copies start
        return {
            "f_bsize": block,
            "f_frsize": block,
            "f_blocks": total // block,
            "f_bfree": total // block,
            "f_bavail": total // block,
            "f_files": 1 << 32,
            "f_ffree": 1 << 31,
            "f_favail": 1 << 31,
            "f_namemax": 255,
        }

    def status(self) -> dict[str, object]:
        """A JSON-ready snapshot for ``kbfs status``: what is not on the server, and counters."""
        pending = []
        for node in self.pending_files():
            assert node.pending is not None
            pending.append(
                {
                    "path": self.path_of(node),
                    "size": _size_or_zero(node.pending),
                    "spool_file": str(node.pending.path),
                    "last_error": node.pending.last_error,
                    "local_only": self.is_scratch(node),
                }
            )
        cache = self.content.statistics()
        client = self.client.statistics()
        return {
            "server": self.client.endpoint,
            "pending_uploads": pending,
            "recovered": self.spool.recovered(),
            "cache": {
                "dir": str(self.content.root),
                "bytes": self.content.usage(),
                "limit": self.content.max_bytes,
                "downloads": cache.downloads,
                "hits": cache.hits,
                "evictions": cache.evictions,
            },
            "counters": {
                "uploads": self.stats.uploads,
                "upload_failures": self.stats.upload_failures,
                "removals": self.stats.removals,
                "listings": self.stats.listings,
                "inodes": len(self.inodes),
                "reclaimed": self.stats.reclaimed,
                "http_requests": client.http_requests,
                "calls": dict(client.calls),
            },
        }

    RECLAIM_EVERY = 60.0  # seconds between passes when the kernel forgot nothing meanwhile

    def reclaim_if_due(self) -> None:
        """Run reclaim() after the kernel forgot nodes, or once a minute (a node can also
        become unreachable without a kernel reference: a file listed, never looked at,
        removed on the server). A pass walks every node (~0.3 µs each), so passes are spaced
        by a second per 10,000 nodes: a few ms of work per second at any size."""
        now = self.clock()
        since = now - self._reclaimed_at
        mark = self.inodes.forgotten
        if since < max(2.0, len(self.inodes) / 10_000) or (
            mark == self._reclaim_mark and since < self.RECLAIM_EVERY
        ):
            return
        freed = self.reclaim()
        if freed is None:
            return  # busy: the next tick tries again
        self._reclaim_mark, self._reclaimed_at = mark, now
        if freed:
            log.debug("freed %d file node(s); %d left", freed, len(self.inodes))

    def reclaim(self) -> int | None:
        """Free the file nodes nothing can reach any more; how many were freed (None: not
        now, see below).

        Every version of every file this mount has seen gets a node, and a node that leaves
        its directory (removed, replaced, renamed, gone from the server) would otherwise stay
        until unmount: a mount that runs for months on a busy server would grow without end.
        A node goes once the kernel has forgotten it (no lookups), no handle has it open, it
        holds no unsaved bytes or pending cleanup, and no directory shows it. While an upload
        or rename is under way (they hold nodes across awaits) nothing is freed: the next
        pass does it.
        """
        if self._uploads_in_flight or any(lock.locked() for lock in self._name_locks.values()):
            return None
        # The per-name upload locks go too (one per name ever uploaded would pile up). None is
        # held, and none is about to be: an upload counts itself in flight before it takes
        # one, and the retry loop's sweep (the other user) runs in this task, not beside it.
        self._name_locks.clear()
        reachable = set(self._provisional.values())
        for entries in self._dir_handles.values():  # what a readdir still to come may reply
            reachable.update(node.ino for _, node in entries)
        for state in self._dirs.values():
            reachable.update(state.entries.values())
            reachable.update(state.local.values())
        freed = 0
        for node in self.inodes:
            if (
                node.type is NodeType.FILE
                and not node.linked
                and node.lookups == 0
                and node.open_handles == 0
                and node.pending is None
                and not node.stale
                and node.hides is None
                and node.ino not in reachable
            ):
                self.inodes.discard(node)
                freed += 1
        self.stats.reclaimed += freed
        return freed

    def pending_files(self) -> list[Node]:
        """Files whose current content has not reached the server."""
        return [n for n in self.inodes if n.pending is not None and n.pending.dirty]


def _parse_id(name: str) -> int | None:
    if not name.isascii() or not name.isdigit() or (len(name) > 1 and name[0] == "0"):
        return None
    return int(name)


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def _map_complete(fd: int, opened: Opened) -> mmap.mmap | None:
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
