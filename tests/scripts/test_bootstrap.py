"""scripts/bootstrap in a copy of the checkout, with apt, dpkg and the virtual environment faked.

What is checked is what the script decides: which Python set it installs (the demo needs only
the runtime one; the tests the test extra), that switching between the two keeps its stamp
right, which Debian packages each mode asks for, and that it never installs anything outside
the checkout (no mount helper: that is ``kbfs install-helper``, a step the user takes), even
as root. Every faked program logs its arguments, so nothing real is installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

LOGGER = '#!/bin/sh\necho "{name} $*" >> "{log}"\n'


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A copy of what bootstrap reads, a fake .venv and fake root tools, all logging to ``log``."""
    root = tmp_path / "kbfs"
    (root / "scripts").mkdir(parents=True)
    shutil.copy2(REPO / "scripts" / "bootstrap", root / "scripts" / "bootstrap")
    shutil.copy2(REPO / "pyproject.toml", root / "pyproject.toml")
    log = tmp_path / "log"
    log.touch()
    fakes = {
        root / ".venv" / "bin" / "python": "venv-python",
        root / ".venv" / "bin" / "kbfs": "venv-kbfs",
        tmp_path / "bin" / "apt-get": "apt-get",
        tmp_path / "bin" / "sudo": "sudo",
    }
    for path, name in fakes.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(LOGGER.format(name=name, log=log))
        path.chmod(0o755)
    # Every Debian package is installed; the packages asked about are logged.
    dpkg = tmp_path / "bin" / "dpkg-query"
    dpkg.write_text(f'#!/bin/sh\necho "dpkg-query $*" >> "{log}"\nprintf "install ok installed"\n')
    dpkg.chmod(0o755)
    # As root: the old script installed the mount helper then.
    fake_id = tmp_path / "bin" / "id"
    fake_id.write_text('#!/bin/sh\n[ "$1" = "-u" ] && echo 0 && exit 0\nexec /usr/bin/id "$@"\n')
    fake_id.chmod(0o755)
    return root


def bootstrap(checkout: Path, *args: str) -> list[str]:
    """Run it; the lines the fakes logged (then the log is emptied)."""
    log = checkout.parent / "log"
    env = dict(os.environ, PATH=f"{checkout.parent / 'bin'}:{os.environ['PATH']}")
    proc = subprocess.run(
        ["sh", str(checkout / "scripts" / "bootstrap"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = log.read_text().splitlines()
    log.write_text("")
    return lines


def installs(lines: list[str]) -> list[str]:
    """What pip was asked to install into .venv (pip's own upgrade aside)."""
    return [x.split()[-1] for x in lines if " pip install" in x and not x.endswith(" pip")]


def test_runtime_set_then_test_set_then_nothing_more(checkout: Path) -> None:
    first = bootstrap(checkout)
    assert installs(first) == ["."]  # the demo's set: no pytest, ruff, hypothesis
    assert bootstrap(checkout) == [x for x in first if x.startswith("dpkg-query")]
    assert installs(bootstrap(checkout, "--test")) == [".[test]"]
    assert installs(bootstrap(checkout)) == []  # the test set holds the runtime one
    assert installs(bootstrap(checkout, "--test")) == []


def test_a_changed_pyproject_installs_again(checkout: Path) -> None:
    bootstrap(checkout, "--test")
    later = (checkout / ".venv" / ".kbfs-installed").stat().st_mtime + 10
    os.utime(checkout / "pyproject.toml", (later, later))
    assert installs(bootstrap(checkout)) == ["."]
    assert installs(bootstrap(checkout, "--test")) == [".[test]"]


def test_nothing_outside_the_checkout_even_as_root(checkout: Path) -> None:
    lines = bootstrap(checkout) + bootstrap(checkout, "--test")
    assert not [x for x in lines if x.startswith("venv-kbfs")]  # no kbfs install-helper
    assert not [x for x in lines if x.startswith(("apt-get", "sudo"))]  # all there already
    assert sorted(p.name for p in checkout.parent.iterdir()) == ["bin", "kbfs", "log"]


def test_the_test_set_names_what_the_tests_use(checkout: Path) -> None:
    def asked(lines: list[str]) -> set[str]:
        return {x.split()[-1] for x in lines if x.startswith("dpkg-query")}

    runtime, test = asked(bootstrap(checkout)), asked(bootstrap(checkout, "--test"))
    assert {"fuse3", "python3-venv"} <= runtime
    # curl: the benchmark's smoke test; systemd: systemd-analyze; mount: mount --fstab.
    assert {"curl", "git", "systemd", "mount", "attr", "libglib2.0-bin"} <= test - runtime
