"""kbfs as a user installs it without the repository: a wheel, a fresh virtual environment.

What this proves: the wheel built from the project's own files (kbfs/, pyproject.toml,
setup.py, README.md; a copy, so nothing else of the checkout can help) in pip's default
isolated build environment carries the entry points and the man pages its build hook
generates; installed with its dependencies resolved by pip into a new venv (pip's caches make
that fast, but every dependency is installed), `kbfs` runs, mounts the built-in server and lists
it, `mount.fuse.kbfs` and the completion script work, and `man kbfs` / `man 8 mount.fuse.kbfs`
find the installed pages with the venv's bin on PATH and no MANPATH (man-db looks in
../share/man of each PATH entry; pipx's ~/.local/bin works the same way).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.helpers import _unmount

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(600),
    pytest.mark.skipif(shutil.which("man") is None, reason="needs man (man-db)"),
]


def run(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, env=env, timeout=500, check=False
    )
    assert r.returncode == 0, f"{args}: {r.stdout}\n{r.stderr}"
    return r


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("install")
    src = base / "src"
    shutil.copytree(ROOT / "kbfs", src / "kbfs", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, src / name)
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", base / "dist", src)
    wheels = list((base / "dist").glob("kbfs-*.whl"))
    assert len(wheels) == 1
    run(sys.executable, "-m", "venv", base / "venv")
    run(base / "venv" / "bin" / "pip", "install", "-q", wheels[0])
    return base / "venv"


def test_the_installed_kbfs_runs_and_mounts(venv: Path, kb, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    kbfs = venv / "bin" / "kbfs"
    assert run(kbfs, "--version").stdout.strip() == "kbfs 0.1.0"
    assert "install-helper" in run(kbfs, "--help").stdout
    assert "_shtab_kbfs" in run(kbfs, "completion", "bash").stdout
    helper = subprocess.run([venv / "bin" / "mount.fuse.kbfs"], capture_output=True, text=True)
    assert helper.returncode != 0 and "usage: mount.fuse.kbfs" in helper.stderr
    mp = tmp_path / "mp"
    mp.mkdir()
    opts = f"cache_dir={tmp_path / 'c'},state_dir={tmp_path / 's'}"
    try:
        run(kbfs, "mount", kb.url, mp, "--token-file", kb.token_file, "-o", opts)
        assert sorted(os.listdir(mp)) == ["by-name", "projects"]
    finally:
        _unmount(mp)


def test_man_finds_the_installed_pages(venv: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("MANPATH", "MANOPT")}
    env.update(PATH=f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin", MANWIDTH="120")
    share = venv / "share" / "man"
    assert Path(run("man", "-w", "kbfs", env=env).stdout.strip()) == share / "man1" / "kbfs.1"
    found = run("man", "-w", "8", "mount.fuse.kbfs", env=env).stdout.strip()
    assert Path(found) == share / "man8" / "mount.fuse.kbfs.8"
    page = run("man", "kbfs", env=env).stdout
    assert "kbfs mount" in page and "MOUNT OPTIONS" in page
