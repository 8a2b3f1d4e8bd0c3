"""Rows 1-4: one big file read through a mount (cold, warm, after a remount) and written in.

Each kbfs timing is set against a baseline measured in the same run against the same server:
the curl pipelines that are the server's ceiling, a naive Python client, a local copy.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import re
import shlex
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from common import (
    Bench,
    Row,
    fmt_bytes,
    log,
    median,
    same_content,
    secs,
    timed,
    timed_sh,
    write_random,
)


def page_cache_folios(path: Path) -> str | None:
    """How the kernel holds ``path`` in its page cache, e.g. ``16384 x 4 KiB``, ``32 x 2 MiB``.

    A cached read costs per folio, so the folio size explains row 2: Linux gives a FUSE file
    4 KiB pages only (until the upstream change "fuse: enable large folios (if writeback cache
    is unused)"), ext4 gives up to 2 MiB. Read from /proc/self/pagemap and /proc/kpageflags
    (root only); None where that is not possible.
    """
    page = os.sysconf("SC_PAGE_SIZE")
    size = path.stat().st_size
    pages = (size + page - 1) // page
    if not pages:
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [
        ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long
    ]  # fmt: skip
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    fd = os.open(path, os.O_RDONLY)
    try:
        base = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if base in (None, ctypes.c_void_p(-1).value):
            return None
        try:
            view = (ctypes.c_char * size).from_address(base)
            for i in range(pages):
                view[i * page]  # map each page (they are in the page cache already)
            folios = _count_folios(base, pages, page)
        finally:
            libc.munmap(base, size)
    except OSError:
        return None
    finally:
        os.close(fd)
    return ", ".join(f"{n} x {fmt_bytes(k * page)}" for k, n in sorted(folios.items()))


def _count_folios(base: int, pages: int, page: int) -> Counter[int]:
    """Folio sizes (in pages) of the mapped pages at ``base``: {pages per folio: count}."""
    with open("/proc/self/pagemap", "rb") as pm, open("/proc/kpageflags", "rb") as kf:
        pm.seek(base // page * 8)
        entries = struct.unpack(f"{pages}Q", pm.read(pages * 8))
        folios: Counter[int] = Counter()
        run = 0
        for entry in entries:
            kf.seek((entry & ((1 << 55) - 1)) * 8)
            (flags,) = struct.unpack("Q", kf.read(8))
            if flags & (1 << 16):  # KPF_COMPOUND_TAIL: same folio as the page before
                run += 1
                continue
            if run:
                folios[run] += 1
            run = 1
        folios[run] += 1
    return folios


# ---------------------------------------------------------------------------------- rows 1-3


@dataclass
class ReadTimes:
    """Every run's timings of rows 1-3; each list gets one entry per run."""

    cold: list[float] = field(default_factory=list)
    ceiling: list[float] = field(default_factory=list)
    naive: list[float] = field(default_factory=list)
    warm: list[float] = field(default_factory=list)
    local: list[float] = field(default_factory=list)
    remount: list[float] = field(default_factory=list)
    first: list[float] = field(default_factory=list)
    folios: tuple[str | None, str | None] = (None, None)


def rows_read(b: Bench) -> None:
    """Rows 1a-1c, 2 and 3: the same big file read in every way the rows compare."""
    s = b.sizes
    server = b.server
    big = b.local / "big.bin"
    write_random(big, s.big)
    pid = b.project(server, "read")
    tid = server.task(pid, "read")
    fid = server.upload(pid, tid, "big.bin", big.read_bytes())
    # Check the ceiling pipeline once: it must really produce the file.
    out = b.workdir / "ceiling.out"
    timed_sh(f"{b.download_pipeline(fid)} > {shlex.quote(str(out))}")
    if not same_content(out, big):
        raise RuntimeError("the download ceiling pipeline does not produce the file")
    out.unlink()
    t = ReadTimes()
    for i in range(s.runs):
        log(f"rows 1-3: run {i + 1}/{s.runs}")
        _read_once(b, t, i, pid, tid, fid, big)
    _report_read(b, t)


def _read_once(b: Bench, t: ReadTimes, i: int, pid: int, tid: int, fid: int, big: Path) -> None:
    """Run ``i`` of rows 1-3: the baselines, then three mounts (cold, remounted, cold again)."""
    server = b.server
    b.caches.drop()
    t.ceiling.append(timed_sh(f"{b.download_pipeline(fid)} > /dev/null")[0])
    b.caches.drop()
    t.naive.append(b.naive_download(fid))
    cache = b.workdir / f"read-cache-{i}"
    with b.mounter.mounted(server, cache) as m:
        path = m.p("projects", pid, "tasks", tid, "big.bin")
        path.stat()  # listings are not part of the read
        b.caches.drop()
        t.cold.append(timed(["cat", path]))
        t.warm.append(timed(["cat", path]))
        timed(["cat", big])  # the local copy is warm too
        t.local.append(timed(["cat", big]))
        if i == 0:
            if not same_content(path, big):
                raise RuntimeError("the mount served different bytes")
            t.folios = (page_cache_folios(path), page_cache_folios(big))
    with b.mounter.mounted(server, cache) as m:
        path = m.p("projects", pid, "tasks", tid, "big.bin")
        path.stat()
        t.remount.append(timed(["cat", path]))
    with b.mounter.mounted(server) as m:  # an empty cache: the file is cold again
        path = m.p("projects", pid, "tasks", tid, "big.bin")
        path.stat()
        b.caches.drop()
        timed(["head", "-c", "0", "/dev/null"])  # head itself is not what is measured
        t.first.append(timed(["head", "-c", "100", path]))


def _report_read(b: Bench, t: ReadTimes) -> None:
    size = fmt_bytes(b.sizes.big)
    c, ce, nv = median(t.cold), median(t.ceiling), median(t.naive)
    b.report.add(
        Row(
            "1a", f"cold `cat` {size} vs ceiling pipeline (curl｜cut｜base64 -d)",
            secs(c), secs(ce), c / ce, 1.25,
        )
    )  # fmt: skip
    b.report.add(
        Row(
            "1b", f"cold `cat` {size} vs naive Python client (httpx, json, b64decode)",
            secs(c), secs(nv), c / nv, 0.8,
        )
    )  # fmt: skip
    f = median(t.first)
    b.report.add(
        Row("1c", f"first 100 bytes of a cold {size} file (`head -c 100`) vs cold `cat`",
            secs(f), secs(c), f / c, 0.1)
    )  # fmt: skip
    w, lo = median(t.warm), median(t.local)
    note = ""
    if t.folios[0] and t.folios[1]:
        note = f"page cache folios: kbfs file {t.folios[0]}; local copy {t.folios[1]}"
    b.report.add(
        Row("2", f"warm `cat` {size} (fresh open) vs `cat` of a local copy",
            secs(w), secs(lo), w / lo, 1.2, note=note)
    )  # fmt: skip
    r = median(t.remount)
    b.report.add(
        Row("3", f"`cat` {size} after remount (disk cache) vs local copy",
            secs(r), secs(lo), r / lo, 5)
    )  # fmt: skip


# ---------------------------------------------------------------------------------- row 4


def row_write(b: Bench) -> None:
    """Row 4: ``cp`` of the big file into a task vs the upload ceiling pipeline."""
    s = b.sizes
    server = b.server
    big = b.local / "big.bin"
    if not big.exists():  # rows 1-3 write it; ``--only 4`` runs without them
        write_random(big, s.big)
    pid = b.project(server, "write")
    tid = server.task(pid, "write")
    kbfs: list[float] = []
    ceiling: list[float] = []
    with b.mounter.mounted(server) as m:
        task_dir = m.p("projects", pid, "tasks", tid)
        os.listdir(task_dir)
        for i in range(s.runs):
            log(f"row 4: run {i + 1}/{s.runs}")
            timed(["cat", big])  # source warm for both
            t, out = timed_sh(b.upload_pipeline(pid, tid, f"ceiling-{i}.bin", big))
            if not re.search(r'"result":\s*\d+', out):
                raise RuntimeError(f"upload ceiling failed: {out[:200]!r}")
            ceiling.append(t)
            kbfs.append(timed(["cp", big, task_dir / f"kbfs-{i}.bin"]))
        files = {f["name"]: f for f in server.rpc("getAllTaskFiles", {"task_id": tid})}
        for i in range(s.runs):
            if int(files[f"kbfs-{i}.bin"]["size"]) != s.big:
                raise RuntimeError("the upload through the mount has the wrong size")
    k, ce = median(kbfs), median(ceiling)
    b.report.add(
        Row("4", f"`cp` {fmt_bytes(s.big)} into a task vs upload ceiling pipeline",
            secs(k), secs(ce), k / ce, 1.25)
    )  # fmt: skip
