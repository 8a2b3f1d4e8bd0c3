"""The mount lines people copy (README's fstab line, the shipped .mount unit): a line that
lets other accounts in (``allow_other``) must not let them read everything (a umask that
leaves others no permission)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _mount_option_lists() -> list[tuple[str, str]]:
    """(where, options) of every kbfs mount line in the README and the systemd units."""
    found = []
    for path in [REPO / "README.md", *sorted((REPO / "systemd").glob("*.mount"))]:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            fields = line.lstrip("# ").split()
            if "fuse.kbfs" in fields and len(fields) >= 4 and fields[2] == "fuse.kbfs":
                found.append((f"{path.name}:{n}", fields[3]))  # an fstab line
            elif line.startswith("Options="):
                found.append((f"{path.name}:{n}", line.partition("=")[2]))
    return found


def test_allow_other_comes_with_a_umask_that_keeps_others_out() -> None:
    lines = _mount_option_lists()
    with_other = [(where, opts) for where, opts in lines if "allow_other" in opts.split(",")]
    assert len(with_other) >= 3, lines  # README's fstab line, the unit and its comment
    for where, opts in with_other:
        umask = re.search(r"(?:^|,)umask=([0-7]+)(?:,|$)", opts)
        assert umask is not None, f"{where}: allow_other without umask= ({opts})"
        assert int(umask.group(1), 8) & 0o007 == 0o007, f"{where}: others may read ({opts})"
