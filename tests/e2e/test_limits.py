"""File size limits through the real mount: ``-o max_file_size`` refuses the write that passes
it (EFBIG, nothing uploaded), and an upload the server's PHP has too little memory for says
what is likely wrong and what the Kanboard administrator can change."""

from __future__ import annotations

import errno
import os

import pytest

from tests.e2e.helpers import Mounter, run


def test_max_file_size_refuses_the_write_that_passes_it(kb, mounter: Mounter) -> None:  # type: ignore[no-untyped-def]
    p = kb.project("p")
    t = kb.task(p, "t")
    m = mounter(kb, "max_file_size=1M")
    d = m.p("projects", p, "tasks", t)
    os.listdir(d)
    kb.reset_stats()
    # dd: four 256 KiB blocks fit, the fifth is refused
    r = run("dd", "if=/dev/zero", f"of={d / 'big.bin'}", "bs=256K", "count=8", check=False)
    assert r.returncode != 0 and b"File too large" in r.stderr, r.stderr
    assert (d / "big.bin").stat().st_size == 1 << 20
    # Python: the write that passes the limit fails, and so does close()
    f = open(d / "py.bin", "wb", buffering=0)  # noqa: SIM115 (close() is what is tested)
    try:
        assert f.write(b"x" * (1 << 20)) == 1 << 20
        with pytest.raises(OSError) as info:
            f.write(b"y")
        assert info.value.errno == errno.EFBIG
    finally:
        with pytest.raises(OSError) as closed:
            f.close()
    assert closed.value.errno == errno.EFBIG
    # Nothing reached the server; the truncated copies stay in the mount until removed.
    assert kb.task_files(t) == []
    assert "createTaskFile" not in kb.stats()["calls"]
    assert sorted(os.listdir(d)) == ["big.bin", "py.bin"]
    run("rm", d / "big.bin", d / "py.bin")
    assert os.listdir(d) == [] and kb.task_files(t) == []
    # A file under the limit is uploaded as usual.
    run("dd", "if=/dev/zero", f"of={d / 'ok.bin'}", "bs=256K", "count=4")
    assert [f["name"] for f in kb.task_files(t)] == ["ok.bin"]


def test_upload_too_large_for_php_memory_says_what_to_change(kb, mounter, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The built-in server emulates PHP's memory_limit: a body over ``max_body`` gets HTTP 500
    with an empty body, after the whole body was read (as Kanboard does)."""
    p = kb.project("p")
    t = kb.task(p, "t")
    m = mounter(kb)
    m.allow_errors = True
    d = m.p("projects", p, "tasks", t)
    os.listdir(d)
    source = tmp_path / "video.bin"
    source.write_bytes(os.urandom(9 << 20))
    kb.config(max_body=10 << 20)  # the base64 body of 9 MiB is 12 MiB
    try:
        r = run("cp", source, d / "video.bin", check=False, timeout=60)
    finally:
        kb.config(max_body=None)
    assert r.returncode != 0
    assert kb.task_files(t) == []
    log = m.log_text()
    line = next(x for x in log.splitlines() if "upload of" in x and "failed" in x)
    assert "HTTP 500" in line and "9.0 MiB" in line, line
    assert "memory_limit" in line and "~27 MiB" in line and "max_file_size" in line, line
