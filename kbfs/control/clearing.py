"""``kbfs clear``: empty one file directory with a single removeAll* call.

The mount process does it (asked over its control socket, see ``kbfs.control.publisher``): it
already holds the credentials and the directory's cached listing, and it knows which files
still wait for their upload.
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from kbfs.client.errors import KanboardError, Rejected
from kbfs.namespace.nodes import ROOT_INO
from kbfs.vfs import Vfs

log = logging.getLogger(__name__)


async def clear_directory(vfs: Vfs, rel_path: str) -> dict[str, Any]:
    """Remove every server file of one file directory with one removeAll* call.

    Refused while files of that directory still wait for their upload: clearing would remove
    the old server versions and the retry would then bring back only some files, which is not
    what "clear" promised. Afterwards the listing is fetched again, and the answer waits until
    the kernel's cached names have expired, so the mount shows the empty directory by then.
    """
    parts = [p for p in rel_path.split("/") if p]
    shown = "/" + "/".join(parts)
    node = vfs.node(ROOT_INO)
    try:
        for part in parts:
            node = await vfs.lookup(node.ino, part)
    except KanboardError as exc:
        return {"error": f"{shown}: {exc}"}
    except Exception:
        return {"error": f"{shown}: no such directory on this mount"}
    if not node.type.holds_files:
        return {
            "error": f"{shown} is not a files directory (projects/ID/files or projects/ID/tasks/ID)"
        }
    if vfs.config.read_only:
        return {"error": "the mount is read-only"}
    prefix = shown + "/"
    unsaved = [vfs.path_of(n) for n in vfs.pending_files() if not vfs.is_scratch(n)]
    waiting = [path for path in unsaved if path.startswith(prefix)]
    if waiting:
        return {
            "error": f"{len(waiting)} file(s) in {shown} are not uploaded yet"
            f" ({', '.join(waiting[:3])}); wait for them or remove them first"
        }
    before = await vfs.list_dir(node.ino)
    on_server = [name for name, n in before if n.record is not None]
    try:
        await vfs.client.remove_all_files(node.container)
    except Rejected:
        # From Kanboard 1.2.42 a file whose stored bytes are missing cannot be removed, and
        # removeAll* answers false once it met one (the others are gone): say what is left.
        return await _report_left(vfs, node.ino, shown)
    except KanboardError as exc:
        return {"error": f"Kanboard refused to clear {shown}: {exc}"}
    log.info("cleared %s (%d file(s)) with one call", shown, len(on_server))
    try:
        # The vfs's own refresh: the listing must not wait for its TTL to show the change.
        await vfs.refresh(node.ino)
    except KanboardError as exc:
        log.warning("could not list %s again after clearing it: %s", shown, exc)
    # The kernel trusts the names it has seen for a little while (kbfs sends it no
    # invalidations, see kbfs.fs): answer once it has forgotten them, so the mount shows the
    # directory empty when "kbfs clear" returns.
    await trio.sleep(vfs.config.kernel_cache_timeout)
    return {"removed": len(on_server), "path": shown, "kind": node.container.kind.value}


async def _report_left(vfs: Vfs, ino: int, shown: str) -> dict[str, Any]:
    """After a refused removeAll*: the files still listed, named in the error."""
    try:
        await vfs.refresh(ino)
        left = sorted(name for name, n in await vfs.list_dir(ino) if n.record is not None)
    except KanboardError as exc:
        return {"error": f"Kanboard did not clear all of {shown}, and listing it failed: {exc}"}
    log.warning("clearing %s left %d file(s): %s", shown, len(left), ", ".join(left))
    return {
        "error": f"Kanboard could not remove {len(left)} file(s) of {shown}"
        f" ({', '.join(left[:5])}{', ...' if len(left) > 5 else ''}):"
        " Kanboard cannot remove a file whose stored bytes are missing",
        "left": left,
    }
