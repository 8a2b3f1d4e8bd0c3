"""The deterministic parts of performance: request counts of tree walks, the persistent content
cache and its bound. Timings live in bench/, never here."""

from __future__ import annotations

import contextlib
import os
import subprocess

from tests.e2e.helpers import Mounter, run, wait_for


def test_find_over_200_tasks_is_a_handful_of_requests(kb, mounter: Mounter) -> None:  # type: ignore[no-untyped-def]
    p = kb.project("big")
    # 200 tasks with a file each, built with batches (fast)
    task_ids = [
        r
        for r in kb.rpc_batch(
            [("createTask", {"project_id": p, "title": f"t{i}"}) for i in range(200)]
        )
    ]
    kb.rpc_batch(
        [
            ("createTaskFile", {"project_id": p, "task_id": t, "filename": "f.txt", "blob": "eA=="})
            for t in task_ids
        ]
    )
    m = mounter(kb)
    kb.reset_stats()
    out = run("find", m.p("projects", p)).stdout.decode().splitlines()
    assert sum(1 for line in out if line.endswith("/f.txt")) == 200
    stats = kb.stats()
    assert stats["http_requests"] <= 8, stats
    assert stats["calls"].get("getAllTaskFiles", 0) == 200  # batched, not one request each


def test_content_cache_survives_a_remount(kb, mounter: Mounter) -> None:  # type: ignore[no-untyped-def]
    p = kb.project("p")
    t = kb.task(p, "t")
    data = os.urandom(100_000)
    kb.upload_task_file(p, t, "keep.bin", data)
    cache = mounter.tmp_path / "shared-cache"
    m1 = mounter(kb, f"cache_dir={cache}")
    assert m1.p("projects", p, "tasks", t, "keep.bin").read_bytes() == data
    mounter.unmount(m1)
    m2 = mounter(kb, f"cache_dir={cache}")
    f = m2.p("projects", p, "tasks", t, "keep.bin")
    f.stat()
    kb.reset_stats()
    assert run("cat", f).stdout == data
    assert kb.stats()["calls"].get("downloadTaskFile", 0) == 0
    # cache files are named by ids and versions, never by the server's names
    assert all("keep" not in x.name for x in cache.rglob("*"))


def test_cache_size_bounds_the_cache_but_never_open_files(kb, mounter: Mounter) -> None:  # type: ignore[no-untyped-def]
    p = kb.project("p")
    t = kb.task(p, "t")
    blobs = {f"f{i}.bin": os.urandom(300_000) for i in range(5)}
    for name, data in blobs.items():
        kb.upload_task_file(p, t, name, data)
    m = mounter(kb, "cache_size=700K")
    d = m.p("projects", p, "tasks", t)
    held = subprocess.Popen(["sh", "-c", f"exec 3<'{d / 'f0.bin'}'; exec sleep 30"])
    try:
        for name, data in blobs.items():
            assert (d / name).read_bytes() == data

        def settled() -> list[int] | None:
            # Eviction runs when a download completes, which may be just after its reader
            # got the bytes: a file can go between listing and stat.
            sizes = []
            for x in m.cache_dir.rglob("content/*"):
                if not x.name.endswith(".part"):
                    with contextlib.suppress(FileNotFoundError):
                        sizes.append(x.stat().st_size)
            return sizes if sum(sizes) <= 700 * 1024 + 300_000 else None

        sizes = wait_for(settled, what="the cache to be within its bound")
        assert len(sizes) < 5  # the oldest were evicted ...
        kb.reset_stats()
        assert (d / "f4.bin").read_bytes() == blobs["f4.bin"]  # ... the newest kept
        assert kb.stats()["calls"].get("downloadTaskFile", 0) == 0
    finally:
        held.kill()
        held.wait()
