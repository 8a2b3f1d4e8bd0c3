"""Build hook: the manual pages are written from the argument parser while the package builds.

``kbfs.manpage`` renders kbfs(1) and mount.fuse.kbfs(8) from ``kbfs.cli.build_parser()`` into
``build/man/``; the wheel installs them as data under ``share/man/`` of its prefix, where
``man`` finds them for a venv, pipx or ``pip install --user``. Only the standard library and
kbfs's own pure modules are imported here, so an isolated build needs nothing but setuptools.
Everything else about the package is in pyproject.toml.
"""

from __future__ import annotations

import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
MAN_DIR = Path("build") / "man"  # relative: setuptools wants data_files relative to ROOT
PAGES = ("man1/kbfs.1", "man8/mount.fuse.kbfs.8")


def write_man_pages() -> None:
    sys.path.insert(0, str(ROOT))
    from kbfs.cli import build_parser
    from kbfs.manpage import pages

    for rel, text in pages(build_parser()).items():
        path = ROOT / MAN_DIR / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


class BuildWithManPages(build_py):
    """build_py, then the man pages: both run before install_data copies the pages."""

    def run(self) -> None:
        super().run()
        write_man_pages()


setup(
    cmdclass={"build_py": BuildWithManPages},
    data_files=[(f"share/man/{Path(rel).parent}", [str(MAN_DIR / rel)]) for rel in PAGES],
)
