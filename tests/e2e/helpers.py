"""Helpers for real mounts in end-to-end tests: ``kbfs mount -f`` in a subprocess against the
built-in server over HTTP, real tools against the mount point, and a clean unmount."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

#: The oldest and the newest Kanboard release kbfs supports: the core scenarios (list, read,
#: write, overwrite, rapid and editor saves, rename, rm, clear, crash recovery) run against the
#: built-in server keeping each one's rules (on a test that uses the ``kb`` fixture).
KANBOARD_VERSIONS = pytest.mark.parametrize("kb", ["1.2.20", "1.2.53"], indirect=True)

#: The stress tests (test_stress*.py) run each variant short (seconds of work) in the default
#: test run and long only under ``-m stress`` (KBFS_STRESS_SECONDS). Their fault seed is one
#: per session, random unless KBFS_STRESS_SEED gives it; a failing run prints it.
STRESS_SHORT = 20.0
STRESS_SECONDS = float(os.environ.get("KBFS_STRESS_SECONDS", "120"))
STRESS_SEED = int(os.environ.get("KBFS_STRESS_SEED") or random.SystemRandom().randrange(1 << 31))
STRESS_LENGTHS = [
    pytest.param(STRESS_SHORT, id="short"),
    pytest.param(STRESS_SECONDS, id="long", marks=pytest.mark.stress),
]


def is_mounted(path: Path) -> bool:
    """From the mount table: os.path.ismount says False for a mount whose daemon died
    (stat fails with ENOTCONN), and that is exactly the mount that must be cleared."""
    target = os.fsencode(os.path.abspath(path))
    with open("/proc/self/mountinfo", "rb") as table:
        for line in table:
            fields = line.split()
            if fields[4].replace(b"\\040", b" ") == target:
                return True
    return False


def _unmount(path: Path) -> None:
    if is_mounted(path):
        subprocess.run(["fusermount3", "-u", str(path)], check=False, capture_output=True)
    if is_mounted(path):
        subprocess.run(["fusermount3", "-uz", str(path)], check=False, capture_output=True)


@dataclass
class Mounted:
    """A running mount: its path, the daemon process, its log."""

    path: Path
    proc: subprocess.Popen[bytes]
    log: Path
    state_dir: Path
    cache_dir: Path
    allow_errors: bool = False
    extra: dict[str, object] = field(default_factory=dict)

    def p(self, *parts: str | int) -> Path:
        return self.path.joinpath(*(str(x) for x in parts))

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def spool_files(self) -> list[Path]:
        return sorted(self.state_dir.rglob("*.data"))


def run(
    *cmd: str | os.PathLike[str],
    check: bool = True,
    input: bytes | None = None,
    timeout: float = 30,
) -> subprocess.CompletedProcess[bytes]:
    """Run a real tool; on failure show its stderr."""
    proc = subprocess.run(
        [str(c) for c in cmd], capture_output=True, input=input, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{cmd!r} exited {proc.returncode}: {proc.stderr.decode(errors='replace')}"
        )
    return proc


def sh(script: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
    return run("sh", "-c", script, check=check, timeout=timeout)


class Mounter:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.mounts: list[Mounted] = []
        self.n = 0

    def __call__(
        self,
        kb: object,
        *opts: str,
        user: str | None = None,
        secret_file: Path | None = None,
        ttl: float | None = None,
        wait: bool = True,
        log_level: str | None = "DEBUG",
    ) -> Mounted:
        """Start ``kbfs mount -f`` on a fresh mount point and wait until it is mounted.

        Tests log at DEBUG to have the whole story when one fails; ``log_level=None`` keeps the
        daemon's default, for callers that time the daemon (the benchmark).
        """
        self.n += 1
        base = self.tmp_path / f"mount{self.n}"
        mnt = base / "mnt"
        mnt.mkdir(parents=True)
        state, cache = base / "state", base / "cache"
        log = base / "kbfs.log"
        options = [f"cache_dir={cache}", f"state_dir={state}", *opts]
        if ttl is not None:
            options.append(f"dir_cache_ttl={ttl}")
        cmd = [
            sys.executable,
            "-m",
            "kbfs",
            "mount",
            kb.url,
            str(mnt),  # type: ignore[attr-defined]
            "--token-file",
            str(secret_file or kb.token_file),  # type: ignore[attr-defined]
            "-f",
            "--log-file",
            str(log),
            "-o",
            ",".join(options),
        ]
        if log_level is not None:
            cmd += ["--log-level", log_level]
        if user:
            cmd += ["--user", user]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        mounted = Mounted(mnt, proc, log, state, cache)
        self.mounts.append(mounted)
        if wait:
            deadline = time.monotonic() + 20
            while not os.path.ismount(mnt):
                if proc.poll() is not None:
                    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                    raise AssertionError(f"kbfs mount exited {proc.returncode}: {err}")
                if time.monotonic() > deadline:
                    raise AssertionError("mount did not come up within 20 s")
                time.sleep(0.02)
        return mounted

    def unmount(self, m: Mounted) -> None:
        _unmount(m.path)
        try:
            m.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            m.proc.kill()
            m.proc.wait(timeout=5)
            _unmount(m.path)

    def close(self) -> None:
        problems = []
        for m in self.mounts:
            self.unmount(m)
            text = m.log_text()
            if not m.allow_errors and "failed unexpectedly" in text:
                problems.append(f"{m.path}: unexpected exception in the log:\n{text[-4000:]}")
        if problems:
            raise AssertionError("\n".join(problems))


def wait_for(predicate, timeout: float = 20.0, what: str = "condition"):  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until it is true (returns its value) or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def random_files(directory: Path, count: int, size: int) -> dict[str, bytes]:
    """``count`` files of ``size`` random bytes in a new ``directory`` (``f000.bin``, ...):
    name -> content, for a bulk copy into the mount."""
    directory.mkdir()
    blobs = {f"f{i:03d}.bin": os.urandom(size) for i in range(count)}
    for name, data in blobs.items():
        (directory / name).write_bytes(data)
    return blobs


def kbfs_cli(
    *args: str | os.PathLike[str],
    stdin: bytes | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[bytes]:
    """``kbfs ARGS`` as its own process (this checkout's), output captured, never raising."""
    return subprocess.run(
        [sys.executable, "-m", "kbfs", *map(str, args)],
        capture_output=True,
        input=stdin,
        env=env,
        timeout=timeout,
        check=False,
    )


def unsent(state: Path) -> list[str]:
    """The spool descriptions of content still to upload under a state dir: not empty and
    not refused for good (kept local-only by design). The mount works on meanwhile: an entry
    whose upload ends during the scan (its files removed) is simply not listed."""
    out = []
    for meta in state.rglob("spool/*.json"):
        try:
            if meta.with_suffix(".data").stat().st_size == 0:
                continue
            text = meta.read_text()
        except FileNotFoundError:
            continue
        if not json.loads(text).get("refused"):
            out.append(text)
    return out
