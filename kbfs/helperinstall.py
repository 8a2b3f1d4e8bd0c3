"""``kbfs install-helper`` / ``kbfs uninstall-helper``: the two files kbfs may put outside its
own Python environment, and only when asked.

mount(8) runs ``/sbin/mount.fuse.kbfs`` for ``mount -t fuse.kbfs`` and fstab lines, and systemd
units name ``/usr/local/bin/kbfs``; both are two-line scripts that run the Python environment
the command was started from. Installing them changes the system for every user, so it is a
step of its own that the user takes (nothing else in kbfs, its set-up script or its tests
writes there), and each command says, path by path, what it did. Every file carries a marker
line; a file without it was not written by kbfs and is never replaced or removed.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import TypeAlias

    _Subparsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]

HELPER_MARK = "# written by `kbfs install-helper`"
HELPER_COMMANDS = ("install-helper", "uninstall-helper")

EXAMPLES_INSTALL = """examples:
  sudo .venv/bin/kbfs install-helper      # /sbin/mount.fuse.kbfs, /usr/local/bin/kbfs
  sudo .venv/bin/kbfs uninstall-helper    # takes them away again

Both are small scripts running the Python environment of the kbfs that wrote them; a file
that kbfs did not write is left as it is. After this, mount(8), /etc/fstab and systemd units
can mount kbfs:
  mount -t fuse.kbfs https://kb.example.com /mnt/kanboard -o token_file=/etc/kbfs/token
"""

EXAMPLES_UNINSTALL = """examples:
  sudo kbfs uninstall-helper

Removes /sbin/mount.fuse.kbfs and /usr/local/bin/kbfs if `kbfs install-helper` wrote them
(whichever checkout or environment they run); any other file there is left as it is.
"""

_RUNS = re.compile(r"^exec '(?P<python>[^']*)'", re.MULTILINE)


def wrapper(module: str, python: str | None = None) -> str:
    """The script that runs ``python -m module`` with the caller's arguments."""
    # -I: no current directory on sys.path, no PYTHON* variables from mount(8)'s caller.
    return f"#!/bin/sh\n{HELPER_MARK}\nexec '{python or sys.executable}' -I -m {module} \"$@\"\n"


def _targets(args: argparse.Namespace) -> list[tuple[Path, str]]:
    return [
        (Path(args.sbin) / "mount.fuse.kbfs", wrapper("kbfs.mounthelper")),
        (Path(args.bin) / "kbfs", wrapper("kbfs")),
    ]


def _read(path: Path) -> str | None:
    """The text of a regular file, or None (absent, or not a regular file)."""
    try:
        return path.read_text(errors="replace") if path.is_file() else None
    except OSError:
        return None


def _runs(text: str) -> str:
    """Which Python a script kbfs wrote runs (for the messages)."""
    found = _RUNS.search(text)
    return found.group("python") if found else "?"


def _foreign(path: Path, text: str | None) -> bool:
    """Something is there that kbfs did not write (or cannot read back)."""
    return (path.exists() or path.is_symlink()) and (text is None or HELPER_MARK not in text)


def cmd_install_helper(args: argparse.Namespace) -> int:
    """Write the helper scripts; leave files that are up to date, or not kbfs's, as they are."""
    if args.remove:  # the spelling before uninstall-helper existed
        return cmd_uninstall_helper(args)
    status = 0
    for path, text in _targets(args):
        current = _read(path)
        if _foreign(path, current):
            print(f"kbfs: {path} was not written by kbfs: left as it was", file=sys.stderr)
            status = 1
            continue
        if current == text:
            print(f"{path}: up to date (runs {sys.executable}), left as it was")
            continue
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.kbfs-tmp")
            tmp.unlink(missing_ok=True)  # a leftover, or a planted symlink: never followed
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o755)
            with os.fdopen(fd, "w") as out:
                out.write(text)
                os.fchmod(fd, 0o755)  # whatever the umask
            tmp.replace(path)
        except OSError as exc:
            print(f"kbfs: cannot write {path}: {exc.strerror} (run as root)", file=sys.stderr)
            return 1
        if current is None:
            print(f"wrote {path} (runs {sys.executable})")
        else:
            print(f"replaced {path}: it ran {_runs(current)}, now {sys.executable}")
    print(f"undo with: {_this_kbfs()} uninstall-helper")
    return status


def _this_kbfs() -> str:
    """How to run this environment's kbfs, for the hint after an install."""
    script = Path(sys.executable).parent / "kbfs"
    return str(script) if script.is_file() else f"{sys.executable} -m kbfs"


def cmd_uninstall_helper(args: argparse.Namespace) -> int:
    """Remove the helper scripts kbfs wrote (its marker line), whatever they run."""
    status = 0
    for path, _ in _targets(args):
        current = _read(path)
        if _foreign(path, current):
            print(f"kbfs: {path} was not written by kbfs: left as it was", file=sys.stderr)
            status = 1
            continue
        if current is None:
            print(f"{path}: not there")
            continue
        try:
            path.unlink()
        except OSError as exc:
            print(f"kbfs: cannot remove {path}: {exc.strerror} (run as root)", file=sys.stderr)
            return 1
        print(f"removed {path} (it ran {_runs(current)})")
    return status


def _where(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sbin", default="/sbin", help="where mount(8) looks (default /sbin)")
    parser.add_argument(
        "--bin", default="/usr/local/bin", help="where kbfs goes (default /usr/local/bin)"
    )


def add_commands(sub: _Subparsers, common: argparse.ArgumentParser) -> None:
    """The ``install-helper`` and ``uninstall-helper`` subcommands."""
    ih = sub.add_parser(
        "install-helper",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
        help="install mount(8)'s helper /sbin/mount.fuse.kbfs and /usr/local/bin/kbfs (root)",
        epilog=EXAMPLES_INSTALL,
    )
    ih.add_argument("--remove", action="store_true", help="the same as uninstall-helper")
    _where(ih)
    ih.set_defaults(func=cmd_install_helper)
    uh = sub.add_parser(
        "uninstall-helper",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
        help="remove what install-helper wrote (root)",
        epilog=EXAMPLES_UNINSTALL,
    )
    _where(uh)
    uh.set_defaults(func=cmd_uninstall_helper)
