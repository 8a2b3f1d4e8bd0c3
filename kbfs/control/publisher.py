"""A running mount's status file and control socket (the reading side is ``kbfs.control.status``).

The mount's lifecycle (``kbfs.mount``) starts ``StatusPublisher.run`` in its nursery like any
other component and removes both files with ``close`` once the mount is gone. The socket is how
``kbfs clear`` asks this process, which already holds the credentials and the directory cache,
to empty a directory (``kbfs.control.clearing``), and how ``kbfs status`` gets a snapshot
fresher than the file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import struct
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import trio

from kbfs import sdnotify
from kbfs.control import status as status_mod
from kbfs.control.clearing import clear_directory
from kbfs.options import MountOptions
from kbfs.vfs import Vfs

log = logging.getLogger(__name__)


class StatusPublisher:
    """The status file and the control socket of one mount (see ``kbfs.control.status``).

    Both live in a 0700 runtime dir; the socket additionally checks the caller's uid
    (SO_PEERCRED): only the mounting user and root may ask this process to remove files.
    Neither ever carries the secret. If the runtime dir cannot be used, the mount still works;
    ``kbfs status`` then says no status was published.

    It is given plain values rather than the mount's request so that this layer does not
    depend on the one that composes it; ``error_counts`` is read live at every snapshot.
    """

    def __init__(
        self,
        vfs: Vfs,
        *,
        mountpoint: Path,
        options: MountOptions,
        user: str,
        error_counts: Mapping[str, int],
    ) -> None:
        self.mountpoint = mountpoint
        self.options = options
        self.user = user
        self.vfs = vfs
        self.error_counts = error_counts
        self.started = time.time()
        base = Path("/nonexistent")
        try:
            base = status_mod.ensure_private_dir(status_mod.runtime_dir())
            status_mod.sweep_stale(base)
            self.enabled = True
        except OSError as exc:
            log.warning("no status file for kbfs status: %s", exc)
            self.enabled = False
        self.status_file = status_mod.status_path(str(mountpoint), base)
        self.control_file = status_mod.control_path(str(mountpoint), base)

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve the control socket and keep the snapshot fresh until cancelled.

        Reports started once the socket listens (or could not), so that ``kbfs clear`` can
        reach a mount as soon as it is ready. Without a usable runtime dir there is nothing to
        publish and it returns at once. Its two tasks share this task's own nursery: their
        lifetime is the publisher's, and the caller's nursery never sees them.
        """
        if not self.enabled:
            task_status.started()
            return
        async with trio.open_nursery() as nursery:
            await nursery.start(self._serve_control)
            nursery.start_soon(self._publish)
            task_status.started()

    def snapshot(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "uid": os.getuid(),
            "mountpoint": str(self.mountpoint),
            "url": self.vfs.client.endpoint,
            "user": self.user,
            "read_only": self.options.read_only,
            "writeback": self.options.writeback,
            "dir_cache_ttl": self.options.dir_cache_ttl,
            "started": self.started,
            "updated": time.time(),
            "control": str(self.control_file),
            "vfs": self.vfs.status(),
            # Requests answered with an error, by operation (ENOENT of lookups not counted).
            "errors": dict(self.error_counts),
        }

    def write(self) -> None:
        try:
            status_mod.write_json_atomic(self.status_file, self.snapshot())
        except OSError as exc:
            log.warning("cannot write %s: %s", self.status_file, exc)

    def close(self) -> None:
        """At exit both files go: a snapshot of an unmounted mount would only mislead."""
        if not self.enabled:
            return
        for path in (self.status_file, self.control_file):
            with contextlib.suppress(OSError):
                path.unlink()

    async def _publish(self) -> None:
        """Rewrite the snapshot every few seconds; tell systemd when the backlog changes."""
        last_pending = -1
        while True:
            self.write()
            pending = len(self.vfs.pending_files())
            if pending != last_pending:
                sdnotify.status(
                    f"mounted at {self.mountpoint}"
                    + (f"; {pending} file(s) not uploaded" if pending else "")
                )
                last_pending = pending
            await trio.sleep(status_mod.STATUS_INTERVAL)

    async def _serve_control(
        self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen on the control socket. A socket that cannot be made costs only ``kbfs
        clear`` and the live snapshot (the status file still works): warn and carry on."""
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
        if request.get("op") == "sync":
            timeout = request.get("timeout")
            seconds = float(timeout) if isinstance(timeout, int | float) and timeout > 0 else 300.0
            left = await self.vfs.sync_all(seconds)
            return {"not_uploaded": [{"path": p, "why": why} for p, why in left]}
        return {"error": f"unknown request {request.get('op')!r}"}
