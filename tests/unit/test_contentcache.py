"""The content cache's bookkeeping without a server: eviction without a look at every
cached file for every file that comes in."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kbfs.client.models import FileRecord, Kind
from kbfs.storage import contentcache
from kbfs.storage.contentcache import ContentCache


def record(n: int, size: int) -> FileRecord:
    return FileRecord(Kind.TASK, n, f"f{n}.bin", size, 1_700_000_000, False,
                      f"1/1/{n}", f"etag{n}", 1, 1, 1)  # fmt: skip


def adopt(cache: ContentCache, tmp_path: Path, n: int, size: int) -> Path:
    source = tmp_path / f"upload{n}"
    source.write_bytes(b"x" * size)
    cache.adopt(record(n, size), source)
    return cache.path_for(record(n, size))


def test_adopting_many_files_looks_at_the_directory_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = ContentCache(tmp_path / "cache", None, max_bytes=1 << 20)  # type: ignore[arg-type]
    looks = []
    real = os.scandir
    monkeypatch.setattr(contentcache.os, "scandir", lambda p: looks.append(p) or real(p))
    for n in range(50):
        adopt(cache, tmp_path, n, 1000)
    assert len(looks) == 1
    assert len(list((tmp_path / "cache").iterdir())) == 50


def test_the_cache_is_still_held_to_its_size(tmp_path: Path) -> None:
    cache = ContentCache(tmp_path / "cache", None, max_bytes=10_000)  # type: ignore[arg-type]
    kept = [adopt(cache, tmp_path, n, 3000) for n in range(10)]
    left = [p for p in kept if p.exists()]
    assert sum(p.stat().st_size for p in left) <= 10_000
    assert kept[-1] in left  # the newest stays
