"""The one errno table (``kbfs.errors``) and the handler wrapper that applies it (``fuse_errors``).

What a writer sees for a failure is decided here: the server's refusals and the filesystem's own
conditions keep their errno, the machine running out of disk (or descriptors, or memory) keeps
its errno too, and anything else is EIO with a traceback in the log.
"""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

import pyfuse3
import pytest

from kbfs.client import errors as ce
from kbfs.errors import (
    LOCAL_RESOURCE_ERRNOS,
    AccessDenied,
    Conflict,
    FsError,
    NameTooLong,
    NoEntry,
    NotPermitted,
    UploadFailed,
    is_expected,
    to_errno,
)
from kbfs.fs import Operations, error_counts, fuse_errors

LOCAL = sorted(LOCAL_RESOURCE_ERRNOS)


def oserror(number: int) -> OSError:
    """What ``os.pwrite`` and friends raise (``OSError`` picks the subclass for the errno)."""
    return OSError(number, os.strerror(number))


# ---------------------------------------------------------------------------- to_errno, is_expected


@pytest.mark.parametrize(
    ("exc", "number"),
    [
        (NoEntry(), errno.ENOENT),
        (NotPermitted(), errno.EPERM),
        (AccessDenied(), errno.EACCES),
        (NameTooLong(), errno.ENAMETOOLONG),
        (Conflict(), errno.EIO),
        (FsError("bad handle", errno.EBADF), errno.EBADF),
        (UploadFailed("disk full", errno.ENOSPC), errno.ENOSPC),
    ],
)
def test_fs_errors_keep_their_errno(exc: FsError, number: int) -> None:
    assert to_errno(exc) == number
    assert is_expected(exc)


@pytest.mark.parametrize(
    ("exc", "number"),
    [
        (ce.AuthenticationError("401"), errno.EACCES),
        (ce.PermissionDenied("403"), errno.EACCES),
        (ce.NotFound("gone"), errno.ENOENT),
        (ce.EmptyDownload("''"), errno.ENOENT),
        (ce.Rejected("false"), errno.EIO),
        (ce.RequestTimeout("slow"), errno.EIO),
        (ce.ServerError("500", status_code=500), errno.EIO),
        (ce.RpcError(-32602, "Invalid params"), errno.EIO),
        (ce.KanboardError("other"), errno.EIO),
    ],
)
def test_client_errors_are_expected(exc: ce.KanboardError, number: int) -> None:
    assert to_errno(exc) == number
    assert is_expected(exc)


@pytest.mark.parametrize("number", LOCAL, ids=[errno.errorcode[n] for n in LOCAL])
def test_local_resource_oserrors_keep_their_errno(number: int) -> None:
    exc = oserror(number)
    assert to_errno(exc) == number
    assert is_expected(exc)


def test_the_local_resource_set_covers_a_full_disk() -> None:
    assert {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS} <= LOCAL_RESOURCE_ERRNOS


@pytest.mark.parametrize(
    "exc",
    [
        RuntimeError("a bug"),
        KeyError("ino"),
        AssertionError(),
        # Internal files failing for other reasons describe kbfs's state, not the writer's file.
        oserror(errno.EACCES),
        oserror(errno.ENOENT),
        oserror(errno.EBADF),
        OSError("no errno at all"),
    ],
    ids=repr,
)
def test_anything_else_is_eio_and_unexpected(exc: Exception) -> None:
    assert to_errno(exc) == errno.EIO
    assert not is_expected(exc)


def test_an_unexpected_exception_never_gets_another_errno() -> None:
    """``fuse_errors`` answers ``to_errno`` as is: for an unexpected exception that is EIO."""
    for exc in (*(oserror(n) for n in errno.errorcode), ValueError(), MemoryError()):
        if not is_expected(exc):
            assert to_errno(exc) == errno.EIO, exc


# ---------------------------------------------------------------------------- fuse_errors


async def _raise(exc: BaseException) -> None:
    raise exc


async def test_a_full_disk_reaches_the_writer_as_enospc(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="kbfs.fs")
    before = error_counts["_raise"]
    with pytest.raises(pyfuse3.FUSEError) as info:
        await fuse_errors(_raise)(oserror(errno.ENOSPC))
    assert info.value.errno == errno.ENOSPC
    assert error_counts["_raise"] == before + 1
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert "ENOSPC" in record.getMessage()
    assert record.exc_info is None  # an expected condition: no traceback


@pytest.mark.parametrize("number", LOCAL, ids=[errno.errorcode[n] for n in LOCAL])
async def test_every_local_resource_errno_passes_through(number: int) -> None:
    with pytest.raises(pyfuse3.FUSEError) as info:
        await fuse_errors(_raise)(oserror(number))
    assert info.value.errno == number


async def test_an_unknown_exception_is_eio_with_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="kbfs.fs")
    with pytest.raises(pyfuse3.FUSEError) as info:
        await fuse_errors(_raise)(RuntimeError("a bug"))
    assert info.value.errno == errno.EIO
    [record] = caplog.records
    assert record.levelno == logging.ERROR
    assert "failed unexpectedly" in record.getMessage()
    assert record.exc_info is not None and isinstance(record.exc_info[1], RuntimeError)


async def test_another_oserror_is_eio_with_a_traceback(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="kbfs.fs")
    with pytest.raises(pyfuse3.FUSEError) as info:
        await fuse_errors(_raise)(oserror(errno.EACCES))
    assert info.value.errno == errno.EIO
    [record] = caplog.records
    assert record.levelno == logging.ERROR and record.exc_info is not None


@pytest.mark.parametrize(
    ("exc", "number"),
    [
        (NotPermitted("no links"), errno.EPERM),
        (AccessDenied(), errno.EACCES),
        (NameTooLong(), errno.ENAMETOOLONG),
        (FsError("bad handle", errno.EBADF), errno.EBADF),
        (UploadFailed("quota", errno.EDQUOT), errno.EDQUOT),
        (ce.PermissionDenied("403"), errno.EACCES),
    ],
)
async def test_known_errors_keep_their_errno(
    exc: Exception, number: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="kbfs.fs")
    with pytest.raises(pyfuse3.FUSEError) as info:
        await fuse_errors(_raise)(exc)
    assert info.value.errno == number
    [record] = caplog.records
    assert record.levelno == logging.WARNING and record.exc_info is None


async def test_a_missing_name_is_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    """ENOENT is the everyday answer of a lookup: logging each would flood the log."""
    caplog.set_level(logging.DEBUG, logger="kbfs.fs")
    with pytest.raises(pyfuse3.FUSEError) as info:
        await fuse_errors(_raise)(NoEntry())
    assert info.value.errno == errno.ENOENT
    assert not caplog.records


async def test_a_fuse_error_passes_unchanged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="kbfs.fs")
    before = error_counts["_raise"]
    with pytest.raises(pyfuse3.FUSEError) as info:
        await fuse_errors(_raise)(pyfuse3.FUSEError(errno.ENOTSUP))
    assert info.value.errno == errno.ENOTSUP
    assert error_counts["_raise"] == before
    assert not caplog.records


async def test_a_result_passes_unchanged() -> None:
    @fuse_errors
    async def answer(value: int) -> int:
        return value * 2

    assert await answer(21) == 42


class _FullDiskVfs:
    """A stand-in vfs whose writes land on /dev/full: the kernel's own ENOSPC, not a made-up one."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    async def write(self, fh: int, offset: int, data: bytes) -> int:
        return os.pwrite(self.fd, data, offset)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
async def test_a_write_to_a_full_disk_answers_enospc() -> None:
    fd = os.open("/dev/full", os.O_WRONLY)
    try:
        ops = Operations(_FullDiskVfs(fd))  # type: ignore[arg-type]
        with pytest.raises(pyfuse3.FUSEError) as info:
            await ops.write(1, 0, b"data")
        assert info.value.errno == errno.ENOSPC
    finally:
        os.close(fd)
