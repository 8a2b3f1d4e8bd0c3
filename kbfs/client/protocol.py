"""KanboardAPI: the part of the Kanboard client the filesystem core depends on.

The core (``kbfs.vfs`` and the components under it, the content cache, ``kbfs clear``) is
written against this Protocol rather than against ``KanboardClient`` itself, for two reasons:

* it says, in one place, exactly which server calls the core can make: a change of the core
  that needs another call has to add it here, visibly;
* it lets the core run against something other than a real server: the in-memory fake of
  ``tests/core/fakekb.py`` implements it, so the core's rules (upload before remove, no
  duplicate after a lost answer, ...) are tested without HTTP, a devserver or a FUSE mount.

``KanboardClient`` (``kbfs.client.api``) is the real implementation. The signatures here are
copied from it; the docstrings there say what each call raises.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, BinaryIO, Protocol

if TYPE_CHECKING:
    from kbfs.client.api import ClientStats
    from kbfs.client.errors import KanboardError
    from kbfs.client.models import Container, FileRecord, Project, Task
    from kbfs.client.servertime import ServerClock
    from kbfs.client.versions import ServerRules

__all__ = ["KanboardAPI"]


class KanboardAPI(Protocol):
    """What the filesystem core calls on a Kanboard server (see the module docstring)."""

    @property
    def endpoint(self) -> str:
        """The normalised ``.../jsonrpc.php`` URL (names the spool and cache directories)."""
        ...

    @property
    def rules(self) -> ServerRules:
        """The behaviours of the server's Kanboard release (read at mount)."""
        ...

    @property
    def server_clock(self) -> ServerClock:
        """A lower bound of the server's clock, from its answers."""
        ...

    def statistics(self) -> ClientStats:
        """Requests and calls per method so far (``kbfs status``)."""
        ...

    async def get_projects(self) -> list[Project]:
        """The projects these credentials can see."""
        ...

    async def project_roles(self, project_ids: list[int], user_id: int) -> list[str | None]:
        """The user's role in each project (one getProjectUserRole batch), None for no role."""
        ...

    async def get_all_tasks_any_status(self, project_id: int) -> list[Task]:
        """Open and closed tasks of a project, sorted by id."""
        ...

    async def get_task(self, task_id: int) -> Task:
        """One task (its project); NotFound if there is none."""
        ...

    async def list_files(self, container: Container) -> list[FileRecord]:
        """The container's attachments."""
        ...

    async def list_files_many(
        self, containers: Sequence[Container]
    ) -> list[list[FileRecord] | Exception]:
        """list_files for many containers; each item's files or its exception, in order."""
        ...

    async def get_file(self, container: Container, file_id: int) -> FileRecord:
        """One attachment's metadata; NotFound if it is not (or no longer) in ``container``."""
        ...

    async def download_file(
        self, container: Container, file_id: int, sink: BinaryIO, size: int | None = None
    ) -> int:
        """Stream the content into ``sink``; the number of bytes written. ``size`` (the
        record's) bounds the download's total time."""
        ...

    async def download_files(
        self,
        items: Sequence[tuple[Container, int]],
        deliver: Callable[[int, bytes | KanboardError], None],
        expected_bytes: int,
    ) -> None:
        """Several small files in one request; ``deliver(i, content or error)`` per item."""
        ...

    async def create_file(
        self, container: Container, filename: str, source: BinaryIO, size: int
    ) -> int:
        """Upload ``size`` bytes from ``source`` as a new attachment; the new file id."""
        ...

    async def create_files(
        self, uploads: Sequence[tuple[Container, str, BinaryIO, int]]
    ) -> list[int | KanboardError]:
        """Several uploads in one request: each one's new id or why it failed. A failure of
        the whole request is raised (with request_sent=True any file may exist)."""
        ...

    async def remove_file(self, container: Container, file_id: int) -> None:
        """Delete one attachment."""
        ...

    async def remove_all_files(self, container: Container) -> None:
        """Delete all of the container's attachments (``kbfs clear``)."""
        ...
