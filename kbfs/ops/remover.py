"""rm: remove*File for the server file a name shows, and everything that name was holding.

A name may stand for more than one server file: the version a pending save replaces, the
sources of a move still waiting for its upload, the server file a scratch copy stands for
(vim's ``doc.txt~``). Removing the name removes them all; a removal that fails for a file the
listing no longer shows is queued (and the file stays hidden) instead of failing ``rm``.
"""

from __future__ import annotations

import logging

from kbfs.namespace.nodes import Node, id_text
from kbfs.namespace.tree import Namespace
from kbfs.upload.uploader import Uploader

log = logging.getLogger(__name__)


class Remover:
    """unlink(2) on Kanboard."""

    def __init__(self, namespace: Namespace, uploader: Uploader) -> None:
        self.ns = namespace
        self.uploader = uploader
        self.removals = 0

    async def remove(self, name: str, node: Node) -> None:
        """Remove ``node``, shown as ``name``; its unsaved content goes too."""
        log.debug("unlink %s (inode %d, file %s)", name, node.ino, id_text(node.record))
        container = node.container
        record = node.record
        if record is not None:
            # The server file this entry shows or is about to replace (even if a pending move
            # or save already took it out of the listing: then check it is still that file).
            gone = True
            if self.ns.listed(container, record):
                await self.uploader.remove_remote(container, record)
            else:
                gone = await self.uploader.remove_replaced(container, record, node, verify=True)
            self.ns.removed_on_server(container, record, gone=gone)
            self.removals += 1
        for where, stale in list(node.stale):
            # Sources of a move still waiting for its upload: the user removed the result.
            await self.uploader.remove_replaced(where, stale, node, verify=True)
        self.ns.take_stale(node)
        if node.hides is not None:
            await self.uploader.remove_remote(*node.hides)
            self.ns.drop_hidden(node)
            self.removals += 1
        self.ns.unlinked(node, name)
        if node.open_handles == 0:
            self.uploader.settle(node)
