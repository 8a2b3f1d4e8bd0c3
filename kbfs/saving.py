"""Getting content to the server, and keeping it until it is there: uploads, confirmations,
removal of superseded versions, lost answers, background retries, crash recovery, the
recovery folder. Part of ``Vfs`` (a mixin: it works on the vfs's directories and nodes).

The rules are in SEMANTICS.md ("Writing", "Durability"); the invariants that matter most:
a new version is confirmed before the one it replaces is removed; bytes leave the spool only
once the server has them or has refused them for good; a create whose answer was lost is
looked for before anything is sent again.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

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
from kbfs.errors import (
    Conflict,
    ContentUnstorable,
    FsError,
    UploadFailed,
    to_errno,
)
from kbfs.inodes import (
    Node,
    doom_key,
    file_key,
    id_key,
    is_doomed,
    is_provisional,
    same_file,
)
from kbfs.listings import ContainerDir
from kbfs.names import image_problem
from kbfs.spool import PendingFile, digest, superseded

if TYPE_CHECKING:
    from kbfs.vfs import Vfs

log = logging.getLogger(__name__)


class Saving:
    """Upload and durability methods of ``Vfs``."""

    def _name_lock(self: Vfs, container: Container, name: str) -> trio.Lock:
        key = (container, name)
        lock = self._name_locks.get(key)
        if lock is None:
            lock = self._name_locks[key] = trio.Lock()
        return lock

    async def upload(self: Vfs, node: Node) -> None:
        """Send a dirty file's content with create*File; then drop the version it replaces.

        Order matters: the new file is created and confirmed (get*File) before the old one is
        removed, so a failure at any point leaves at least one complete copy on the server.
        On failure the bytes stay in the spool (fsync'ed, with what they are for) and the error
        propagates to close(). A create whose answer was lost is looked for on the server
        before anything is sent again, so no file is ever uploaded twice.
        """
        pending = node.pending
        if pending is None:
            return
        container = node.container
        server_name = node.record.name if node.record is not None else node.name
        if self._uploads_in_flight == 0:
            self._uploads_idle = trio.Event()
        self._uploads_in_flight += 1
        try:
            async with self._name_lock(container, server_name), pending.lock:
                if not pending.dirty or node.discarded:
                    return  # saved meanwhile, or removed by the user: nothing to send
                size = pending.size()
                if size == 0:
                    log.info("%s is empty: kept in this mount only", self.path_of(node))
                    self.spool.sync(pending)
                    return
                if self.is_scratch(node):
                    self.spool.sync(pending)
                    return  # a scratch file: never uploaded (see DEFAULT_LOCAL_NAMES)
                if size == 1 and pending.path.read_bytes() == b"0":
                    raise ContentUnstorable(
                        "Kanboard cannot store a file whose whole content is '0'"
                    )
                with open(pending.path, "rb") as head:
                    problem = image_problem(server_name, head.read(16))
                if problem is not None:
                    raise ContentUnstorable(problem)
                version = pending.version
                record = await self._resolve_lost(node, container, server_name, size)
                if record is None and pending.from_earlier_mount:
                    await self._check_conflict(node, container, server_name)
                if record is None:
                    # Written down before sending: a crash mid-request leaves a trace.
                    attempt = (time.time(), size, None)
                    pending.lost.append(attempt)
                    self.spool.describe(pending, container, server_name, node.record, node.stale)
                    try:
                        with open(pending.path, "rb") as source:
                            new_id = await self.client.create_file(
                                container, server_name, source, size
                            )
                    except (
                        AuthenticationError,
                        PermissionDenied,
                        Rejected,
                        RpcError,
                        SourceError,
                    ):
                        pending.lost.remove(attempt)  # answered: nothing was created
                        raise
                    except TransportError as exc:
                        pending.lost.remove(attempt)
                        if exc.request_sent:
                            await self._note_lost(pending, container, server_name, attempt)
                        raise
                    except Exception:
                        # A 500, a garbled answer: the file may exist. Remember what was sent.
                        pending.lost.remove(attempt)
                        await self._note_lost(pending, container, server_name, attempt)
                        raise
                    pending.lost.remove(attempt)
                    record = await self._confirm(container, new_id, server_name, size)
                pending.uploaded_version = version
                pending.last_error = None
                pending.failures = 0
                old = node.record
                # Versions the latest listing still shows can be removed by id at once; any
                # other may be gone already and its id reused by another file (§7): check it.
                listed = {
                    (c, r.id)
                    for c, r in [(container, old), *node.stale]
                    if r is not None and self._listed(c, r)
                }
                self._attach(node, record, old)
                self.stats.uploads += 1
                log.info(
                    "uploaded %s (%d bytes, inode %d) as file %d",
                    self.path_of(node),
                    size,
                    node.ino,
                    record.id,
                )
                replaced = [(container, old)] if old is not None else []
                replaced += node.stale
                node.stale = []
                replaced += self._unhide(self._dir_state(self.node(node.parent)), server_name)
                replaced = [
                    (c, r) for c, r in replaced if not (c == container and r.id == record.id)
                ]
                if replaced:
                    # Written down before the spool entry goes: a crash before the removals
                    # below must not leave the old versions behind as duplicates. (Every save
                    # of the journal includes them until they are done: other tasks save too.)
                    self._removing += replaced
                    self._save_journal()
                if not pending.dirty:
                    self.spool.release_data(pending)  # the description is no longer needed
            try:
                for where, stale in replaced:
                    await self._remove_replaced(
                        where, stale, node, verify=(where, stale.id) not in listed
                    )
            finally:
                for entry in replaced:  # removed now, or queued (then in _stale_removals)
                    with contextlib.suppress(ValueError):
                        self._removing.remove(entry)
            if replaced:
                self._save_journal()
            if node.open_handles == 0:
                self._settle(node)  # a background upload: nobody will close this file
        except BaseException as exc:
            if isinstance(exc, Exception):
                self.stats.upload_failures += 1
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
                    self.path_of(node),
                    exc,
                    _size_or_zero(pending),
                    pending.path,
                )
                raise UploadFailed(str(exc), to_errno(exc)) from exc
            raise
        finally:
            self._uploads_in_flight -= 1
            if self._uploads_in_flight == 0:
                self._uploads_idle.set()

    async def _check_conflict(self: Vfs, node: Node, container: Container, name: str) -> None:
        """Before the first upload of content a crashed mount left behind: if the server now
        holds a version of that name made after the content was last written (a move that
        completed just before the crash, another client), uploading would add a duplicate or
        overwrite the newer version. The content goes to the recovery folder instead."""
        pending = node.pending
        assert pending is not None
        written = int(pending.path.stat().st_mtime)
        replaces = node.record.id if node.record is not None else None
        records = await self.client.list_files(container)
        doomed = self._state_of(container).doomed  # superseded, or a lost attempt's copy
        newer = [
            r
            for r in records
            if r.name == name
            and r.id != replaces
            and r.date >= written
            and not is_doomed(doomed, r)
        ]
        if newer:
            raise Conflict(
                f"{name} was replaced on the server (file {newer[0].id}) after this version"
                " was written, before the mount that held it stopped"
            )
        pending.from_earlier_mount = False

    async def _digest(self: Vfs, pending: PendingFile) -> str:
        return await trio.to_thread.run_sync(digest, pending.path)

    async def _note_lost(
        self: Vfs,
        pending: PendingFile,
        container: Container,
        name: str,
        attempt: tuple[float, int, str | None],
    ) -> None:
        entry = (attempt[0], attempt[1], await self._digest(pending))
        pending.lost.append(entry)
        self._state_of(container).lost.append((name, *entry))
        self._save_journal()

    async def _resolve_lost(
        self: Vfs, node: Node | None, container: Container, name: str, size: int
    ) -> FileRecord | None:
        """After creates of ``name`` whose answers were lost: adopt the file that holds the
        current content (if ``node`` is given), and remove the others — files made by
        attempts that failed. One listing call, and only when there is something to resolve.

        A file counts as made by a lost attempt when it has that name and size, is dated no
        earlier than the attempt, and is not one this mount created and confirmed.
        """
        state = self._state_of(container)
        pending = node.pending if node is not None else None
        entries = [e for e in state.lost if e[0] == name]
        if pending is not None:
            entries += [(name, *e) for e in pending.lost if (name, *e) not in entries]
        if not entries:
            return None
        records = await self.client.list_files(container)
        keep = set(state.ours)
        if node is not None and node.record is not None:
            keep.add(file_key(node.record))
        current: str | None = None
        adopt = None
        for _name, started, lost_size, lost_digest in sorted(entries, key=lambda e: -e[1]):
            candidates = [
                r
                for r in records
                if r.name == name
                and r.size == lost_size
                and r.date >= int(started) - 1
                and file_key(r) not in keep
                and id_key(r) not in keep
            ]
            if not candidates:
                continue
            found = max(candidates, key=lambda r: (r.date, r.id))
            keep.add(file_key(found))
            same = pending is not None and lost_size == size
            if same and lost_digest is not None:
                assert pending is not None
                current = current or await self._digest(pending)
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
                state.doomed.add(doom_key(found))
                self._stale_removals.append((container, found))
        state.lost = [e for e in state.lost if e[0] != name]
        if pending is not None:
            pending.lost = []
        self._save_journal()
        # Files of that name that only might have been lost copies are shown again.
        self._apply_records(self.node(self._container_dir_ino(container)), state)
        return adopt

    async def _sweep_lost(self: Vfs) -> None:
        """Resolve lost attempts of names nobody is uploading any more (removed, renamed)."""
        for container, state in list(self._dirs.items()):
            for name in {e[0] for e in state.lost}:
                lock = self._name_lock(container, name)
                if lock.locked():
                    continue  # an upload of that name (a save, a move's staged copy) is running
                async with lock:
                    # Held while looking: a create that has been answered but not yet
                    # confirmed would otherwise look exactly like a lost attempt's file.
                    busy = any(
                        n.pending is not None and n.pending.dirty and not n.discarded
                        for n in (self.inodes.get(i) for i in self._view(state).values())
                        if n is not None and (n.record.name if n.record else n.name) == name
                    )
                    if busy:
                        continue
                    with contextlib.suppress(KanboardError):
                        await self._resolve_lost(None, container, name, -1)

    async def _confirm(
        self: Vfs, container: Container, file_id: int, name: str, size: int
    ) -> FileRecord:
        """The new file's server record: one get*File call, never a re-listing."""
        try:
            record = await self.client.get_file(container, file_id)
        except KanboardError as exc:
            log.warning("file %d was uploaded but could not be read back: %s", file_id, exc)
            record = FileRecord(
                kind=container.kind,
                id=file_id,
                name=name,
                size=size,
                date=int(time.time()),
                is_image=False,
                path="",
                etag=None,
                project_id=container.project_id if container.task_id is None else None,
                task_id=container.task_id,
                user_id=0,
            )
        if record.size != size:
            log.warning(
                "file %d: server reports %d bytes, %d were sent (same-second name collision?)",
                file_id,
                record.size,
                size,
            )
        return record

    def _attach(self: Vfs, node: Node, record: FileRecord, old: FileRecord | None) -> None:
        """Make ``node`` stand for the freshly uploaded ``record`` in its directory."""
        parent = self.node(node.parent)
        state = self._dir_state(parent)
        if is_provisional(record):
            # The next listing brings its real record; it must map to this node.
            self._provisional[(record.kind, record.id)] = node.ino
        twin = self.inodes.by_key(file_key(record))
        if twin is not None and twin is not node:
            # A listing showed this very upload before we knew it was ours (a lost answer):
            # this node, which holds the content, becomes the file.
            self.inodes.rekey(twin, ("superseded", twin.ino))
            twin.linked = False
        self.inodes.rekey(node, file_key(record))
        node.record = record
        if old is not None:
            state.note_remove(old.id)
        state.note_add(record)
        state.ours.add(doom_key(record))
        if state.local.get(node.name) == node.ino:  # never another file's entry
            del state.local[node.name]
        self._apply_records(parent, state)

    async def _remove_replaced(
        self: Vfs, container: Container, old: FileRecord, node: Node | None, *, verify: bool = False
    ) -> bool:
        """Remove a server version that a confirmed upload has superseded; True once it is
        gone (removed now, or no longer that file), False if its removal is queued.

        If that fails, the new content is safe anyway; the old version stays hidden and its
        removal is retried in the background (after checking it is still the same file).
        """
        try:
            if verify or not old.path or file_key(old) in self._unverified:
                # Known only from a spool entry, or queued a while ago: the id may have been
                # reused since (API-FACTS §7), so remove it only if it is still that file.
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
                    self._forget_record(container, old)
                    return True
            await self._remove_remote(container, old)
            self.stats.removals += 1
            log.debug("removed superseded %s file %d (%r)", old.kind.value, old.id, old.name)
        except KanboardError as exc:
            log.warning(
                "%s: the superseded file %d could not be removed yet (%s); will retry",
                self.path_of(node) if node is not None else container,
                old.id,
                exc,
            )
            if (container, old) not in self._stale_removals:
                self._stale_removals.append((container, old))
                self._save_journal()
            self._state_of(container).doomed.add(doom_key(old))
            self._dirs.get(container, ContainerDir()).fetched_at = -1e18
            return False
        self._forget_record(container, old)
        return True

    def _listed(self: Vfs, container: Container, record: FileRecord) -> bool:
        """Whether the directory's current records show this very version."""
        state = self._dirs.get(container)
        current = state.records.get(record.id) if state is not None else None
        return current is not None and same_file(current, record)

    def _state_of(self: Vfs, container: Container) -> ContainerDir:
        state = self._dirs.get(container)
        if state is None:
            state = self._dirs[container] = ContainerDir()
        return state

    def _forget_record(self: Vfs, container: Container, old: FileRecord) -> None:
        state = self._dirs.get(container)
        if state is not None:
            state.doomed.discard(doom_key(old))
        if state is not None and old.id in state.records:
            state.note_remove(old.id)
            dir_ino = self._container_dir_ino(container)
            self._apply_records(self.node(dir_ino), state)

    def _unhide(
        self: Vfs, state: ContainerDir, server_name: str
    ) -> list[tuple[Container, FileRecord]]:
        """Hidden server files superseded by a new upload of their name."""
        out = []
        for record in [r for r in state.hidden.values() if r.name == server_name]:
            del state.hidden[record.id]
            holder = self._hider(record)
            if holder is not None and holder.hides is not None:
                out.append((holder.hides[0], record))
                holder.hides = None
        return out

    def _hider(self: Vfs, record: FileRecord) -> Node | None:
        for node in self.inodes:
            if node.hides is not None and node.hides[1] is record:
                return node
        return None

    def _container_dir_ino(self: Vfs, container: Container) -> int:
        if container.task_id is None:
            return self._files_dir_node(container.project_id).ino
        return self._task_node(container.project_id, container.task_id).ino

    def start_background(self: Vfs, nursery: trio.Nursery) -> None:
        """Start what runs beside request handling: downloads that outlive the request that
        started them, and the retry of failed uploads (including an earlier mount's)."""
        self.content.start_downloads_in(nursery)
        self._load_journal()
        self.load_spool()
        nursery.start_soon(self.run_retries)

    def _save_journal(self: Vfs) -> None:
        """Persist what is left to clean up on the server (see Spool.save_journal): queued
        removals, removals under way, and lost attempts still to resolve."""
        removals = list(self._stale_removals)
        removals += [e for e in self._removing if e not in removals]
        lost = [
            (container, name, started, size, checksum)
            for container, state in self._dirs.items()
            for name, started, size, checksum in state.lost
        ]
        try:
            self.spool.save_journal(removals, lost)
        except OSError as exc:
            log.error("could not write the cleanup journal: %s", exc)

    def _load_journal(self: Vfs) -> None:
        """Take over an earlier mount's unfinished cleanup; the retry loop does it."""
        removals, lost = self.spool.load_journal()
        for container, record in removals:
            if (container, record) not in self._stale_removals:
                self._stale_removals.append((container, record))
            self._state_of(container).doomed.add(doom_key(record))  # hidden until then
        for container, name, started, size, checksum in lost:
            state = self._state_of(container)
            if (name, started, size, checksum) not in state.lost:
                state.lost.append((name, started, size, checksum))
        if removals or lost:
            log.info(
                "an earlier mount left %d removal(s) and %d lost upload(s) to check; doing it",
                len(removals),
                len(lost),
            )

    def load_spool(self: Vfs) -> int:
        """Take over the pending uploads an earlier mount of this server left behind.

        They show in their directories at once (with their unsaved content) and the retry loop
        uploads them. Of several unsaved versions of one file, the newest is kept for upload
        and the older ones go to the recovery folder (never deleted).
        """
        leftovers = sorted(self.spool.load_leftovers(), key=lambda e: e[0].created)
        adopted = 0
        for pending, meta in leftovers:
            if _size_or_zero(pending) == 0:
                # Empty content lives in one mount only (Kanboard cannot store it): like an
                # unmount, a crash ends it. It carries no bytes to lose.
                self.spool.discard(pending)
                continue
            project_id = int(meta["project_id"])
            task_id = None if meta.get("task_id") is None else int(meta["task_id"])
            if task_id is None:
                dir_node = self._files_dir_node(project_id)
            else:
                dir_node = self._task_node(project_id, task_id)
            container = dir_node.container
            state = self._dir_state(dir_node)
            name = str(meta["name"])
            older = self.inodes.get(state.local.get(name, 0))
            if older is not None and older.pending is not None:
                self._recover(older, "a newer unsaved version of the same file was found")
            replaces = None
            if meta.get("replaces_file_id") is not None:
                replaces = FileRecord(
                    kind=container.kind,
                    id=int(meta["replaces_file_id"]),
                    name=str(meta.get("replaces_name") or name),
                    size=int(meta.get("replaces_size") or 0),
                    date=int(meta.get("replaces_date") or 0),
                    is_image=False,
                    path=str(meta.get("replaces_path") or ""),
                    etag=meta.get("replaces_etag"),
                    project_id=project_id if task_id is None else None,
                    task_id=task_id,
                    user_id=0,
                )
            node = self.inodes.new_local(
                name=name, parent=dir_node.ino, project_id=project_id, task_id=task_id
            )
            node.pending = pending
            node.record = replaces
            if replaces is not None:
                self._unverified.add(file_key(replaces))
            for where, record in superseded(meta):
                # Renamed away while open for writing: hidden under its old name until this
                # upload is confirmed and removes it (checked to be the same file first).
                node.stale.append((where, record))
                self._unverified.add(file_key(record))
                self._state_of(where).doomed.add(doom_key(record))
            state.local[name] = node.ino
            state.lost += [(name, *e) for e in pending.lost if (name, *e) not in state.lost]
            adopted += 1
            log.warning(
                "found an unsaved file from an earlier mount: %s (%d bytes); uploading it",
                self.path_of(node),
                _size_or_zero(pending),
            )
        for orphan in self.spool.leftovers():
            if not orphan.with_suffix(".json").exists():
                orphan.unlink(missing_ok=True)  # uploaded, or never described: nothing to keep
        return adopted

    async def run_retries(self: Vfs, interval: float = 2.0) -> None:
        """Retry failed uploads in the background, with backoff, while mounted; free the
        nodes nothing reaches any more (see Vfs.reclaim)."""
        while True:
            await trio.sleep(interval)
            await self.retry_once()
            self.reclaim_if_due()

    async def retry_once(self: Vfs) -> None:
        now = self.clock()
        await self._sweep_lost()
        # Each entry leaves the queue (and the journal) only once its file is gone: a crash
        # in the middle of this loop must not forget the ones not tried yet.
        done = 0
        for entry in list(self._stale_removals):
            if await self._remove_replaced(*entry, None, verify=True):
                with contextlib.suppress(ValueError):
                    self._stale_removals.remove(entry)
                done += 1
        if done:
            self._save_journal()  # not every 2 s while a removal keeps failing: nothing changed
        for node in self.pending_files():
            pending = node.pending
            if pending is None or node.discarded:
                continue
            if any(h.node is node and h.writable for h in self._handles.values()):
                continue  # its writer's close() uploads it
            if self.is_scratch(node):
                continue
            if _size_or_zero(pending) == 0:
                continue
            if not pending.permanent and pending.next_retry > now:
                continue
            if not pending.permanent:
                self._relink(node)
                # upload() logs a failure and schedules the next attempt itself.
                with contextlib.suppress(FsError):
                    await self.upload(node)
            if node.pending is not None and node.pending.permanent:
                self._recover(node, node.pending.last_error or "refused by the server")

    def _recover(self: Vfs, node: Node, reason: str) -> None:
        """Move bytes the server will never take to the recovery folder, out of the mount."""
        pending = node.pending
        if pending is None:
            return
        container = node.container
        meta = {
            "server": self.client.endpoint,
            "project_id": container.project_id,
            "task_id": container.task_id,
            "name": node.name,
            "path": self.path_of(node),
        }
        target = self.spool.recover(pending, node.name, reason, meta)
        stale_before = list(node.stale)
        for where, stale in node.stale:  # never superseded after all: show them again
            self._state_of(where).doomed.discard(doom_key(stale))
        node.stale = []
        if node.record is not None:
            self._state_of(container).doomed.discard(doom_key(node.record))
        log.error(
            "%s cannot be stored on the server (%s); its bytes were moved to %s",
            self.path_of(node),
            reason,
            target,
        )
        node.pending = None
        parent = self.node(node.parent)
        state = self._dir_state(parent)
        for name, ino in list(state.local.items()):
            if ino == node.ino:
                del state.local[name]
        node.linked = False
        # The versions it was to replace are shown again (a server file's node relinks).
        self._apply_records(parent, state)
        for where in {c for c, _ in stale_before}:
            self._apply_records(self.node(self._container_dir_ino(where)), self._state_of(where))

    async def wait_uploads_idle(self: Vfs, timeout: float) -> bool:
        with trio.move_on_after(timeout):
            await self._uploads_idle.wait()
            return True
        return False

    def _relink(self: Vfs, node: Node) -> None:
        """Show unsaved content again that lost its entry without the user removing it (the
        server file it replaces was deleted elsewhere, or renamed by the duplicate rule)."""
        if node.linked or node.discarded or node.pending is None:
            return
        parent = self.node(node.parent)
        state = self._dir_state(parent)
        if node.record is not None and node.record.id not in state.records:
            node.record = None  # the version it was to replace is gone: upload as new
        state.local[node.name] = node.ino
        node.linked = True
        log.info("%s: unsaved content shown again under its name", self.path_of(node))


def _is_permanent(exc: BaseException, failures: int) -> bool:
    """Whether retrying an upload cannot help: the bytes go to the recovery folder instead."""
    if isinstance(exc, UploadFailed) and exc.__cause__ is not None:
        exc = exc.__cause__
    if isinstance(exc, ContentUnstorable | Conflict | Rejected | PermissionDenied):
        return True
    if isinstance(exc, AuthenticationError):
        return False  # a token can be fixed; keep the bytes queued
    # HTTP 500 for the same bytes again and again: an image name on non-image content, or a
    # body larger than the server takes (API-FACTS §8, §9).
    return isinstance(exc, ServerError) and failures >= 3


def _size_or_zero_path(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _size_or_zero(pending: PendingFile) -> int:
    try:
        return pending.size()
    except OSError:
        return 0


def _same_version(a: FileRecord | None, b: FileRecord) -> bool:
    return a is not None and file_key(a) == file_key(b)
