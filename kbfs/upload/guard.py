"""What an upload or a removal checks first so that no Kanboard release loses or misplaces data.

Kanboard names a stored file ``sha1(filename . time())``: two uploads of one name to one task
(or project) in the same server second share one stored file, and before 1.2.28 removing
either row deletes it (kanboard-api §12 row 1). Before 1.2.47 ``createTaskFile`` takes a task of any
project (§2.3). :class:`ReleaseGuard` keeps the uploads clear of both: it waits for the
server's next second before a name is uploaded again, looks at the task first where the
server will not, and tells which rows share a stored file with a row that is kept.
"""

from __future__ import annotations

import logging

from kbfs.client.errors import KanboardError, NotFound, Rejected
from kbfs.client.models import Container, FileRecord
from kbfs.client.protocol import KanboardAPI
from kbfs.namespace.nodes import Node, is_doomed, is_provisional, same_file
from kbfs.namespace.tree import Namespace

log = logging.getLogger(__name__)

# How many names' last upload seconds are kept before the ones long past are dropped.
_KEEP = 64


class ReleaseGuard:
    """The checks before a create*File and a remove*File that the server's release needs.

    State it owns: the date of the newest record this mount created of each name (the next
    upload of that name waits for the server's clock to pass it), and which of those records
    are known by id only (their exact date is asked for when a wait depends on it).
    """

    def __init__(self, client: KanboardAPI, namespace: Namespace) -> None:
        self.client = client
        self.ns = namespace
        self._created: dict[tuple[Container, str], int] = {}
        # Of those, the ones whose record is known by id only (kbfs.namespace.provisional).
        self._unconfirmed: dict[tuple[Container, str], FileRecord] = {}
        # Storage paths another client's row shares with one of ours, found by the collision
        # check (kbfs.upload.collisions), with that row: this mount may never have listed it.
        self._shared: dict[tuple[Container, str], FileRecord] = {}

    async def before_create(self, node: Node, container: Container, name: str) -> None:
        """Wait for a server second of its own, and check the task where Kanboard does not."""
        await self._wait_for_new_second(node, container, name)
        if container.task_id is not None and not self.client.rules.checks_task_on_create:
            await self._check_task(container)

    def latest_date(self, node: Node, container: Container, name: str) -> int | None:
        """The newest ``date`` among the records of ``name`` in ``container`` this mount
        knows: listed, hidden, the ones this node replaces, and its own recent uploads."""
        state = self.ns.directory(container)
        records = [r for r in state.records.values() if r.name == name]
        records += [r for r in state.hidden.values() if r.name == name]
        if node.record is not None and node.container == container:
            records.append(node.record)
        records += [r for c, r in node.stale if c == container and r.name == name]
        # A record known by id only is one of this mount's uploads: its date is the server
        # clock's bound, and the second to wait for is the one its create noted (below).
        dates = [r.date for r in records if not is_provisional(r)]
        created = self._created.get((container, name))
        if created is not None:
            dates.append(created)
        return max(dates, default=None)

    async def _wait_for_new_second(self, node: Node, container: Container, name: str) -> None:
        """Wait until the server's clock has passed the second of the newest record of this
        name here: an upload in that same second would get the same storage path, and the
        removal of the older row would then delete the new bytes on Kanboard 1.2.27 and
        older (kanboard-api §12 row 1); on every release both rows would hold the new bytes."""
        latest = self.latest_date(node, container, name)
        if latest is None:
            return
        clock = self.client.server_clock
        key = (container, name)
        unconfirmed = self._unconfirmed.get(key)
        if unconfirmed is not None and latest == unconfirmed.date + 1 and not clock.passed(latest):
            # Our last upload of this name is known by id only: its second is bounded by the
            # server clock's view, a second wide. One get*File tells it exactly, which is
            # quicker than waiting a second more for nothing.
            exact = await self._exact_date(container, unconfirmed)
            if exact is not None:
                self._created[key] = exact
                self._unconfirmed.pop(key, None)
                latest = self.latest_date(node, container, name)
                if latest is None:
                    return
        waited = await clock.wait_past(latest)
        if waited:
            log.debug("%s: waited %.2fs for the server's next second", name, waited)

    async def _exact_date(self, container: Container, record: FileRecord) -> int | None:
        """The server's ``date`` of an upload known by id only, or None if it cannot tell."""
        try:
            current = await self.client.get_file(container, record.id)
        except KanboardError:
            return None
        if not same_file(current, record):
            return None  # gone, or the id names another file now: keep the bound
        self.client.server_clock.observe(current.date)
        return current.date

    async def _check_task(self, container: Container) -> None:
        """Before Kanboard 1.2.47 createTaskFile checks neither that the task exists nor that
        it belongs to the project (kanboard-api §12 row 4): a task moved to another project
        would get the file anyway, a removed one would leave an orphan on the server's disk. So the
        task is looked at just before the upload."""
        assert container.task_id is not None
        try:
            task = await self.client.get_task(container.task_id)
        except NotFound:
            raise Rejected(
                f"task {container.task_id} no longer exists", method="createTaskFile"
            ) from None
        if task.project_id != container.project_id:
            raise Rejected(
                f"task {container.task_id} is now in project {task.project_id}",
                method="createTaskFile",
            )

    def note_created(self, container: Container, record: FileRecord) -> None:
        """Remember the new record's second (and teach the server clock it): forgotten once
        the server's clock is past it, so the table stays small."""
        clock = self.client.server_clock
        clock.observe(record.date)
        # A record made up after a failed read-back has the clock's bound as its date: the
        # real one may be the next second.
        date = record.date + 1 if is_provisional(record) else record.date
        key = (container, record.name)
        self._created[key] = max(date, self._created.get(key, date))
        if is_provisional(record):
            self._unconfirmed[key] = record
        else:
            self._unconfirmed.pop(key, None)
        if len(self._created) > _KEEP:
            for stale_key in [k for k, d in self._created.items() if clock.passed(d)]:
                del self._created[stale_key]
                self._unconfirmed.pop(stale_key, None)

    def note_shared(self, container: Container, record: FileRecord, other: FileRecord) -> None:
        """The server holds ``other``, whose storage path is ``record``'s: ``record`` must not
        be removed where that deletes ``other``'s bytes too, even if no listing showed it."""
        self._shared[(container, record.path)] = other
        while len(self._shared) > _KEEP:
            del self._shared[next(iter(self._shared))]

    def shares_path(self, container: Container, record: FileRecord) -> FileRecord | None:
        """Another row this mount keeps whose storage path is ``record``'s (same name, same
        second: kanboard-api §7), or None. Rows on their way out (doomed) do not count."""
        if not record.path:
            return None
        noted = self._shared.get((container, record.path))
        if noted is not None and noted.id != record.id:
            return noted
        state = self.ns.directory(container)
        for other in [*state.records.values(), *state.hidden.values()]:
            if (
                other.id != record.id
                and other.path == record.path
                and not is_doomed(state.doomed, other)
            ):
                return other
        return None
