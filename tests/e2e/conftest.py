"""Fixtures for real mounts: the built-in server over HTTP, ``kbfs mount -f`` in a subprocess.
Every mount is unmounted at teardown, even when the test failed."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.helpers import Mounted, Mounter

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
