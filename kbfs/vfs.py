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
import os
import stat
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn, TypeVar

import trio

from kbfs.client.api import KanboardClient
from kbfs.client.errors import (
    AuthenticationError,
    KanboardError,
    NotFound,
    PermissionDenied,
    Rejected,
    RpcError,
    ServerError,
    SourceError,
    TransportError,
)
from kbfs.client.models import Container, FileRecord, Kind, Project, Task
from kbfs.contentcache import ContentCache, Opened
from kbfs.errors import (
    AccessDenied,
    ContentUnstorable,
    Exists,
    FsError,
    InvalidArgument,
    IsADirectory,
    NameTooLong,
    NoEntry,
    NotADirectory,
    NotPermitted,
    RequestTimedOut,
    UploadFailed,
    to_errno,
)
from kbfs.inodes import ROOT_INO, InodeTable, Node, NodeType, file_key
from kbfs.names import assign_names, image_problem, upload_name_error
from kbfs.spool import PendingFile, Spool, digest

log = logging.getLogger(__name__)

T = TypeVar("T")

RENAME_EXCHANGE = 2  # linux/fs.h; pyfuse3 exposes them only as module attributes
RENAME_NOREPLACE = 1

READ_ONLY_ROLES = frozenset({"project-viewer"})

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


@dataclass(frozen=True)
class Attr:
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


@dataclass(eq=False)
class _Listing:
    """A cached server listing with its fetch time and a lock that shares refreshes."""

    fetched_at: float = -1e18
    lock: trio.Lock = field(default_factory=trio.Lock)
    failing: bool = False  # the last refresh failed: the cached listing is shown as it was


@dataclass(eq=False)
class _ContainerDir(_Listing):
    records: dict[int, FileRecord] = field(default_factory=dict)
    entries: dict[str, int] = field(default_factory=dict)  # from the server listing
    local: dict[str, int] = field(default_factory=dict)  # files that exist only here
    # Server files renamed to a scratch name (vim's "doc.txt" -> "doc.txt~"): still on the
    # server, not shown under their own name; removed once a new version of that name is
    # uploaded, or when the scratch file is removed.
    hidden: dict[int, FileRecord] = field(default_factory=dict)
    # Server files this mount has superseded or moved away and is about to remove (or retries
    # removing): never shown again, or a fresh listing would put the old version back in view.
    doomed: set[tuple[object, ...]] = field(default_factory=set)  # file_key()s
    # Creates whose answer was lost (name, time sent, size, sha256 or None): they may have
    # made a file. Resolved before the next upload of that name, or swept by the retry loop.
    lost: list[tuple[str, float, int, str | None]] = field(default_factory=list)
    ours: set[tuple[object, ...]] = field(default_factory=set)  # versions we uploaded
    # This mount's own changes, numbered: a listing requested before a change and answered
    # after it must not undo it (an upload vanishing, a removed file coming back).
    generation: int = 0
    journal: list[tuple[int, float, FileRecord | None, int]] = field(default_factory=list)

    def note_add(self, record: FileRecord) -> None:
        self.records[record.id] = record
        self._log(record, record.id)

    def note_remove(self, file_id: int) -> None:
        self.records.pop(file_id, None)
        self._log(None, file_id)

    def _log(self, record: FileRecord | None, file_id: int) -> None:
        self.generation += 1
        now = time.monotonic()
        self.journal.append((self.generation, now, record, file_id))
        if len(self.journal) > 64:
            self.journal = [e for e in self.journal if now - e[1] < 300]

    def apply_fetch(self, records: list[FileRecord], since: int) -> None:
        """Take a fetched listing, then replay our changes made while it was in flight."""
        self.records = {r.id: r for r in records}
        for gen, _when, record, file_id in self.journal:
            if gen <= since:
                continue
            if record is None:
                self.records.pop(file_id, None)
            else:
                self.records[file_id] = record


@dataclass(eq=False)
class _TaskList(_Listing):
    tasks: dict[int, Task] = field(default_factory=dict)


@dataclass(eq=False)
class _ProjectList(_Listing):
    projects: dict[int, Project] = field(default_factory=dict)
    read_only: set[int] = field(default_factory=set)


@dataclass
class VfsStats:
    uploads: int = 0
    upload_failures: int = 0
    removals: int = 0
    listings: int = 0


class Vfs:
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
        self._projects = _ProjectList()
        self._tasks: dict[int, _TaskList] = {}
        self._dirs: dict[Container, _ContainerDir] = {}
        self._handles: dict[int, Handle] = {}
        self._dir_handles: dict[int, list[tuple[str, Node]]] = {}
        self._next_fh = 1
        self._name_locks: dict[tuple[Container, str], trio.Lock] = {}
        self._uploads_in_flight = 0
        self._uploads_idle = trio.Event()
        self._uploads_idle.set()
        self._provisional: dict[tuple[Kind, int], int] = {}
        self._stale_removals: list[tuple[Container, FileRecord]] = []
        # Versions known only from an earlier mount's spool: checked before being removed.
        self._unverified: set[tuple[object, ...]] = set()
        # Set by the FUSE adapter: tell the kernel a name no longer means what it cached.
        self.invalidate_entry: Callable[[int, str], None] | None = None
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

    def _fresh(self, listing: _Listing) -> bool:
        return self.clock() - listing.fetched_at < self.config.dir_ttl

    def _dir_state(self, node: Node) -> _ContainerDir:
        container = node.container
        state = self._dirs.get(container)
        if state is None:
            state = self._dirs[container] = _ContainerDir()
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

    # ------------------------------------------------------------------ listings

    async def _refresh_projects(self, force: bool = False) -> None:
        listing = self._projects
        if not force and self._fresh(listing):
            return
        async with listing.lock:
            if not force and self._fresh(listing):
                return
            try:
                projects = await self._bounded(self.client.get_projects())
            except (TransportError, ServerError, RequestTimedOut) as exc:
                if self._serve_stale(listing, exc, "the project list"):
                    return
                raise
            read_only: set[int] = set()
            if self.config.user_id is not None and projects:
                calls = [
                    ("getProjectUserRole", {"project_id": p.id, "user_id": self.config.user_id})
                    for p in projects
                ]
                try:
                    roles = await self.client.batch(calls)
                except KanboardError as exc:
                    log.warning("could not read project roles (%s); assuming writable", exc)
                    roles = []
                for project, role in zip(projects, roles, strict=False):
                    if isinstance(role, str) and role in READ_ONLY_ROLES:
                        read_only.add(project.id)
            self.stats.listings += 1
            listing.projects = {p.id: p for p in projects}
            listing.read_only = read_only
            listing.fetched_at = self.clock()
            listing.failing = False
            for project in projects:
                self._project_node(project.id)

    async def refresh(self, ino: int) -> None:
        """Fetch a directory's listing now (after a change made behind this mount's back)."""
        node = self.node(ino)
        if node.type.holds_files:
            await self._refresh_dir(node, force=True)
        elif node.type is NodeType.TASKS and node.project_id is not None:
            await self._refresh_tasks(node.project_id, force=True)
        elif node.type is NodeType.PROJECTS:
            await self._refresh_projects(force=True)

    async def _bounded(self, call: Awaitable[T]) -> T:
        """A listing call, failed with EIO if the server has not answered within ``timeout``
        (retries included): a process must never hang on a server that went away."""
        with trio.move_on_after(self.config.op_timeout) as scope:
            return await call
        assert scope.cancelled_caught
        raise RequestTimedOut(f"no answer from the server within {self.config.op_timeout:g} s")

    def _serve_stale(self, listing: _Listing, exc: Exception, what: str) -> bool:
        """Keep serving a cached listing while the server is unreachable or failing."""
        if listing.fetched_at < -1e17:
            return False
        log.warning("could not refresh %s (%s); showing the cached listing", what, exc)
        listing.failing = True
        # Ask again after a short pause, not on every lookup.
        listing.fetched_at = self.clock() - self.config.dir_ttl + min(self.config.dir_ttl, 2.0)
        return True

    def _project_node(self, project_id: int) -> Node:
        return self.inodes.ensure(
            ("project", project_id),
            NodeType.PROJECT,
            name=str(project_id),
            parent=self.projects_node.ino,
            project_id=project_id,
        )

    async def _refresh_tasks(self, project_id: int, force: bool = False) -> _TaskList:
        listing = self._tasks.setdefault(project_id, _TaskList())
        if not force and self._fresh(listing):
            return listing
        async with listing.lock:
            if not force and self._fresh(listing):
                return listing
            try:
                tasks = await self._bounded(self.client.get_all_tasks_any_status(project_id))
            except (TransportError, ServerError, RequestTimedOut) as exc:
                if self._serve_stale(listing, exc, f"the tasks of project {project_id}"):
                    return listing
                raise
            self.stats.listings += 1
            listing.tasks = {t.id: t for t in tasks if t.project_id == project_id}
            listing.fetched_at = self.clock()
            listing.failing = False
        return listing

    def _task_node(self, project_id: int, task_id: int) -> Node:
        tasks_dir = self._tasks_dir_node(project_id)
        return self.inodes.ensure(
            ("task", project_id, task_id),
            NodeType.TASK,
            name=str(task_id),
            parent=tasks_dir.ino,
            project_id=project_id,
            task_id=task_id,
        )

    def _files_dir_node(self, project_id: int) -> Node:
        return self.inodes.ensure(
            ("files", project_id),
            NodeType.PROJECT_FILES,
            name="files",
            parent=self._project_node(project_id).ino,
            project_id=project_id,
        )

    def _titles_dir_node(self, project_id: int) -> Node:
        return self.inodes.ensure(
            ("tasks-by-title", project_id),
            NodeType.TASKS_BY_TITLE,
            name="tasks-by-title",
            parent=self._project_node(project_id).ino,
            project_id=project_id,
        )

    def _link(self, key: tuple[object, ...], parent: Node, name: str, target: str) -> Node:
        """A symbolic link of the by-name views; its name follows the current title."""
        node = self.inodes.ensure(
            key, NodeType.LINK, parent=parent.ino, project_id=parent.project_id
        )
        node.name = name
        node.link_target = target
        return node

    def readlink(self, ino: int) -> str:
        node = self.node(ino)
        if node.type is not NodeType.LINK or node.link_target is None:
            raise InvalidArgument("not a symbolic link")
        return node.link_target

    def _tasks_dir_node(self, project_id: int) -> Node:
        return self.inodes.ensure(
            ("tasks", project_id),
            NodeType.TASKS,
            name="tasks",
            parent=self._project_node(project_id).ino,
            project_id=project_id,
        )

    async def _refresh_dir(self, dir_node: Node, force: bool = False) -> _ContainerDir:
        state = self._dir_state(dir_node)
        if not force and self._fresh(state):
            return state
        async with state.lock:
            if not force and self._fresh(state):
                return state
            since = state.generation
            try:
                records = await self._bounded(self.client.list_files(dir_node.container))
            except (TransportError, ServerError, RequestTimedOut) as exc:
                if self._serve_stale(state, exc, self.path_of(dir_node)):
                    return state
                raise
            self.stats.listings += 1
            state.apply_fetch(records, since)
            state.fetched_at = self.clock()
            state.failing = False
            self._apply_records(dir_node, state)
        return state

    def _apply_records(self, dir_node: Node, state: _ContainerDir) -> None:
        """Rebuild a directory's entries from its server records (see kbfs.names)."""
        before = self._view(state)
        self._rebuild_entries(dir_node, state)
        if self.invalidate_entry is not None:
            after = self._view(state)
            for name, ino in before.items():
                if after.get(name) != ino:
                    # The kernel may still map this name to the old inode for entry_timeout.
                    self.invalidate_entry(dir_node.ino, name)

    def _rebuild_entries(self, dir_node: Node, state: _ContainerDir) -> None:
        named = assign_names(
            (r.id, r.name, r)
            for r in state.records.values()
            if not _same_version(state.hidden.get(r.id), r) and file_key(r) not in state.doomed
        )
        entries: dict[str, int] = {}
        for name, record in named.items():
            node = self._node_for_record(dir_node, record)
            node.name = name
            node.linked = True
            entries[name] = node.ino
        kept = set(entries.values())
        for ino in state.entries.values():
            if ino in kept:
                continue
            gone = self.inodes.get(ino)
            if gone is None:
                continue
            if gone.pending is not None and gone.linked and not gone.discarded:
                # Deleted on the server while it holds unsaved local content: keep it as a
                # new local file so the bytes stay visible and get uploaded.
                gone.record = None
                state.local.setdefault(gone.name, gone.ino)
            else:
                gone.linked = False
        state.entries = entries

    def _node_for_record(self, dir_node: Node, record: FileRecord) -> Node:
        provisional = self._provisional.pop((record.kind, record.id), None)
        if provisional is not None:
            node = self.inodes.get(provisional)
            if node is not None and self.inodes.by_key(file_key(record)) is None:
                self.inodes.rekey(node, file_key(record))
                node.record = record
        node = self.inodes.ensure(
            file_key(record),
            NodeType.FILE,
            name=record.name,
            parent=dir_node.ino,
            project_id=dir_node.project_id,
            task_id=dir_node.task_id,
            record=record,
        )
        if node.pending is None:
            node.record = record  # the latest metadata (user names can change)
        return node

    async def _prefetch(self, dir_nodes: list[Node]) -> None:
        """Fetch the stale listings of many file directories in batched requests.

        Whoever lists ``tasks/`` (``find``, ``ls -R``, ``du``, a file manager) usually looks into
        every task next; one batch request instead of one request per task makes a tree walk
        cost a handful of requests. Failures are left for the per-directory fetch to report.
        """
        stale = [n for n in dir_nodes if not self._fresh(self._dir_state(n))]
        if len(stale) < 2:
            return
        since = {n.ino: self._dir_state(n).generation for n in stale}
        try:
            results = await self.client.list_files_many([n.container for n in stale])
        except KanboardError as exc:
            log.debug("batched listing failed, directories will be fetched one by one: %s", exc)
            return
        now = self.clock()
        for dir_node, result in zip(stale, results, strict=True):
            if isinstance(result, BaseException):
                continue
            state = self._dir_state(dir_node)
            if self._fresh(state) or state.lock.locked():
                continue
            state.apply_fetch(result, since[dir_node.ino])
            state.fetched_at = now
            self._apply_records(dir_node, state)
        self.stats.listings += 1

    def _view(self, state: _ContainerDir) -> dict[str, int]:
        view = dict(state.entries)
        view.update(state.local)
        return view

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
    def _missing(listing: _Listing, name: str) -> NoReturn:
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
        fd = os.open(node.pending.path, os.O_RDWR)
        # Even O_RDONLY|O_CREAT gets a writable handle: its close decides the new file's fate.
        handle = Handle(self._alloc_fh(), node, fd, True)
        self._handles[handle.fh] = handle
        node.open_handles += 1
        return handle

    async def read(self, fh: int, offset: int, size: int) -> bytes:
        handle = self.handle(fh)
        if handle.arriving is not None:
            await handle.arriving.wait_for(offset + size, self.config.op_timeout)
        return os.pread(handle.fd, size, offset)

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
        os.close(handle.fd)
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

    def _name_lock(self, container: Container, name: str) -> trio.Lock:
        key = (container, name)
        lock = self._name_locks.get(key)
        if lock is None:
            lock = self._name_locks[key] = trio.Lock()
        return lock

    async def upload(self, node: Node) -> None:
        """Send a dirty file's content with create*File; then drop the version it replaces.

        Order matters: the new file is created and confirmed (get*File) before the old one is
        removed, so a failure at any point leaves at least one complete copy on the server.
        On failure the bytes stay in the spool (fsync'ed, with what they are for) and the error
        propagates to close(). A create whose answer was lost is looked for on the server
        before anything is sent again, so no file is ever uploaded twice.
        """
        pending = node.pending
        if pending is None:
            return
        container = node.container
        server_name = node.record.name if node.record is not None else node.name
        if self._uploads_in_flight == 0:
            self._uploads_idle = trio.Event()
        self._uploads_in_flight += 1
        try:
            async with self._name_lock(container, server_name), pending.lock:
                if not pending.dirty:
                    return
                size = pending.size()
                if size == 0:
                    log.info("%s is empty: kept in this mount only", self.path_of(node))
                    self.spool.sync(pending)
                    return
                if node.record is None and self.is_local_name(node.name):
                    self.spool.sync(pending)
                    return  # a scratch file: never uploaded (see DEFAULT_LOCAL_NAMES)
                if size == 1 and pending.path.read_bytes() == b"0":
                    raise ContentUnstorable(
                        "Kanboard cannot store a file whose whole content is '0'"
                    )
                with open(pending.path, "rb") as head:
                    problem = image_problem(server_name, head.read(16))
                if problem is not None:
                    raise ContentUnstorable(problem)
                version = pending.version
                record = await self._resolve_lost(node, container, server_name, size)
                if record is None:
                    # Written down before sending: a crash mid-request leaves a trace.
                    attempt = (time.time(), size, None)
                    pending.lost.append(attempt)
                    self.spool.describe(pending, container, server_name, node.record)
                    try:
                        with open(pending.path, "rb") as source:
                            new_id = await self.client.create_file(
                                container, server_name, source, size
                            )
                    except (
                        AuthenticationError,
                        PermissionDenied,
                        Rejected,
                        RpcError,
                        SourceError,
                    ):
                        pending.lost.remove(attempt)  # answered: nothing was created
                        raise
                    except TransportError as exc:
                        pending.lost.remove(attempt)
                        if exc.request_sent:
                            await self._note_lost(pending, container, server_name, attempt)
                        raise
                    except Exception:
                        # A 500, a garbled answer: the file may exist. Remember what was sent.
                        pending.lost.remove(attempt)
                        await self._note_lost(pending, container, server_name, attempt)
                        raise
                    pending.lost.remove(attempt)
                    record = await self._confirm(container, new_id, server_name, size)
                pending.uploaded_version = version
                pending.last_error = None
                pending.failures = 0
                old = node.record
                self._attach(node, record, old)
                self.stats.uploads += 1
                log.info("uploaded %s (%d bytes) as file %d", self.path_of(node), size, record.id)
                replaced = [(container, old)] if old is not None else []
                replaced += node.stale
                node.stale = []
                replaced += self._unhide(self._dir_state(self.node(node.parent)), server_name)
                replaced = [
                    (c, r) for c, r in replaced if not (c == container and r.id == record.id)
                ]
                if not pending.dirty:
                    self.spool.release_data(pending)  # the description is no longer needed
            for where, stale in replaced:
                await self._remove_replaced(where, stale, node)
            if node.open_handles == 0:
                self._settle(node)  # a background upload: nobody will close this file
        except BaseException as exc:
            if isinstance(exc, Exception):
                self.stats.upload_failures += 1
                pending.last_error = str(exc)
                pending.failures += 1
                pending.next_retry = self.clock() + min(30.0, 2.0 * 2**pending.failures)
                pending.permanent = _is_permanent(exc, pending.failures)
                try:
                    self.spool.describe(pending, container, server_name, node.record)
                    self.spool.sync(pending)
                except OSError as disk:
                    log.error("could not record the spool entry of %s: %s", pending.path, disk)
                log.error(
                    "upload of %s failed: %s; the %d bytes are kept in %s",
                    self.path_of(node),
                    exc,
                    _size_or_zero(pending),
                    pending.path,
                )
                raise UploadFailed(str(exc), to_errno(exc)) from exc
            raise
        finally:
            self._uploads_in_flight -= 1
            if self._uploads_in_flight == 0:
                self._uploads_idle.set()

    async def _digest(self, pending: PendingFile) -> str:
        return await trio.to_thread.run_sync(digest, pending.path)

    async def _note_lost(
        self,
        pending: PendingFile,
        container: Container,
        name: str,
        attempt: tuple[float, int, str | None],
    ) -> None:
        entry = (attempt[0], attempt[1], await self._digest(pending))
        pending.lost.append(entry)
        self._state_of(container).lost.append((name, *entry))

    async def _resolve_lost(
        self, node: Node | None, container: Container, name: str, size: int
    ) -> FileRecord | None:
        """After creates of ``name`` whose answers were lost: adopt the file that holds the
        current content (if ``node`` is given), and remove the others — files made by
        attempts that failed. One listing call, and only when there is something to resolve.

        A file counts as made by a lost attempt when it has that name and size, is dated no
        earlier than the attempt, and is not one this mount created and confirmed.
        """
        state = self._state_of(container)
        pending = node.pending if node is not None else None
        entries = [e for e in state.lost if e[0] == name]
        if pending is not None:
            entries += [(name, *e) for e in pending.lost if (name, *e) not in entries]
        if not entries:
            return None
        records = await self.client.list_files(container)
        keep = set(state.ours)
        if node is not None and node.record is not None:
            keep.add(file_key(node.record))
        current: str | None = None
        adopt = None
        for _name, started, lost_size, lost_digest in sorted(entries, key=lambda e: -e[1]):
            candidates = [
                r
                for r in records
                if r.name == name
                and r.size == lost_size
                and r.date >= int(started) - 1
                and file_key(r) not in keep
            ]
            if not candidates:
                continue
            found = max(candidates, key=lambda r: (r.date, r.id))
            keep.add(file_key(found))
            same = pending is not None and lost_size == size
            if same and lost_digest is not None:
                assert pending is not None
                current = current or await self._digest(pending)
                same = current == lost_digest
            if same and adopt is None:
                adopt = found
                log.info("the lost upload of %s did arrive: file %d", name, found.id)
            else:
                log.info(
                    "removing file %d: made by an upload of %s whose answer was lost",
                    found.id,
                    name,
                )
                state.doomed.add(file_key(found))
                self._stale_removals.append((container, found))
        state.lost = [e for e in state.lost if e[0] != name]
        if pending is not None:
            pending.lost = []
        return adopt

    async def _sweep_lost(self) -> None:
        """Resolve lost attempts of names nobody is uploading any more (removed, renamed)."""
        for container, state in list(self._dirs.items()):
            for name in {e[0] for e in state.lost}:
                busy = any(
                    n.pending is not None and n.pending.dirty and not n.discarded
                    for n in (self.inodes.get(i) for i in self._view(state).values())
                    if n is not None and (n.record.name if n.record else n.name) == name
                )
                if busy:
                    continue
                with contextlib.suppress(KanboardError):
                    await self._resolve_lost(None, container, name, -1)

    async def _confirm(
        self, container: Container, file_id: int, name: str, size: int
    ) -> FileRecord:
        """The new file's server record: one get*File call, never a re-listing."""
        try:
            record = await self.client.get_file(container, file_id)
        except KanboardError as exc:
            log.warning("file %d was uploaded but could not be read back: %s", file_id, exc)
            record = FileRecord(
                kind=container.kind,
                id=file_id,
                name=name,
                size=size,
                date=int(time.time()),
                is_image=False,
                path="",
                etag=None,
                project_id=container.project_id if container.task_id is None else None,
                task_id=container.task_id,
                user_id=0,
            )
            self._provisional[(record.kind, record.id)] = -1  # replaced with the ino below
        if record.size != size:
            log.warning(
                "file %d: server reports %d bytes, %d were sent (same-second name collision?)",
                file_id,
                record.size,
                size,
            )
        return record

    def _attach(self, node: Node, record: FileRecord, old: FileRecord | None) -> None:
        """Make ``node`` stand for the freshly uploaded ``record`` in its directory."""
        parent = self.node(node.parent)
        state = self._dir_state(parent)
        if (record.kind, record.id) in self._provisional:
            self._provisional[(record.kind, record.id)] = node.ino
        twin = self.inodes.by_key(file_key(record))
        if twin is not None and twin is not node:
            # A listing showed this very upload before we knew it was ours (a lost answer):
            # this node, which holds the content, becomes the file.
            self.inodes.rekey(twin, ("superseded", twin.ino))
            twin.linked = False
        self.inodes.rekey(node, file_key(record))
        node.record = record
        if old is not None:
            state.note_remove(old.id)
        state.note_add(record)
        state.ours.add(file_key(record))
        state.local.pop(node.name, None)
        self._apply_records(parent, state)

    async def _remove_replaced(
        self, container: Container, old: FileRecord, node: Node | None, *, verify: bool = False
    ) -> None:
        """Remove a server version that a confirmed upload has superseded.

        If that fails, the new content is safe anyway; the old version stays visible and its
        removal is retried in the background (after checking it is still the same file).
        """
        try:
            if verify or not old.path or file_key(old) in self._unverified:
                # Known only from a spool entry, or queued a while ago: the id may have been
                # reused since (API-FACTS §7), so remove it only if it is still that file.
                try:
                    current = await self.client.get_file(container, old.id)
                except NotFound:
                    current = None
                if current is None or file_key(current) != file_key(old):
                    self._forget_record(container, old)
                    return
            await self._remove_remote(container, old)
            self.stats.removals += 1
            log.debug("removed superseded %s file %d (%r)", old.kind.value, old.id, old.name)
        except KanboardError as exc:
            log.warning(
                "%s: the superseded file %d could not be removed yet (%s); will retry",
                self.path_of(node) if node is not None else container,
                old.id,
                exc,
            )
            if (container, old) not in self._stale_removals:
                self._stale_removals.append((container, old))
            self._state_of(container).doomed.add(file_key(old))
            self._dirs.get(container, _ContainerDir()).fetched_at = -1e18
            return
        self._forget_record(container, old)

    def _state_of(self, container: Container) -> _ContainerDir:
        state = self._dirs.get(container)
        if state is None:
            state = self._dirs[container] = _ContainerDir()
        return state

    def _forget_record(self, container: Container, old: FileRecord) -> None:
        state = self._dirs.get(container)
        if state is not None:
            state.doomed.discard(file_key(old))
        if state is not None and old.id in state.records:
            state.note_remove(old.id)
            dir_ino = self._container_dir_ino(container)
            self._apply_records(self.node(dir_ino), state)

    def _unhide(self, state: _ContainerDir, server_name: str) -> list[tuple[Container, FileRecord]]:
        """Hidden server files superseded by a new upload of their name."""
        out = []
        for record in [r for r in state.hidden.values() if r.name == server_name]:
            del state.hidden[record.id]
            holder = self._hider(record)
            if holder is not None and holder.hides is not None:
                out.append((holder.hides[0], record))
                holder.hides = None
        return out

    def _hider(self, record: FileRecord) -> Node | None:
        for node in self.inodes:
            if node.hides is not None and node.hides[1] is record:
                return node
        return None

    def _container_dir_ino(self, container: Container) -> int:
        if container.task_id is None:
            return self._files_dir_node(container.project_id).ino
        return self._task_node(container.project_id, container.task_id).ino

    # ------------------------------------------------------------------ durability

    def start_background(self, nursery: trio.Nursery) -> None:
        """Start what runs beside request handling: downloads that outlive the request that
        started them, and the retry of failed uploads (including an earlier mount's)."""
        self.content.start_downloads_in(nursery)
        self.load_spool()
        nursery.start_soon(self.run_retries)

    def load_spool(self) -> int:
        """Take over the pending uploads an earlier mount of this server left behind.

        They show in their directories at once (with their unsaved content) and the retry loop
        uploads them. Of several unsaved versions of one file, the newest is kept for upload
        and the older ones go to the recovery folder (never deleted).
        """
        leftovers = sorted(self.spool.load_leftovers(), key=lambda e: e[0].created)
        adopted = 0
        for pending, meta in leftovers:
            project_id = int(meta["project_id"])
            task_id = None if meta.get("task_id") is None else int(meta["task_id"])
            if task_id is None:
                dir_node = self._files_dir_node(project_id)
            else:
                dir_node = self._task_node(project_id, task_id)
            container = dir_node.container
            state = self._dir_state(dir_node)
            name = str(meta["name"])
            older = self.inodes.get(state.local.get(name, 0))
            if older is not None and older.pending is not None:
                self._recover(older, "a newer unsaved version of the same file was found")
            replaces = None
            if meta.get("replaces_file_id") is not None:
                replaces = FileRecord(
                    kind=container.kind,
                    id=int(meta["replaces_file_id"]),
                    name=str(meta.get("replaces_name") or name),
                    size=int(meta.get("replaces_size") or 0),
                    date=int(meta.get("replaces_date") or 0),
                    is_image=False,
                    path=str(meta.get("replaces_path") or ""),
                    etag=meta.get("replaces_etag"),
                    project_id=project_id if task_id is None else None,
                    task_id=task_id,
                    user_id=0,
                )
            node = self.inodes.new_local(
                name=name, parent=dir_node.ino, project_id=project_id, task_id=task_id
            )
            node.pending = pending
            node.record = replaces
            if replaces is not None:
                self._unverified.add(file_key(replaces))
            state.local[name] = node.ino
            state.lost += [(name, *entry) for entry in pending.lost]
            adopted += 1
            log.warning(
                "found an unsaved file from an earlier mount: %s (%d bytes); uploading it",
                self.path_of(node),
                _size_or_zero(pending),
            )
        for orphan in self.spool.leftovers():
            if not orphan.with_suffix(".json").exists():
                orphan.unlink(missing_ok=True)  # uploaded, or never described: nothing to keep
        return adopted

    async def run_retries(self, interval: float = 2.0) -> None:
        """Retry failed uploads in the background, with backoff, while mounted."""
        while True:
            await trio.sleep(interval)
            await self.retry_once()

    async def retry_once(self) -> None:
        now = self.clock()
        await self._sweep_lost()
        stale, self._stale_removals = self._stale_removals, []
        for container, record in stale:
            await self._remove_replaced(container, record, None, verify=True)
        for node in self.pending_files():
            pending = node.pending
            if pending is None or node.discarded:
                continue
            if any(h.node is node and h.writable for h in self._handles.values()):
                continue  # its writer's close() uploads it
            if node.record is None and self.is_local_name(node.name):
                continue
            if _size_or_zero(pending) == 0:
                continue
            if not pending.permanent and pending.next_retry > now:
                continue
            if not pending.permanent:
                self._relink(node)
                # upload() logs a failure and schedules the next attempt itself.
                with contextlib.suppress(FsError):
                    await self.upload(node)
            if node.pending is not None and node.pending.permanent:
                self._recover(node, node.pending.last_error or "refused by the server")

    def _recover(self, node: Node, reason: str) -> None:
        """Move bytes the server will never take to the recovery folder, out of the mount."""
        pending = node.pending
        if pending is None:
            return
        container = node.container
        meta = {
            "server": self.client.endpoint,
            "project_id": container.project_id,
            "task_id": container.task_id,
            "name": node.name,
            "path": self.path_of(node),
        }
        target = self.spool.recover(pending, node.name, reason, meta)
        stale_before = list(node.stale)
        for where, stale in node.stale:  # never superseded after all: show them again
            self._state_of(where).doomed.discard(file_key(stale))
        node.stale = []
        if node.record is not None:
            self._state_of(container).doomed.discard(file_key(node.record))
        log.error(
            "%s cannot be stored on the server (%s); its bytes were moved to %s",
            self.path_of(node),
            reason,
            target,
        )
        node.pending = None
        parent = self.node(node.parent)
        state = self._dir_state(parent)
        for name, ino in list(state.local.items()):
            if ino == node.ino:
                del state.local[name]
        node.linked = False
        # The versions it was to replace are shown again (a server file's node relinks).
        self._apply_records(parent, state)
        for where in {c for c, _ in stale_before}:
            self._apply_records(self.node(self._container_dir_ino(where)), self._state_of(where))

    async def wait_uploads_idle(self, timeout: float) -> bool:
        with trio.move_on_after(timeout):
            await self._uploads_idle.wait()
            return True
        return False

    # ------------------------------------------------------------------ other mutations

    async def unlink(self, parent_ino: int, name: str) -> None:
        parent = self.node(parent_ino)
        if not parent.type.holds_files:
            raise NotPermitted("projects and tasks cannot be removed through kbfs")
        node = await self.lookup(parent_ino, name)
        if node.type is not NodeType.FILE:
            raise IsADirectory()
        self._check_writable(parent)
        state = self._dir_state(parent)
        record = node.record
        if record is not None:
            # The server file this entry shows or is about to replace (even if a pending move
            # or save already took it out of the listing).
            await self._remove_remote(parent.container, record)
            state.note_remove(record.id)
            state.doomed.discard(file_key(record))
            self.stats.removals += 1
        for where, stale in node.stale:
            # Sources of a move still waiting for its upload: the user removed the result.
            await self._remove_replaced(where, stale, node, verify=True)
        node.stale = []
        if node.hides is not None:
            where, hidden = node.hides
            await self._remove_remote(where, hidden)
            self._dirs.get(where, _ContainerDir()).hidden.pop(hidden.id, None)
            self._dirs.get(where, _ContainerDir()).note_remove(hidden.id)
            node.hides = None
            self.stats.removals += 1
        state.local.pop(name, None)
        self._apply_records(parent, state)
        node.linked = False
        node.discarded = True
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

    async def rename(
        self, parent_old: int, name_old: str, parent_new: int, name_new: str, flags: int
    ) -> None:
        """Kanboard has no rename: upload under the new name at the target, then remove the
        source (and a replaced target), each only once the upload is confirmed.

        A file still open for writing is moved at once in the mount; its upload happens under
        the new name when the writers close, and the source is removed after that (the
        ``.goutputstream-XXXXXX`` pattern). A file that exists only here just moves.
        """
        if flags & RENAME_EXCHANGE:
            raise InvalidArgument("Kanboard cannot exchange two files atomically")
        src_dir, dst_dir = self.node(parent_old), self.node(parent_new)
        node = await self.lookup(parent_old, name_old)
        if node.type is not NodeType.FILE:
            raise NotPermitted("projects and tasks cannot be renamed through kbfs")
        if not dst_dir.type.holds_files:
            raise NotPermitted("files live only in files/ and tasks/<id>/ directories")
        self._check_writable(src_dir)
        self._check_writable(dst_dir)
        problem = upload_name_error(name_new)
        if problem is not None:
            raise NameTooLong(problem) if "255" in problem else FsError(problem, errno.EILSEQ)
        dst_state = await self._refresh_dir(dst_dir)
        target_ino = self._view(dst_state).get(name_new)
        target = self.inodes.get(target_ino) if target_ino is not None else None
        if target is node:
            return
        if target is not None:
            if flags & RENAME_NOREPLACE:
                raise Exists()
            if target.type is not NodeType.FILE:
                raise IsADirectory()
        src_state = self._dir_state(src_dir)
        src_container, source_record = src_dir.container, node.record
        writers = any(h.node is node and h.writable for h in self._handles.values())
        if node.hides is not None and not self.is_local_name(name_new):
            # A scratch copy of a server file gets a real name again: it supersedes the file.
            where, hidden = node.hides
            node.hides = None
            self._dirs.get(where, _ContainerDir()).hidden.pop(hidden.id, None)
            node.stale.append((where, hidden))
        if (
            source_record is not None
            and self.is_local_name(name_new)
            and (node.pending is None or not node.pending.dirty)
            and (target is None or target.record is None)
        ):
            # vim's backup rename ("doc.txt" -> "doc.txt~"): keep the server file where it is,
            # out of sight, and give the scratch name a local copy of its content.
            await self._make_pending(node, truncate=False)
            assert node.pending is not None
            if target is not None:
                self._detach(target, dst_dir, dst_state)
                self._drop_local(target)
            src_state.hidden[source_record.id] = source_record
            self._detach(node, src_dir, src_state)
            node.hides = (src_container, source_record)
            node.record = None
            self.inodes.rekey(node, ("moved", node.ino))
            self._place(node, dst_dir, dst_state, name_new)
            return
        if writers:
            # Still open for writing: move it now; its writers' close uploads it under the
            # new name, and that upload removes what it supersedes (rclone does the same).
            assert node.pending is not None
            self._detach(node, src_dir, src_state)
            if source_record is not None:
                node.stale.append((src_container, source_record))
            node.record = None
            if target is not None:
                self._detach(target, dst_dir, dst_state)
                if target.record is not None:
                    node.record = target.record  # replaced once the upload is confirmed
                node.stale += target.stale
                target.stale = []
                self._drop_local(target)
            self.inodes.rekey(node, ("moved", node.ino))
            self._place(node, dst_dir, dst_state, name_new)
            self.spool.describe(node.pending, dst_dir.container, name_new, node.record)
            return
        await self._rename_now(node, src_dir, dst_dir, name_new, target)

    async def _rename_now(
        self, node: Node, src_dir: Node, dst_dir: Node, name_new: str, target: Node | None
    ) -> None:
        """Upload the content at the target first, through a staging node that is in no
        view; only once that is confirmed does the moved node take its place and the source
        (and a replaced target) go. A failure changes nothing the user can see (POSIX)."""
        src_container, dst_container = src_dir.container, dst_dir.container
        src_state, dst_state = self._dir_state(src_dir), self._dir_state(dst_dir)
        source_record = node.record
        replaced = target.record if target is not None else None
        if node.pending is not None:
            content = node.pending.path
        else:
            assert source_record is not None
            content = await self.content.ensure(src_container, source_record)
        if _size_or_zero_path(content) == 0 or self.is_local_name(name_new):
            # Nothing Kanboard could take (empty, or a scratch name): it simply moves here.
            self._detach(node, src_dir, src_state)
            if source_record is not None:
                src_state.hidden[source_record.id] = source_record
                node.hides = (src_container, source_record)
            if target is not None:
                self._detach(target, dst_dir, dst_state)
                self._drop_local(target)
            node.record = None
            self.inodes.rekey(node, ("moved", node.ino))
            self._place(node, dst_dir, dst_state, name_new)
            return
        stage = self.inodes.new_local(
            name=name_new,
            parent=dst_dir.ino,
            project_id=dst_dir.project_id,
            task_id=dst_dir.task_id,
        )
        stage.linked = False
        stage.record = replaced
        stage.pending = self.spool.create(dst_container, name_new, replaced, content)
        stage.pending.touch()
        if source_record is not None:
            stage.stale.append((src_container, source_record))
        if node.hides is not None:
            stage.stale.append(node.hides)
        # What the source and the target were already due to supersede goes with them.
        stage.stale += node.stale
        if target is not None:
            stage.stale += target.stale
        try:
            await self.upload(stage)
        except BaseException:
            await self._abandon_stage(stage)
            raise
        record = stage.record
        assert record is not None and record is not replaced
        # Confirmed: the moved node (the inode the kernel now shows at the new name) takes
        # the staging node's identity.
        node.hides = None
        self._detach(node, src_dir, src_state)
        if source_record is not None and (src_container, source_record) not in (
            self._stale_removals
        ):
            # Already removed by the upload: nothing left to hide (a reused id with the same
            # name, size and second would otherwise stay hidden).
            src_state.doomed.discard(file_key(source_record))
        if target is not None:
            self._detach(target, dst_dir, dst_state)
            self._drop_local(target)
        if node.pending is not None:
            self.spool.discard(node.pending)
            node.pending = None
        node.stale = []
        if target is not None:
            target.stale = []
        if stage.pending is not None:  # not settled yet: its bytes are the new content
            self.content.adopt(record, self.spool.release_data(stage.pending))
            stage.pending = None
        stage.discarded = True
        self.inodes.rekey(stage, ("staged", stage.ino))
        node.record = record
        self.inodes.rekey(node, file_key(record))
        node.parent, node.project_id, node.task_id = (
            dst_dir.ino,
            dst_dir.project_id,
            dst_dir.task_id,
        )
        node.linked = True
        self._apply_records(dst_dir, dst_state)

    async def _abandon_stage(self, stage: Node) -> None:
        """A rename's upload failed: drop the staged copy (the source still has the bytes).
        What a lost answer may have created at the target is swept by the retry loop."""
        pending = stage.pending
        stage.discarded = True
        stage.pending = None
        if pending is not None:
            self.spool.discard(pending)

    def _detach(self, node: Node, dir_node: Node, state: _ContainerDir) -> None:
        """Take ``node`` out of a directory's view (server records and local names)."""
        node.linked = False
        if node.record is not None:
            state.note_remove(node.record.id)
            state.doomed.add(file_key(node.record))  # until its removal is confirmed
        for name, ino in list(state.local.items()):
            if ino == node.ino:
                del state.local[name]
        self._apply_records(dir_node, state)
        node.linked = False

    def _place(self, node: Node, dir_node: Node, state: _ContainerDir, name: str) -> None:
        node.parent = dir_node.ino
        node.project_id = dir_node.project_id
        node.task_id = dir_node.task_id
        node.name = name
        node.linked = True
        state.local[name] = node.ino

    def _relink(self, node: Node) -> None:
        """Show unsaved content again that lost its entry without the user removing it (the
        server file it replaces was deleted elsewhere, or renamed by the duplicate rule)."""
        if node.linked or node.discarded or node.pending is None:
            return
        parent = self.node(node.parent)
        state = self._dir_state(parent)
        node.record = (
            None if node.record is None or node.record.id not in state.records else (node.record)
        )
        state.local[node.name] = node.ino
        node.linked = True
        log.info("%s: unsaved content shown again under its name", self.path_of(node))

    def _drop_local(self, node: Node) -> None:
        """A node replaced by a rename: its local content goes once nobody has it open."""
        node.linked = False
        node.discarded = True
        if node.open_handles == 0:
            self._settle(node)

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
            task = self._tasks.get(node.project_id or 0, _TaskList()).tasks.get(node.task_id or 0)
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
                    "local_only": node.record is None and self.is_local_name(node.name),
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
                "http_requests": client.http_requests,
                "calls": dict(client.calls),
            },
        }

    def pending_files(self) -> list[Node]:
        """Files whose current content has not reached the server."""
        return [n for n in self.inodes if n.pending is not None and n.pending.dirty]


def _parse_id(name: str) -> int | None:
    if not name.isascii() or not name.isdigit() or (len(name) > 1 and name[0] == "0"):
        return None
    return int(name)


def _is_permanent(exc: BaseException, failures: int) -> bool:
    """Whether retrying an upload cannot help: the bytes go to the recovery folder instead."""
    if isinstance(exc, UploadFailed) and exc.__cause__ is not None:
        exc = exc.__cause__
    if isinstance(exc, ContentUnstorable | Rejected | PermissionDenied):
        return True
    if isinstance(exc, AuthenticationError):
        return False  # a token can be fixed; keep the bytes queued
    # HTTP 500 for the same bytes again and again: an image name on non-image content, or a
    # body larger than the server takes (API-FACTS §8, §9).
    return isinstance(exc, ServerError) and failures >= 3


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def _same_version(a: FileRecord | None, b: FileRecord) -> bool:
    return a is not None and file_key(a) == file_key(b)


def _size_or_zero_path(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _size_or_zero(pending: PendingFile) -> int:
    try:
        return pending.size()
    except OSError:
        return 0
