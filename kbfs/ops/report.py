"""What a mount tells about itself: ``kbfs status``'s snapshot and a file's ``user.kbfs.*``.

Both only read the components' state (nothing here changes what a user sees), and both need
most of the components, so they are kept apart from the facade (``kbfs.vfs``), whose methods
do things. The facade builds one :class:`Reporter` and hands it the components it owns.
"""

from __future__ import annotations

from typing import Any

from kbfs.client.protocol import KanboardAPI
from kbfs.namespace import attributes
from kbfs.namespace.eviction import records_kept
from kbfs.namespace.nodes import Node, NodeType
from kbfs.namespace.tree import Namespace
from kbfs.ops.remover import Remover
from kbfs.remote.refresher import Refresher
from kbfs.storage.contentcache import ContentCache
from kbfs.storage.spool import Spool
from kbfs.upload.uploader import Uploader


class Reporter:
    """Reads the mount's state for the status file and extended attributes."""

    def __init__(
        self,
        client: KanboardAPI,
        namespace: Namespace,
        refresher: Refresher,
        uploader: Uploader,
        remover: Remover,
        content: ContentCache,
        spool: Spool,
    ) -> None:
        self.client = client
        self.ns = namespace
        self.refresher = refresher
        self.uploader = uploader
        self.remover = remover
        self.content = content
        self.spool = spool

    def xattrs(self, node: Node) -> dict[str, bytes]:
        """``user.kbfs.*`` of ``node``: where it lives on the server, and its state."""
        task = None
        if node.project_id is not None and node.task_id is not None:
            task = self.refresher.task(node.project_id, node.task_id)
        project = self.refresher.project(node.project_id or 0)
        out = attributes.xattrs_of(node, self.client.endpoint, task, project)
        state = self.state_of(node)
        if state is not None:
            out["user.kbfs.state"] = state.encode("utf-8", "surrogateescape")
        return out

    def state_of(self, node: Node) -> str | None:
        """Whether a file's content is on the server, for ``user.kbfs.state``: a person (or a
        script) can tell a local-only file from a saved one without ``kbfs status``."""
        if node.type is not NodeType.FILE:
            return None
        pending = node.pending
        if pending is None or not pending.dirty:
            return "on the server" if node.record is not None else "local-only: empty"
        if pending.incomplete is not None:
            return pending.incomplete
        if pending.refused is not None:
            return f"local-only: {pending.refused}"
        if self.ns.is_scratch(node):
            return "local-only: a scratch name, never uploaded"
        if pending.size_or_zero() == 0:
            return "local-only: empty (Kanboard cannot store empty files)"
        if pending.last_error:
            return f"not uploaded yet: {pending.last_error}"
        return "not uploaded yet"

    def status(self) -> dict[str, object]:
        """A JSON-ready snapshot for ``kbfs status``: what is not on the server, and counters."""
        pending: list[dict[str, Any]] = []
        for node in self.ns.pending_files():
            assert node.pending is not None
            pending.append(
                {
                    "path": self.ns.path_of(node),
                    "size": node.pending.size_or_zero(),
                    "spool_file": str(node.pending.path),
                    "last_error": node.pending.last_error,
                    "local_only": self.ns.is_scratch(node) or node.pending.refused is not None,
                    "refused": node.pending.refused,
                    "incomplete": node.pending.incomplete,
                }
            )
        cache = self.content.statistics()
        client = self.client.statistics()
        rules = self.client.rules
        clock = self.client.server_clock
        return {
            "server": self.client.endpoint,
            "kanboard": {
                "version": rules.version,
                "rules": rules.describe(),
                "second_waits": clock.waits,
                "seconds_waited": round(clock.waited, 3),
                "unremovable": self.uploader.unremovable,
            },
            "pending_uploads": pending,
            "recovered": self.spool.recovered(),
            "cache": {
                "dir": str(self.content.root),
                "bytes": self.content.usage(),
                "limit": self.content.max_bytes,
                "downloads": cache.downloads,
                "hits": cache.hits,
                "evictions": cache.evictions,
            },
            "counters": {
                "uploads": self.uploader.uploads,
                "upload_failures": self.uploader.failures,
                "removals": self.uploader.removals + self.remover.removals,
                "listings": self.refresher.listings,
                "listings_dropped": self.refresher.dropped,
                "records": records_kept(self.ns),
                "inodes": len(self.ns.inodes),
                "reclaimed": self.ns.reclaimed,
                "http_requests": client.http_requests,
                "calls": dict(client.calls),
            },
        }
