"""Scale: a task with 100,000 attachments (issue: "a listing of 100,000 files").

The listing is one getAllTaskFiles answer of about 20 MB. It must be listed whole with real
tools, cost one call, leave every other directory working meanwhile, and keep the mount alive.
"""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path

import pytest

from tests.e2e.helpers import Mounter, run

COUNT = 100_000


def _rss_mib(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmHWM:\s+(\d+) kB", text)
    assert match is not None
    return int(match.group(1)) / 1024


@pytest.mark.timeout(300)
def test_listing_of_100000_files(kb, mounter: Mounter) -> None:  # type: ignore[no-untyped-def]
    p = kb.project("scale")
    big = kb.task(p, "big")
    small = kb.task(p, "small")
    assert kb.seed_task_files(big, COUNT) == COUNT
    kb.upload_task_file(p, small, "note.txt", b"still here\n")
    m = mounter(kb, ttl=600)
    d = m.p("projects", p, "tasks", big)
    kb.reset_stats()

    # While the big listing is being fetched and listed, another directory answers.
    other: list[bytes] = []

    def read_other() -> None:
        time.sleep(0.2)
        other.append(run("cat", m.p("projects", p, "tasks", small, "note.txt"), timeout=60).stdout)

    reader = threading.Thread(target=read_other)
    reader.start()
    start = time.monotonic()
    names = run("ls", "-f", d, timeout=240).stdout.split(b"\n")
    listed = time.monotonic() - start
    reader.join(timeout=120)
    names = [n for n in names if n and n not in (b".", b"..")]
    assert len(names) == COUNT
    assert len(set(names)) == COUNT
    assert b"file-099999.txt" in names
    assert other == [b"still here\n"]
    calls = kb.stats()["calls"]
    assert calls.get("getAllTaskFiles", 0) == 2, calls  # one per directory: big and small

    # Metadata and content of any of them, from the cached listing (no new listing call).
    st = os.stat(d / "file-054321.txt")
    assert st.st_size == len(b"seeded\n")
    assert run("cat", d / "file-054321.txt").stdout == b"seeded\n"
    found = run("find", d, "-name", "file-0000*", timeout=120).stdout.split()
    assert len(found) == 100  # file-000000 .. file-000099
    assert kb.stats()["calls"].get("getAllTaskFiles", 0) == 2

    # Writes still work in that directory, and the mount is alive.
    run("cp", "/etc/hostname", d / "new.txt")
    assert any(f["name"] == "new.txt" for f in kb.task_files(big))
    assert os.path.ismount(m.path)
    print(f"ls -f of {COUNT} files: {listed:.1f} s; daemon peak RSS {_rss_mib(m.proc.pid):.0f} MiB")
