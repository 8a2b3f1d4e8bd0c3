"""One upload: from the spool to a confirmed server record, then the superseded versions go.

The rules are in SEMANTICS.md ("Writing", "Durability"), the locking in
docs/notes/upload-concurrency.md. The invariants that matter most: a new version is confirmed
before the one it replaces is removed; bytes leave the spool only once the server has them or
has refused them for good; a create whose answer was lost is looked for before anything is
sent again; uploads of one name to one directory never overlap (kanboard-api §7), and never
share a server second with an earlier record of that name: their rows would share one stored
file, which Kanboard 1.2.27 and older delete with either row (kanboard-api §12).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import trio

from kbfs.client.errors import (
    AuthenticationError,
    KanboardError,
    NotFound,
    PermissionDenied,
    Rejected,
    RpcError,
    ServerError,
    SourceError,
    TransportError,
)
from kbfs.client.models import Container, FileRecord
from kbfs.client.protocol import KanboardAPI
from kbfs.errors import (
    Conflict,
    ContentUnstorable,
    IncompleteContent,
    SharesStorage,
    StoredBytesMissing,
    UploadFailed,
    to_errno,
)
from kbfs.namespace.names import image_problem
from kbfs.namespace.nodes import Node, is_doomed, same_file
from kbfs.namespace.tree import Namespace, Placed
from kbfs.remote.refresher import Refresher
from kbfs.storage.contentcache import ContentCache
from kbfs.storage.held import HeldCopies
from kbfs.storage.spool import PendingFile, Spool, digest
from kbfs.upload.guard import ReleaseGuard
from kbfs.upload.journal import CleanupQueue
from kbfs.upload.lost import Attempt, LostCreates
from kbfs.upload.newrecords import NewRecords

log = logging.getLogger(__name__)

# Answered by the server: nothing was created, so there is no lost attempt to remember.
_ANSWERED = (AuthenticationError, PermissionDenied, Rejected, RpcError, SourceError)


@dataclass(slots=True)
class Sending:
    """One upload between ``Uploader.prepare`` and ``Uploader.finish``, under its locks."""

    node: Node
    pending: PendingFile
    container: Container
    name: str  # the name on the server
    size: int
    version: int  # the content's version when it was prepared
    sha256: str
    created: FileRecord | None  # the new file's record, once known
    attempt: Attempt | None = None  # the create under way, as written down


class Uploader:
    """Uploads, removals of what they supersede, and the locks that order them.

    State it owns: the per-name upload locks, the count of uploads in flight, the cleanup
    queue (``queue``) and the lost-create bookkeeping (``lost``), and its counters.
    """

    def __init__(
        self,
        client: KanboardAPI,
        namespace: Namespace,
        spool: Spool,
        content: ContentCache,
        refresher: Refresher,
        clock: Callable[[], float],
    ) -> None:
        self.client = client
        self.ns = namespace
        self.spool = spool
        self.content = content
        self.refresher = refresher
        self.clock = clock
        self.queue = CleanupQueue(spool, namespace)
        self.lost_creates = LostCreates(client, namespace, self.queue)
        self.uploads = 0
        self.failures = 0
        self.removals = 0
        self._name_locks: dict[tuple[Container, str], trio.Lock] = {}
        self.guard = ReleaseGuard(client, namespace)
        self.new_records = NewRecords(client, self.guard)
        # Each confirmed upload's bytes, until kbfs.upload.collisions has checked that no
        # other client's upload overwrote them on the server.
        self.held = HeldCopies(spool.root / "held")
        self.unremovable = 0  # removals Kanboard refused for good (stored bytes missing)
        self._in_flight = 0
        self._idle = trio.Event()
        self._idle.set()

    # ------------------------------------------------------------------ locks

    def name_lock(self, container: Container, name: str) -> trio.Lock:
        key = (container, name)
        lock = self._name_locks.get(key)
        if lock is None:
            lock = self._name_locks[key] = trio.Lock()
        return lock

    def busy(self) -> bool:
        """Whether an upload or a rename holds nodes across an await right now."""
        return bool(self._in_flight) or any(lock.locked() for lock in self._name_locks.values())

    def drop_idle_locks(self) -> None:
        """Forget the per-name locks (one per name ever uploaded would pile up). Only when
        ``busy()`` is False: then none is held, and none is about to be (an upload counts
        itself in flight before it takes one; the sweep takes its lock without awaiting)."""
        self._name_locks.clear()

    async def wait_idle(self, timeout: float) -> bool:
        with trio.move_on_after(timeout):
            await self._idle.wait()
            return True
        return False

    async def waited_for_upload(self, node: Node) -> bool:
        """If an upload of ``node`` is under way, wait for it to end and say so: it changes
        what names show, so the caller (rm, mv) must look at them again."""
        return await waited_for(node.pending)

    # ------------------------------------------------------------------ local content

    async def open_for_change(self, node: Node, *, truncate: bool) -> PendingFile:
        """Give ``node`` local content to change: copy-on-open, or empty for O_TRUNC."""
        while (pending := node.pending) is not None:
            if not truncate:
                return pending
            async with pending.lock:
                # An upload held the lock meanwhile, and may have settled the content (its
                # bytes went to the cache): then it is opened afresh, from the server version.
                if node.pending is pending:
                    self.spool.truncate(pending, 0)
                    pending.touch()
                    return pending
        initial = None
        if not truncate and node.record is not None:
            initial = await self.content.ensure(node.container, node.record)
        pending = self.spool.create(node.container, node.name, node.record, initial)
        if truncate and node.record is not None and node.record.size > 0:
            pending.touch()  # emptying a non-empty file is a change
        elif node.record is not None:
            pending.uploaded_version = pending.version  # same content as the server's
        self.ns.set_pending(node, pending)
        return pending

    def settle(self, node: Node) -> None:
        """Drop local content that is no longer needed once the last handle is closed."""
        pending = node.pending
        if pending is None:
            return
        if node.discarded:
            self.spool.discard(pending)
            self.ns.set_pending(node, None)
        elif not pending.dirty and node.record is not None:
            data = self.spool.release_data(pending)
            self.content.adopt(node.record, data)
            self.ns.set_pending(node, None)

    # ------------------------------------------------------------------ uploading

    async def upload(self, node: Node) -> None:
        """Send a dirty file's content with create*File; then drop the version it replaces.

        Order matters: the new file is created (and where the release needs it, read back)
        before the old one is removed, so a failure at any point leaves at least one complete
        copy on the server. On failure the bytes stay in the spool (fsync'ed, with what they
        are for) and UploadFailed (errno from the cause) propagates to close().
        """
        pending = node.pending
        if pending is None:
            return
        container = node.container
        server_name = self.ns.server_name(node)
        with self.in_flight():
            try:
                async with self.name_lock(container, server_name), pending.lock:
                    sending = await self.prepare(node, pending, container, server_name)
                    if sending is None:
                        return
                    if sending.created is None:
                        await self.guard.before_create(node, container, server_name)
                        await self._send_one(sending)
                    replaced = self.finish(sending)
                await self.after(node, replaced)
            except Exception as exc:
                self.failed(node, pending, container, server_name, exc)

    @contextlib.contextmanager
    def in_flight(self) -> Iterator[None]:
        """Counts an upload under way (``wait_idle``, ``busy``) while the block runs."""
        if self._in_flight == 0:
            self._idle = trio.Event()
        self._in_flight += 1
        try:
            yield
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    async def after(self, node: Node, replaced: list[Placed]) -> None:
        """Once the locks are let go: the versions the upload superseded are removed, and
        content nobody has open any more is settled."""
        await self._remove_superseded(node, replaced)
        if node.open_handles == 0:
            self.settle(node)  # a background upload: nobody will close this file

    async def prepare(
        self, node: Node, pending: PendingFile, container: Container, server_name: str
    ) -> Sending | None:
        """Under the upload's locks: what is to be sent, or None if nothing is.

        Content that needs no upload (saved meanwhile, removed, empty, a scratch file, cut
        off at max_file_size) is kept as it is; content that must never be sent (a write into
        it failed) or that Kanboard cannot hold raises. A create of this name whose answer
        was lost is looked for first: if it made this very content, ``record`` is that file.
        """
        if not pending.dirty or node.discarded:
            return None  # saved meanwhile, or removed by the user: nothing to send
        if pending.incomplete is not None:
            # A write into it failed: never sent, not even partly (the server version stays).
            raise IncompleteContent(pending.incomplete, pending.incomplete_errno)
        size = pending.size()
        if size == 0:
            log.info("%s is empty: kept in this mount only", self.ns.path_of(node))
            self.spool.sync(pending)
            return None
        if self.ns.is_scratch(node):
            self.spool.sync(pending)
            return None  # a scratch file: never uploaded (see DEFAULT_LOCAL_NAMES)
        if pending.too_large:
            # A write passed max_file_size: a truncated copy. Kept, described, never sent.
            self.spool.describe(pending, container, server_name, node.record, node.stale)
            self.spool.sync(pending)
            return None
        check_storable(pending, server_name, size)
        version = pending.version
        # What the collision check compares the server's bytes with (kbfs.upload.collisions);
        # the pending lock is held: no write changes the bytes until the upload is done.
        sha256 = await trio.to_thread.run_sync(digest, pending.path)
        record = await self.lost_creates.resolve(node, container, server_name, size)
        if record is None and pending.from_earlier_mount:
            await self._check_conflict(node, container, server_name)
        return Sending(node, pending, container, server_name, size, version, sha256, record)

    def begin_create(self, sending: Sending) -> None:
        """Written down before the create is sent (a crash mid-request leaves a trace): when,
        by the server's clock. A lost answer's file is looked for among records dated from
        then on, and the server's clock may differ from this machine's."""
        sending.attempt = (self.client.server_clock.now() or time.time(), sending.size, None)
        pending = sending.pending
        pending.attempts.append(sending.attempt)
        node = sending.node
        self.spool.describe(pending, sending.container, sending.name, node.record, node.stale)

    async def _send_one(self, sending: Sending) -> None:
        """create*File of one file; ``sending.created`` is the new file's record after it."""
        self.begin_create(sending)
        try:
            with open(sending.pending.path, "rb") as source:
                new_id = await self.client.create_file(
                    sending.container, sending.name, source, sending.size
                )
        except Exception as exc:
            await self.create_failed(sending, exc)
            raise
        await self.created(sending, new_id)

    async def create_failed(self, sending: Sending, exc: BaseException) -> None:
        """A create that failed: answered (nothing was created, nothing to remember), or
        maybe made on the server (a lost answer, a 500, a garbled answer): then what was sent
        is remembered, and looked for before anything is sent again."""
        assert sending.attempt is not None
        sending.pending.attempts.remove(sending.attempt)
        if not may_have_created(exc):
            return
        pending, container, name = sending.pending, sending.container, sending.name
        await self.lost_creates.note(pending, container, name, sending.attempt)

    async def created(self, sending: Sending, new_id: int) -> None:
        """The server answered with the new file's id: its record (read back where the
        release needs it, else known by id only until a listing shows it)."""
        assert sending.attempt is not None
        sending.pending.attempts.remove(sending.attempt)
        container, name, size = sending.container, sending.name, sending.size
        sending.created = await self.new_records.record(container, new_id, name, size)

    def finish(self, sending: Sending) -> list[Placed]:
        """Under the locks still: the node stands for the new file; the versions it
        supersedes are handed over (journalled) for removal."""
        node, pending, container = sending.node, sending.pending, sending.container
        record = sending.created
        assert record is not None
        pending.uploaded_version = sending.version
        pending.last_error = None
        pending.failures = 0
        old = node.record
        self.ns.attach_upload(node, record, old)
        self.held.hold(pending.path, sending.sha256, container, record)
        self.uploads += 1
        log.info(
            "uploaded %s (%d bytes, inode %d) as file %d",
            self.ns.path_of(node),
            sending.size,
            node.ino,
            record.id,
        )
        replaced = [(container, old)] if old is not None else []
        replaced += self.ns.take_stale(node)
        replaced += self.ns.unhide(container, sending.name)
        replaced = [(c, r) for c, r in replaced if not (c == container and r.id == record.id)]
        if replaced:
            # Written down before the spool entry goes: a crash before the removals must not
            # leave the old versions behind as duplicates.
            self.queue.begin(replaced)
        if not pending.dirty:
            self.spool.release_data(pending)  # the description is no longer needed
        return replaced

    async def supersede(self, node: Node | None, replaced: list[Placed]) -> None:
        """Remove server versions superseded outside an upload of their own (a move that
        replaced a file whose upload ended meanwhile): journalled, hidden, looked at first."""
        self.queue.begin(replaced)
        await self._remove_superseded(node, replaced)

    async def _remove_superseded(self, node: Node | None, replaced: list[Placed]) -> None:
        """Each superseded version is looked at (get*File) before it is removed, even one the
        latest listing shows: another client may have removed it since and made a new file
        that got its id (ids are reused, kanboard-api §7), and removing that would lose
        someone's acknowledged save (found by the two-mount stress test)."""
        try:
            for where, stale in replaced:
                await self.remove_replaced(where, stale, node, verify=True)
        finally:
            self.queue.end(replaced)  # removed now, or queued
        if replaced:
            self.queue.save()

    def failed(
        self,
        node: Node,
        pending: PendingFile,
        container: Container,
        server_name: str,
        exc: Exception,
    ) -> None:
        """Keep the bytes and what they are for, schedule the retry, raise UploadFailed."""
        self.failures += 1
        pending.last_error = str(exc)
        pending.failures += 1
        pending.next_retry = self.clock() + min(30.0, 2.0 * 2**pending.failures)
        pending.permanent = _is_permanent(exc, pending.failures)
        try:
            self.spool.describe(pending, container, server_name, node.record, node.stale)
            self.spool.sync(pending)
        except OSError as disk:
            log.error("could not record the spool entry of %s: %s", pending.path, disk)
        log.error(
            "upload of %s failed: %s; the %d bytes are kept in %s",
            self.ns.path_of(node),
            exc,
            pending.size_or_zero(),
            pending.path,
        )
        raise UploadFailed(str(exc), to_errno(exc)) from exc

    async def _check_conflict(self, node: Node, container: Container, name: str) -> None:
        """Before the first upload of content a crashed mount left behind: if the server now
        holds a version of that name made after the content was last written (a move that
        completed just before the crash, another client), uploading would add a duplicate or
        overwrite the newer version. The content goes to the recovery folder instead."""
        pending = node.pending
        assert pending is not None
        written = int(pending.path.stat().st_mtime)
        replaces = node.record
        records = await self.client.list_files(container)
        doomed = self.ns.directory(container).doomed  # superseded, or a lost attempt's copy
        newer = [
            r
            for r in records
            if r.name == name
            # The version this content replaces, known by version, not by id: a newer file
            # may have reused its id (kanboard-api §7).
            and not (replaces is not None and same_file(r, replaces))
            and r.date >= written
            and not is_doomed(doomed, r)
        ]
        if newer:
            pending.conflict = True  # never shown as a local-only file over the newer one
            raise Conflict(
                f"{name} was replaced on the server (file {newer[0].id}) after this version"
                " was written, before the mount that held it stopped"
            )
        pending.from_earlier_mount = False

    # ------------------------------------------------------------------ removing

    async def remove_remote(
        self, container: Container, record: FileRecord, *, checked: bool = False
    ) -> None:
        """remove*File, and when its answer says nothing certain, look at the file itself.

        ``false`` means "no such file" or a storage error; a lost or garbled answer may hide a
        removal that happened. Either way get*File tells: gone (or the id now names another
        file) is success, still there is EIO, or StoredBytesMissing when Kanboard (1.2.42 and
        later) refuses because the file's stored bytes are gone (kanboard-api §12 row 3).

        Before that, two checks where the server does not protect the data itself: a project
        file before Kanboard 1.2.50 is removed only once get*File has shown it still in this
        project (removeProjectFile removes a file of any project then, kanboard-api §12 row 6; done
        by the caller when ``checked``), and a row whose storage path another known row
        shares is not removed on 1.2.27 and older, where that deletes the other row's bytes.
        """
        rules = self.client.rules
        if not checked and container.task_id is None and not rules.checks_project_files:
            try:
                current = await self.client.get_file(container, record.id)
            except NotFound:
                return  # not in this project (any more): gone, and nothing else is touched
            if not same_file(current, record):
                return  # the id now names another file; ours is gone
        if not rules.keeps_shared_bytes:
            sharing = self.guard.shares_path(container, record)
            if sharing is not None:
                raise SharesStorage(
                    f"file {record.id} shares its stored bytes with file {sharing.id}: "
                    "this Kanboard would delete both contents"
                )
        try:
            await self.client.remove_file(container, record.id)
            return
        except (AuthenticationError, PermissionDenied):
            raise
        except TransportError as exc:
            if not exc.request_sent:
                raise
            failure: KanboardError = exc
        except KanboardError as exc:
            failure = exc
        try:
            current = await self.client.get_file(container, record.id)
        except NotFound:
            return  # gone: the unlink's goal is met
        if not same_file(current, record):
            return  # the id now belongs to another file; ours is gone
        if isinstance(failure, NotFound):
            log.error(
                "%s file %d (%r): Kanboard cannot remove a file whose stored bytes are missing",
                record.kind.value,
                record.id,
                record.name,
            )
            raise StoredBytesMissing(
                f"Kanboard cannot remove file {record.id}: its stored bytes are missing"
            )
        raise failure

    async def remove_replaced(
        self, container: Container, old: FileRecord, node: Node | None, *, verify: bool = False
    ) -> bool:
        """Remove a server version that a confirmed upload has superseded; True once it is
        gone (removed now, or no longer that file), False if its removal is queued.

        If that fails, the new content is safe anyway; the old version stays hidden and its
        removal is retried in the background (after checking it is still the same file).
        """
        project_check = container.task_id is None and not self.client.rules.checks_project_files
        try:
            if verify or project_check or not old.path or self.queue.needs_check(old):
                # Known only from a spool entry, or queued a while ago: the id may have been
                # reused since (kanboard-api §7), so remove it only if it is still that file.
                try:
                    current = await self.client.get_file(container, old.id)
                except NotFound:
                    current = None
                if current is None or not same_file(current, old):
                    log.debug(
                        "superseded %s file %d (%r) is gone already%s",
                        old.kind.value,
                        old.id,
                        old.name,
                        "" if current is None else " (the id now names another file)",
                    )
                    self.ns.forget_record(container, old)
                    return True
            await self.remove_remote(container, old, checked=True)
            self.removals += 1
            log.debug("removed superseded %s file %d (%r)", old.kind.value, old.id, old.name)
        except (StoredBytesMissing, SharesStorage) as exc:
            # Retrying cannot help: the row stays on the server (shown again by the next
            # listing, where rm reports the same); `kbfs clear` says what it left.
            log.warning(
                "%s: the superseded file %d is left on the server: %s",
                self.ns.path_of(node) if node is not None else container,
                old.id,
                exc,
            )
            self.unremovable += 1
            self.queue.done((container, old))
            self.ns.forget_record(container, old)
            self.refresher.invalidate(container)
            return True
        except KanboardError as exc:
            log.warning(
                "%s: the superseded file %d could not be removed yet (%s); will retry",
                self.ns.path_of(node) if node is not None else container,
                old.id,
                exc,
            )
            self.queue.queue(container, old)
            self.refresher.invalidate(container)
            return False
        self.ns.forget_record(container, old)
        return True


def may_have_created(exc: BaseException) -> bool:
    """Whether a create that failed with ``exc`` may have made its file all the same: not
    when the server answered (a refusal, an error it reported), nor when the request never
    left; yes for a lost or garbled answer, a timeout after sending, an HTTP 500."""
    if isinstance(exc, _ANSWERED):
        return False
    return not (isinstance(exc, TransportError) and not exc.request_sent)


async def waited_for(pending: PendingFile | None) -> bool:
    """If an upload of this content holds its lock, wait for it to end and say so."""
    if pending is None or not pending.lock.locked():
        return False
    async with pending.lock:
        pass
    return True


def check_storable(pending: PendingFile, server_name: str, size: int) -> None:
    """Refuse, before sending, content Kanboard cannot hold under this name."""
    if size == 1 and pending.path.read_bytes() == b"0":
        raise ContentUnstorable("Kanboard cannot store a file whose whole content is '0'")
    with open(pending.path, "rb") as head:
        problem = image_problem(server_name, head.read(16))
    if problem is not None:
        raise ContentUnstorable(problem)


def _is_permanent(exc: BaseException, failures: int) -> bool:
    """Whether retrying an upload cannot help: the bytes go to the recovery folder instead."""
    if isinstance(exc, UploadFailed) and exc.__cause__ is not None:
        exc = exc.__cause__
    if isinstance(
        exc, ContentUnstorable | Conflict | IncompleteContent | Rejected | PermissionDenied
    ):
        return True
    if isinstance(exc, AuthenticationError):
        return False  # a token can be fixed; keep the bytes queued
    # HTTP 500 for the same bytes again and again: an image name on non-image content, or a
    # body larger than the server takes (kanboard-api §8, §9).
    return isinstance(exc, ServerError) and failures >= 3
