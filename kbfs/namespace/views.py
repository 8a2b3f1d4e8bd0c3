"""One file directory as this mount sees it: the server's records, and this mount's changes.

The server's records arrive as listings (``apply_fetch``); while a listing is in flight this
mount may change the directory itself, so each file directory keeps a numbered journal of its
own changes and replays the ones a late answer could not have seen. ``entries`` and ``local``
are what the directory shows; ``kbfs.namespace.tree`` builds them and is the only code that
changes any of these fields. Pure data: no I/O, no trio.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from kbfs.client.models import FileRecord
from kbfs.namespace.nodes import doom_key, file_key, id_key, same_file

# One lost create: (name, wall-clock time sent, size, sha256 or None).
LostEntry = tuple[str, float, int, str | None]
JournalEntry = tuple[int, float, FileRecord | None, int, FileRecord | None]


@dataclass(eq=False)
class ContainerDir:
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
    lost: list[LostEntry] = field(default_factory=list)
    # Versions this mount uploaded and has not removed, by doom_key() (by id while known by
    # id only): never taken for a lost create's copy. A removed one leaves: its id may be
    # reused, by the very create whose answer is lost.
    ours: dict[tuple[object, ...], FileRecord] = field(default_factory=dict)
    # This mount's own changes, numbered: a listing requested before a change and answered
    # after it must not undo it (an upload vanishing, a removed file coming back).
    generation: int = 0
    # Listings asked so far, and the newest (by asking order) applied: an answer older than
    # one already applied carries older news and is dropped (a batched prefetch and a single
    # refresh can cross).
    asked: int = 0
    applied: int = 0
    # (generation, time, the record added or None, file id, the version removed or None)
    journal: list[JournalEntry] = field(default_factory=list)

    def undoom(self, record: FileRecord) -> None:
        """``record`` need not stay hidden any more (removed, or never superseded after all).
        Dropped under every key it may have been doomed by: by id too, since a record known by
        id only when it was doomed is doomed by id, and ids are reused (kanboard-api §7): left
        behind, that key would hide the next file that gets the id."""
        self.doomed.discard(file_key(record))
        self.doomed.discard(id_key(record))

    def note_ours(self, record: FileRecord) -> None:
        self.ours[doom_key(record)] = record

    def is_ours(self, record: FileRecord) -> bool:
        """Whether the listed ``record`` is a version this mount uploaded (and still has)."""
        known = self.ours.get(file_key(record)) or self.ours.get(id_key(record))
        return known is not None and same_file(record, known)

    def note_add(self, record: FileRecord) -> None:
        self.records[record.id] = record
        self._log(record, record.id, None)

    def note_remove(self, record: FileRecord) -> None:
        """This version left the directory (removed, superseded, moved away). A listing
        asked before and answered after this still lists it: the replay drops that version
        only, never another file that reused its id."""
        current = self.records.get(record.id)
        if current is not None and same_file(current, record):
            del self.records[record.id]
        for key in (file_key(record), id_key(record)):
            known = self.ours.get(key)
            if known is not None and (same_file(record, known) or same_file(known, record)):
                del self.ours[key]
        self._log(None, record.id, record)

    def _log(self, added: FileRecord | None, file_id: int, removed: FileRecord | None) -> None:
        self.generation += 1
        now = time.monotonic()
        self.journal.append((self.generation, now, added, file_id, removed))
        if len(self.journal) > 64:
            self.journal = [e for e in self.journal if now - e[1] < 300]

    def apply_fetch(self, records: list[FileRecord], since: int) -> None:
        """Take a fetched listing, then replay our changes made while it was in flight."""
        self.records = {r.id: r for r in records}
        for gen, _when, added, file_id, removed in self.journal:
            if gen <= since:
                continue
            if added is not None:
                self.records[file_id] = added
                continue
            current = self.records.get(file_id)
            if current is not None and removed is not None and same_file(current, removed):
                del self.records[file_id]
