"""Where kbfs's log goes: stderr in the foreground, the journal or a rotated file in the background.

A background mount can run for months; its log file must not grow without bound, so it is
rotated (``kbfs.log``, then ``kbfs.log.1`` .. ``kbfs.log.3``, 5 MiB each). The file may hold
server names and file names, so it is created 0600 and never through a symlink (a link planted
in a shared state directory must not redirect the log).

Under systemd (a ``.mount`` unit, or mount(8) run by one) stderr is already the journal, which
adds the time, the unit and rotation of its own: systemd says so in ``JOURNAL_STREAM``, and then
the background process keeps logging to stderr, without timestamps, instead of to a file.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
from logging.handlers import RotatingFileHandler
from pathlib import Path

from kbfs.safetext import SafeFormatter

LOG_MAX_BYTES = 5 << 20
LOG_BACKUPS = 3


class PrivateRotatingFileHandler(RotatingFileHandler):
    """A RotatingFileHandler whose file is opened 0600, appending, never through a symlink."""

    def _open(self) -> io.TextIOWrapper:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(self.baseFilename, flags, 0o600)
        with contextlib.suppress(OSError):  # a file from an older kbfs may be 0644
            os.fchmod(fd, 0o600)
        return open(fd, "a", encoding=self.encoding or "utf-8", errors=self.errors)


def stderr_is_journal(env: dict[str, str] | None = None) -> bool:
    """True when systemd connected stderr to the journal (``JOURNAL_STREAM=DEV:INODE`` names
    the file stderr is): then the journal keeps the log, with time and unit."""
    value = (os.environ if env is None else env).get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    try:
        st = os.fstat(sys.stderr.fileno())
        return (st.st_dev, st.st_ino) == (int(dev), int(ino))
    except (ValueError, OSError, AttributeError):
        return False


def setup_logging(
    level: str | None,
    verbose: int,
    log_file: str | None = None,
    max_bytes: int = LOG_MAX_BYTES,
    backups: int = LOG_BACKUPS,
) -> None:
    """One plain line per message: to stderr without a time (journald adds it under systemd),
    or, given ``log_file``, to that file, rotated, with timestamps."""
    name = (level or ("DEBUG" if verbose > 1 else "INFO" if verbose else "WARNING")).upper()
    handler: logging.Handler
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        handler = PrivateRotatingFileHandler(log_file, maxBytes=max_bytes, backupCount=backups)
        handler.setFormatter(SafeFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(SafeFormatter("kbfs: %(levelname)s: %(message)s"))
    root = logging.getLogger()
    for old in root.handlers:
        if isinstance(old, PrivateRotatingFileHandler):  # ours; others (pytest's) are not
            old.close()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, name, logging.INFO))
    # httpx logs every request at INFO; that is our DEBUG.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
