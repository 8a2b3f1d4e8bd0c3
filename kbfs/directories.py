"""What exists where: fetching projects, tasks and attachment listings (cached for
``dir_ttl``, shared by concurrent lookups, served stale when the server is down) and building
each directory's entries from them (names by kbfs.names, one inode per server file version).
Part of ``Vfs`` (a mixin: it works on the vfs's directories and nodes); SEMANTICS.md
("Listings", "Names") is the prose version.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, TypeVar

import trio

from kbfs.client.errors import KanboardError, ServerError, TransportError
from kbfs.client.models import FileRecord
from kbfs.errors import InvalidArgument, RequestTimedOut
from kbfs.inodes import Node, NodeType, doom_key, file_key, is_doomed, is_provisional
from kbfs.listings import ContainerDir, Listing, TaskList
from kbfs.names import assign_names
from kbfs.saving import _same_version

if TYPE_CHECKING:
    from kbfs.vfs import Vfs

log = logging.getLogger(__name__)

T = TypeVar("T")

READ_ONLY_ROLES = frozenset({"project-viewer"})


class Directories:
    """Listing and directory-building methods of ``Vfs``."""

    async def _refresh_projects(self: Vfs, force: bool = False) -> None:
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

    async def refresh(self: Vfs, ino: int) -> None:
        """Fetch a directory's listing now (after a change made behind this mount's back)."""
        node = self.node(ino)
        if node.type.holds_files:
            await self._refresh_dir(node, force=True)
        elif node.type is NodeType.TASKS and node.project_id is not None:
            await self._refresh_tasks(node.project_id, force=True)
        elif node.type is NodeType.PROJECTS:
            await self._refresh_projects(force=True)

    async def _bounded(self: Vfs, call: Awaitable[T]) -> T:
        """A listing call, failed with EIO if the server has not answered within ``timeout``
        (retries included): a process must never hang on a server that went away."""
        with trio.move_on_after(self.config.op_timeout) as scope:
            return await call
        assert scope.cancelled_caught
        raise RequestTimedOut(f"no answer from the server within {self.config.op_timeout:g} s")

    def _serve_stale(self: Vfs, listing: Listing, exc: Exception, what: str) -> bool:
        """Keep serving a cached listing while the server is unreachable or failing."""
        if listing.fetched_at < -1e17:
            return False
        log.warning("could not refresh %s (%s); showing the cached listing", what, exc)
        listing.failing = True
        # Ask again after a short pause, not on every lookup.
        listing.fetched_at = self.clock() - self.config.dir_ttl + min(self.config.dir_ttl, 2.0)
        return True

    def _project_node(self: Vfs, project_id: int) -> Node:
        return self.inodes.ensure(
            ("project", project_id),
            NodeType.PROJECT,
            name=str(project_id),
            parent=self.projects_node.ino,
            project_id=project_id,
        )

    async def _refresh_tasks(self: Vfs, project_id: int, force: bool = False) -> TaskList:
        listing = self._tasks.setdefault(project_id, TaskList())
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

    def _task_node(self: Vfs, project_id: int, task_id: int) -> Node:
        tasks_dir = self._tasks_dir_node(project_id)
        return self.inodes.ensure(
            ("task", project_id, task_id),
            NodeType.TASK,
            name=str(task_id),
            parent=tasks_dir.ino,
            project_id=project_id,
            task_id=task_id,
        )

    def _project_dir(self: Vfs, project_id: int, name: str, type_: NodeType) -> Node:
        """One of a project's fixed directories (``files``, ``tasks``, ``tasks-by-title``)."""
        return self.inodes.ensure(
            (name, project_id),
            type_,
            name=name,
            parent=self._project_node(project_id).ino,
            project_id=project_id,
        )

    def _files_dir_node(self: Vfs, project_id: int) -> Node:
        return self._project_dir(project_id, "files", NodeType.PROJECT_FILES)

    def _titles_dir_node(self: Vfs, project_id: int) -> Node:
        return self._project_dir(project_id, "tasks-by-title", NodeType.TASKS_BY_TITLE)

    def _tasks_dir_node(self: Vfs, project_id: int) -> Node:
        return self._project_dir(project_id, "tasks", NodeType.TASKS)

    def _link(self: Vfs, key: tuple[object, ...], parent: Node, name: str, target: str) -> Node:
        """A symbolic link of the by-name views; its name follows the current title."""
        node = self.inodes.ensure(
            key, NodeType.LINK, parent=parent.ino, project_id=parent.project_id
        )
        node.name = name
        node.link_target = target
        return node

    def readlink(self: Vfs, ino: int) -> str:
        node = self.node(ino)
        if node.type is not NodeType.LINK or node.link_target is None:
            raise InvalidArgument("not a symbolic link")
        return node.link_target

    async def _refresh_dir(self: Vfs, dir_node: Node, force: bool = False) -> ContainerDir:
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

    def _apply_records(self: Vfs, dir_node: Node, state: ContainerDir) -> None:
        """Rebuild a directory's entries from its server records (see kbfs.names). The kernel
        may map a changed name to its old inode for up to ``kernel_cache_timeout`` (see fs)."""
        hidden, doomed, lost = state.hidden, state.doomed, bool(state.lost)

        def shown(r: FileRecord) -> bool:
            # The sets are nearly always empty: a listing of 100,000 files is built here.
            if hidden and _same_version(hidden.get(r.id), r):
                return False
            if doomed and is_doomed(doomed, r):
                return False
            return not (lost and self._maybe_lost_copy(state, r))

        named = assign_names((r.id, r.name, r) for r in state.records.values() if shown(r))
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

    def _maybe_lost_copy(self: Vfs, state: ContainerDir, record: FileRecord) -> bool:
        """Whether ``record`` may be the file a create whose answer was lost made. Such a
        file is adopted or removed by the next upload of its name or the retry loop; until
        then it is not shown (it would show a version the user replaced, moved or removed,
        or a duplicate ``name (#id)``)."""
        if not state.lost or doom_key(record) in state.ours or file_key(record) in state.ours:
            return False
        holder = self.inodes.by_key(file_key(record))
        if holder is not None and holder.pending is not None:
            return False  # the version a pending save replaces: shown until then
        return any(
            name == record.name and size == record.size and record.date >= int(started) - 1
            for name, started, size, _ in state.lost
        )

    def _node_for_record(self: Vfs, dir_node: Node, record: FileRecord) -> Node:
        key = file_key(record)
        removed = self.inodes.by_key(key)
        if removed is not None and removed.discarded:
            # Removed or replaced here, yet listed (a removal still queued, a late listing):
            # it gets a fresh inode; the discarded one keeps only what its open handles hold.
            self.inodes.rekey(removed, ("removed", removed.ino))
        provisional = None
        if self._provisional and not is_provisional(record):
            # The real record of an upload whose read-back failed (the provisional record
            # itself, noted by our own upload, must not use up the mapping).
            provisional = self._provisional.pop((record.kind, record.id), None)
        if provisional is not None:
            node = self.inodes.get(provisional)
            twin = self.inodes.by_key(key)
            if twin is not None and twin is not node and twin.pending is None:
                # A listing showed this upload before its read-back failed, and made it a node
                # of its own: the node that holds the content (and maybe newer unsaved bytes)
                # is the file. Otherwise that node would lose its record and upload again as
                # a new file: a duplicate.
                self.inodes.rekey(twin, ("superseded", twin.ino))
                twin.linked = False
                twin = None
            if node is not None and twin is None:
                self.inodes.rekey(node, key)
                node.record = record
        node = self.inodes.ensure(
            key,
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

    async def _prefetch(self: Vfs, dir_nodes: list[Node]) -> None:
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

    def _view(self: Vfs, state: ContainerDir) -> dict[str, int]:
        view = dict(state.entries)
        view.update(state.local)
        return view
