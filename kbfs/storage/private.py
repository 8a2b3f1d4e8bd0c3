"""Directories and files only the mounting user may touch: cache, spool, log.

Whoever can write into the cache or state directory decides what the mount serves (a cache file
named after a file id is served as that file) and where it writes (a ``kbfs.log`` symlink makes
the mount append to the file it points to). So a directory that another user owns, or that
others may write to, is refused with one line naming it, rather than used; what kbfs creates is
mode 0700 all the way down, and files are opened with ``O_NOFOLLOW``.

The directories above the one configured are not checked (ssh's StrictModes does that): the
user chose that place, and a root directory owned by a build system or a container's user
namespace would otherwise refuse every mount.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import TextIO


class DirectoryError(Exception):
    """A cache, state or log location that cannot be used; the message names it."""


def private_dir(path: Path, what: str) -> Path:
    """``path`` as a directory of this user that no one else may write to, made 0700 if missing.

    For a directory the user chose (``cache_dir=``, ``state_dir=``, systemd's): it is checked,
    never changed. Missing parents are made 0700 too (``mkdir -p`` would make them by the
    umask, and a 0755 ``~/.local/state/kbfs`` shows every user the log's name and size).
    """
    st = _own_dir(path, what)
    if st.st_mode & 0o022:
        raise DirectoryError(
            f"the {what} {path} is writable by group or others (mode"
            f" {stat.S_IMODE(st.st_mode):04o}); run: chmod go-w {path}"
        )
    return path


def owned_dir(path: Path, what: str) -> Path:
    """A directory kbfs itself keeps: made 0700 if missing, this user's, and set to 0700 if
    an older kbfs made it by the umask (0755, or 0775 where the umask is 002)."""
    st = _own_dir(path, what)
    if stat.S_IMODE(st.st_mode) != 0o700:
        try:
            os.chmod(path, 0o700)
        except OSError as exc:
            raise DirectoryError(f"cannot make the {what} {path} private: {exc.strerror}") from None
    return path


def _own_dir(path: Path, what: str) -> os.stat_result:
    """Create what is missing of ``path`` (0700), then insist it is this user's directory."""
    missing: list[Path] = []
    probe = path
    while not os.path.lexists(probe) and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            pass  # made meanwhile (two mounts starting at once): checked below all the same
        except OSError as exc:
            raise DirectoryError(f"cannot create the {what} {directory}: {exc.strerror}") from None
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise DirectoryError(f"cannot use the {what} {path}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise DirectoryError(f"the {what} {path} is not a directory (a symlink?); refusing it")
    if st.st_uid != os.geteuid():
        raise DirectoryError(
            f"the {what} {path} belongs to uid {st.st_uid}, not to this user (uid"
            f" {os.geteuid()}): whoever owns it decides what the mount serves; refusing it"
        )
    if not os.access(path, os.W_OK | os.X_OK):
        raise DirectoryError(f"the {what} {path} is not writable by this user")
    return st


def open_nofollow(path: Path, flags: int, mode: int = 0o600) -> int:
    """``os.open`` that never follows a symlink at ``path`` (ELOOP instead) nor keeps the fd
    across exec."""
    return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)


def open_log(path: Path) -> TextIO:
    """The log file, appended to: created 0600, never through a symlink, and made 0600 if an
    older kbfs left it readable (it names the files that failed to upload)."""
    try:
        os.makedirs(path.parent, 0o700, exist_ok=True)  # a --log-file in a new directory
        fd = open_nofollow(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    except OSError as exc:
        reason = "it is a symlink" if exc.errno == errno.ELOOP else exc.strerror
        raise DirectoryError(f"cannot open the log file {path}: {reason}") from None
    st = os.fstat(fd)
    if stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode):  # --log-file /dev/null, a pipe
        return os.fdopen(fd, "a", encoding="utf-8", errors="backslashreplace")
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
        os.close(fd)
        raise DirectoryError(f"the log file {path} is not a regular file of this user")
    if stat.S_IMODE(st.st_mode) & 0o077:
        os.fchmod(fd, 0o600)
    return os.fdopen(fd, "a", encoding="utf-8", errors="backslashreplace")
