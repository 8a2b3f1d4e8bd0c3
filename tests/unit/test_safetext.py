"""Text from servers and status files is escaped before a terminal or the log shows it."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from kbfs import cli, logsetup
from kbfs.control import status
from kbfs.safetext import printable, printable_lines, printable_tree

HOSTILE = "a\x1b[2Jb\x9b1;1Hc\x7fd\x00e\nf\tg\u202eh\udcff"


def test_printable_escapes_every_control_character() -> None:
    assert printable(HOSTILE) == "a\\x1b[2Jb\\x9b1;1Hc\\x7fd\\x00e\\x0af\\x09g\\u202eh\\udcff"
    assert printable("Zürich 東京 🎉 naïve – ok") == "Zürich 東京 🎉 naïve – ok"
    assert printable(42) == "42"
    assert printable_lines("one\x1b\ntwo") == "one\\x1b\ntwo"
    assert printable_tree({"k\x1b": ["v\x07", 1, None]}) == {"k\\x1b": ["v\\x07", 1, None]}


def test_the_log_file_gets_escaped_messages(tmp_path: Path) -> None:
    log_file = tmp_path / "kbfs.log"
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logsetup.setup_logging("INFO", 0, str(log_file))
        logging.getLogger("kbfs.test").warning("server said %s", HOSTILE)
        try:
            raise ValueError("in a traceback \x1b[2J")
        except ValueError:
            logging.getLogger("kbfs.test").exception("failed \x1b]0;title\x07")
        for handler in root.handlers:
            handler.flush()
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:], level = saved
        root.setLevel(level)
    text = log_file.read_text(errors="surrogateescape")
    assert "\x1b" not in text and "\x9b" not in text and "\x07" not in text
    assert "server said a\\x1b[2Jb" in text and "\\x0af" in text
    assert "Traceback (most recent call last):\n" in text  # tracebacks keep their lines
    assert "in a traceback \\x1b[2J" in text


def test_kbfs_status_escapes_what_status_files_say(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    entry = status.MountEntry("/mnt/kb", "kbfs", "rw")
    snapshot = {
        "url": "http://kb/\x1b[2J",
        "user": "alice\x1b]0;x\x07",
        "pid": 1,
        "vfs": {
            "pending_uploads": [
                {"path": "p/\x1b[31mred\nfake line", "size": 3, "last_error": "boom\x1b[2J"}
            ]
        },
    }
    found = status.Found(entry, snapshot, "problem \x9b2J")
    monkeypatch.setattr(status, "iter_found", lambda: iter([found]))
    assert cli.main(["status"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "\x9b" not in out
    assert "p/\\x1b[31mred\\x0afake line" in out and "boom\\x1b[2J" in out
