"""Real desktop programs against a real mount: a virtual X server, a session bus, a file manager
(Thunar, which copies with GIO as GNOME Files does), LibreOffice. Opt-in (``pytest -m desktop``,
set up with ``scripts/desktop-setup``): the programs are large and not what CI installs.

Screenshots and the measured figures go to ``desktop-artifacts/`` in the checkout (or
``$KBFS_DESKTOP_ARTIFACTS``), so a person can look at what the file manager showed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import Mounter

NEEDED = ("Xvfb", "dbus-launch", "thunar", "gdbus", "import", "identify", "xdotool", "soffice")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _tools() -> None:
    missing = [tool for tool in NEEDED if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)}: run scripts/desktop-setup")
    if not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None:
        pytest.skip("needs /dev/fuse and fusermount3")


@pytest.fixture
def mounter(tmp_path: Path) -> Iterator[Mounter]:
    m = Mounter(tmp_path)
    try:
        yield m
    finally:
        m.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    where = Path(os.environ.get("KBFS_DESKTOP_ARTIFACTS") or ROOT / "desktop-artifacts")
    where.mkdir(parents=True, exist_ok=True)
    return where


@pytest.fixture
def record(artifacts: Path) -> Callable[[str, dict[str, Any]], None]:
    """Keep the figures a test measured beside the screenshots, in ``figures.json``."""

    def keep(name: str, figures: dict[str, Any]) -> None:
        path = artifacts / "figures.json"
        known = json.loads(path.read_text()) if path.exists() else {}
        known[name] = figures
        path.write_text(json.dumps(known, indent=2, sort_keys=True) + "\n")

    return keep


@dataclass
class Desktop:
    """A running X display with a session bus; ``env`` is what programs on it need."""

    env: dict[str, str]
    artifacts: Path
    procs: list[subprocess.Popen[bytes]]

    def start(self, *cmd: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            list(cmd), env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.procs.append(proc)
        return proc

    def run(self, *cmd: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            list(cmd), env=self.env, capture_output=True, text=True, timeout=timeout
        )
        assert done.returncode == 0, f"{cmd[0]} exited {done.returncode}: {done.stderr}"
        return done

    def wait_window(self, name: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while subprocess.run(
            ["xdotool", "search", "--onlyvisible", "--name", name],
            env=self.env,
            capture_output=True,
        ).returncode:
            assert time.monotonic() < deadline, f"no window named {name!r} within {timeout} s"
            time.sleep(0.2)

    def screenshot(self, name: str) -> Path:
        """The whole screen as a PNG; fails if it is one flat colour (nothing was drawn)."""
        path = self.artifacts / name
        self.run("import", "-window", "root", str(path))
        colours = int(self.run("identify", "-format", "%k", str(path)).stdout.strip())
        assert colours > 50, f"{path} has {colours} colours: the window did not draw"
        return path


@pytest.fixture
def desktop(tmp_path: Path, artifacts: Path) -> Iterator[Desktop]:
    """Xvfb on a free display number and a D-Bus session on it; both stopped at teardown."""
    read, write = os.pipe()
    xvfb = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write), "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
        pass_fds=(write,),
        stderr=subprocess.DEVNULL,
    )
    os.close(write)
    with os.fdopen(read) as pipe:
        display = ":" + pipe.readline().strip()
    env = dict(os.environ, DISPLAY=display, HOME=str(tmp_path / "home"), XDG_RUNTIME_DIR="")
    env.pop("XDG_RUNTIME_DIR")
    (tmp_path / "home").mkdir()
    bus = subprocess.run(["dbus-launch", "--sh-syntax"], env=env, capture_output=True, text=True)
    bus_pid = None
    for line in bus.stdout.splitlines():
        key, _, value = line.partition("=")
        if key == "DBUS_SESSION_BUS_ADDRESS":
            env[key] = value.rstrip(";").strip("'")
        elif key == "DBUS_SESSION_BUS_PID":
            bus_pid = int(value.rstrip(";"))
    session = Desktop(env, artifacts, [])
    try:
        assert bus_pid is not None, f"dbus-launch: {bus.stderr}"
        yield session
    finally:
        for proc in reversed(session.procs):
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if bus_pid is not None:
            # Services the bus started (Thunar's daemon, tumblerd) go with it.
            subprocess.run(["pkill", "-TERM", "-P", str(bus_pid)], check=False)
            os.kill(bus_pid, signal.SIGTERM)
        xvfb.terminate()
        xvfb.wait(timeout=10)
