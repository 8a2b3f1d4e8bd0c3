"""Fixtures of the core tests: a ``Vfs`` driven directly (no kernel) against ``FakeKanboard``.

This is the ONE place that builds a Vfs and its collaborators (config, content cache, spool)
and knows their import paths: when the core is reorganised, only this file changes. The tests
use only ``Vfs``'s public methods and the fake's server-side state, through ``Rig``.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio

from kbfs.client.models import Container
from kbfs.errors import FsError, to_errno
from kbfs.namespace.nodes import ROOT_INO
from kbfs.storage.contentcache import ContentCache
from kbfs.storage.spool import Spool
from kbfs.vfs import Vfs, VfsConfig

try:  # tests/ is not a package; pytest puts this directory on sys.path
    from fakekb import FakeKanboard, ManualClock
except ImportError:  # pragma: no cover
    from tests.core.fakekb import FakeKanboard, ManualClock

WRITE_NEW = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
DIR_TTL = 5.0  # the listing cache time, unless a test sets dir_ttl
RENAME_NOREPLACE = 1  # linux/fs.h, as the kernel passes them to rename
RENAME_EXCHANGE = 2


async def build_vfs(
    kb: FakeKanboard, root: Path, clock: ManualClock, nursery: trio.Nursery, **config: Any
) -> Vfs:
    """A Vfs as ``kbfs.mount.run_mount`` builds it, its background work started in
    ``nursery``. ``root`` holds the cache and the spool: a second Vfs on the same root is the
    next mount of the same server (crash recovery)."""
    settings: dict[str, Any] = {"dir_ttl": DIR_TTL, "op_timeout": 5.0}
    settings.update(config)
    content = ContentCache(root / "cache", kb, max_bytes=64 << 20)
    spool = Spool(root / "spool", kb.endpoint)
    vfs = Vfs(
        kb,
        VfsConfig(uid=os.getuid(), gid=os.getgid(), **settings),
        content,
        spool,
        clock=clock,
    )
    await nursery.start(content.run)
    await nursery.start(vfs.run)
    await nursery.start(vfs.writeback.run)
    return vfs


async def start_vfs(
    kb: FakeKanboard, root: Path, clock: ManualClock, nursery: trio.Nursery, **config: Any
) -> tuple[Vfs, trio.CancelScope]:
    """build_vfs in a child nursery of ``nursery`` that can be cancelled alone (a crash)."""

    async def host(task_status: trio.TaskStatus[tuple[Vfs, trio.CancelScope]]) -> None:
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as child:
                vfs = await build_vfs(kb, root, clock, child, **config)
                task_status.started((vfs, scope))
                await trio.sleep_forever()

    started: tuple[Vfs, trio.CancelScope] = await nursery.start(host)
    return started


def errno_of(exc: BaseException) -> int:
    """What the kernel would see for an exception the Vfs raised."""
    return to_errno(exc)


async def raises_errno(number: int, call: Awaitable[Any]) -> FsError | BaseException:
    """Await ``call``, which must fail with ``number`` (as fs.py would answer it)."""
    try:
        await call
    except Exception as exc:
        assert errno_of(exc) == number, f"expected errno {number}, got {errno_of(exc)}: {exc!r}"
        return exc
    raise AssertionError(f"expected errno {number}, the call succeeded")


@dataclass
class Rig:
    """A Vfs, the fake server behind it, and shortcuts made of public Vfs calls only.

    The server starts with project ``project`` ("Alpha") and its open task ``task``;
    ``files`` and ``tasks`` are their two attachment containers.
    """

    vfs: Vfs
    kb: FakeKanboard
    clock: ManualClock
    root: Path
    nursery: trio.Nursery  # the test's: each mount runs its background work in a child
    project: int
    task: int
    config: dict[str, Any] = field(default_factory=dict)
    background: trio.CancelScope = field(default_factory=trio.CancelScope)

    @property
    def files(self) -> Container:
        return Container(self.project)

    @property
    def tasks(self) -> Container:
        return Container(self.project, self.task)

    def crash(self) -> None:
        """Stop this mount's background work (downloads, retries) for good, as a kill -9
        would: nothing of this Vfs runs any more; its spool and journal stay on disk."""
        self.background.cancel()

    async def remount(self, **config: Any) -> Rig:
        """The next mount of the same server on the same state, after ``crash``: what the
        first Vfs left in the spool and journal is all that carries over."""
        settings = {**self.config, **config}
        vfs, scope = await start_vfs(self.kb, self.root, self.clock, self.nursery, **settings)
        return Rig(vfs, self.kb, self.clock, self.root, self.nursery, self.project, self.task,
                   settings, scope)  # fmt: skip

    # -- paths ---------------------------------------------------------------------------

    async def ino(self, path: str) -> int:
        """The inode of a path below the mount point, looked up one name at a time."""
        ino = ROOT_INO
        for part in [p for p in path.split("/") if p]:
            ino = (await self.vfs.lookup(ino, part)).ino
        return ino

    @staticmethod
    def path(container: Container) -> str:
        if container.task_id is None:
            return f"projects/{container.project_id}/files"
        return f"projects/{container.project_id}/tasks/{container.task_id}"

    async def dir(self, container: Container) -> int:
        return await self.ino(self.path(container))

    async def ls(self, container: Container) -> list[str]:
        """The names a readdir shows, sorted."""
        return sorted(name for name, _ in await self.vfs.list_dir(await self.dir(container)))

    # -- whole-file operations -----------------------------------------------------------

    async def save(
        self, container: Container, name: str, data: bytes, *, flags: int = WRITE_NEW
    ) -> None:
        """``open(O_CREAT|O_TRUNC)``, write, close, as ``cp`` does; a failing close raises
        (after the handle is released, as the kernel does)."""
        handle = await self.vfs.create(await self.dir(container), name, flags)
        try:
            if data:
                await self.vfs.write(handle.fh, 0, data)
            await self.vfs.flush(handle.fh)
        finally:
            self.vfs.release(handle.fh)

    async def read(self, container: Container, name: str) -> bytes:
        """open, read to the end, close."""
        node = await self.vfs.lookup(await self.dir(container), name)
        handle = await self.vfs.open(node.ino, os.O_RDONLY)
        try:
            size = self.vfs.getattr(node.ino).size
            return bytes(await self.vfs.read(handle.fh, 0, size + 1))
        finally:
            self.vfs.release(handle.fh)

    async def stat(self, container: Container, name: str) -> Any:
        node = await self.vfs.lookup(await self.dir(container), name)
        return self.vfs.getattr(node.ino)

    async def xattrs(self, container: Container, name: str) -> dict[str, bytes]:
        node = await self.vfs.lookup(await self.dir(container), name)
        return self.vfs.xattrs(node.ino)

    def pending_paths(self) -> list[str]:
        """Paths ``kbfs status`` lists as not uploaded."""
        return sorted(str(p["path"]) for p in self.vfs.status()["pending_uploads"])  # type: ignore[attr-defined]

    def expire_listings(self) -> None:
        """Let every cached listing age past the directory cache time."""
        self.clock.advance(float(self.config.get("dir_ttl", DIR_TTL)) + 1)


RigFactory = Callable[..., Awaitable[Rig]]


@pytest.fixture
def make_rig(tmp_path: Path, nursery: trio.Nursery) -> RigFactory:
    """Build a Rig with VfsConfig overrides (``read_only=True``, ``dir_ttl=...``)."""

    async def make(kb: FakeKanboard | None = None, **config: Any) -> Rig:
        kb = kb or FakeKanboard()
        project = kb.add_project("Alpha")
        task = kb.add_task(project, "First task")
        clock = ManualClock()
        vfs, scope = await start_vfs(kb, tmp_path, clock, nursery, **config)
        return Rig(vfs, kb, clock, tmp_path, nursery, project, task, dict(config), scope)

    return make


@pytest.fixture
async def rig(make_rig: RigFactory) -> Rig:
    """The default Rig: a writable mount of a server with one project and one task."""
    return await make_rig()
