"""Freeing what nothing uses: unused listings and the nodes nothing can reach any more.

A mount that runs for months on a busy server must not grow without end with every listing
and every version of every file it has seen. What may go is the namespace's decision
(``kbfs.namespace.eviction``, ``Namespace.reclaim``); this component decides when to ask:
never while an upload or a rename holds nodes across an await, and spaced so that a pass
costs a few ms per second whatever the tree's size. The facade (``kbfs.vfs``) runs it from its
background loop and tells it what open directories still hold.
"""

from __future__ import annotations

from collections.abc import Callable

from kbfs.namespace.tree import Namespace
from kbfs.remote.refresher import Refresher
from kbfs.upload.uploader import Uploader


class Reclaimer:
    """When to drop listings and free nodes; ``held()`` is what a readdir still to come may
    reply (those nodes stay)."""

    RECLAIM_EVERY = 60.0  # seconds between passes when the kernel forgot nothing meanwhile

    def __init__(
        self,
        namespace: Namespace,
        refresher: Refresher,
        uploader: Uploader,
        held: Callable[[], set[int]],
        clock: Callable[[], float],
    ) -> None:
        self.ns = namespace
        self.refresher = refresher
        self.uploader = uploader
        self.held = held
        self.clock = clock
        self._mark = 0  # inodes.forgotten at the last reclaim pass
        self._reclaimed_at = clock()

    def reclaim_if_due(self) -> None:
        """Run reclaim() after the kernel forgot nodes, or once a minute (a node can also
        become unreachable without a kernel reference: a file listed, never looked at,
        removed on the server). A pass walks every node (~0.3 µs each), so passes are spaced
        by a second per 10,000 nodes: a few ms of work per second at any size."""
        now = self.clock()
        since = now - self._reclaimed_at
        inodes = self.ns.inodes
        mark = inodes.forgotten
        if since < max(2.0, len(inodes) / 10_000) or (
            mark == self._mark and since < self.RECLAIM_EVERY
        ):
            return
        if self.reclaim() is None:
            return  # busy: the next tick tries again
        self._mark, self._reclaimed_at = mark, now

    def drop_listings(self) -> int:
        """Drop the listings nobody has used lately (bounded memory: see
        kbfs.namespace.eviction), and free their nodes the kernel does not hold. Not while
        an upload or rename holds nodes across an await; how many listings went."""
        if self.uploader.busy():
            return 0
        dropped = self.refresher.drop_unused(self.held())
        if dropped:
            self.reclaim()
        return dropped

    def reclaim(self) -> int | None:
        """Free the file nodes nothing can reach any more (see Namespace.reclaim); how many
        were freed, or None while an upload or rename holds nodes across an await (the next
        pass does it)."""
        if self.uploader.busy():
            return None
        self.uploader.drop_idle_locks()
        return self.ns.reclaim(self.held())
