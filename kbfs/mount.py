"""The mount's lifecycle: check the server, build the layers, serve, stop cleanly.

This is the composition root for a mount and the only module that holds a nursery. Stopping
(SIGTERM, SIGINT, SIGHUP) first waits a bounded time for uploads in flight, then ends the FUSE
loop and unmounts; an external ``fusermount3 -u`` or ``umount`` ends the loop by itself.

Besides the FUSE loop the nursery runs the status publisher (a JSON snapshot that
``kbfs status`` reads, see ``kbfs.status``) and the control socket through which
``kbfs clear`` asks this process, which already holds the credentials and the directory cache,
to empty a directory. Under systemd it reports READY=1 / STOPPING=1 (``kbfs.sdnotify``).
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import ipaddress
import json
import logging
import os
import signal
import socket
import struct
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs
import pyfuse3
import trio

from kbfs import sdnotify
from kbfs import status as status_mod
from kbfs.clearing import clear_directory
from kbfs.client.api import Credentials, KanboardClient
from kbfs.fs import Operations, error_counts
from kbfs.namespace.names import DEFAULT_LOCAL_NAMES
from kbfs.options import MountOptions
from kbfs.storage.contentcache import ContentCache
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


def local_names(options: MountOptions) -> tuple[str, ...]:
    base = DEFAULT_LOCAL_NAMES if options.local_names is None else options.local_names
    return (*base, *options.local_names_add)


async def check_server(client: KanboardClient, credentials: Credentials) -> int | None:
    """One call that proves URL and credentials; returns the user id under user auth."""
    if credentials.is_app_token:
        await client.get_version()
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


def warn_if_cleartext(endpoint: str) -> None:
    """Plain http sends the token in every request: fine on loopback, a leak anywhere else."""
    parts = urllib.parse.urlsplit(endpoint)
    if parts.scheme != "http":
        return
    host = parts.hostname or ""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        log.warning(
            "%s is plain http: the API token crosses the network unencrypted; use https", host
        )


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
    )
    warn_if_cleartext(client.endpoint)
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
                op_timeout=options.timeout,
                kernel_cache_timeout=options.attr_timeout,
                local_names=local_names(options),
            ),
            content,
            spool,
        )
        ops = Operations(vfs, attr_timeout=options.attr_timeout, xattrs=options.xattr)
        publisher = StatusPublisher(request, vfs)
        pyfuse3.init(ops, str(request.mountpoint), fuse_options(options))
        log.info("mounted %s at %s", client.endpoint, request.mountpoint)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_stop_on_signal, vfs)
                await nursery.start(content.run)
                await nursery.start(vfs.run)
                nursery.start_soon(_tune_read_ahead, request.mountpoint)
                if publisher.enabled:
                    await nursery.start(publisher.serve_control)
                    nursery.start_soon(publisher.run)
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


async def _stop_on_signal(vfs: Vfs) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            log.info(
                "%s: finishing uploads in flight, then unmounting", signal.Signals(signum).name
            )
            sdnotify.stopping("finishing uploads in flight, then unmounting")
            if not await vfs.wait_uploads_idle(vfs.config.upload_drain_timeout):
                log.warning("uploads still running after the grace period; stopping anyway")
            pyfuse3.terminate()
            return


class StatusPublisher:
    """The status file and the control socket of one mount (see ``kbfs.status``).

    Both live in a 0700 runtime dir; the socket additionally checks the caller's uid
    (SO_PEERCRED): only the mounting user and root may ask this process to remove files.
    Neither ever carries the secret. If the runtime dir cannot be used, the mount still works;
    ``kbfs status`` then says no status was published.
    """

    def __init__(self, request: MountRequest, vfs: Vfs) -> None:
        self.request = request
        self.vfs = vfs
        self.started = time.time()
        mountpoint = str(request.mountpoint)
        base = Path("/nonexistent")
        try:
            base = status_mod.ensure_private_dir(status_mod.runtime_dir())
            status_mod.sweep_stale(base)
            self.enabled = True
        except OSError as exc:
            log.warning("no status file for kbfs status: %s", exc)
            self.enabled = False
        self.status_file = status_mod.status_path(mountpoint, base)
        self.control_file = status_mod.control_path(mountpoint, base)

    def snapshot(self) -> dict[str, Any]:
        options = self.request.options
        return {
            "pid": os.getpid(),
            "uid": os.getuid(),
            "mountpoint": str(self.request.mountpoint),
            "url": self.vfs.client.endpoint,
            "user": self.request.credentials.username,
            "read_only": options.read_only,
            "dir_cache_ttl": options.dir_cache_ttl,
            "started": self.started,
            "updated": time.time(),
            "control": str(self.control_file),
            "vfs": self.vfs.status(),
            # Requests answered with an error, by operation (ENOENT of lookups not counted).
            "errors": dict(error_counts),
        }

    def write(self) -> None:
        try:
            status_mod.write_json_atomic(self.status_file, self.snapshot())
        except OSError as exc:
            log.warning("cannot write %s: %s", self.status_file, exc)

    async def run(self) -> None:
        """Rewrite the snapshot every few seconds; tell systemd when the backlog changes."""
        last_pending = -1
        while True:
            self.write()
            pending = len(self.vfs.pending_files())
            if pending != last_pending:
                sdnotify.status(
                    f"mounted at {self.request.mountpoint}"
                    + (f"; {pending} file(s) not uploaded" if pending else "")
                )
                last_pending = pending
            await trio.sleep(status_mod.STATUS_INTERVAL)

    def close(self) -> None:
        """At exit both files go: a snapshot of an unmounted mount would only mislead."""
        if not self.enabled:
            return
        for path in (self.status_file, self.control_file):
            with contextlib.suppress(OSError):
                path.unlink()

    async def serve_control(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.control_file.unlink()  # left by a process that was killed
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            await sock.bind(str(self.control_file))
            os.chmod(self.control_file, 0o600)
            sock.listen(8)
        except OSError as exc:
            sock.close()
            log.warning("no control socket for kbfs clear: %s", exc)
            task_status.started()
            return
        task_status.started()
        await trio.serve_listeners(self._handle, [trio.SocketListener(sock)])

    async def _handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            try:
                answer = await self._answer(stream)
            except Exception as exc:  # one bad request must not end the mount
                log.exception("control request failed unexpectedly")
                answer = {"error": f"internal error: {exc.__class__.__name__}"}
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await stream.send_all(json.dumps(answer).encode() + b"\n")

    async def _answer(self, stream: trio.SocketStream) -> dict[str, Any]:
        creds = stream.socket.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
        _pid, uid, _gid = struct.unpack("3i", creds)
        if uid not in (0, os.getuid()):
            return {"error": "only the user who mounted it (or root) may do this"}
        data = b""
        with trio.move_on_after(10):
            while not data.endswith(b"\n") and len(data) < 65536:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                data += chunk
        try:
            request = json.loads(data)
        except ValueError:
            return {"error": "garbled request"}
        if not isinstance(request, dict):
            return {"error": "garbled request"}
        if request.get("op") == "status":
            return self.snapshot()
        if request.get("op") == "clear":
            return await clear_directory(self.vfs, str(request.get("path", "")))
        return {"error": f"unknown request {request.get('op')!r}"}
