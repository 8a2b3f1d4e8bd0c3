"""``kbfs install-helper`` / ``uninstall-helper`` against temporary directories (--sbin, --bin):
each path is reported with what was done to it, and files kbfs did not write are never touched."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from kbfs.cli import main
from kbfs.helperinstall import HELPER_MARK, wrapper


@pytest.fixture
def where(tmp_path: Path) -> list[str]:
    return ["--sbin", str(tmp_path / "sbin"), "--bin", str(tmp_path / "bin")]


def kbfs(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


def test_install_says_what_it_wrote_then_leaves_it(
    tmp_path: Path, where: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    helper, cmd = tmp_path / "sbin" / "mount.fuse.kbfs", tmp_path / "bin" / "kbfs"
    status, out, err = kbfs(capsys, "install-helper", *where)
    assert (status, err) == (0, "")
    assert f"wrote {helper} (runs {sys.executable})" in out
    assert f"wrote {cmd} (runs {sys.executable})" in out
    assert "kbfs uninstall-helper\n" in out  # how to undo it
    assert helper.read_text() == wrapper("kbfs.mounthelper")
    assert cmd.read_text() == wrapper("kbfs")
    assert all(os.access(p, os.X_OK) for p in (helper, cmd))
    assert sorted(os.listdir(tmp_path / "sbin")) == ["mount.fuse.kbfs"]  # no temporary left
    mtime = helper.stat().st_mtime_ns
    status, out, _ = kbfs(capsys, "install-helper", *where)
    assert status == 0
    assert f"{helper}: up to date (runs {sys.executable}), left as it was" in out
    assert f"{cmd}: up to date" in out
    assert helper.stat().st_mtime_ns == mtime


def test_install_over_another_environment_says_which_it_replaced(
    tmp_path: Path, where: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    helper = tmp_path / "sbin" / "mount.fuse.kbfs"
    helper.parent.mkdir()
    helper.write_text(wrapper("kbfs.mounthelper", "/old/checkout/.venv/bin/python"))
    status, out, _ = kbfs(capsys, "install-helper", *where)
    assert status == 0
    assert f"replaced {helper}: it ran /old/checkout/.venv/bin/python, now {sys.executable}" in out
    assert helper.read_text() == wrapper("kbfs.mounthelper")


def test_a_file_kbfs_did_not_write_is_left_as_it_was(
    tmp_path: Path, where: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    foreign = tmp_path / "bin" / "kbfs"
    foreign.parent.mkdir()
    foreign.write_text("#!/bin/sh\necho someone else's kbfs\n")
    status, _, err = kbfs(capsys, "install-helper", *where)
    assert status == 1
    assert f"{foreign} was not written by kbfs: left as it was" in err
    assert foreign.read_text() == "#!/bin/sh\necho someone else's kbfs\n"
    assert (tmp_path / "sbin" / "mount.fuse.kbfs").read_text().count(HELPER_MARK) == 1
    status, _, err = kbfs(capsys, "uninstall-helper", *where)
    assert status == 1 and f"{foreign} was not written by kbfs: left as it was" in err
    assert foreign.exists()
    assert not (tmp_path / "sbin" / "mount.fuse.kbfs").exists()


@pytest.mark.parametrize("command", [["uninstall-helper"], ["install-helper", "--remove"]])
def test_uninstall_removes_what_kbfs_wrote_whatever_it_runs(
    tmp_path: Path, where: list[str], capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    helper, cmd = tmp_path / "sbin" / "mount.fuse.kbfs", tmp_path / "bin" / "kbfs"
    kbfs(capsys, "install-helper", *where)
    helper.write_text(wrapper("kbfs.mounthelper", "/gone/.venv/bin/python"))
    status, out, err = kbfs(capsys, *command, *where)
    assert (status, err) == (0, "")
    assert f"removed {helper} (it ran /gone/.venv/bin/python)" in out
    assert f"removed {cmd} (it ran {sys.executable})" in out
    assert not helper.exists() and not cmd.exists()
    status, out, _ = kbfs(capsys, *command, *where)
    assert status == 0 and f"{helper}: not there" in out
