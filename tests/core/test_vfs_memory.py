"""Memory stays bounded however many directories a mount lists (#18 item 4).

Listings nobody uses are dropped (oldest first beyond the total bound, and any that stayed
idle long enough) and fetched again at the next look; one listing larger than the per-listing
bound is refused. What the mount still owes the server, or what is in use, is never dropped.
"""

from __future__ import annotations

import errno
import os

from conftest import WRITE_NEW, Rig, RigFactory, raises_errno

from kbfs.client.models import Container


def counters(rig: Rig) -> dict[str, int]:
    return rig.vfs.status()["counters"]  # type: ignore[return-value]


async def three_tasks(rig: Rig, files: int = 3) -> list[Container]:
    """Three task directories of ``files`` files each, listed in turn a second apart."""
    containers = [rig.tasks]
    for title in ("second", "third"):
        containers.append(Container(rig.project, rig.kb.add_task(rig.project, title)))
    for container in containers:
        for i in range(files):
            rig.kb.add_file(container, f"f{i}.txt", b"x")
    for container in containers:
        assert len(await rig.ls(container)) == files
        rig.clock.advance(1)
    return containers


async def test_beyond_the_bound_the_oldest_listings_go(make_rig: RigFactory) -> None:
    rig = await make_rig(max_records=5, listing_min_age=10, listing_idle=1000)
    first, second, _third = await three_tasks(rig)
    assert counters(rig)["records"] == 9
    inodes = counters(rig)["inodes"]
    rig.clock.advance(20)
    assert rig.vfs.drop_listings() == 2  # 9 -> 6 -> 3: the two used longest ago
    assert counters(rig)["records"] == 3
    assert counters(rig)["listings_dropped"] == 2
    assert counters(rig)["inodes"] == inodes - 6  # their nodes are freed
    # Fetched again at the next look, the same names.
    for container in (first, second):
        calls = rig.kb.calls["list_files"]
        assert await rig.ls(container) == ["f0.txt", "f1.txt", "f2.txt"]
        assert rig.kb.calls["list_files"] == calls + 1
    assert counters(rig)["records"] == 9


async def test_recently_used_listings_stay_beyond_the_bound(make_rig: RigFactory) -> None:
    """What a command is walking now is never dropped, even past the bound: a lookup just
    answered must still find its entry when the kernel asks about it."""
    rig = await make_rig(max_records=1, listing_min_age=10, listing_idle=1000)
    await three_tasks(rig)
    assert rig.vfs.drop_listings() == 0
    assert counters(rig)["records"] == 9


async def test_an_idle_listing_goes_whatever_the_total(make_rig: RigFactory) -> None:
    rig = await make_rig(listing_min_age=10, listing_idle=100)
    rig.kb.add_file(rig.tasks, "a.txt", b"x")
    assert await rig.ls(rig.tasks) == ["a.txt"]
    rig.clock.advance(50)
    await rig.vfs.background_pass()
    assert counters(rig)["records"] == 1
    rig.clock.advance(60)
    await rig.vfs.background_pass()  # the background loop drops it
    assert counters(rig)["records"] == 0
    assert counters(rig)["listings_dropped"] == 1
    assert await rig.ls(rig.tasks) == ["a.txt"]


async def test_a_file_the_kernel_holds_keeps_its_inode(make_rig: RigFactory) -> None:
    """A dropped listing's entries the kernel still holds (a lookup it has not forgotten)
    keep their node: the listing fetched again shows them with the same inode."""
    rig = await make_rig(max_records=0, listing_min_age=0, listing_idle=0)
    rig.kb.add_file(rig.tasks, "a.txt", b"x")
    rig.kb.add_file(rig.tasks, "b.txt", b"y")
    parent = await rig.dir(rig.tasks)
    held = await rig.vfs.lookup(parent, "a.txt")
    rig.vfs.remember(held)  # as fs.py does for the kernel's lookup
    assert rig.vfs.drop_listings() == 1
    assert rig.vfs.getattr(held.ino).size == 1  # still answers for the kernel
    assert (await rig.vfs.lookup(parent, "a.txt")).ino == held.ino
    assert await rig.read(rig.tasks, "a.txt") == b"x"


async def test_what_is_in_use_is_never_dropped(make_rig: RigFactory) -> None:
    """An open file, unsaved bytes, an open directory: their listings stay, however old."""
    rig = await make_rig(max_records=0, listing_min_age=0, listing_idle=0)
    second = Container(rig.project, rig.kb.add_task(rig.project, "second"))
    third = Container(rig.project, rig.kb.add_task(rig.project, "third"))
    for container in (rig.tasks, second, third, rig.files):
        rig.kb.add_file(container, "a.txt", b"x")
    # An open file in task one; unsaved bytes in task two; an open directory: task three.
    node = await rig.vfs.lookup(await rig.dir(rig.tasks), "a.txt")
    reading = await rig.vfs.open(node.ino, os.O_RDONLY)
    writing = await rig.vfs.create(await rig.dir(second), "new.txt", WRITE_NEW)
    await rig.vfs.write(writing.fh, 0, b"unsaved")
    listing = await rig.vfs.opendir(await rig.dir(third))
    assert await rig.ls(rig.files) == ["a.txt"]  # in use by nobody
    assert rig.vfs.drop_listings() == 1  # only the project's files
    assert counters(rig)["records"] == 3
    rig.vfs.releasedir(listing)
    rig.vfs.release(reading.fh)
    assert rig.vfs.drop_listings() == 2  # now tasks one and three
    await rig.vfs.flush(writing.fh)
    rig.vfs.release(writing.fh)
    assert sorted(rig.kb.names(second)) == ["a.txt", "new.txt"]
    # The upload is known by id only until a listing shows it: kept until then.
    assert rig.vfs.drop_listings() == 0
    rig.expire_listings()
    assert await rig.ls(second) == ["a.txt", "new.txt"]
    assert rig.vfs.drop_listings() == 1
    assert counters(rig)["records"] == 0


async def test_a_listing_beyond_the_per_listing_bound_is_refused(make_rig: RigFactory) -> None:
    """More records than one listing may have: EIO with a message saying why, rather than
    hundreds of MB of memory, or a partial listing (whose missing files would look deleted)."""
    rig = await make_rig(max_listing=3)
    for i in range(4):
        rig.kb.add_file(rig.tasks, f"f{i}.txt", b"x")
    exc = await raises_errno(errno.EIO, rig.ls(rig.tasks))
    assert "lists 4 files, more than the 3 kbfs keeps for one directory" in str(exc)
    assert counters(rig)["records"] == 0
    rig.kb.add_file(rig.files, "ok.txt", b"x")
    assert await rig.ls(rig.files) == ["ok.txt"]
