"""lookup and readdir: which names a directory has, from the namespace and fresh listings.

The fixed part of the tree (``projects/``, ``<id>/files``, ``tasks/``, the by-name views) is
built from the project and task lists; file directories from their attachment listings. A
listing is fetched only when stale, and names file managers probe everywhere (``.hidden``,
``desktop.ini``, ...) are answered from any cached listing without a fetch.
"""

from __future__ import annotations

from kbfs.errors import NoEntry, NotADirectory
from kbfs.namespace.names import assign_names, parse_id
from kbfs.namespace.nodes import Node, NodeType
from kbfs.namespace.tree import Namespace
from kbfs.remote.refresher import Refresher


class Lister:
    """Answers lookup and readdir (see the module docstring)."""

    def __init__(self, namespace: Namespace, refresher: Refresher) -> None:
        self.ns = namespace
        self.refresher = refresher

    async def lookup(self, parent_ino: int, name: str) -> Node:
        parent = self.ns.node(parent_ino)
        kind = parent.type
        if kind is NodeType.FILE:
            raise NotADirectory()
        if name == ".":
            return parent
        if name == "..":
            return self.ns.node(parent.parent)
        if kind is NodeType.ROOT:
            if name == "projects":
                return self.ns.projects_node
            if name == "by-name":
                return self.ns.by_name_node
            raise NoEntry()
        if kind in (NodeType.BY_NAME, NodeType.TASKS_BY_TITLE):
            if self.ns.is_probe(name):
                raise NoEntry()
            for entry_name, node in await self.list_dir(parent_ino):
                if entry_name == name:
                    return node
            raise NoEntry()
        if kind is NodeType.PROJECTS:
            return await self._lookup_project(name)
        assert parent.project_id is not None
        if kind is NodeType.PROJECT:
            return self._lookup_project_dir(parent.project_id, name)
        if kind is NodeType.TASKS:
            return await self._lookup_task(parent.project_id, name)
        listing = self.refresher.listing(parent.container)
        if not (listing.ever_fetched and self.ns.is_probe(name)):
            listing = await self.refresher.files(parent)
        ino = self.ns.view(parent.container).get(name)
        if ino is None:
            self.refresher.missing(listing, name)
        return self.ns.node(ino)

    async def _lookup_project(self, name: str) -> Node:
        project_id = parse_id(name)
        if project_id is None:
            raise NoEntry()
        await self.refresher.refresh_projects()
        if project_id not in self.refresher.projects():
            self.refresher.missing(self.refresher.project_list, name)
        return self.ns.project_node(project_id)

    def _lookup_project_dir(self, project_id: int, name: str) -> Node:
        if name == "files":
            return self.ns.files_dir_node(project_id)
        if name == "tasks":
            return self.ns.tasks_dir_node(project_id)
        if name == "tasks-by-title":
            return self.ns.titles_dir_node(project_id)
        raise NoEntry()

    async def _lookup_task(self, project_id: int, name: str) -> Node:
        task_id = parse_id(name)
        if task_id is None:
            raise NoEntry()
        listing = await self.refresher.tasks(project_id)
        if task_id not in listing.tasks:
            self.refresher.missing(listing, name)
        return self.ns.task_node(project_id, task_id)

    async def list_dir(self, ino: int) -> list[tuple[str, Node]]:
        """The entries of a directory, fetched if the cached listing is stale."""
        node = self.ns.node(ino)
        ns = self.ns
        if not node.type.is_dir:
            raise NotADirectory()
        if node.type is NodeType.ROOT:
            return [("projects", ns.projects_node), ("by-name", ns.by_name_node)]
        if node.type is NodeType.PROJECTS:
            await self.refresher.refresh_projects()
            return [(str(pid), ns.project_node(pid)) for pid in self.refresher.projects()]
        if node.type is NodeType.BY_NAME:
            await self.refresher.refresh_projects()
            projects = self.refresher.projects().values()
            named = assign_names((p.id, p.name, p) for p in projects)
            return [
                (name, ns.link(("link", "project", p.id), node, name, f"../projects/{p.id}"))
                for name, p in named.items()
            ]
        assert node.project_id is not None
        if node.type is NodeType.PROJECT:
            return [
                ("files", ns.files_dir_node(node.project_id)),
                ("tasks", ns.tasks_dir_node(node.project_id)),
                ("tasks-by-title", ns.titles_dir_node(node.project_id)),
            ]
        if node.type is NodeType.TASKS_BY_TITLE:
            tasks = (await self.refresher.tasks(node.project_id)).tasks.values()
            titled = assign_names((t.id, t.title, t) for t in tasks)
            return [
                (name, ns.link(("link", "task", t.id), node, name, f"../tasks/{t.id}"))
                for name, t in titled.items()
            ]
        if node.type is NodeType.TASKS:
            listing = await self.refresher.tasks(node.project_id)
            entries = [(str(tid), ns.task_node(node.project_id, tid)) for tid in listing.tasks]
            await self.refresher.prefetch([task_node for _, task_node in entries])
            return entries
        await self.refresher.files(node)
        return [(name, self.ns.node(i)) for name, i in ns.view(node.container).items()]
