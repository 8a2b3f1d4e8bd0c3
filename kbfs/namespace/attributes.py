"""What ``stat`` and ``getfattr`` show for a node: pure functions of the node and what the
caller knows (owner, writability, the task or project it stands for)."""

from __future__ import annotations

import os
import stat
import time
from typing import NamedTuple

from kbfs.client.models import Project, Task
from kbfs.namespace.nodes import Node, NodeType


class Attr(NamedTuple):
    """What stat shows. A tuple: a listing builds 10,000 of these, and a frozen dataclass's
    __init__ costs six times as much."""

    ino: int
    mode: int
    nlink: int
    size: int
    uid: int
    gid: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int


class Owner(NamedTuple):
    uid: int
    gid: int
    umask: int


def attr_of(node: Node, owner: Owner, read_only: bool, mounted_ns: int) -> Attr:
    """Modes follow what kbfs can do there: structural directories are read-only, file
    directories writable unless the project is; sizes and times come from the unsaved
    content while there is some, else from the server record."""
    uid, gid, umask = owner
    t = mounted_ns
    if node.type is NodeType.LINK:
        size = len(os.fsencode(node.link_target or ""))
        return Attr(node.ino, stat.S_IFLNK | 0o777, 1, size, uid, gid, t, t, t)
    if node.type.is_dir:
        perm = 0o555  # structural: nothing can be created here
        if node.type.holds_files and not read_only:
            perm = 0o777
        return Attr(node.ino, stat.S_IFDIR | (perm & ~umask), 2, 0, uid, gid, t, t, t)
    perm = 0o666 & ~umask
    if read_only:
        perm &= ~0o222
    if node.mode_override is not None:
        perm = node.mode_override
    if node.pending is not None:
        size = node.pending.size_or_zero()
        mtime = node.pending.mtime_ns
    elif node.record is not None:
        size = node.record.size
        mtime = node.record.date * 1_000_000_000
    else:
        size, mtime = 0, node.created_ns
    ctime = mtime
    if node.mtime_override_ns is not None:
        mtime = node.mtime_override_ns
    atime = node.atime_ns if node.atime_ns is not None else mtime
    mode = stat.S_IFREG | (perm & 0o7777)
    return Attr(node.ino, mode, 1, size, uid, gid, atime, mtime, ctime)


def web_url(endpoint: str, node: Node) -> str | None:
    """The page of a task or project in Kanboard's web UI (derived from the endpoint)."""
    base = endpoint.removesuffix("jsonrpc.php")
    if node.task_id is not None:
        return f"{base}?controller=TaskViewController&action=show&task_id={node.task_id}"
    if node.project_id is not None:
        return f"{base}?controller=BoardViewController&action=show&project_id={node.project_id}"
    return None


def xattrs_of(
    node: Node, endpoint: str, task: Task | None, project: Project | None
) -> dict[str, bytes]:
    """Read-only ``user.kanboard.*`` attributes: what Kanboard knows beyond the bytes."""
    out: dict[str, str] = {}
    url = web_url(endpoint, node)
    if node.type is NodeType.FILE:
        record = node.record
        if record is not None and node.pending is None:
            out["user.kanboard.id"] = str(record.id)
            # Kanboard records no user (user_id 0) for a file sent with the application API
            # token: no attribute then, rather than an empty one that says nothing.
            uploader = record.username or (str(record.user_id) if record.user_id else "")
            if uploader:
                out["user.kanboard.uploader"] = uploader
            out["user.kanboard.date"] = time.strftime(
                "%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.date)
            )
            out["user.kanboard.is_image"] = "1" if record.is_image else "0"
        if url and record is not None:
            out["user.kanboard.url"] = url
    elif node.type is NodeType.TASK:
        if task is not None:
            out["user.kanboard.title"] = task.title
            out["user.kanboard.status"] = "open" if task.is_active else "closed"
        out["user.kanboard.id"] = str(node.task_id)
        out["user.kanboard.url"] = url or ""
    elif node.type in (NodeType.PROJECT, NodeType.PROJECT_FILES, NodeType.TASKS):
        if project is not None:
            out["user.kanboard.name"] = project.name
        out["user.kanboard.id"] = str(node.project_id)
        out["user.kanboard.url"] = url or ""
    return {k: v.encode("utf-8", "surrogateescape") for k, v in out.items()}


def statfs() -> dict[str, int]:
    """Kanboard reports no quota and has no inodes: advertise plenty so copies start.

    The file counts are equal (like rclone's mounts): ``df -i`` shows 0 % used rather than a
    count kbfs does not know (sshfs passes on the server's disk figures; there are none here).
    """
    block = 4096
    total = 1 << 40
    files = 1_000_000_000
    return {
        "f_bsize": block,
        "f_frsize": block,
        "f_blocks": total // block,
        "f_bfree": total // block,
        "f_bavail": total // block,
        "f_files": files,
        "f_ffree": files,
        "f_favail": files,
        "f_namemax": 255,
    }
