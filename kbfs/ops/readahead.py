"""Read-ahead of small files: when a directory is being read through, fetch what comes next
in batched requests.

Kanboard has no range reads and no multi-file download, but JSON-RPC batches: one request can
carry fifty ``download*File`` calls. Over a real network a recursive copy (``cp -r``, ``tar``,
``rsync``, a file manager's copy) of many small files is dominated by one round trip per file;
batching them makes it one round trip per batch.

How kbfs decides a directory is being read through: a file is opened for reading within
``WINDOW`` seconds after another file of the same directory, or of a sibling directory (the
next task of the same project), was read to its end and closed. A single ``cat`` never
triggers it (nothing was read before it), nor does a file manager sniffing content types (it
reads the first bytes only). Then the files that come next in readdir order (this directory's
after the one opened, then the following task directories whose listings are known) are
fetched, skipping what is cached or on its way, files over ``MEMBER_MAX`` and files not on the
server yet, in one batch of at most ``BATCH_FILES`` files and ``BATCH_BYTES`` bytes: small
enough for a Kanboard with PHP's default 128 MB ``memory_limit``, which holds the whole answer
about three times over (kanboard-api §9). One batch runs at a time; the next starts once fewer
than half a batch of prefetched files is left ahead of the reader.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from kbfs.client.models import Container, FileRecord
from kbfs.namespace.nodes import Node, NodeType
from kbfs.namespace.tree import Namespace
from kbfs.remote.refresher import Refresher
from kbfs.storage.contentcache import ContentCache

log = logging.getLogger(__name__)


class ReadAhead:
    """Watches reads and prefetches what a read-through will want next (module docstring)."""

    WINDOW = 2.0  # seconds between one file's end and the next open
    MEMBER_MAX = 1 << 20
    BATCH_FILES = 50
    BATCH_BYTES = 8 << 20
    LOOK_AT = 2000  # candidates examined per open, so a huge directory costs bounded time

    def __init__(
        self,
        namespace: Namespace,
        refresher: Refresher,
        content: ContentCache,
        clock: Callable[[], float],
    ) -> None:
        self.ns = namespace
        self.refresher = refresher
        self.content = content
        self.clock = clock
        # The directory of the last file read to its end, and when it was closed.
        self._last: tuple[int, float] | None = None
        # A directory's server entries in readdir order and each name's position, kept while
        # the directory is unchanged: a read-through of N files costs O(N), not O(N^2).
        self._orders: dict[Container, tuple[tuple[int, ...], list[int], dict[str, int]]] = {}

    def closed(self, node: Node, read_whole: bool) -> None:
        """A read handle of ``node`` closed; ``read_whole``: its reads reached the end."""
        if read_whole:
            self._last = (node.parent, self.clock())

    def opened(self, node: Node) -> None:
        """``node`` (a server file) was opened for reading: prefetch if this is a read-through."""
        last = self._last
        if last is None or self.clock() - last[1] > self.WINDOW:
            return
        if not self._related(last[0], node.parent) or self.content.prefetching:
            return
        batch: list[tuple[Container, FileRecord]] = []
        size = 0
        ahead = 0
        budget = min(self.BATCH_BYTES, self.content.max_bytes // 4)
        for container, record in self._next_files(node):
            if self.content.fetching(record):
                ahead += 1
                if not batch and ahead >= self.BATCH_FILES // 2:
                    return  # enough is ready ahead of the reader
                continue
            if len(batch) >= self.BATCH_FILES or size + record.size > budget:
                break
            batch.append((container, record))
            size += record.size
        if batch:
            log.debug("reading ahead %d files (%d bytes) after %s", len(batch), size, node.name)
            self.content.prefetch(batch)

    def _related(self, before: int, now: int) -> bool:
        if before == now:
            return True
        a, b = self.ns.node(before), self.ns.node(now)
        return a.type is b.type is NodeType.TASK and a.parent == b.parent

    def _next_files(self, node: Node) -> Iterator[tuple[Container, FileRecord]]:
        """Server files after ``node`` in readdir order: its directory's, then the following
        task directories' (only those whose listing is known: nothing is fetched here)."""
        looked = 0
        for container, after in self._walk_from(node):
            inos, position = self._order(container)
            start = 0 if after is None else position.get(after, len(inos) - 1) + 1
            for ino in inos[start:]:
                looked += 1
                if looked > self.LOOK_AT:
                    return
                candidate = self.ns.node(ino)
                record = candidate.record
                if (
                    candidate.type is NodeType.FILE
                    and record is not None
                    and candidate.pending is None
                    and record.size <= self.MEMBER_MAX
                ):
                    yield container, record

    def _order(self, container: Container) -> tuple[list[int], dict[str, int]]:
        state = self.ns.directory(container)
        stamp = (state.applied, state.generation, len(state.entries))
        known = self._orders.get(container)
        if known is None or known[0] != stamp:
            if len(self._orders) > 256:
                self._orders.clear()
            names = list(state.entries)
            known = (stamp, list(state.entries.values()), {n: i for i, n in enumerate(names)})
            self._orders[container] = known
        return known[1], known[2]

    def _walk_from(self, node: Node) -> Iterator[tuple[Container, str | None]]:
        yield node.container, node.name
        parent = self.ns.node(node.parent)
        if parent.type is not NodeType.TASK or parent.project_id is None:
            return
        tasks = self.refresher.task_ids(parent.project_id)
        if parent.task_id not in tasks:
            return
        for task_id in tasks[tasks.index(parent.task_id) + 1 :]:
            container = Container(parent.project_id, task_id)
            if not self.refresher.listing(container).ever_fetched:
                return
            yield container, None
