"""Uploads known by id only, until a listing brings their full server record.

A save costs one round trip: ``create*File`` answers with the new file's id, and kbfs does not
ask ``get*File`` for the rest (storage path, etag, exact date) on the writer's path. The
upload's record is made up from what kbfs sent (name, size) and the server's clock: a
*provisional* record (``is_provisional``: no etag, no path). The next listing of that
directory (a user's ``ls``, or the collision check, which lists every directory it uploaded
to once the server's second has passed) brings the real record; it must then update the node
that holds the upload, never make a twin of it. Ids are reused (kanboard-api §7): a listed
record with that id is taken for the upload only if name, size and time match too.

Each such confirmation is noted (provisional record, real record) for the caller that applied
the listing: the content cache keeps an uploaded file's bytes under the provisional record's
key, and moves them to the real one's (:meth:`kbfs.storage.contentcache.ContentCache.rekey`).

Part of the namespace (pure, synchronous); :class:`kbfs.namespace.tree.Namespace` owns one.
"""

from __future__ import annotations

from kbfs.client.models import FileRecord, Kind
from kbfs.namespace.nodes import InodeTable, Node, file_key, is_provisional, same_file

Confirmed = tuple[FileRecord, FileRecord]  # (provisional record, the real one listed)


class ProvisionalUploads:
    """(kind, id) -> the inode holding an upload known by id only; and confirmations noted.

    State it owns: that table, and the confirmations not yet taken by the caller.
    """

    def __init__(self, inodes: InodeTable) -> None:
        self._inodes = inodes
        self._by_id: dict[tuple[Kind, int], int] = {}
        self._confirmed: list[Confirmed] = []

    def __bool__(self) -> bool:
        return bool(self._by_id)

    def inodes(self) -> set[int]:
        """The nodes holding an unconfirmed upload: kept until its listing comes."""
        return set(self._by_id.values())

    def note(self, node: Node, record: FileRecord) -> None:
        """``node`` now stands for the upload ``record``; if provisional, remember it."""
        if is_provisional(record):
            self._by_id[(record.kind, record.id)] = node.ino

    def take_confirmed(self) -> list[Confirmed]:
        """The confirmations since the last call (see the module docstring)."""
        out, self._confirmed = self._confirmed, []
        return out

    def resolve(self, record: FileRecord) -> None:
        """A listing shows ``record``: if it is the real record of an upload known by id only,
        the node holding that upload becomes its node (rekeyed, its record replaced)."""
        if not self._by_id or is_provisional(record):
            return  # the provisional record itself, noted by our own upload: not a listing's
        ino = self._by_id.get((record.kind, record.id))
        node = None if ino is None else self._inodes.get(ino)
        if node is None or node.discarded or node.record is None or not is_provisional(node.record):
            self._by_id.pop((record.kind, record.id), None)
            return
        if not same_file(record, node.record):
            return  # another file got the id (ids are reused); ours may be listed later
        del self._by_id[(record.kind, record.id)]
        key = file_key(record)
        twin = self._inodes.by_key(key)
        if twin is not None and twin is not node:
            if twin.pending is not None:
                return  # a node of its own holds newer local content: it stays the file
            # A listing showed this upload before its answer came (a lost answer), and made it
            # a node of its own: the node that holds the content (and maybe newer unsaved
            # bytes) is the file. Otherwise that node would upload again as a new file.
            self._inodes.rekey(twin, ("superseded", twin.ino))
            twin.linked = False
        self._confirmed.append((node.record, record))
        self._inodes.rekey(node, key)
        node.record = record
