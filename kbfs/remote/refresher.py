"""What the server says exists: projects, tasks and attachment listings, fetched when stale.

Each listing is cached for ``dir_ttl``; concurrent lookups of one directory share one refresh
(a lock per listing, freshness checked again once it is held); while the server is down or
failing, the cached listing is served and asked for again after a short pause. A listing of
``tasks/`` fetches the listings of its tasks in batched requests (``prefetch``). File listings
go to the namespace (``Namespace.apply_listing``), which builds the entries;
SEMANTICS.md ("Listings") is the prose version.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import NoReturn, TypeVar

import trio

from kbfs.client.errors import KanboardError, ServerError, TransportError
from kbfs.client.models import Container, FileRecord, Project, Task
from kbfs.client.protocol import KanboardAPI
from kbfs.client.wire import CALLER_MARGIN
from kbfs.errors import FsError, NoEntry, RequestTimedOut
from kbfs.namespace import eviction
from kbfs.namespace.eviction import Limits
from kbfs.namespace.nodes import Node, NodeType
from kbfs.namespace.tree import ListingTicket, Namespace
from kbfs.remote.listing import Listing, ProjectList, TaskList

log = logging.getLogger(__name__)

T = TypeVar("T")

READ_ONLY_ROLES = frozenset({"project-viewer"})
# What a refresh may fail with and still be answered from the cache.
OUTAGE = (TransportError, ServerError, RequestTimedOut)


@dataclass(frozen=True)
class RefreshPolicy:
    dir_ttl: float = 5.0  # how long a listing is fresh
    op_timeout: float = 30.0  # bound on one listing, retries included
    user_id: int | None = None  # under user auth: project roles decide writability
    # More records than this in ONE listing are refused (EIO): see ``_check_size``.
    max_listing: int = 250_000
    # When unused file listings are dropped (kbfs.namespace.eviction).
    limits: Limits = field(default_factory=Limits)


class Refresher:
    """Fetches listings when stale and keeps the project and task lists. See the module
    docstring."""

    def __init__(
        self,
        client: KanboardAPI,
        namespace: Namespace,
        policy: RefreshPolicy,
        clock: Callable[[], float],
        confirmed: Callable[[FileRecord, FileRecord], None] | None = None,
    ) -> None:
        self.client = client
        # Told of each upload known by id only that a listing has confirmed (provisional
        # record, real record): the content cache moves the uploaded bytes to the real key.
        self._confirmed = confirmed
        self.ns = namespace
        self.policy = policy
        self.clock = clock
        self.listings = 0  # listing requests made (a batch counts once)
        self.dropped = 0  # file listings dropped unused (kbfs.namespace.eviction)
        self._projects = ProjectList()
        self._tasks: dict[int, TaskList] = {}
        self._files: dict[Container, Listing] = {}

    # ------------------------------------------------------------------ what is known

    @property
    def project_list(self) -> ProjectList:
        return self._projects

    def projects(self) -> dict[int, Project]:
        return self._projects.projects

    def project(self, project_id: int) -> Project | None:
        return self._projects.projects.get(project_id)

    def task(self, project_id: int, task_id: int) -> Task | None:
        listing = self._tasks.get(project_id)
        return None if listing is None else listing.tasks.get(task_id)

    def task_ids(self, project_id: int) -> list[int]:
        """The project's known tasks in listing order (as ``tasks/`` shows them); no fetch."""
        listing = self._tasks.get(project_id)
        return [] if listing is None else list(listing.tasks)

    def read_only(self, project_id: int) -> bool:
        """Whether this user may only view the project (a project-viewer role)."""
        return project_id in self._projects.read_only

    def listing(self, container: Container) -> Listing:
        listing = self._files.get(container)
        if listing is None:
            listing = self._files[container] = Listing()
        return listing

    def _fresh(self, listing: Listing) -> bool:
        return self.clock() - listing.fetched_at < self.policy.dir_ttl

    def invalidate(self, container: Container) -> None:
        """Fetch this directory's listing again at the next look."""
        self.listing(container).fetched_at = -1e18

    @staticmethod
    def missing(listing: Listing, name: str) -> NoReturn:
        """ENOENT, unless the listing could not be refreshed: then nobody knows (EIO), and
        the kernel must not cache the name as absent."""
        if listing.failing:
            raise FsError(f"cannot tell whether {name!r} exists: the server is unreachable")
        raise NoEntry()

    # ------------------------------------------------------------------ refreshing

    async def refresh(self, node: Node) -> None:
        """Fetch a directory's listing now (after a change made behind this mount's back)."""
        if node.type.holds_files:
            await self.files(node, force=True)
        elif node.type is NodeType.TASKS and node.project_id is not None:
            await self.tasks(node.project_id, force=True)
        elif node.type is NodeType.PROJECTS:
            await self.refresh_projects(force=True)

    def _deadline(self) -> float:
        """When a listing call must give up: ``op_timeout`` from now, and a little before the
        deadline of the file operation it serves (see Vfs), so a cached listing can still be
        served, or the failure reported, before that operation's own bound cuts it off."""
        own = trio.current_time() + self.policy.op_timeout
        return min(own, trio.current_effective_deadline() - CALLER_MARGIN)

    async def _bounded(self, call: Awaitable[T]) -> T:
        """A listing call, failed with EIO if the server has not answered within the timeout
        (retries included): a process must never hang on a server that went away."""
        deadline = self._deadline()
        seconds = max(0.0, deadline - trio.current_time())
        with trio.move_on_at(deadline) as scope:
            return await call
        assert scope.cancelled_caught
        raise RequestTimedOut(f"no answer from the server within {seconds:.3g} s")

    def _serve_stale(self, listing: Listing, exc: Exception, what: str) -> bool:
        """Keep serving a cached listing while the server is unreachable or failing."""
        if not listing.ever_fetched:
            return False
        log.warning("could not refresh %s (%s); showing the cached listing", what, exc)
        listing.failing = True
        # Ask again after a short pause, not on every lookup.
        ttl = self.policy.dir_ttl
        listing.fetched_at = self.clock() - ttl + min(ttl, 2.0)
        return True

    async def refresh_projects(self, force: bool = False) -> None:
        listing = self._projects
        if not force and self._fresh(listing):
            return
        async with listing.lock:
            if not force and self._fresh(listing):
                return
            try:
                projects = await self._bounded(self.client.get_projects())
            except OUTAGE as exc:
                if self._serve_stale(listing, exc, "the project list"):
                    return
                raise
            read_only = await self._read_only_projects(projects)
            self.listings += 1
            listing.projects = {p.id: p for p in projects}
            listing.read_only = read_only
            listing.fetched_at = self.clock()
            listing.failing = False
            for project in projects:
                self.ns.project_node(project.id)

    async def _read_only_projects(self, projects: list[Project]) -> set[int]:
        """Under user auth, the projects this user may only view (one batched request)."""
        user_id = self.policy.user_id
        if user_id is None or not projects:
            return set()
        try:
            roles = await self.client.project_roles([p.id for p in projects], user_id)
        except KanboardError as exc:
            log.warning("could not read project roles (%s); assuming writable", exc)
            return set()
        return {
            project.id
            for project, role in zip(projects, roles, strict=False)
            if role in READ_ONLY_ROLES
        }

    async def tasks(self, project_id: int, force: bool = False) -> TaskList:
        listing = self._tasks.setdefault(project_id, TaskList())
        if not force and self._fresh(listing):
            return listing
        async with listing.lock:
            if not force and self._fresh(listing):
                return listing
            try:
                tasks = await self._bounded(self.client.get_all_tasks_any_status(project_id))
            except OUTAGE as exc:
                if self._serve_stale(listing, exc, f"the tasks of project {project_id}"):
                    return listing
                raise
            self.listings += 1
            listing.tasks = {t.id: t for t in tasks if t.project_id == project_id}
            listing.fetched_at = self.clock()
            listing.failing = False
        return listing

    async def files(self, dir_node: Node, force: bool = False) -> Listing:
        """A file directory's listing, fetched into the namespace if stale."""
        container = dir_node.container
        listing = self.listing(container)
        listing.used_at = self.clock()
        if not force and self._fresh(listing):
            return listing
        async with listing.lock:
            if not force and self._fresh(listing):
                return listing
            ticket = self.ns.listing_asked(container)
            try:
                records = await self._bounded(self.client.list_files(container))
            except OUTAGE as exc:
                if self._serve_stale(listing, exc, self.ns.path_of(dir_node)):
                    return listing
                raise
            self.listings += 1
            self._check_size(dir_node, len(records))
            self._apply(container, records, ticket)
            listing.fetched_at = self.clock()
            listing.failing = False
        return listing

    async def prefetch(self, dir_nodes: list[Node]) -> None:
        """Fetch the stale listings of many file directories in batched requests.

        Whoever lists ``tasks/`` (``find``, ``ls -R``, ``du``, a file manager) usually looks into
        every task next; one batch request instead of one request per task makes a tree walk
        cost a handful of requests. Failures are left for the per-directory fetch to report.
        """
        stale = [n for n in dir_nodes if not self._fresh(self.listing(n.container))]
        if len(stale) < 2:
            return
        tickets = {n.ino: self.ns.listing_asked(n.container) for n in stale}
        results = None
        # Within the listing's own bound: a slow batch must not hold up ls tasks/ (whose
        # entries are known already) past the operation's timeout.
        with trio.move_on_at(self._deadline()):
            try:
                results = await self.client.list_files_many([n.container for n in stale])
            except KanboardError as exc:
                log.debug("batched listing failed, directories will be fetched one by one: %s", exc)
        if results is None:
            log.debug("no batched listing in time; directories will be fetched one by one")
            return
        now = self.clock()
        for dir_node, result in zip(stale, results, strict=True):
            if isinstance(result, BaseException) or len(result) > self.policy.max_listing:
                continue  # left for the directory's own fetch to report
            listing = self.listing(dir_node.container)
            if self._fresh(listing) or listing.lock.locked():
                continue
            self._apply(dir_node.container, result, tickets[dir_node.ino])
            listing.fetched_at = now
        self.listings += 1

    def take(self, container: Container, records: list[FileRecord], ticket: ListingTicket) -> None:
        """A listing fetched by someone else (the collision check): applied like our own,
        and the directory counts as fresh unless a fetch of it is under way."""
        if len(records) > self.policy.max_listing:
            return
        self._apply(container, records, ticket)
        listing = self.listing(container)
        if not listing.lock.locked():
            listing.fetched_at = self.clock()

    def _apply(
        self, container: Container, records: list[FileRecord], ticket: ListingTicket
    ) -> None:
        self.ns.apply_listing(container, records, ticket)
        for provisional, real in self.ns.provisional.take_confirmed():
            if self._confirmed is not None:
                self._confirmed(provisional, real)

    # ------------------------------------------------------------------ memory

    def _check_size(self, dir_node: Node, count: int) -> None:
        """Refuse a listing of more than ``max_listing`` records (EIO, and a log line).

        A directory that large costs hundreds of MB of daemon memory, and no tool works
        well on it. Showing only part of it is not an option: a file left out would look
        deleted to this mount (an edit of it would be uploaded beside it as a new file).
        """
        limit = self.policy.max_listing
        if count > limit:
            raise FsError(
                f"{self.ns.path_of(dir_node)}: the server lists {count} files, more than the "
                f"{limit} kbfs keeps for one directory"
            )

    def drop_unused(self, held: set[int]) -> int:
        """Drop the file listings nobody uses (see kbfs.namespace.eviction); how many went.
        ``held``: inodes an open directory handle may still reply. A listing being fetched
        is left alone; a dropped one is fetched again at its next lookup."""
        busy = {c for c, listing in self._files.items() if listing.lock.locked()}
        used = {c: listing.used_at for c, listing in self._files.items()}
        dropped = eviction.evict(
            self.ns, used, self.clock(), busy=busy, held=held, limits=self.policy.limits
        )
        for container in dropped:
            self._files.pop(container, None)
            log.debug("dropped the unused listing of %s", container)
        self.dropped += len(dropped)
        return len(dropped)
