"""The log of a background mount: rotated, private, never through a symlink; the journal
under systemd."""

from __future__ import annotations

import logging
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kbfs.logsetup import LOG_BACKUPS, LOG_MAX_BYTES, setup_logging, stderr_is_journal


@pytest.fixture(autouse=True)
def _restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for h in root.handlers:
        if h not in handlers:
            h.close()
    root.handlers[:] = handlers
    root.setLevel(level)


def test_the_log_file_rotates_and_stays_private(tmp_path: Path) -> None:
    log_file = tmp_path / "state" / "kbfs.log"
    setup_logging("INFO", 0, str(log_file), max_bytes=2000, backups=3)
    log = logging.getLogger("kbfs.test")
    for i in range(200):  # ~20 KB: far more than 4 files of 2 KB hold
        log.info("line %03d %s", i, "x" * 60)
    names = sorted(p.name for p in log_file.parent.iterdir())
    assert names == ["kbfs.log", "kbfs.log.1", "kbfs.log.2", "kbfs.log.3"]
    for p in log_file.parent.iterdir():
        assert p.stat().st_size <= 2000
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    assert "line 199" in log_file.read_text()  # the newest lines are in kbfs.log
    assert "line 000" not in "".join(p.read_text() for p in log_file.parent.iterdir())
    # What a real background mount uses.
    assert (LOG_MAX_BYTES, LOG_BACKUPS) == (5 << 20, 3)


def test_an_old_world_readable_log_becomes_private(tmp_path: Path) -> None:
    log_file = tmp_path / "kbfs.log"
    log_file.write_text("from an older kbfs\n")
    log_file.chmod(0o644)
    setup_logging("INFO", 0, str(log_file))
    logging.getLogger("kbfs.test").warning("hello")
    assert stat.S_IMODE(log_file.stat().st_mode) == 0o600
    assert log_file.read_text().splitlines()[0] == "from an older kbfs"


def test_the_log_is_never_opened_through_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("")
    (tmp_path / "kbfs.log").symlink_to(target)
    with pytest.raises(OSError):
        setup_logging("INFO", 0, str(tmp_path / "kbfs.log"))
    assert target.read_text() == ""


def test_journal_stream_is_recognised_only_when_it_names_stderr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open(tmp_path / "err", "w") as err, open(tmp_path / "other", "w") as other:
        monkeypatch.setattr(sys, "stderr", err)
        st, so = os.fstat(err.fileno()), os.fstat(other.fileno())
        assert stderr_is_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
        # systemd's stream left over from a parent, stderr redirected since: not the journal
        assert not stderr_is_journal({"JOURNAL_STREAM": f"{so.st_dev}:{so.st_ino}"})
        assert not stderr_is_journal({"JOURNAL_STREAM": "garbage"})
        assert not stderr_is_journal({})
