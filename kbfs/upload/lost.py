"""Creates whose answer was lost: the file may exist on the server, so nothing of that name is
sent again before looking.

An attempt is written down before it is sent (``PendingFile.attempts``); if the answer never
comes it becomes a lost entry of its directory (``ContainerDir.lost``, in the cleanup journal).
Before the next upload of that name, or from the retry loop's sweep, one listing resolves it:
the file that holds the current content is adopted, every other copy is removed, and files of
that name that only might have been copies are shown again.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

import trio

from kbfs.client.errors import KanboardError
from kbfs.client.models import Container, FileRecord
from kbfs.client.protocol import KanboardAPI
from kbfs.namespace.nodes import Node, file_key, is_doomed, same_file
from kbfs.namespace.tree import Namespace
from kbfs.storage.spool import PendingFile, digest
from kbfs.upload.journal import CleanupQueue

log = logging.getLogger(__name__)

Attempt = tuple[float, int, str | None]  # wall-clock time sent, size, sha256 or None


class LostCreates:
    """Notes lost creates and resolves them (see the module docstring)."""

    def __init__(self, client: KanboardAPI, namespace: Namespace, queue: CleanupQueue) -> None:
        self.client = client
        self.ns = namespace
        self.queue = queue

    async def note(
        self, pending: PendingFile, container: Container, name: str, attempt: Attempt
    ) -> None:
        entry = (attempt[0], attempt[1], await _digest(pending))
        pending.attempts.append(entry)
        self.ns.add_lost(container, (name, *entry))
        self.queue.save()

    async def resolve(
        self,
        node: Node | None,
        container: Container,
        name: str,
        size: int,
        records: list[FileRecord] | None = None,
    ) -> FileRecord | None:
        """After creates of ``name`` whose answers were lost: adopt the file that holds the
        current content (if ``node`` is given), and remove the others — files made by
        attempts that failed. One listing call, and only when there is something to resolve.

        A file counts as made by a lost attempt when it has that name and size, is dated no
        earlier than the attempt, and is not one this mount created and confirmed.
        ``records``: a listing of ``container`` made after the attempts (a batch of creates
        whose answer was lost resolves all its files with one).
        """
        state = self.ns.directory(container)
        pending = node.pending if node is not None else None
        entries = [e for e in state.lost if e[0] == name]
        if pending is not None:
            entries += [(name, *e) for e in pending.attempts if (name, *e) not in entries]
        if not entries:
            return None
        if records is None:
            records = await self.client.list_files(container)
        known = node.record if node is not None else None
        taken: set[tuple[object, ...]] = set()

        def not_ours(r: FileRecord) -> bool:
            # Our own uploads (still ours: a removed one's id may be the lost create's),
            # the version the node stands for, files taken by a newer attempt, and versions
            # whose removal is due are no lost copies.
            return not (
                state.is_ours(r)
                or (known is not None and same_file(r, known))
                or file_key(r) in taken
                or is_doomed(state.doomed, r)
            )

        current: str | None = None
        adopt = None
        for _name, started, lost_size, lost_digest in sorted(entries, key=lambda e: -e[1]):
            candidates = [
                r
                for r in records
                if r.name == name
                and r.size == lost_size
                and r.date >= int(started) - 1
                and not_ours(r)
            ]
            if not candidates:
                continue
            found = max(candidates, key=lambda r: (r.date, r.id))
            taken.add(file_key(found))
            same = pending is not None and lost_size == size
            if same and lost_digest is not None:
                assert pending is not None
                current = current or await _digest(pending)
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
                self.queue.queue(container, found, save=False)
        if pending is not None:
            pending.attempts = []
        # Files of that name that only might have been lost copies are shown again.
        self.ns.resolve_lost(container, name)
        self.queue.save()
        return adopt

    async def sweep(self, name_lock: Callable[[Container, str], trio.Lock]) -> None:
        """Resolve lost attempts of names nobody is uploading any more (removed, renamed)."""
        for container, _state in self.ns.directories():
            for name in self.ns.lost_names(container):
                lock = name_lock(container, name)
                if lock.locked():
                    continue  # an upload of that name (a save, a move's staged copy) is running
                async with lock:
                    # Held while looking: a create that has been answered but not yet
                    # confirmed would otherwise look exactly like a lost attempt's file.
                    if self._busy(container, name):
                        continue
                    with contextlib.suppress(KanboardError):
                        await self.resolve(None, container, name, -1)

    def _busy(self, container: Container, name: str) -> bool:
        """Whether a file shown under ``name`` has unsaved content its upload will send.
        Content the server refused for good is never sent (it stays local-only until the user
        renames it): waiting for it would keep the entry, and the journal, forever."""
        for ino in self.ns.view(container).values():
            n = self.ns.inodes.get(ino)
            if n is None or self.ns.server_name(n) != name:
                continue
            pending = n.pending
            if pending is not None and pending.dirty and not n.discarded and not pending.refused:
                return True
        return False


async def _digest(pending: PendingFile) -> str:
    return await trio.to_thread.run_sync(digest, pending.path)
