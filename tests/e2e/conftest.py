"""Fixtures for real mounts: the built-in server over HTTP, ``kbfs mount -f`` in a subprocess.
Every mount is unmounted at teardown, even when the test failed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kbfs.helperinstall import HELPER_MARK, wrapper
from tests.e2e.helpers import Mounted, Mounter

#: Where mount(8) looks for the helper of ``-t fuse.kbfs``; it has no option to look elsewhere.
MOUNT_HELPER = Path("/sbin/mount.fuse.kbfs")

if not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None:
    pytest.skip("needs /dev/fuse and fusermount3", allow_module_level=True)


@pytest.fixture
def mounter(tmp_path: Path) -> Iterator[Mounter]:
    m = Mounter(tmp_path)
    try:
        yield m
    finally:
        m.close()


@pytest.fixture
def mnt(kb: object, mounter: Mounter) -> Mounted:
    """The built-in server (empty) mounted with default options."""
    return mounter(kb)


def _kbfs(*args: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kbfs", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.fixture(scope="session")
def mount_helper(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """/sbin/mount.fuse.kbfs running this interpreter's kbfs, for the tests that need mount(8).

    Installed with ``kbfs install-helper`` itself, ``kbfs`` going to a temporary directory
    (only mount(8)'s helper must be in /sbin). Whatever was there before is put back
    afterwards, byte for byte with its mode and times; if nothing was, ``kbfs
    uninstall-helper`` removes it. A file kbfs did not write is never touched (the tests skip).
    """
    if os.geteuid() != 0:
        pytest.skip("installing the mount helper needs root")
    before = MOUNT_HELPER.read_bytes() if MOUNT_HELPER.is_file() else None
    if (before is None and os.path.lexists(MOUNT_HELPER)) or (
        before is not None and HELPER_MARK.encode() not in before
    ):
        pytest.skip(f"{MOUNT_HELPER} exists and was not written by kbfs")
    saved = os.stat(MOUNT_HELPER) if before is not None else None
    bin_dir = tmp_path_factory.mktemp("bin")
    where = ["--sbin", MOUNT_HELPER.parent, "--bin", bin_dir]
    installed = _kbfs("install-helper", *where)
    try:
        assert installed.returncode == 0, installed.stderr
        assert MOUNT_HELPER.read_text() == wrapper("kbfs.mounthelper")
        yield MOUNT_HELPER
    finally:
        if saved is None:
            removed = _kbfs("uninstall-helper", *where)
            assert removed.returncode == 0 and not os.path.lexists(MOUNT_HELPER), removed
        elif MOUNT_HELPER.read_bytes() != before or os.stat(MOUNT_HELPER).st_mtime_ns != (
            saved.st_mtime_ns
        ):
            tmp = MOUNT_HELPER.with_name(f".{MOUNT_HELPER.name}.kbfs-test")
            tmp.write_bytes(before)
            tmp.chmod(saved.st_mode & 0o7777)
            os.utime(tmp, ns=(saved.st_atime_ns, saved.st_mtime_ns))
            tmp.replace(MOUNT_HELPER)
