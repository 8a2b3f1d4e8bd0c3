"""The cleanup queue: server files this mount still has to remove, kept across a crash.

A confirmed upload supersedes older versions (the one it replaces, the source of a move, the
copies lost creates may have made). They are removed right after the upload; one whose removal
fails waits here and the retry loop tries again (after checking it is still that file: ids are
reused, kanboard-api §7). Every change is written to the spool's journal before the state it
protects goes away, so a crash never leaves an old version behind as a visible duplicate.
"""

from __future__ import annotations

import contextlib
import logging

from kbfs.client.models import Container, FileRecord
from kbfs.namespace.nodes import file_key
from kbfs.namespace.tree import Namespace, Placed
from kbfs.storage.spool import Spool

log = logging.getLogger(__name__)


class CleanupQueue:
    """Removals still to do (``queued``) and under way (``under_way``), and the versions
    known only from an earlier mount's spool (``unverified``: checked before removal)."""

    def __init__(self, spool: Spool, namespace: Namespace) -> None:
        self.spool = spool
        self.ns = namespace
        self.queued: list[Placed] = []
        self.under_way: list[Placed] = []
        self.unverified: set[tuple[object, ...]] = set()

    def needs_check(self, record: FileRecord) -> bool:
        return file_key(record) in self.unverified

    def mark_unverified(self, record: FileRecord) -> None:
        self.unverified.add(file_key(record))

    def queue(self, container: Container, record: FileRecord, *, save: bool = True) -> None:
        """Retry this removal in the background; the file stays hidden until then."""
        self.ns.doom(container, record)
        if (container, record) not in self.queued:
            self.queued.append((container, record))
            if save:
                self.save()

    def is_queued(self, container: Container, record: FileRecord) -> bool:
        return (container, record) in self.queued

    def done(self, entry: Placed) -> None:
        with contextlib.suppress(ValueError):
            self.queued.remove(entry)

    def begin(self, entries: list[Placed]) -> None:
        """Removals about to run: written down before the spool entry that knew of them
        goes (every save includes them until ``end``: other tasks save too). The files are
        hidden from now on: a listing answered before a removal completes still lists them,
        and a superseded version must never take its name back (read-your-writes)."""
        for container, record in entries:
            self.ns.doom(container, record)
        self.under_way += entries
        self.save()

    def end(self, entries: list[Placed]) -> None:
        """Those removals ran: each either succeeded or is ``queued`` now."""
        for entry in entries:
            with contextlib.suppress(ValueError):
                self.under_way.remove(entry)

    def save(self) -> None:
        """Persist what is left to clean up on the server (see Spool.save_journal): queued
        removals, removals under way, and lost attempts still to resolve."""
        removals = list(self.queued)
        removals += [e for e in self.under_way if e not in removals]
        lost = [(container, *entry) for container, entry in self.ns.lost_entries()]
        try:
            self.spool.save_journal(removals, lost)
        except OSError as exc:
            log.error("could not write the cleanup journal: %s", exc)

    def load(self) -> None:
        """Take over an earlier mount's unfinished cleanup; the retry loop does it."""
        removals, lost = self.spool.load_journal()
        for container, record in removals:
            self.queue(container, record, save=False)  # hidden until then
        for container, name, started, size, checksum in lost:
            self.ns.add_lost(container, (name, started, size, checksum))
        if removals or lost:
            log.info(
                "an earlier mount left %d removal(s) and %d lost upload(s) to check; doing it",
                len(removals),
                len(lost),
            )
