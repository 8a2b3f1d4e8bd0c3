"""The record of a file just created: read back, or known by id only until it is listed.

``create*File`` answers with the new file's id alone. Where Kanboard keeps the stored bytes of
a removed row while another row shares them (1.2.28 and later), that is all a save waits for:
the record is made up from what was sent and the server's clock
(kbfs.namespace.provisional), and the next listing brings path, etag and exact date. Where
it does not, or where project-file procedures ignore the project (before 1.2.50), the record
is read back with ``get*File`` before ``close()`` returns.
"""

from __future__ import annotations

import logging
import time

from kbfs.client.errors import KanboardError
from kbfs.client.models import Container, FileRecord
from kbfs.client.protocol import KanboardAPI
from kbfs.namespace.names import is_image_name
from kbfs.upload.guard import ReleaseGuard

log = logging.getLogger(__name__)


class NewRecords:
    """Turns a create's answer into the new file's record. Owns no state."""

    def __init__(self, client: KanboardAPI, guard: ReleaseGuard) -> None:
        self.client = client
        self.guard = guard

    async def record(self, container: Container, file_id: int, name: str, size: int) -> FileRecord:
        """The new file's record, and the guard told of its second."""
        if self.reads_back(container):
            return await self._confirm(container, file_id, name, size)
        record = self._provisional(container, file_id, name, size)
        self.guard.note_created(container, record)
        return record

    def reads_back(self, container: Container) -> bool:
        """Whether a new file's record is read back (get*File) before close() returns.

        Not where Kanboard keeps the stored bytes of a removed row while another row shares
        them (1.2.28 and later): there a save is one round trip, and the record is known by
        id until the next listing brings the rest (kbfs.namespace.provisional); the collision
        check lists every directory it uploaded to within seconds. Where removing a row
        deletes bytes another row shares (1.2.27 and older, or an unknown release), the new
        record's storage path is needed before the version it replaces is removed (the guard
        refuses to remove a row sharing a kept row's path); and project files before 1.2.50
        are only ever served, removed or replaced once get*File has shown them in the
        project. Those keep the read-back.
        """
        rules = self.client.rules
        if not rules.keeps_shared_bytes:
            return True
        return container.task_id is None and not rules.checks_project_files

    async def _confirm(
        self, container: Container, file_id: int, name: str, size: int
    ) -> FileRecord:
        """The new file's server record: one get*File call, never a re-listing."""
        try:
            record = await self.client.get_file(container, file_id)
        except KanboardError as exc:
            log.warning("file %d was uploaded but could not be read back: %s", file_id, exc)
            record = self._provisional(container, file_id, name, size)
        self.guard.note_created(container, record)
        if record.size != size:
            log.warning(
                "file %d: server reports %d bytes, %d were sent (same-second name collision?)",
                file_id,
                record.size,
                size,
            )
        return record

    def _provisional(self, container: Container, file_id: int, name: str, size: int) -> FileRecord:
        """The record of a new file known by id only (kbfs.namespace.provisional): what was
        sent, dated by the server's clock as its answer left it (the guard allows for a
        second more)."""
        return FileRecord(
            kind=container.kind,
            id=file_id,
            name=name,
            size=size,
            date=int(self.client.server_clock.now() or time.time()),
            is_image=is_image_name(name),
            path="",
            etag=None,
            project_id=container.project_id if container.task_id is None else None,
            task_id=container.task_id,
            user_id=0,
        )
