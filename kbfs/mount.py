"""The mount's lifecycle: check the server, build the layers, serve, stop cleanly.

This is the composition root for a mount and the only module that holds a nursery. Stopping
(SIGTERM, SIGINT, SIGHUP) first waits a bounded time for uploads in flight, then ends the FUSE
loop and unmounts; an external ``fusermount3 -u`` ends the loop by itself.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import platformdirs
import pyfuse3
import trio

from kbfs.client.api import Credentials, KanboardClient
from kbfs.contentcache import ContentCache
from kbfs.fs import Operations
from kbfs.options import MountOptions
from kbfs.spool import Spool
from kbfs.vfs import Vfs, VfsConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MountRequest:
    url: str
    mountpoint: Path
    options: MountOptions
    credentials: Credentials


def server_key(endpoint: str, username: str) -> str:
    """A directory name for one server and user: caches must never mix two servers."""
    return hashlib.sha256(f"{username}@{endpoint}".encode()).hexdigest()[:16]


def cache_root(options: MountOptions) -> Path:
    if options.cache_dir:
        return Path(options.cache_dir)
    if os.environ.get("CACHE_DIRECTORY"):  # systemd CacheDirectory=
        return Path(os.environ["CACHE_DIRECTORY"].split(":")[0])
    return Path(platformdirs.user_cache_dir("kbfs"))


def state_root(options: MountOptions) -> Path:
    if options.state_dir:
        return Path(options.state_dir)
    if os.environ.get("STATE_DIRECTORY"):  # systemd StateDirectory=
        return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
    return Path(platformdirs.user_state_dir("kbfs"))


def fuse_options(options: MountOptions) -> set[str]:
    opts = set(pyfuse3.default_options)  # default_permissions: the kernel checks modes
    opts |= {"fsname=kbfs", "subtype=kbfs", "noatime"}
    if options.read_only:
        opts.add("ro")
    if options.allow_other:
        opts.add("allow_other")
    return opts


async def check_server(client: KanboardClient, credentials: Credentials) -> int | None:
    """One call that proves URL and credentials; returns the user id under user auth."""
    if credentials.is_app_token:
        await client.get_version()
        return None
    me = await client.get_me()
    return me.id


async def run_mount(request: MountRequest, on_ready: Callable[[], None]) -> None:
    """Check the server, mount, serve until stopped. Raises on failure before ``on_ready``."""
    options = request.options
    client = KanboardClient(
        request.url,
        request.credentials,
        timeout=options.timeout,
        verify=options.cafile or True,
    )
    async with client:
        user_id = await check_server(client, request.credentials)
        key = server_key(client.endpoint, request.credentials.username)
        content = ContentCache(
            cache_root(options) / key / "content", client, max_bytes=options.cache_size
        )
        spool = Spool(state_root(options) / key / "spool", client.endpoint)
        vfs = Vfs(
            client,
            VfsConfig(
                uid=options.uid,
                gid=options.gid,
                umask=options.umask,
                dir_ttl=options.dir_cache_ttl,
                read_only=options.read_only,
                user_id=user_id,
                upload_drain_timeout=options.timeout,
            ),
            content,
            spool,
        )
        ops = Operations(vfs, attr_timeout=options.attr_timeout)
        pyfuse3.init(ops, str(request.mountpoint), fuse_options(options))
        log.info("mounted %s at %s", client.endpoint, request.mountpoint)
        try:
            on_ready()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_stop_on_signal, vfs)
                await pyfuse3.main()
                nursery.cancel_scope.cancel()
        finally:
            left = vfs.pending_files()
            if left:
                log.warning(
                    "%d file(s) were not uploaded; their bytes stay in %s",
                    len(left),
                    spool.root,
                )
            pyfuse3.close(unmount=True)
            log.info("unmounted %s", request.mountpoint)


async def _stop_on_signal(vfs: Vfs) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            log.info(
                "%s: finishing uploads in flight, then unmounting", signal.Signals(signum).name
            )
            if not await vfs.wait_uploads_idle(vfs.config.upload_drain_timeout):
                log.warning("uploads still running after the grace period; stopping anyway")
            pyfuse3.terminate()
            return
