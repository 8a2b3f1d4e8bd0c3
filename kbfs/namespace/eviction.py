"""Dropping the listings nobody uses, so a mount's memory does not grow with every directory
it has ever listed.

Each record of a listing costs about 1 KB of daemon memory with its node and names: a mount
that walks a tree of a few large directories (``find``, a backup, an indexer) would otherwise
keep every one of them for as long as it runs. A listing is dropped when it has not been used
for a while, oldest first, while more records than the bound are kept, and in any case once
it has been idle long enough. It is fetched again at the next lookup, as after ``dir_ttl``.

What may never be dropped is what the server does not know or what this mount still owes it:
a directory with files that exist only here, hidden scratch versions, removals due, creates
whose answer was lost, or any entry with unsaved bytes, an open handle, a pending cleanup, or
a provisional record; and nothing an open directory handle may still reply. Entries the
kernel still holds (``lookups``) lose their name but keep their node, hence their inode: the
next listing of the directory finds them again by their server version (``InodeTable``), as
it does for a file renamed and back. The directory's journal and listing counters stay, so an
answer in flight when the records went is still ordered and replayed correctly.

Pure and synchronous, like the rest of ``kbfs.namespace``: the caller (the refresher) says
which listings are in flight and when each was last used.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from kbfs.client.models import Container
from kbfs.namespace.tree import Namespace
from kbfs.namespace.views import ContainerDir


@dataclass(frozen=True)
class Limits:
    #: Records kept across all listings before unused ones are dropped (about 1 KB each).
    max_records: int = 500_000
    #: A listing unused this long is dropped whatever the total.
    idle: float = 600.0
    #: A listing used more recently than this is never dropped: what a command is working
    #: in now would be fetched again and again. (Nothing else needs it: a lookup's node is
    #: counted as the kernel's before any await, a readdir's are held by its handle.)
    min_age: float = 10.0


def records_kept(ns: Namespace) -> int:
    """Server records held in all listings."""
    return sum(len(state.records) for _, state in ns.directories())


def droppable(ns: Namespace, state: ContainerDir, held: set[int]) -> bool:
    """Whether forgetting this directory's records loses nothing but a refetch (see the
    module docstring). ``held``: inodes the caller still holds (open directory handles)."""
    if state.local or state.hidden or state.doomed or state.lost:
        return False
    provisional = ns.provisional.inodes()  # uploads known by id only, until listed
    for ino in state.entries.values():
        node = ns.inodes.get(ino)
        if node is None:
            continue
        if (
            node.open_handles
            or node.writers
            or node.pending is not None
            or node.stale
            or node.hides is not None
            or ino in held
            or ino in provisional
        ):
            return False
    return True


def drop(ns: Namespace, state: ContainerDir) -> int:
    """Forget a directory's server records and entries (the caller checked ``droppable``);
    how many records went. Its nodes are unlinked: those the kernel does not hold are freed
    by the next ``Namespace.reclaim``."""
    for ino in state.entries.values():
        node = ns.inodes.get(ino)
        if node is not None:
            node.linked = False
    dropped = len(state.records)
    state.records = {}
    state.entries = {}
    return dropped


def evict(
    ns: Namespace,
    last_used: Mapping[Container, float],
    now: float,
    *,
    busy: set[Container],
    held: set[int],
    limits: Limits,
) -> list[Container]:
    """Drop the listings that are idle, or unused and beyond the total bound, oldest first;
    the containers dropped. ``busy``: listings in flight (never touched); ``last_used``: when
    each listing was last used (a listing missing there counts as never used)."""
    total = records_kept(ns)
    candidates = [
        (last_used.get(container, float("-inf")), container, state)
        for container, state in ns.directories()
        if state.records and container not in busy
    ]
    candidates.sort(key=lambda item: item[0])
    dropped: list[Container] = []
    for used, container, state in candidates:
        age = now - used
        if age < limits.min_age or (total <= limits.max_records and age < limits.idle):
            break  # the rest were used more recently still
        if not droppable(ns, state, held):
            continue
        total -= drop(ns, state)
        dropped.append(container)
    return dropped
