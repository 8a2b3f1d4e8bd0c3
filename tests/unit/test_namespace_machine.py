"""The namespace's invariants under random histories (hypothesis state machine, no I/O).

A small model server holds the records; the machine drives ``kbfs.namespace`` the way the
components do: listings requested and answered late, stale or out of order; files created,
written, uploaded (confirmed, or with the removal of the old version failing, or with the
create's answer lost), refused for good (kept as local-only files) or set aside (an incomplete
write, moved to the recovery folder), removed, renamed (open for writing, confirmed through a
staging node, or to a scratch name); other clients adding and removing files; the kernel
looking nodes up and forgetting them; reclaim passes. After every step the invariants of
the module docstring of ``kbfs.namespace.tree`` must hold.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from kbfs.client.models import Container, FileRecord
from kbfs.namespace import eviction, moves, refusals
from kbfs.namespace.names import DEFAULT_LOCAL_NAMES
from kbfs.namespace.nodes import Node, NodeType, file_key, is_doomed
from kbfs.namespace.tree import Namespace

CONTAINERS = (Container(1, 10), Container(1))
NAMES = ("a.txt", "b")


@dataclass(eq=False)
class FakePending:
    """What the namespace reads of a spool entry: whether the server lacks its content."""

    dirty: bool = True

    def size_or_zero(self) -> int:
        return 1


class Server:
    """Records per container; ids grow (reuse is covered by the client and e2e tests)."""

    def __init__(self) -> None:
        self.files: dict[Container, dict[int, FileRecord]] = {c: {} for c in CONTAINERS}
        self._ids = itertools.count(1)
        self.now = 1_000

    def create(self, container: Container, name: str) -> FileRecord:
        self.now += 1
        file_id = next(self._ids)
        record = FileRecord(
            kind=container.kind,
            id=file_id,
            name=name,
            size=1,
            date=self.now,
            is_image=False,
            path=f"p/{file_id}",
            etag=f"e{file_id}",
            project_id=container.project_id if container.task_id is None else None,
            task_id=container.task_id,
            user_id=1,
        )
        self.files[container][file_id] = record
        return record

    def remove(self, container: Container, record: FileRecord) -> None:
        self.files[container].pop(record.id, None)


class NamespaceMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.ns = Namespace(DEFAULT_LOCAL_NAMES)
        self.server = Server()
        self.in_flight: list[tuple[Container, list[FileRecord], int]] = []
        self.seen: dict[int, Node] = {}  # every inode ever handed out, and its node
        self.removing: list[tuple[Container, FileRecord]] = []  # queued or under way
        # Versions this mount superseded, moved away or removed: never to be shown again.
        self.gone: set[tuple[Container, tuple[str, str, int, str]]] = set()
        self.dropped: dict[int, Node] = {}  # nodes the kernel held when their listing went

    # ------------------------------------------------------------------ helpers

    def shown(self, container: Container) -> list[tuple[str, Node]]:
        return [(name, self.ns.node(ino)) for name, ino in self.ns.view(container).items()]

    def pick(self, data: st.DataObject, container: Container) -> tuple[str, Node] | None:
        entries = self.shown(container)
        return data.draw(st.sampled_from(entries)) if entries else None

    def dir_node(self, container: Container) -> Node:
        return self.ns.dir_node(container)

    def upload(self, node: Node, *, removal_now: bool = True) -> FileRecord:
        """What Uploader.prepare, finish and the removals after them do to the namespace: the
        superseded versions are hidden at once (CleanupQueue.begin), then removed now, or
        later (a removal still under way, or failed and queued: ``retry_removals``)."""
        container = node.container
        name = self.ns.server_name(node)
        record = self.server.create(container, name)
        old = node.record
        self.ns.attach_upload(node, record, old)
        replaced = [(container, old)] if old is not None else []
        replaced += self.ns.take_stale(node)
        replaced += self.ns.unhide(container, name)
        replaced = [(c, r) for c, r in replaced if not (c == container and r.id == record.id)]
        for where, stale in replaced:
            self.ns.doom(where, stale)
            self.gone.add((where, file_key(stale)))
        for where, stale in replaced:
            if removal_now:
                self.server.remove(where, stale)
                self.ns.forget_record(where, stale)
            else:
                self.removing.append((where, stale))
        if node.pending is not None:
            node.pending.dirty = False  # type: ignore[attr-defined]
            if node.open_handles == 0:
                self.ns.set_pending(node, None)  # settled: the cache has the bytes
        return record

    # ------------------------------------------------------------------ listings

    @rule(container=st.sampled_from(CONTAINERS))
    def request_listing(self, container: Container) -> None:
        records = list(self.server.files[container].values())
        self.in_flight.append((container, records, self.ns.listing_asked(container)))

    @rule(container=st.sampled_from(CONTAINERS))
    def listing(self, container: Container) -> None:
        """A listing asked and answered with nothing in between."""
        records = list(self.server.files[container].values())
        self.ns.apply_listing(container, records, self.ns.listing_asked(container))

    @precondition(lambda self: self.in_flight)
    @rule(data=st.data())
    def answer_listing(self, data: st.DataObject) -> None:
        index = data.draw(st.integers(0, len(self.in_flight) - 1))  # late, reordered
        container, records, since = self.in_flight.pop(index)
        self.ns.apply_listing(container, records, since)

    # ------------------------------------------------------------------ other clients

    @rule(container=st.sampled_from(CONTAINERS), name=st.sampled_from(NAMES))
    def other_client_uploads(self, container: Container, name: str) -> None:
        self.server.create(container, name)

    @rule(container=st.sampled_from(CONTAINERS), data=st.data())
    def other_client_removes(self, container: Container, data: st.DataObject) -> None:
        files = list(self.server.files[container].values())
        if files:
            self.server.remove(container, data.draw(st.sampled_from(files)))

    # ------------------------------------------------------------------ this mount

    @rule(container=st.sampled_from(CONTAINERS), name=st.sampled_from(NAMES))
    def create(self, container: Container, name: str) -> None:
        if name not in self.ns.view(container):
            self.ns.new_local_file(self.dir_node(container), name, FakePending())  # type: ignore[arg-type]

    @rule(container=st.sampled_from(CONTAINERS), data=st.data())
    def write(self, container: Container, data: st.DataObject) -> None:
        picked = self.pick(data, container)
        if picked is None:
            return
        node = picked[1]
        if node.pending is None:
            self.ns.set_pending(node, FakePending())  # type: ignore[arg-type]
        else:
            node.pending.dirty = True  # type: ignore[attr-defined]

    @rule(container=st.sampled_from(CONTAINERS), data=st.data(), removal_now=st.booleans())
    def save(self, container: Container, data: st.DataObject, removal_now: bool) -> None:
        """open, write, close: the new version is uploaded."""
        picked = self.pick(data, container)
        if picked is None or self.ns.is_scratch(picked[1]):
            return
        node = picked[1]
        if node.pending is None:
            self.ns.set_pending(node, FakePending())  # type: ignore[arg-type]
        self.upload(node, removal_now=removal_now)

    @rule(container=st.sampled_from(CONTAINERS), data=st.data())
    def save_answer_lost(self, container: Container, data: st.DataObject) -> None:
        """The create happened, its answer never came: the copy stays unseen until resolved."""
        picked = self.pick(data, container)
        if picked is None or picked[1].pending is None or self.ns.is_scratch(picked[1]):
            return
        name = self.ns.server_name(picked[1])
        copy = self.server.create(container, name)
        self.ns.add_lost(container, (name, float(copy.date), copy.size, None))

    @rule(container=st.sampled_from(CONTAINERS), data=st.data())
    def refused_for_good(self, container: Container, data: st.DataObject) -> None:
        """The server refuses a file's unsaved content for good: it stays at its name, local
        only (Recovery.keep_local)."""
        picked = self.pick(data, container)
        if picked is None or picked[1].pending is None or not picked[1].pending.dirty:
            return
        name, node = picked
        assert refusals.keep_refused(self.ns, node)
        assert node.linked and self.ns.view(container).get(name) == node.ino

    @rule(container=st.sampled_from(CONTAINERS), data=st.data())
    def set_aside(self, container: Container, data: st.DataObject) -> None:
        """Unsaved content that must never be uploaded (a write into it failed) goes to the
        recovery folder (Recovery.recover): the name shows the server's version again."""
        picked = self.pick(data, container)
        if picked is None or picked[1].pending is None or picked[1].open_handles:
            return
        if self.ns.is_scratch(picked[1]):
            return  # never uploaded anyway: Recovery leaves scratch files alone
        self.ns.recovered(picked[1])

    @rule(container=st.sampled_from(CONTAINERS), name=st.sampled_from(NAMES))
    def resolve_lost(self, container: Container, name: str) -> None:
        """The sweep: every file of a lost create of ``name`` is removed (none adopted)."""
        lost = [e for e in self.ns.directory(container).lost if e[0] == name]
        if not lost:
            return
        for record in list(self.server.files[container].values()):
            made_by_lost = any(record.date >= int(e[1]) for e in lost)
            ours = file_key(record) in self.ns.directory(container).ours
            if record.name == name and made_by_lost and not ours:
                self.ns.doom(container, record)
                self.removing.append((container, record))
        self.ns.resolve_lost(container, name)

    @precondition(lambda self: self.removing)
    @rule()
    def retry_removals(self) -> None:
        for where, record in self.removing:
            self.server.remove(where, record)
            self.ns.forget_record(where, record)
        self.removing = []

    @rule(container=st.sampled_from(CONTAINERS), data=st.data())
    def unlink(self, container: Container, data: st.DataObject) -> None:
        picked = self.pick(data, container)
        if picked is None:
            return
        name, node = picked
        if node.record is not None:
            self.server.remove(container, node.record)
            self.ns.removed_on_server(container, node.record, gone=True)
            self.gone.add((container, file_key(node.record)))
        for where, stale in self.ns.take_stale(node):
            self.server.remove(where, stale)
            self.ns.forget_record(where, stale)
        hidden = self.ns.drop_hidden(node)
        if hidden is not None:
            self.server.remove(*hidden)
        self.ns.unlinked(node, name)
        if node.open_handles == 0:
            self.ns.set_pending(node, None)

    @rule(
        src=st.sampled_from(CONTAINERS),
        dst=st.sampled_from(CONTAINERS),
        name=st.sampled_from((*NAMES, "a.txt~")),
        open_for_writing=st.booleans(),
        data=st.data(),
    )
    def rename(
        self, src: Container, dst: Container, name: str, open_for_writing: bool, data: st.DataObject
    ) -> None:
        picked = self.pick(data, src)
        if picked is None:
            return
        node = picked[1]
        target_ino = self.ns.view(dst).get(name)
        target = self.ns.node(target_ino) if target_ino is not None else None
        if target is node:
            return
        dst_dir = self.dir_node(dst)
        if not self.ns.is_local_name(name):
            moves.supersede_hidden(self.ns, node)
        if self.ns.is_local_name(name):
            if node.record is not None and node.pending is None:
                self.ns.set_pending(node, FakePending(dirty=False))  # type: ignore[arg-type]
            moves.move_as_scratch(self.ns, node, dst_dir, name, target)
            if target is not None and target.open_handles == 0:
                self.ns.set_pending(target, None)
            return
        if open_for_writing and node.pending is not None:
            moves.move_open_file(self.ns, node, dst_dir, name, target)
            return
        stage = moves.stage_move(self.ns, node, dst_dir, name, target, FakePending())  # type: ignore[arg-type]
        self.upload(stage)
        source = node.record
        moves.complete_move(self.ns, node, stage, dst_dir, target, source_gone=True)
        if source is not None:
            self.server.remove(src, source)
            self.ns.forget_record(src, source)
        if target is not None and target.open_handles == 0:
            self.ns.set_pending(target, None)

    # ------------------------------------------------------------------ the kernel

    @rule(container=st.sampled_from(CONTAINERS), data=st.data())
    def kernel_looks_up(self, container: Container, data: st.DataObject) -> None:
        picked = self.pick(data, container)
        if picked is not None:
            self.ns.inodes.add_lookups(picked[1])

    @rule(container=st.sampled_from(CONTAINERS))
    def drop_unused_listing(self, container: Container) -> None:
        """What the refresher does to a listing nobody used lately (kbfs.namespace.eviction),
        also while answers to listings of it are in flight (a prefetch holds no lock)."""
        state = self.ns.directory(container)
        if state.records and eviction.droppable(self.ns, state, set()):
            held = {ino: self.ns.node(ino) for ino in state.entries.values()}
            eviction.drop(self.ns, state)
            self.dropped.update((ino, n) for ino, n in held.items() if n.lookups)

    @invariant()
    def a_node_the_kernel_holds_keeps_its_inode(self) -> None:
        """After a dropped listing comes back, a file the kernel still holds shows with the
        inode the kernel knows (never a twin with a new number)."""
        for ino, node in list(self.dropped.items()):
            if node.lookups == 0:
                del self.dropped[ino]
                continue
            if node.record is None:
                continue
            for container in CONTAINERS:
                for shown in self.ns.directory(container).entries.values():
                    twin = self.ns.node(shown)
                    if twin is not node and twin.record is not None:
                        assert file_key(twin.record) != file_key(node.record), "a twin inode"

    @rule()
    def kernel_forgets_and_reclaim(self) -> None:
        for node in self.ns.inodes:
            if node.lookups:
                self.ns.inodes.forget(node.ino, node.lookups)
        self.ns.reclaim(set())

    # ------------------------------------------------------------------ invariants

    @invariant()
    def inode_numbers_are_never_reused(self) -> None:
        for node in self.ns.inodes:
            assert self.seen.setdefault(node.ino, node) is node, f"inode {node.ino} reused"

    @invariant()
    def shown_iff_linked(self) -> None:
        views = {c: self.ns.view(c) for c in CONTAINERS}
        for container, view in views.items():
            for name, ino in view.items():
                node = self.ns.inodes.get(ino)
                assert node is not None, f"{name!r} shows freed inode {ino}"
                assert node.linked, f"{name!r} shows an unlinked node"
                assert node.name == name
                assert node.container == container
        for node in self.ns.inodes:
            if node.type is NodeType.FILE and node.linked:
                view = views.get(node.container, {})
                if view.get(node.name) == node.ino:
                    continue
                # The one stated exception: a server file whose name a file of this mount
                # took meanwhile (created while the listing that brings it was in flight)
                # is shadowed by it until that file is uploaded.
                state = self.ns.directory(node.container)
                assert state.entries.get(node.name) == node.ino, f"{node.name!r} not shown"
                assert node.name in state.local

    @invariant()
    def each_server_file_shows_once_unless_hidden(self) -> None:
        for container in CONTAINERS:
            state = self.ns.directory(container)
            shown_keys = [
                file_key(self.ns.node(ino).record)  # type: ignore[arg-type]
                for ino in state.entries.values()
            ]
            assert len(shown_keys) == len(set(shown_keys)), "a server file shows twice"
            for record in state.records.values():
                reason = (
                    is_doomed(state.doomed, record)
                    or record.id in state.hidden
                    or any(e[0] == record.name for e in state.lost)
                )
                assert reason or file_key(record) in shown_keys, f"file {record.id} unseen"

    @invariant()
    def doomed_and_hidden_files_are_not_shown(self) -> None:
        for container in CONTAINERS:
            state = self.ns.directory(container)
            for ino in state.entries.values():
                record = self.ns.node(ino).record
                assert record is not None
                assert not is_doomed(state.doomed, record), f"doomed file {record.id} shown"
                hidden = state.hidden.get(record.id)
                assert hidden is None or file_key(hidden) != file_key(record)

    @invariant()
    def what_this_mount_removed_or_superseded_never_shows_again(self) -> None:
        for container in CONTAINERS:
            for ino in self.ns.directory(container).entries.values():
                record = self.ns.node(ino).record
                assert record is not None
                assert (container, file_key(record)) not in self.gone, f"file {record.id} is back"

    @invariant()
    def unsaved_bytes_stay_reachable(self) -> None:
        for node in self.ns.inodes:
            pending = node.pending
            if node.type is NodeType.FILE and pending is not None and not node.discarded:
                assert node.linked or not pending.dirty, f"unsaved {node.name!r} is unreachable"


NamespaceMachine.TestCase.settings = settings(
    max_examples=600, stateful_step_count=30, deadline=None
)
test_namespace_invariants = pytest.mark.timeout(300)(NamespaceMachine.TestCase)
