"""The mount's lifecycle: check the server, build the layers, serve, stop cleanly.

This is the composition root for a mount and holds its one nursery: every long-lived task of
the mount runs in it, so one stop ends them all. Stopping (SIGTERM, SIGINT) first waits a
bounded time for uploads in flight, then ends the FUSE loop and unmounts; an external
``fusermount3 -u`` or ``umount`` ends the loop by itself. SIGHUP re-reads the token file (a
rotated token), except for a mount in a terminal's foreground, where it means the terminal
hung up and stops the mount like SIGTERM.

Besides the FUSE loop the nursery runs the status publisher (``kbfs.control.publisher``: the
JSON snapshot that ``kbfs status`` reads and the control socket ``kbfs clear`` talks to),
started with ``nursery.start`` so the mount is reported ready only once the socket listens.
Under systemd it reports READY=1 / STOPPING=1 (``kbfs.sdnotify``).
"""

from __future__ import annotations

import gc
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

from kbfs import sdnotify
from kbfs.client.api import Credentials, KanboardClient
from kbfs.client.endpoint import cleartext_warnings, normalise_endpoint, ssl_context
from kbfs.control.publisher import StatusPublisher
from kbfs.fs import Operations, error_counts
from kbfs.namespace.names import DEFAULT_LOCAL_NAMES
from kbfs.options import MountOptions
from kbfs.storage.contentcache import ContentCache
from kbfs.storage.private import owned_dir, private_dir
from kbfs.storage.spool import Spool
from kbfs.vfs import Vfs, VfsConfig

log = logging.getLogger(__name__)

GC_THRESHOLD = 20_000  # young objects between collections (see run_mount)


@dataclass(frozen=True)
class MountRequest:
    url: str
    mountpoint: Path
    options: MountOptions
    credentials: Credentials
    # Reads the secret again from where it came from (None: from the environment, which
    # cannot change); raises with a message saying why it could not.
    secret_source: Callable[[], str] | None = None
    # SIGHUP re-reads the secret; False for a mount in a terminal's foreground (a hang-up).
    hup_reloads: bool = True


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


def check_dirs(options: MountOptions) -> tuple[Path, Path]:
    """The cache and state directories, made if missing; refused (``DirectoryError``, one line
    naming the directory) if another user owns one or others may write to it. Called before
    the process goes to the background, so the refusal reaches the terminal."""
    # A directory the user chose is only checked; kbfs's own default ones are also made 0700.
    cache = private_dir if options.cache_dir or os.environ.get("CACHE_DIRECTORY") else owned_dir
    state = private_dir if options.state_dir or os.environ.get("STATE_DIRECTORY") else owned_dir
    return (
        cache(cache_root(options), "cache directory"),
        state(state_root(options), "state directory"),
    )


def fuse_options(options: MountOptions) -> set[str]:
    opts = set(pyfuse3.default_options)  # default_permissions: the kernel checks modes
    opts |= {"fsname=kbfs", "subtype=kbfs", "noatime"}
    if options.read_only:
        opts.add("ro")
    if options.allow_other:
        opts.add("allow_other")
    return opts


def local_names(options: MountOptions) -> tuple[str, ...]:
    base = DEFAULT_LOCAL_NAMES if options.local_names is None else options.local_names
    return (*base, *options.local_names_add)


async def check_server(client: KanboardClient, credentials: Credentials) -> int | None:
    """Prove URL and credentials, and learn which Kanboard rules apply (the version decides
    how kbfs uploads and removes, see kbfs.client.versions); the user id under user auth."""
    rules = await client.read_rules()
    log.info("server: %s", "; ".join(rules.describe()))
    if credentials.is_app_token:
        return None
    me = await client.get_me()
    return me.id


def raise_read_ahead(mountpoint: Path, kib: int = 1024) -> None:
    """Ask the kernel for 1 MiB reads instead of 128 KiB: a quarter of the FUSE round trips
    for sequential reads (pyfuse3 has no max_read option). Needs root; best effort."""
    try:
        # From mountinfo, not stat(): nothing answers FUSE requests before the main loop runs.
        target = os.fsencode(str(mountpoint)).replace(b" ", b"\\040")
        mountinfo = Path("/proc/self/mountinfo").read_bytes().splitlines()
        device = next(
            fields[2] for fields in (line.split() for line in mountinfo) if fields[4] == target
        ).decode()
        bdi = Path(f"/sys/class/bdi/{device}/read_ahead_kb")
        if bdi.exists() and int(bdi.read_text()) < kib:
            bdi.write_text(str(kib))
    except (OSError, ValueError, StopIteration) as exc:
        log.debug("read-ahead left at its default: %s", exc)


async def _tune_read_ahead(mountpoint: Path) -> None:
    # The kernel sets the mount's read-ahead when FUSE's INIT is answered, which happens once
    # the main loop runs: adjust it just after.
    await trio.sleep(0.5)
    raise_read_ahead(mountpoint)


def preflight(url: str, options: MountOptions) -> list[str]:
    """Checks of the network settings made while a terminal still shows what they say.

    Raises ValueError (one line) for a URL or ``cafile`` that cannot work; returns the
    clear-text warnings (:func:`cleartext_warnings`), which the mount logs again.
    """
    endpoint = normalise_endpoint(url)
    if options.cafile:
        ssl_context(options.cafile)
    return cleartext_warnings(endpoint, options.proxy)


def _secret_source(request: MountRequest) -> Callable[[], str | None] | None:
    """The request's secret source, with a failure logged (the old secret stays in use)."""
    read = request.secret_source
    if read is None:
        return None

    def source() -> str | None:
        try:
            return read()
        except Exception as exc:
            log.warning("cannot re-read the token: %s; still using the old one", exc)
            return None

    return source


async def run_mount(request: MountRequest, on_ready: Callable[[], None]) -> None:
    """Check the server, mount, serve until stopped. Raises on failure before ``on_ready``."""
    options = request.options
    # The daemon holds a few objects per file it has seen (records, inodes, names) and makes
    # 10,000 of each for a big listing: at the default threshold (700) the cyclic collector
    # runs every few hundred of them and rescans the older ones, a third of the time a listing
    # of 10,000 files takes. Collections 30x rarer still bound the garbage of real cycles.
    gc.set_threshold(GC_THRESHOLD, 10, 10)
    client = KanboardClient(
        request.url,
        request.credentials,
        timeout=options.timeout,
        verify=options.cafile or True,
        proxy=options.proxy,
        secret_source=_secret_source(request),
    )
    for warning in cleartext_warnings(client.endpoint, options.proxy):
        log.warning("%s", warning)
    async with client:
        user_id = await check_server(client, request.credentials)
        key = server_key(client.endpoint, request.credentials.username)
        cache_dir, state_dir = (owned_dir(d / key, "directory") for d in check_dirs(options))
        content = ContentCache(cache_dir / "content", client, max_bytes=options.cache_size)
        spool = Spool(state_dir / "spool", client.endpoint)
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
                op_timeout=options.timeout,
                kernel_cache_timeout=options.attr_timeout,
                local_names=local_names(options),
                max_file_size=options.max_file_size,
                writeback=options.writeback,
            ),
            content,
            spool,
        )
        ops = Operations(vfs, attr_timeout=options.attr_timeout, xattrs=options.xattr)
        publisher = StatusPublisher(
            vfs,
            mountpoint=request.mountpoint,
            options=options,
            user=request.credentials.username,
            error_counts=error_counts,
        )
        pyfuse3.init(ops, str(request.mountpoint), fuse_options(options))
        log.info("mounted %s at %s", client.endpoint, request.mountpoint)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_on_signals, vfs, client, request.hup_reloads)
                await nursery.start(content.run)
                await nursery.start(vfs.run)
                await nursery.start(vfs.writeback.run)
                nursery.start_soon(_tune_read_ahead, request.mountpoint)
                await nursery.start(publisher.run)
                on_ready()
                sdnotify.ready(f"mounted {client.endpoint} at {request.mountpoint}")
                await pyfuse3.main()
                nursery.cancel_scope.cancel()
        finally:
            sdnotify.stopping(f"unmounting {request.mountpoint}")
            left = vfs.pending_files()
            if left:
                log.warning(
                    "%d file(s) were not uploaded; their bytes stay in %s",
                    len(left),
                    spool.root,
                )
            pyfuse3.close(unmount=True)
            publisher.close()
            log.info("unmounted %s", request.mountpoint)


async def _on_signals(vfs: Vfs, client: KanboardClient, hup_reloads: bool) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            if signum == signal.SIGHUP and hup_reloads:
                changed = client.reload_secret()
                # Unchanged is worth a warning: whoever sent it expected a new token.
                level = logging.INFO if changed else logging.WARNING
                log.log(level, "SIGHUP: token re-read; %s", "changed" if changed else "unchanged")
                continue
            log.info(
                "%s: finishing uploads in flight, then unmounting", signal.Signals(signum).name
            )
            sdnotify.stopping("finishing uploads in flight, then unmounting")
            if not await vfs.wait_uploads_idle(vfs.config.upload_drain_timeout):
                log.warning("uploads still running after the grace period; stopping anyway")
            pyfuse3.terminate()
            return
