"""The Kanboard API the filesystem core depends on, as a typed Protocol.

The core (namespace, uploader, refresher, content cache) needs a dozen procedures, not the
whole client: naming them here keeps the core honest about what it uses, lets mypy check the
real client (``kbfs.client.api.KanboardClient``) against it, and lets tests drive the core
with an in-memory fake that reproduces Kanboard's rules and fails on demand.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import BinaryIO, Protocol

from kbfs.client.api import ClientStats
from kbfs.client.models import Container, FileRecord, Project, Task


class KanboardAPI(Protocol):
    """What the core calls on a Kanboard server. Errors are the client's error tree
    (``kbfs.client.errors``)."""

    @property
    def endpoint(self) -> str:
        """The normalised ``.../jsonrpc.php`` URL (log lines, status, web links)."""
        ...

    def statistics(self) -> ClientStats: ...

    async def get_projects(self) -> list[Project]: ...

    async def project_roles(self, project_ids: list[int], user_id: int) -> list[str | None]:
        """The user's role in each project, in order (None where unknown)."""
        ...

    async def get_all_tasks_any_status(self, project_id: int) -> list[Task]: ...

    async def list_files(self, container: Container) -> list[FileRecord]: ...

    async def list_files_many(
        self, containers: Sequence[Container]
    ) -> list[list[FileRecord] | Exception]: ...

    async def get_file(self, container: Container, file_id: int) -> FileRecord: ...

    async def download_file(self, container: Container, file_id: int, sink: BinaryIO) -> int: ...

    async def create_file(
        self, container: Container, filename: str, source: BinaryIO, size: int
    ) -> int: ...

    async def remove_file(self, container: Container, file_id: int) -> None: ...

    async def remove_all_files(self, container: Container) -> None: ...
