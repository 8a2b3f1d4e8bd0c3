"""What exists at which inode: the node table, with inode numbers stable for the mount's life.

Every node is identified by a key that says what it stands for on the server: a structural
directory (``("project", 7)``), a server file version (``("file", "task", id, etag)``) or a file
that so far exists only here (``("local", n)``). The same key always gets the same inode, so an
inode never silently changes meaning, even though Kanboard reuses file ids (kanboard-api §7): a
reused id comes with another etag, hence another key and another inode.

A node lives while something can reach it: the kernel (its lookup count), an open handle,
unsaved bytes, a directory entry. ``Namespace.reclaim`` frees the others; their inode numbers are
never handed out again. Pure and synchronous: no I/O, no trio. Only ``kbfs.namespace`` changes
the fields that decide what a user sees (see ``kbfs.namespace.tree``).
"""

from __future__ import annotations

import time
from collections.abc import Collection, Hashable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING

from kbfs.client.models import Container, FileRecord

if TYPE_CHECKING:
    from kbfs.storage.spool import PendingFile

ROOT_INO = 1


class NodeType(Enum):
    ROOT = "root"
    PROJECTS = "projects"  # /projects
    PROJECT = "project"  # /projects/<id>
    PROJECT_FILES = "files"  # /projects/<id>/files     (a file container)
    TASKS = "tasks"  # /projects/<id>/tasks
    TASK = "task"  # /projects/<id>/tasks/<id>  (a file container)
    FILE = "file"
    BY_NAME = "by-name"  # /by-name: projects by name, as links into /projects
    TASKS_BY_TITLE = "tasks-by-title"  # /projects/<id>/tasks-by-title: links into tasks/
    LINK = "link"

    @property
    def is_dir(self) -> bool:
        return self not in (NodeType.FILE, NodeType.LINK)

    @property
    def holds_files(self) -> bool:
        return self in (NodeType.PROJECT_FILES, NodeType.TASK)


@dataclass(eq=False, slots=True)
class Node:
    """One inode. Files carry the server version they show (``record``) and/or local content.

    ``record`` is the server file this node stands for (None for a file created here and not
    uploaded yet). ``pending`` is local content not yet on the server; while it exists it is
    what the node shows, and ``record`` is the version it will replace.
    """

    ino: int
    type: NodeType
    key: Hashable
    name: str = ""
    parent: int = 0
    project_id: int | None = None
    task_id: int | None = None
    record: FileRecord | None = None
    pending: PendingFile | None = None
    link_target: str | None = None
    lookups: int = 0
    open_handles: int = 0
    writers: int = 0  # open handles that may write: their close() uploads
    linked: bool = True  # False while no directory entry shows this node
    discarded: bool = False  # the user removed or replaced it: unsaved content goes too
    # Server files to remove once this node's next upload is confirmed: what it replaced in
    # another directory when it was renamed there while still open for writing.
    stale: list[tuple[Container, FileRecord]] = field(default_factory=list)
    # A scratch file (vim's "doc.txt~") standing for a server file that was renamed to it.
    hides: tuple[Container, FileRecord] | None = None
    # chmod/utimens are kept in memory only (Kanboard has nowhere to store them).
    mode_override: int | None = None
    mtime_override_ns: int | None = None
    atime_ns: int | None = None
    created_ns: int = field(default_factory=time.time_ns)

    @property
    def container(self) -> Container:
        """The attachment container of a file container directory or a file's parent."""
        if self.project_id is None:
            raise ValueError(f"node {self.ino} is not inside a project")
        return Container(self.project_id, self.task_id)


class InodeTable:
    """Allocates inode numbers by key and holds the nodes."""

    def __init__(self) -> None:
        self._nodes: dict[int, Node] = {}
        self._by_key: dict[Hashable, int] = {}
        self._next_ino = ROOT_INO + 1
        self._local_serial = 0
        self.forgotten = 0  # how often a node's last kernel reference went (see reclaim)
        root = Node(ino=ROOT_INO, type=NodeType.ROOT, key=("root",), name="", parent=ROOT_INO)
        self._nodes[ROOT_INO] = root
        self._by_key[root.key] = ROOT_INO

    def __len__(self) -> int:
        return len(self._nodes)

    def __iter__(self) -> Iterator[Node]:
        return iter(list(self._nodes.values()))

    def get(self, ino: int) -> Node | None:
        return self._nodes.get(ino)

    def by_key(self, key: Hashable) -> Node | None:
        ino = self._by_key.get(key)
        return None if ino is None else self._nodes.get(ino)

    def discard(self, node: Node) -> None:
        """Drop a node for good; its inode number is never handed out again."""
        self._nodes.pop(node.ino, None)
        if self._by_key.get(node.key) == node.ino:
            del self._by_key[node.key]

    def ensure(self, key: Hashable, type_: NodeType, **fields: object) -> Node:
        """The node for ``key``, created on first use. ``fields`` only apply on creation."""
        node = self.by_key(key)
        if node is None:
            node = Node(ino=self._next_ino, type=type_, key=key, **fields)  # type: ignore[arg-type]
            self._next_ino += 1
            self._nodes[node.ino] = node
            self._by_key[key] = node.ino
        return node

    def new_local(self, **fields: object) -> Node:
        """A file that exists only in this mount so far."""
        self._local_serial += 1
        return self.ensure(("local", self._local_serial), NodeType.FILE, **fields)

    def rekey(self, node: Node, key: Hashable) -> None:
        """Point ``key`` at ``node`` (a local file got its server identity after upload)."""
        other = self._by_key.get(key)
        if other is not None and other != node.ino:
            raise ValueError(f"key {key!r} already belongs to inode {other}")
        self._by_key.pop(node.key, None)
        node.key = key
        self._by_key[key] = node.ino

    def add_lookups(self, node: Node, count: int = 1) -> None:
        node.lookups += count

    def forget(self, ino: int, count: int) -> None:
        node = self._nodes.get(ino)
        if node is not None:
            node.lookups = max(0, node.lookups - count)
            if node.lookups == 0:
                self.forgotten += 1


def file_key(record: FileRecord) -> tuple[str, str, int, str]:
    return ("file", record.kind.value, record.id, record.version_key)


def id_key(record: FileRecord) -> tuple[str, str, int]:
    return ("id", record.kind.value, record.id)


def id_text(record: FileRecord | None) -> str:
    """A record's id for log lines (``none`` for a file that exists only in the mount)."""
    return "none" if record is None else str(record.id)


def is_staging(node: Node) -> bool:
    """A move's staging node (kbfs.namespace.moves.stage_move): its content is being uploaded
    at the move's target and it is in no view; nothing but the move may show or upload it."""
    key = node.key
    return isinstance(key, tuple) and len(key) == 2 and key[0] == "staging"


def is_provisional(record: FileRecord) -> bool:
    """A record made up from our own upload because reading it back failed (no etag, path)."""
    return record.etag is None and not record.path


def is_doomed(doomed: Collection[Hashable], record: FileRecord) -> bool:
    """Whether a set of doom_key()s names ``record`` (by version, or by id for a record that
    was provisional when it was doomed)."""
    return file_key(record) in doomed or id_key(record) in doomed


def doom_key(record: FileRecord) -> tuple[object, ...]:
    """How a record is remembered in the doomed/ours sets. A provisional record (an upload
    whose read-back failed: no etag, no path) is known by id only until a listing shows it."""
    if is_provisional(record):
        return id_key(record)
    return file_key(record)


def same_file(current: FileRecord, known: FileRecord) -> bool:
    """Whether the server's ``current`` record is the file this mount knew as ``known``."""
    if is_provisional(known):
        # Known only from our own upload (its read-back failed): ids are reused, so match
        # name, size and time too; when in doubt it is not ours (never remove another file).
        return (
            current.id == known.id
            and current.name == known.name
            and current.size == known.size
            and abs(current.date - known.date) <= 2
        )
    return file_key(current) == file_key(known)
