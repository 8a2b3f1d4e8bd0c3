"""Write-back mode (``-o writeback``): close() returns once the bytes are safe in the spool.

For bulk imports and slow links. ``close()`` checks what it can check locally (a write that
failed, content Kanboard cannot hold, a file cut off at ``max_file_size``), writes the spool
entry down and fsyncs it, and hands the file to this queue; the uploads run in the background.
Small files go several per JSON-RPC batch (``create*File`` calls in one request: one round
trip for up to BATCH_FILES files), larger ones one per request, a few at once. Uploads of one
name never overlap (the uploader's name locks), and a file whose name is being uploaded or
locked right now waits until it is free; other files do not wait for it.

Nothing is lost or hidden on the way: the spool entry is what a crash leaves (the next mount
uploads it, as in the default mode); a failed upload is retried by the background pass with
backoff, shown by ``kbfs status`` and logged, as any failed upload; ``fsync()`` on a file
uploads it at once and fails if it cannot; ``kbfs sync`` (``sync_all``) waits until every
file is on the server and names those that are not.

A batch's size is bounded for the server's sake: PHP holds the request body, its decoded copy
and each blob in memory at once (kanboard-api §9), so a batch carries at most BATCH_BYTES of
content, small enough for a server with a 128 MB ``memory_limit``. A batch that fails as a
whole (a 500 after PHP ran out of memory, a lost answer) is resolved like any create whose
answer was lost: one listing per name shows which files exist, and none is sent twice.
"""

from __future__ import annotations

import contextlib
import logging

import trio

from kbfs.client.models import Container
from kbfs.errors import FsError, IncompleteContent, UploadFailed
from kbfs.namespace.nodes import Node
from kbfs.namespace.tree import Placed
from kbfs.upload.uploader import Sending, Uploader, check_storable, may_have_created

log = logging.getLogger(__name__)

Name = tuple[Container, str]  # where a file is uploaded to
Request = tuple[list[Node], list[Name]]  # the files of one request, and their names

#: Most files in one batch request, and most content bytes (see the module docstring).
BATCH_FILES = 20
BATCH_BYTES = 4 << 20
#: A file larger than this goes in a request of its own.
SMALL_FILE = 1 << 20
#: Requests under way at once (batches and single uploads).
PARALLEL = 4
#: How long closes may pause before what is queued goes (s), and the longest wait for more.
GATHER_QUIET = 0.02
GATHER_MAX = 0.2


class WriteBack:
    """The queue of files whose close() handed them over, and the task that uploads them.

    State it owns: that queue (in the order of the closes), the files being uploaded, and
    the events that wake its task and tell when it has settled.
    """

    def __init__(self, uploader: Uploader) -> None:
        self.uploader = uploader
        self.ns = uploader.ns
        self._queue: dict[int, Node] = {}
        # Inode -> how many requests under way hold it (a file renamed and closed again
        # while its first upload ends can be in two: each request lets go of its own names).
        self._sending: dict[int, int] = {}
        self._names: set[Name] = set()  # names being uploaded now
        self._requests = 0  # requests under way (at most PARALLEL)
        self._last_submit = 0.0  # trio time of the last close handed over
        self._wake = trio.Event()
        self._settled = trio.Event()
        self._settled.set()

    # ------------------------------------------------------------------ the queue

    def submit(self, node: Node) -> None:
        """``node``'s content is in the spool, fsync'ed: upload it in the background."""
        self._queue.pop(node.ino, None)
        self._queue[node.ino] = node
        self._last_submit = trio.current_time()
        self._settled = trio.Event() if self._settled.is_set() else self._settled
        self._wake.set()

    async def hand_over(self, node: Node) -> None:
        """close() in write-back mode: check what can be checked here, make the bytes and
        their description durable in the spool, and queue the upload. Fails (UploadFailed,
        the cause's errno) as an upload would for content that must never be sent or that
        Kanboard cannot hold, and for a spool that cannot be written (ENOSPC)."""
        pending = node.pending
        if pending is None:
            return
        up = self.uploader
        container, name = node.container, self.ns.server_name(node)
        async with pending.lock:
            if not pending.dirty or node.discarded:
                return
            sent = not (self.ns.is_scratch(node) or pending.too_large)
            try:
                if pending.incomplete is not None:
                    raise IncompleteContent(pending.incomplete, pending.incomplete_errno)
                size = pending.size()
                if sent and size > 0:
                    check_storable(pending, name, size)
                pending.handed_over = pending.version  # written down with the description
                up.spool.describe(pending, container, name, node.record, node.stale)
                up.spool.sync(pending)
            except Exception as exc:
                pending.handed_over = -1  # this close() fails: nothing was acknowledged
                up.failed(node, pending, container, name, exc)
        if sent and size > 0:
            self.submit(node)

    async def sync_all(self, timeout: float) -> list[tuple[str, str]]:
        """``kbfs sync``: upload everything not on the server yet, now (failed uploads too,
        whatever their backoff says), within ``timeout``; what is still not there, with why.

        Content that is local-only by design (scratch names, empty files) is not named; content
        Kanboard refused, or whose write failed, is.
        """
        with trio.move_on_after(timeout):
            await self.settled(timeout)
            for node in self.ns.pending_files():
                pending = node.pending
                if pending is None or node.discarded or node.writers or not self._uploadable(node):
                    continue
                with contextlib.suppress(FsError):  # logged; named in the answer below
                    await self.uploader.upload(node)
        left = []
        for node in self.ns.pending_files():
            pending = node.pending
            if pending is None or node.discarded or self.ns.is_scratch(node):
                continue
            if pending.size_or_zero() == 0 and pending.incomplete is None:
                continue
            why = pending.incomplete or pending.refused or pending.last_error
            if why is None:
                why = "still open for writing" if node.writers else "not uploaded yet"
            left.append((self.ns.path_of(node), why))
        return left

    async def before_change(self, node: Node) -> None:
        """A new writer (an open for writing, a truncate) comes to content a close() handed
        over and that is not on the server yet: it is uploaded first, or the change fails
        with the upload's error. Changed in place, those acknowledged bytes would be gone if
        the new writer's save then failed or the machine crashed before it (the default
        mode keeps the server's version in that case; so does this). One round trip, only
        for a file rewritten before its upload ran. Content a crashed write-back mount
        acknowledged counts too, whatever the mode of the mount that finds it."""
        pending = node.pending
        if (
            pending is None
            or node.discarded
            or not pending.dirty
            or not pending.acknowledged
            or not self._uploadable(node)
        ):
            return
        await self.uploader.upload(node)

    def _uploadable(self, node: Node) -> bool:
        pending = node.pending
        return (
            pending is not None
            and pending.incomplete is None
            and pending.refused is None
            and not pending.too_large
            and not self.ns.is_scratch(node)
            and pending.size_or_zero() > 0
        )

    def holds(self, node: Node) -> bool:
        """Whether ``node`` waits in the queue or is being sent (the retry pass leaves it)."""
        return node.ino in self._queue or node.ino in self._sending

    async def settled(self, timeout: float) -> bool:
        """Wait until the queue is empty and nothing of it is being sent (True), or until
        ``timeout`` (False)."""
        with trio.move_on_after(timeout):
            await self._settled.wait()
            return True
        return False

    # ------------------------------------------------------------------ the task

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Upload what is queued until cancelled (unmount). A request starts as soon as one of
        the PARALLEL slots is free, with what is queued then (full batches when the server is
        slow); a large file or a wait for the server's next second holds up its own name and
        its slot only, not the files queued behind it."""
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                await self._wake.wait()
                self._wake = trio.Event()
                await self._gather()
                try:
                    self._dispatch(nursery)
                except Exception:  # never let it end the mount; the retry pass takes over
                    log.exception("write-back dispatch failed unexpectedly")
                if not self._queue and not self._sending:
                    self._settled.set()

    async def _gather(self) -> None:
        """Let closes that follow each other queue up before a request goes (fewer, fuller
        batches: each request costs the server a whole PHP bootstrap): until a batch is full,
        closes pause for GATHER_QUIET, or GATHER_MAX has passed. Also gives a name locked
        by a move or an fsync a moment to come free."""
        deadline = trio.current_time() + GATHER_MAX
        while len(self._queue) < BATCH_FILES:
            now = trio.current_time()
            quiet = now - self._last_submit
            if quiet >= GATHER_QUIET or now >= deadline:
                return
            await trio.sleep(min(GATHER_QUIET - quiet, deadline - now))

    def _dispatch(self, nursery: trio.Nursery) -> None:
        """Start requests for what is queued, as many as there are free slots: small files
        in batches, larger ones one per request, one upload per name at a time, in order."""
        requests: list[Request] = []
        batch: Request | None = None  # the batch small files still go into
        size = 0
        waiting: set[Name] = set()  # names left queued: later files of them wait too
        for node in list(self._queue.values()):
            pending = node.pending
            if pending is None or node.discarded or not pending.dirty:
                del self._queue[node.ino]  # uploaded meanwhile (fsync), removed, or clean
                continue
            # A writer still counted is no reason to wait: its close() handed this content
            # over (the kernel's release of a closed file often comes after close()
            # returned), and without write-back that close would have uploaded it already.
            key = (node.container, self.ns.server_name(node))
            if key in self._names or key in waiting:
                waiting.add(key)  # after the upload of that name under way or queued first
                continue
            n = pending.size_or_zero()
            small = n <= SMALL_FILE
            fits = (
                small
                and batch is not None
                and len(batch[0]) < BATCH_FILES
                and size + n <= BATCH_BYTES
            )
            if not fits and self._requests + len(requests) >= PARALLEL:
                waiting.add(key)  # no free slot for a new request: the next one takes it
                continue
            del self._queue[node.ino]
            self._names.add(key)
            self._sending[node.ino] = self._sending.get(node.ino, 0) + 1
            if fits:
                assert batch is not None
                batch[0].append(node)
                batch[1].append(key)
                size += n
                continue
            requests.append(([node], [key]))
            if small:
                batch, size = requests[-1], n
        for nodes, keys in requests:
            self._requests += 1
            nursery.start_soon(self._request, nodes, keys)

    async def _request(self, nodes: list[Node], keys: list[Name]) -> None:
        """One request (a batch, or one file); then its slot and its names are free."""
        try:
            if len(nodes) == 1:
                await self._single(nodes[0])
            else:
                await self._batch(nodes)
        except Exception:  # never let it end the mount; the retry pass takes over
            log.exception("a write-back upload failed unexpectedly")
        finally:
            self._requests -= 1
            self._names.difference_update(keys)
            for node in nodes:
                held = self._sending.pop(node.ino, 1) - 1
                if held:
                    self._sending[node.ino] = held
            self._wake.set()  # a slot and names are free: what waited goes now

    async def _single(self, node: Node) -> None:
        with contextlib.suppress(FsError):  # logged, kept in the spool, retried
            await self.uploader.upload(node)

    async def _batch(self, nodes: list[Node]) -> None:
        """Upload ``nodes`` with one batch request, under their locks (taken without waiting:
        a file whose name is being uploaded or moved right now goes after the batch, on its
        own, once the lock is free)."""
        up = self.uploader
        busy: list[Node] = []
        finished: list[tuple[Node, list[Placed]]] = []
        failures: list[tuple[Sending | Node, BaseException]] = []
        with up.in_flight():
            async with contextlib.AsyncExitStack() as locks:
                sendings: list[Sending] = []
                for node in nodes:
                    pending = node.pending
                    if pending is None:
                        continue
                    name = self.ns.server_name(node)
                    lock = up.name_lock(node.container, name)
                    if lock.locked() or pending.lock.locked():
                        busy.append(node)  # being uploaded or moved: on its own, below
                        continue
                    lock.acquire_nowait()
                    locks.callback(lock.release)
                    pending.lock.acquire_nowait()
                    locks.callback(pending.lock.release)
                    try:
                        sending = await up.prepare(node, pending, node.container, name)
                        if sending is not None and sending.created is None:
                            await up.guard.before_create(node, node.container, name)
                    except Exception as exc:
                        failures.append((node, exc))
                        continue
                    if sending is not None:
                        sendings.append(sending)
                await self._send(sendings, failures)
                for sending in sendings:
                    if sending.created is not None:
                        finished.append((sending.node, up.finish(sending)))
        for node, replaced in finished:
            try:
                await up.after(node, replaced)
            except Exception as problem:
                failures.append((node, problem))
        for what, cause in failures:
            node = what.node if isinstance(what, Sending) else what
            pending = node.pending
            if pending is None or not isinstance(cause, Exception):
                continue
            with contextlib.suppress(UploadFailed):
                up.failed(node, pending, node.container, self.ns.server_name(node), cause)
        for node in busy:  # once that upload or move let go (it may have settled the file)
            await self._single(node)

    async def _send(
        self, sendings: list[Sending], failures: list[tuple[Sending | Node, BaseException]]
    ) -> None:
        """The batch request for the files still to create; each one's record, or failure."""
        up = self.uploader
        with contextlib.ExitStack() as files:
            todo, sources = [], []
            for sending in sendings:
                if sending.created is not None:
                    continue  # a lost create of it did arrive: adopted, nothing to send
                try:
                    sources.append(files.enter_context(open(sending.pending.path, "rb")))
                except OSError as exc:
                    failures.append((sending, exc))
                    continue
                todo.append(sending)
            if not todo:
                return
            for sending in todo:
                up.begin_create(sending)
            uploads = [
                (s.container, s.name, src, s.size) for s, src in zip(todo, sources, strict=True)
            ]
            try:
                results = await up.client.create_files(uploads)
            except Exception as exc:
                log.warning("a batch of %d uploads failed: %s", len(todo), exc)
                for sending in todo:
                    await up.create_failed(sending, exc)
                if may_have_created(exc):
                    await self._resolve_lost(todo, failures, exc)
                else:
                    failures.extend((sending, exc) for sending in todo)
                return
        for sending, result in zip(todo, results, strict=True):
            if isinstance(result, BaseException):
                await up.create_failed(sending, result)
                failures.append((sending, result))
                continue
            await up.created(sending, result)

    async def _resolve_lost(
        self,
        todo: list[Sending],
        failures: list[tuple[Sending | Node, BaseException]],
        exc: BaseException,
    ) -> None:
        """A batch whose answer was lost (or that failed as a whole, PHP out of memory after
        some of its creates): any of its files may exist. One listing per directory tells
        which, under the names' locks still held: those are adopted as this upload's files,
        the rest fail (kept, retried); nothing is sent twice."""
        up = self.uploader
        by_container: dict[Container, list[Sending]] = {}
        for sending in todo:
            by_container.setdefault(sending.container, []).append(sending)
        for container, sendings in by_container.items():
            try:
                listing = await up.client.list_files(container)
            except Exception:  # left for each file's next upload, which looks again
                failures.extend((sending, exc) for sending in sendings)
                continue
            for sending in sendings:
                found = await up.lost_creates.resolve(
                    sending.node, sending.container, sending.name, sending.size, listing
                )
                if found is None:
                    failures.append((sending, exc))
                else:
                    sending.created = found
