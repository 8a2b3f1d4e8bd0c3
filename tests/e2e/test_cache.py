"""The deterministic parts of performance: request counts of tree walks, the persistent content
cache and its bound. Timings live in bench/, never here."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time

from tests.e2e.helpers import Mounter, random_files, run, wait_for


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


# Extension-less files: GIO must read their first bytes to tell their type.
SNIFFED = {
    "photo": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "image/png"),
    "paper": (b"%PDF-1.4\n", "application/pdf"),
    "archive": (b"\x1f\x8b\x08\x00", "application/gzip"),
    "scan": (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "image/jpeg"),
    "program": (b"\x7fELF\x02\x01\x01", "application/x-executable"),
    "notes": (b"plain words\n" * 1000, "text/plain"),
}


def test_sniffing_content_types_downloads_only_the_start_of_each_file(kb, mounter: Mounter) -> None:  # type: ignore[no-untyped-def]
    """What GNOME Files asks of a folder (``gio list -a standard::content-type``): GIO opens
    each extension-less file, reads 4 KiB and closes it. kbfs pauses a download at its first
    256 KiB until a reader wants more and drops it when the last reader leaves, so six 8 MiB
    files cost well under one of them (all six in full: 67 MB of base64). The server's send
    buffer is bounded as a network's in-flight data is: on loopback the kernel would queue
    MiBs a client never reads. A later ``cat`` gets the whole file."""
    size = 8 << 20
    project = kb.project("P")
    task = kb.task(project, "T")
    blobs = {}
    for name, (head, _) in SNIFFED.items():
        body = head * (size // len(head)) if name == "notes" else os.urandom(size)
        blobs[name] = (head + body)[:size]
        kb.upload_task_file(project, task, name, blobs[name])
    m = mounter(kb)
    d = m.p("projects", project, "tasks", task)
    os.listdir(d)
    kb.config(send_buffer=64 * 1024)
    kb.reset_stats()
    out = run("gio", "list", "-a", "standard::content-type", d).stdout.decode()
    types = dict(
        (line.split("\t")[0], line.rsplit("standard::content-type=", 1)[1])
        for line in out.splitlines()
    )
    assert types == {name: kind for name, (_, kind) in SNIFFED.items()}
    time.sleep(1)  # a download that was not dropped would go on meanwhile
    stats = kb.stats()
    assert stats["calls"] == {"downloadTaskFile": 6}, stats
    assert stats["response_bytes"] < 4 << 20, stats
    assert (d / "photo").read_bytes() == blobs["photo"]


def test_cp_r_of_a_project_reads_its_small_files_in_batches(kb, mounter: Mounter, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """``cp -r`` of 10 tasks x 10 files: after two single downloads show a read-through, the
    rest arrive in batched requests across the task directories (kbfs.ops.readahead)."""
    project = kb.project("P")
    blobs = {}
    for t in range(10):
        task = kb.task(project, f"T{t}")
        for i in range(10):
            blobs[(task, f"f{i}.bin")] = data = os.urandom(20_000)
            kb.upload_task_file(project, task, f"f{i}.bin", data)
    m = mounter(kb)
    one = next(iter(blobs))
    kb.reset_stats()
    assert m.p("projects", project, "tasks", one[0], one[1]).read_bytes() == blobs[one]
    assert kb.stats()["calls"].get("downloadTaskFile") == 1  # one cat: no batch
    kb.reset_stats()
    run("cp", "-r", m.p("projects", project), tmp_path / "out")
    stats = kb.stats()
    for (task, name), data in blobs.items():
        assert (tmp_path / "out" / "tasks" / str(task) / name).read_bytes() == data
    assert stats["calls"]["downloadTaskFile"] == 99, stats
    assert stats["http_requests"] <= 15, stats  # was one request per file


def test_cp_of_100_files_in_is_one_request_per_file(kb, mounter: Mounter, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Benchmark row 10's request count, default mode: ``cp`` of 100 small files into one task
    is one ``createTaskFile`` per file and nothing per file besides: no read-back (the next
    listing brings path, date and etag), no check of the task, and at most a background
    listing per pass for the two-mount check, which is also what confirms the new records.
    Over a network with latency the time of a bulk import is this count times the round
    trip."""
    project = kb.project("P")
    task = kb.task(project, "T")
    src = tmp_path / "src"
    blobs = random_files(src, 100, 20_000)
    m = mounter(kb, ttl=600)  # a slow run must not add the listing's refresh to the count
    d = m.p("projects", project, "tasks", task)
    os.listdir(d)
    kb.reset_stats()
    run("cp", *sorted(src.iterdir()), d)
    stats = kb.stats()
    calls = dict(stats["calls"])
    # The two-mount collision check lists the task in the background once a save's second
    # has passed: one request per directory and pass, never per file (SEMANTICS "Two mounts").
    checks = calls.pop("getAllTaskFiles", 0)
    assert calls == {"createTaskFile": 100}, stats
    assert checks <= 5 and stats["http_requests"] == 100 + checks, stats
    files = {f["name"]: f for f in kb.task_files(task)}
    assert {name: kb.download_task_file(f["id"]) for name, f in files.items()} == blobs
