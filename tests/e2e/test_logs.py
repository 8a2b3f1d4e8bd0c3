"""Where a background mount logs: a private rotated file, or the journal under systemd."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.helpers import _unmount, wait_for

pytestmark = pytest.mark.e2e


def _mount_background(kb, mp: Path, tmp_path: Path, env: dict[str, str], stderr) -> Path:  # type: ignore[no-untyped-def]
    state = tmp_path / "state"
    options = f"state_dir={state},cache_dir={tmp_path / 'cache'}"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "kbfs",
            "mount",
            kb.url,
            str(mp),
            "--log-level",
            "DEBUG",
            "-o",
            options,
            "--token-file",
            str(kb.token_file),
        ],
        stderr=stderr,
        stdout=subprocess.DEVNULL,
        env=env,
        timeout=30,
        check=False,
    )
    assert r.returncode == 0
    return state


@pytest.mark.parametrize("journal", [False, True])
def test_background_log_goes_to_a_private_file_or_the_journal(  # type: ignore[no-untyped-def]
    kb, tmp_path: Path, journal: bool
) -> None:
    mp = tmp_path / "mp"
    mp.mkdir()
    err_path = tmp_path / "stderr"  # a file: a pipe kept open by the daemon would block us
    try:
        with open(err_path, "w") as err:
            env = dict(os.environ)
            env.pop("JOURNAL_STREAM", None)
            if journal:  # what systemd sets when stderr is a stream to journald
                st = os.fstat(err.fileno())
                env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
            state = _mount_background(kb, mp, tmp_path, env, err)
        os.listdir(mp / "projects")
        log_file = state / "kbfs.log"
        if journal:
            wait_for(lambda: "kbfs: DEBUG: " in err_path.read_text(), what="log on stderr")
            assert not log_file.exists()
            assert kb.token not in err_path.read_text()
        else:
            wait_for(lambda: log_file.exists() and log_file.stat().st_size > 0, what="log file")
            assert stat.S_IMODE(log_file.stat().st_mode) == 0o600
            assert " DEBUG " in log_file.read_text()
            assert err_path.read_text() == ""  # the parent printed nothing: the mount is up
    finally:
        _unmount(mp)
