"""Filesystem-level errors and the one table that turns any error into an errno.

The client raises its own tree (``kbfs.client.errors``) and knows nothing about errno; the
filesystem raises ``FsError`` subclasses for conditions it detects itself. ``to_errno`` is the
only place where either becomes a number the kernel sees, so every mapping decision is here::

    FsError(errno)                 raised by vfs for local conditions (ENOENT, EPERM, ...)
    client AuthenticationError     EACCES   (credentials refused mid-session)
    client PermissionDenied        EACCES   (project role forbids it)
    client NotFound / EmptyDownload ENOENT
    client Rejected                EIO      (create*File answered false)
    client TransportError/Timeout  EIO      (server unreachable; bounded by the timeout)
    client ServerError/Protocol/Rpc EIO
    OSError, local resource errno  its own  (ENOSPC, EDQUOT, EFBIG, EROFS, EMFILE, ENFILE,
                                            ENOMEM: see LOCAL_RESOURCE_ERRNOS)
    anything else                  EIO      (and a traceback in the log)

Every row but the last is an expected condition (``is_expected``): logged as one warning line.
The last is a bug until shown otherwise, so it gets a traceback, and its errno is EIO whatever
the exception carries: a stray ``OSError`` from some internal file (EACCES on the spool, ENOENT
of a cache file) describes kbfs's own state, and passed on it would tell the writer something
false about the file it is writing.
"""

from __future__ import annotations

import errno

from kbfs.client import errors as ce


class FsError(Exception):
    """An error with a definite errno, raised by the filesystem layers."""

    errno: int = errno.EIO

    def __init__(self, message: str = "", err: int | None = None) -> None:
        super().__init__(message or errno.errorcode.get(err or self.errno, "error"))
        if err is not None:
            self.errno = err


class NoEntry(FsError):
    errno = errno.ENOENT


class NotPermitted(FsError):
    """Structural directories and other things Kanboard's API cannot change."""

    errno = errno.EPERM


class AccessDenied(FsError):
    errno = errno.EACCES


class NameTooLong(FsError):
    errno = errno.ENAMETOOLONG


class Exists(FsError):
    errno = errno.EEXIST


class IsADirectory(FsError):
    errno = errno.EISDIR


class NotADirectory(FsError):
    errno = errno.ENOTDIR


class NotEmpty(FsError):
    errno = errno.ENOTEMPTY


class InvalidArgument(FsError):
    errno = errno.EINVAL


class ContentUnstorable(FsError):
    """Content Kanboard cannot hold (exactly the byte "0"): refused before any upload."""

    errno = errno.EINVAL


class Conflict(FsError):
    """Unsaved content an earlier mount left behind, whose file has meanwhile been replaced on
    the server by a newer version: uploaded, it would be a duplicate or overwrite that."""

    errno = errno.EIO


class IncompleteContent(FsError):
    """A write into this content failed (a full spool disk, an I/O error): what the spool
    holds is not the file the writer meant, so it is never uploaded. The errno is the
    write's, so close() tells the writer the same thing its write did."""


class StoredBytesMissing(FsError):
    """Kanboard 1.2.42 and later refuse to remove a row whose stored bytes are missing
    (``false``, the row stays, kanboard-api §12 row 3): retrying cannot help."""

    errno = errno.ENODATA


class SharesStorage(FsError):
    """Removing this row would delete the bytes of another row with the same storage path
    (Kanboard 1.2.27 and older, kanboard-api §12 row 1): refused, the other file would lose its
    content."""

    errno = errno.EBUSY


class RequestTimedOut(FsError):
    """The server did not answer within the mount's timeout (retries included)."""

    errno = errno.EIO


class UploadFailed(FsError):
    """An upload failed; the bytes stay in the spool. errno comes from the cause."""


LOCAL_RESOURCE_ERRNOS: frozenset[int] = frozenset(
    {
        errno.ENOSPC,  # the spool's or the cache's disk is full
        errno.EDQUOT,  # the mounting user's quota there is used up
        errno.EFBIG,  # larger than that file system (or RLIMIT_FSIZE) allows
        errno.EROFS,  # that file system was remounted read-only (e.g. after disk errors)
        errno.EMFILE,  # this process is out of file descriptors
        errno.ENFILE,  # the machine is
        errno.ENOMEM,  # the kernel could not allocate (an mmap, a pipe buffer)
    }
)
"""OSError numbers kbfs passes on unchanged: the machine ran out of something, not kbfs.

Each means the same to the writer as on a local file system (``cp`` says "No space left on
device", and freeing space and retrying is the remedy), while EIO would read as a fault of the
server or the file. All are conditions of the environment that happen in normal operation, so
they are expected (a warning, no traceback). ENOMEM is in: it is the kernel's answer, not a
Python ``MemoryError``, and nothing about it points at a bug in kbfs either.
"""

_CLIENT_ERRNO: list[tuple[type[BaseException], int]] = [
    (ce.AuthenticationError, errno.EACCES),
    (ce.PermissionDenied, errno.EACCES),
    (ce.NotFound, errno.ENOENT),
    (ce.Rejected, errno.EIO),
    (ce.TransportError, errno.EIO),
    (ce.ServerError, errno.EIO),
    (ce.ProtocolError, errno.EIO),
    (ce.RpcError, errno.EIO),
]


def to_errno(exc: BaseException) -> int:
    """The errno the kernel should see for ``exc``."""
    if isinstance(exc, FsError):
        return exc.errno
    for cls, number in _CLIENT_ERRNO:
        if isinstance(exc, cls):
            return number
    local = _local_resource_errno(exc)
    return errno.EIO if local is None else local


def is_expected(exc: BaseException) -> bool:
    """Whether ``exc`` is a known condition (logged briefly) rather than a bug (traceback).

    Exactly the named rows of the table above: ``to_errno`` answers EIO for everything else,
    so a caller never has to second-guess the number it got.
    """
    return isinstance(exc, FsError | ce.KanboardError) or _local_resource_errno(exc) is not None


def _local_resource_errno(exc: BaseException) -> int | None:
    if isinstance(exc, OSError) and exc.errno in LOCAL_RESOURCE_ERRNOS:
        return exc.errno
    return None
