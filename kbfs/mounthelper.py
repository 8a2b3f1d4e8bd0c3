"""``mount.fuse.kbfs``: what mount(8), /etc/fstab and systemd .mount units run.

``mount -t fuse.kbfs URL /mnt/kanboard -o token_file=/etc/kbfs/token,ro`` makes mount(8) run
``/sbin/mount.fuse.kbfs URL /mnt/kanboard [-sfnvrw] [-N NS] -o OPTIONS [-t TYPE]`` (installed by
``kbfs install-helper``). Without the helper, mount(8) falls back to Debian's mount.fuse3,
which runs ``kbfs URL /mnt/kanboard -o OPTIONS``; ``kbfs.cli.main`` handles that the same way.

Both become ``kbfs mount`` in background mode, which exits 0 only once the mount is up and
otherwise prints one line saying why. Options that belong to mount(8), fstab or systemd
(``_netdev``, ``nofail``, ``x-systemd.*``, mount.fuse3's ``dev,suid``, ...) are ignored by the
option parser; mount(8)'s flags ``-n`` (no mtab: systemd always passes it), ``-s`` (sloppy)
and ``-v`` are accepted.
"""

from __future__ import annotations

import sys

from kbfs.cli import main as cli_main
from kbfs.helperargv import run_helper


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``/sbin/mount.fuse.kbfs``: the helper's arguments become ``kbfs mount``."""
    return run_helper(sys.argv[1:] if argv is None else argv, cli_main)


if __name__ == "__main__":
    sys.exit(main())
