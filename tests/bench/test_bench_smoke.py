"""Smoke test of the benchmark: ``bench/run.py --quick`` mounts for real, exits 0, prints all rows.

No timing is asserted here: timings live only in the benchmark's own output.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench" / "run.py"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(330),
    pytest.mark.skipif(
        not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None,
        reason="needs /dev/fuse and fusermount3",
    ),
    pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl"),
]


def test_quick_benchmark_runs_and_prints_every_row() -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr[-4000:]}"
    rows = re.findall(r"^\| (\d+)[a-z]? \|", proc.stdout, re.MULTILINE)
    assert set(rows) == {str(n) for n in range(1, 12)}, proc.stdout
    assert "MISSED" in proc.stdout or " ok " in proc.stdout or "| - |" in proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr[-4000:]
    # The header names the commit measured, never a path of the machine (it goes into docs).
    assert re.search(r"^kbfs: commit [0-9a-f]{7}", proc.stdout, re.MULTILINE), proc.stdout
    assert str(ROOT) not in proc.stdout
