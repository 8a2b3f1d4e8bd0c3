"""What exists at which name: the one owner of the fields that decide what a user sees.

Every other component asks this module to change the namespace through the operations below
(place, detach, doom, hide, attach an upload, apply a listing, ...); none writes a node's
``linked``, ``record``, ``pending``, ``stale``, ``hides`` or ``discarded``, or a directory's
``local``, ``doomed``, ``hidden``, ``lost``, ``records`` or ``entries`` itself
(``tests/unit/test_layering.py`` counts such writes outside this package: zero).

Invariants, checked after every step by ``tests/unit/test_namespace_machine.py``:

1. Shown ⇔ linked: a file node appears in its directory's view (``entries`` or ``local``) exactly
   when ``linked`` is set, and under its ``name``. One exception: a server file whose name a
   file of this mount took while the listing that brings it was in flight is shadowed by that
   file until it is uploaded (then both get names by the rules of kbfs.namespace.names).
2. One entry per server file: a server version (``file_key``) has at most one node and that
   node at most one entry; no two entries of one directory share a name.
3. Doomed ⇒ hidden: a record whose removal is due (``doomed``), that a scratch file stands for
   (``hidden``), or that may be a lost create's copy is not shown under its own name.
4. Inode numbers are never reused, even after ``reclaim`` freed a node.
5. Unsaved bytes stay reachable: a node whose content the server does not have, and that the
   user did not remove, is linked (or held by an open handle until its upload).
6. A provisional record (an upload known by id only, kbfs.namespace.provisional) maps to the
   node holding the content: the listing that brings its real record updates that node,
   never a twin.

Pure and synchronous: no I/O, no trio. Removing files on the server, uploading and fetching
listings are the callers' business; this module records their outcome.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, NamedTuple

from kbfs.client.models import Container, FileRecord
from kbfs.errors import NoEntry
from kbfs.namespace.names import PROBE_NAMES, assign_names, matches
from kbfs.namespace.nodes import (
    ROOT_INO,
    InodeTable,
    Node,
    NodeType,
    doom_key,
    file_key,
    is_doomed,
    is_staging,
    same_file,
)
from kbfs.namespace.provisional import ProvisionalUploads
from kbfs.namespace.views import ContainerDir, LostEntry

if TYPE_CHECKING:
    from kbfs.storage.spool import PendingFile

log = logging.getLogger(__name__)

Placed = tuple[Container, FileRecord]  # a server file and the directory that holds it


class ListingTicket(NamedTuple):
    """When a listing was asked: this mount's change generation then, and its place in the
    order listings of that directory were asked."""

    generation: int
    asked: int


class Namespace:
    """Nodes, directories and the names they show. See the module docstring."""

    def __init__(self, local_names: tuple[str, ...]) -> None:
        self.inodes = InodeTable()
        self.local_names = local_names
        self.reclaimed = 0  # file nodes freed so far
        self._dirs: dict[Container, ContainerDir] = {}
        self.provisional = ProvisionalUploads(self.inodes)  # uploads known by id only
        self.projects_node = self.inodes.ensure(
            ("projects",), NodeType.PROJECTS, name="projects", parent=ROOT_INO
        )
        self.by_name_node = self.inodes.ensure(
            ("by-name",), NodeType.BY_NAME, name="by-name", parent=ROOT_INO
        )

    # ------------------------------------------------------------------ reading

    def node(self, ino: int) -> Node:
        node = self.inodes.get(ino)
        if node is None:
            raise NoEntry(f"no inode {ino}")
        return node

    def directory(self, container: Container) -> ContainerDir:
        """A file directory's state (read it; change it only through this class)."""
        state = self._dirs.get(container)
        if state is None:
            state = self._dirs[container] = ContainerDir()
        return state

    def directories(self) -> list[tuple[Container, ContainerDir]]:
        return list(self._dirs.items())

    def view(self, container: Container) -> dict[str, int]:
        """Name -> inode of what a file directory shows: server files, then local ones."""
        state = self.directory(container)
        view = dict(state.entries)
        view.update(state.local)
        return view

    def shown_now(self, dir_node: Node) -> Callable[[str, Node], Node | None]:
        """For an open directory's entries: a function from (name, the node an earlier
        listing showed there) to the node ``dir_node`` shows as that name now, or None. File
        directories change under an open directory; the fixed tree's nodes never change
        meaning, so the listed node stands for theirs. The directory is looked up once: a
        readdir of 10,000 names calls the function 10,000 times."""
        if not dir_node.type.holds_files:
            return lambda _name, listed: listed
        state = self._dirs.get(dir_node.container)
        if state is None:
            return lambda _name, _listed: None
        local, entries, nodes = state.local, state.entries, self.inodes

        def now(name: str, _listed: Node) -> Node | None:
            ino = local.get(name)  # as in view(): a local file takes its name first
            if ino is None:
                ino = entries.get(name)
            return None if ino is None else nodes.get(ino)

        return now

    def listed(self, container: Container, record: FileRecord) -> bool:
        """Whether the directory's current records show this very version."""
        state = self._dirs.get(container)
        current = state.records.get(record.id) if state is not None else None
        return current is not None and same_file(current, record)

    def is_local_name(self, name: str) -> bool:
        return matches(name, self.local_names)

    def is_probe(self, name: str) -> bool:
        """Names file managers and editors test for everywhere, which need no re-fetch."""
        return matches(name, PROBE_NAMES) or self.is_local_name(name)

    def is_scratch(self, node: Node) -> bool:
        """A file kept in this mount only by design: a scratch name, never on the server."""
        return node.record is None and self.is_local_name(node.name)

    def server_name(self, node: Node) -> str:
        """The name an upload of ``node`` gets: the server's own, or the local one."""
        return node.record.name if node.record is not None else node.name

    def pending_files(self) -> list[Node]:
        """Files whose current content has not reached the server."""
        return [n for n in self.inodes if n.pending is not None and n.pending.dirty]

    def lost_entries(self) -> list[tuple[Container, LostEntry]]:
        return [(c, entry) for c, state in self._dirs.items() for entry in state.lost]

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

    # ------------------------------------------------------------------ the fixed tree

    def project_node(self, project_id: int) -> Node:
        return self.inodes.ensure(
            ("project", project_id),
            NodeType.PROJECT,
            name=str(project_id),
            parent=self.projects_node.ino,
            project_id=project_id,
        )

    def _project_dir(self, project_id: int, name: str, type_: NodeType) -> Node:
        """One of a project's fixed directories (``files``, ``tasks``, ``tasks-by-title``)."""
        return self.inodes.ensure(
            (name, project_id),
            type_,
            name=name,
            parent=self.project_node(project_id).ino,
            project_id=project_id,
        )

    def files_dir_node(self, project_id: int) -> Node:
        return self._project_dir(project_id, "files", NodeType.PROJECT_FILES)

    def titles_dir_node(self, project_id: int) -> Node:
        return self._project_dir(project_id, "tasks-by-title", NodeType.TASKS_BY_TITLE)

    def tasks_dir_node(self, project_id: int) -> Node:
        return self._project_dir(project_id, "tasks", NodeType.TASKS)

    def task_node(self, project_id: int, task_id: int) -> Node:
        return self.inodes.ensure(
            ("task", project_id, task_id),
            NodeType.TASK,
            name=str(task_id),
            parent=self.tasks_dir_node(project_id).ino,
            project_id=project_id,
            task_id=task_id,
        )

    def dir_node(self, container: Container) -> Node:
        """The directory node of a file container."""
        if container.task_id is None:
            return self.files_dir_node(container.project_id)
        return self.task_node(container.project_id, container.task_id)

    def link(self, key: tuple[object, ...], parent: Node, name: str, target: str) -> Node:
        """A symbolic link of the by-name views; its name follows the current title."""
        node = self.inodes.ensure(
            key, NodeType.LINK, parent=parent.ino, project_id=parent.project_id
        )
        node.name = name
        node.link_target = target
        return node

    # ------------------------------------------------------------------ listings

    def listing_asked(self, container: Container) -> ListingTicket:
        """A listing of ``container`` is about to be asked: the ticket its answer is applied
        with (see ``apply_listing``)."""
        state = self.directory(container)
        state.asked += 1
        return ListingTicket(state.generation, state.asked)

    def apply_listing(
        self, container: Container, records: list[FileRecord], ticket: ListingTicket
    ) -> bool:
        """Take a fetched listing: this mount's own changes made while it was in flight are
        replayed on top, then the entries are rebuilt. An answer to a listing asked before
        one already applied is dropped (False): it would undo what the newer one showed (a
        file another client added, taken for deleted: unsaved edits of it would then be
        uploaded as a new file beside it)."""
        state = self.directory(container)
        if ticket.asked < state.applied:
            return False
        state.applied = ticket.asked
        state.apply_fetch(records, ticket.generation)
        self.rebuild(container)
        return True

    def rebuild(self, container: Container) -> None:
        """Rebuild a directory's entries from its server records (see kbfs.namespace.names).
        The kernel may map a changed name to its old inode for a little while (see fs)."""
        state = self.directory(container)
        dir_node = self.dir_node(container)
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

    def _maybe_lost_copy(self, state: ContainerDir, record: FileRecord) -> bool:
        """Whether ``record`` may be the file a create whose answer was lost made. Such a
        file is adopted or removed by the next upload of its name or the retry loop; until
        then it is not shown (it would show a version the user replaced, moved or removed,
        or a duplicate ``name (#id)``)."""
        if not state.lost or state.is_ours(record):
            return False  # an upload of ours (known by version, or by id only: provisional)
        holder = self.inodes.by_key(file_key(record))
        if holder is not None and holder.pending is not None:
            return False  # the version a pending save replaces: shown until then
        return any(
            name == record.name and size == record.size and record.date >= int(started) - 1
            for name, started, size, _ in state.lost
        )

    def _node_for_record(self, dir_node: Node, record: FileRecord) -> Node:
        key = file_key(record)
        removed = self.inodes.by_key(key)
        if removed is not None and removed.discarded:
            # Removed or replaced here, yet listed (a removal still queued, a late listing):
            # it gets a fresh inode; the discarded one keeps only what its open handles hold.
            self.inodes.rekey(removed, ("removed", removed.ino))
        self.provisional.resolve(record)  # an upload of ours known by id only until now
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

    # ------------------------------------------------------------------ local content

    def set_pending(self, node: Node, pending: PendingFile | None) -> None:
        """Give ``node`` local content (copy-on-open, O_TRUNC), or take it away (settled)."""
        node.pending = pending

    def content_node(self, dir_node: Node, name: str, pending: PendingFile) -> Node:
        """A new node for local content in ``dir_node``, in no view yet."""
        node = self.inodes.new_local(
            name=name,
            parent=dir_node.ino,
            project_id=dir_node.project_id,
            task_id=dir_node.task_id,
        )
        node.pending = pending
        return node

    def new_local_file(self, dir_node: Node, name: str, pending: PendingFile) -> Node:
        """A file created in this mount: shown at once, on the server once uploaded."""
        node = self.content_node(dir_node, name, pending)
        self.directory(dir_node.container).local[name] = node.ino
        return node

    def adopt_leftover(
        self,
        dir_node: Node,
        name: str,
        pending: PendingFile,
        replaces: FileRecord | None,
        stale: list[Placed],
        lost: Iterable[LostEntry],
    ) -> Node:
        """Unsaved content an earlier mount left in the spool: shown under its name again.
        The versions it supersedes stay hidden until its upload removes them."""
        node = self.content_node(dir_node, name, pending)
        node.record = replaces
        for where, record in stale:
            node.stale.append((where, record))
            self.directory(where).doomed.add(doom_key(record))
        state = self.directory(dir_node.container)
        state.local[name] = node.ino
        state.lost += [e for e in lost if e not in state.lost]
        return node

    def relink(self, node: Node) -> bool:
        """Show unsaved content again that lost its entry without the user removing it (the
        server file it replaces was deleted elsewhere, or renamed by the duplicate rule).
        True if it was relinked."""
        if node.linked or node.discarded or node.pending is None or is_staging(node):
            return False
        if self.name_taken(node):
            return False  # never over another file: the caller decides (recovery folder)
        state = self.directory(node.container)
        if node.record is not None and node.record.id not in state.records:
            node.record = None  # the version it was to replace is gone: upload as new
        state.local[node.name] = node.ino
        node.linked = True
        return True

    def name_taken(self, node: Node) -> bool:
        """Whether another file shows under ``node``'s name in its directory now."""
        shown = self.view(node.container).get(node.name)
        return shown is not None and shown != node.ino

    def recovered(self, node: Node) -> None:
        """``node``'s bytes went to the recovery folder: it leaves the mount, and the
        versions it was to replace are shown again."""
        stale_before = list(node.stale)
        for where, stale in node.stale:  # never superseded after all: show them again
            self.directory(where).undoom(stale)
        node.stale = []
        container = node.container
        if node.record is not None:
            self.directory(container).undoom(node.record)
        node.pending = None
        state = self.directory(container)
        for name, ino in list(state.local.items()):
            if ino == node.ino:
                del state.local[name]
        node.linked = False
        self.rebuild(container)
        for where in {c for c, _ in stale_before}:
            self.rebuild(where)

    # ------------------------------------------------------------------ uploads

    def attach_upload(self, node: Node, record: FileRecord, old: FileRecord | None) -> None:
        """Make ``node`` stand for the freshly uploaded ``record`` in its directory."""
        container = node.container
        state = self.directory(container)
        self.provisional.note(node, record)  # the next listing brings its real record
        twin = self.inodes.by_key(file_key(record))
        if twin is not None and twin is not node:
            # A listing showed this very upload before we knew it was ours (a lost answer):
            # this node, which holds the content, becomes the file.
            self.inodes.rekey(twin, ("superseded", twin.ino))
            twin.linked = False
        self.inodes.rekey(node, file_key(record))
        node.record = record
        if old is not None:
            state.note_remove(old)
        state.note_add(record)
        state.note_ours(record)
        if state.local.get(node.name) == node.ino:  # never another file's entry
            del state.local[node.name]
        self.rebuild(container)

    def take_stale(self, node: Node) -> list[Placed]:
        """The server files ``node``'s next confirmed upload supersedes, handed over."""
        stale, node.stale = node.stale, []
        return stale

    def unhide(self, container: Container, server_name: str) -> list[Placed]:
        """Hidden server files superseded by a new upload of their name, handed over."""
        state = self.directory(container)
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

    def doom(self, container: Container, record: FileRecord) -> None:
        """Never show ``record`` again: its removal is due (queued or under way)."""
        self.directory(container).doomed.add(doom_key(record))

    def undoom(self, container: Container, record: FileRecord) -> None:
        self.directory(container).undoom(record)

    def forget_record(self, container: Container, old: FileRecord) -> None:
        """``old`` is gone from the server (removed, or its id now names another file). A
        listing answered later but asked before may still list it: the journal drops it."""
        state = self._dirs.get(container)
        if state is None:
            return
        state.undoom(old)
        listed = old.id in state.records
        state.note_remove(old)
        if listed:
            self.rebuild(container)

    def add_lost(self, container: Container, entry: LostEntry) -> None:
        """A create whose answer was lost: its file may exist, unseen until resolved."""
        state = self.directory(container)
        if entry not in state.lost:
            state.lost.append(entry)

    def resolve_lost(self, container: Container, name: str) -> None:
        """The lost creates of ``name`` are resolved: files of that name that only might
        have been their copies are shown again."""
        state = self.directory(container)
        state.lost = [e for e in state.lost if e[0] != name]
        self.rebuild(container)

    def lost_names(self, container: Container) -> set[str]:
        return {e[0] for e in self.directory(container).lost}

    # ------------------------------------------------------------------ removal

    def removed_on_server(self, container: Container, record: FileRecord, *, gone: bool) -> None:
        """The user removed ``record``: it leaves the records; once it is ``gone`` it need not
        stay doomed (else its removal is queued and it stays hidden until then)."""
        state = self.directory(container)
        state.note_remove(record)
        if gone:
            state.undoom(record)

    def drop_hidden(self, node: Node) -> Placed | None:
        """The scratch file ``node`` is going: the server file it stood for, handed over (the
        caller removes it)."""
        if node.hides is None:
            return None
        where, hidden = node.hides
        state = self.directory(where)
        state.hidden.pop(hidden.id, None)
        state.note_remove(hidden)
        node.hides = None
        return where, hidden

    def unlinked(self, node: Node, name: str) -> None:
        """The user removed ``name``: it leaves its directory, and its unsaved bytes go."""
        container = node.container
        self.directory(container).local.pop(name, None)
        node.linked = False
        node.discarded = True
        if node.record is not None:
            # Never reuse this inode for that record should a listing show it again.
            self.inodes.rekey(node, ("removed", node.ino))
        self.rebuild(container)

    # ------------------------------------------------------------------ moves

    def detach(self, node: Node) -> None:
        """Take ``node`` out of its directory's view (server records and local names); its
        server version stays hidden until its removal is confirmed."""
        container = node.container
        state = self.directory(container)
        node.linked = False
        if node.record is not None:
            state.note_remove(node.record)
            state.doomed.add(doom_key(node.record))
        for name, ino in list(state.local.items()):
            if ino == node.ino:
                del state.local[name]
        self.rebuild(container)
        node.linked = False

    def place(self, node: Node, dir_node: Node, name: str) -> None:
        """Show ``node`` (content of this mount) as ``name`` in ``dir_node``."""
        node.parent = dir_node.ino
        node.project_id = dir_node.project_id
        node.task_id = dir_node.task_id
        node.name = name
        node.linked = True
        self.directory(dir_node.container).local[name] = node.ino

    def replace(self, target: Node) -> None:
        """``target`` was replaced by a rename: out of view, its local content goes."""
        self.detach(target)
        target.linked = False
        target.discarded = True

    # ------------------------------------------------------------------ freeing nodes

    def reclaim(self, reachable: set[int]) -> int:
        """Free the file nodes nothing can reach any more; how many were freed.

        A node goes once the kernel has forgotten it (no lookups), no handle has it open, it
        holds no unsaved bytes or pending cleanup, and no directory shows it; ``reachable``
        adds what the caller still holds (replies of a readdir still to come). The caller
        makes sure no upload or rename holds nodes across an await meanwhile.
        """
        reachable = reachable | self.provisional.inodes()
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
        self.reclaimed += freed
        return freed


def _same_version(a: FileRecord | None, b: FileRecord) -> bool:
    return a is not None and file_key(a) == file_key(b)
