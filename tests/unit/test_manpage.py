"""kbfs(1) and mount.fuse.kbfs(8) render without warnings and name everything the parser and
the option parser know, so a new subcommand or option cannot be missing from them."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from kbfs import manpage
from kbfs.cli import build_parser
from kbfs.options import FLAGS, IGNORED, VALUED

pytestmark = pytest.mark.skipif(shutil.which("man") is None, reason="needs man (man-db)")


def render(tmp_path: Path, rel: str) -> str:
    """The page as `man` shows it: through groff, with its warnings made an error."""
    page = tmp_path / Path(rel).name
    page.write_text(manpage.pages(build_parser())[rel])
    env = dict(os.environ, MANWIDTH="200", LC_ALL="C.UTF-8", MAN_KEEP_FORMATTING="")
    r = subprocess.run(
        ["man", "--warnings", "-l", str(page)], capture_output=True, env=env, check=False
    )
    assert r.returncode == 0 and r.stderr == b"", r.stderr.decode()
    return r.stdout.decode()


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no subcommands")


def test_kbfs_1_names_every_subcommand_option_and_mount_option(tmp_path: Path) -> None:
    text = render(tmp_path, "man1/kbfs.1")
    assert "KBFS(1)" in text
    subs = _subparsers()
    assert {"mount", "umount", "status", "clear", "demo", "remotes", "completion"} <= set(subs)
    for name, sub in subs.items():
        assert f"\n   kbfs {name}\n" in text, name  # its own section
        for action in sub._actions:
            for option in action.option_strings:
                assert option in text, (name, option)
    for option in build_parser()._actions:
        for s in option.option_strings:
            assert s in text
    for name in FLAGS | VALUED:
        assert f"\n       {manpage.OPTION_DOCS[name][0]}" in text, name
    for name in IGNORED:
        assert name in text
    # escaped minus signs come out as ASCII, so a reader can search for and paste options
    assert "--token-file" in text and "x-systemd.*" in text


def test_mount_fuse_kbfs_8_has_the_options_and_an_fstab_line(tmp_path: Path) -> None:
    text = render(tmp_path, "man8/mount.fuse.kbfs.8")
    assert "MOUNT.FUSE.KBFS(8)" in text and "mount -t fuse.kbfs" in text
    assert " fuse.kbfs token_file=/etc/kbfs/token," in text
    for name in FLAGS | VALUED:
        assert f"\n       {manpage.OPTION_DOCS[name][0]}" in text, name


def test_an_option_without_text_stops_the_build(monkeypatch: pytest.MonkeyPatch) -> None:
    docs = dict(manpage.OPTION_DOCS)
    del docs["cafile"]
    monkeypatch.setattr(manpage, "OPTION_DOCS", docs)
    with pytest.raises(ValueError, match="cafile"):
        manpage.pages(build_parser())
