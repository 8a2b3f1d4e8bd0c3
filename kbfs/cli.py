"""Command line: ``kbfs mount | umount | status | sync | clear | demo | server | ...`` (--help).

Argument parsing and process plumbing only (daemonizing, logging set-up, exit codes); the mount
itself is ``kbfs.mount``, and ``status``, ``sync`` and ``clear`` reach a running one through
``kbfs.control``. Errors a person can act on end as one line on stderr and exit 1.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kbfs import __version__
from kbfs.completion import add_commands
from kbfs.helperargv import run_helper
from kbfs.helperinstall import HELPER_COMMANDS
from kbfs.helperinstall import add_commands as add_helper_commands
from kbfs.logsetup import setup_logging, stderr_is_journal
from kbfs.safetext import printable, printable_lines, printable_tree

if TYPE_CHECKING:
    from typing import TypeAlias

    # argparse keeps the type of what add_subparsers() returns private.
    _Subparsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]

log = logging.getLogger("kbfs")

EXAMPLES_MAIN = """examples:
  kbfs demo                                         # built-in server with sample data
  kbfs mount https://kb.example.com ~/kb --token-file ~/.config/kbfs/token
  kbfs mount work ~/kb                              # a remote of the config file
  kbfs status
  kbfs clear --yes ~/kb/projects/1/tasks/42
  kbfs umount ~/kb

Each command has its own --help with examples. mount(8), fstab and systemd: see README.md.
"""

EXAMPLES_MOUNT = """examples:
  kbfs mount https://kanboard.example.com /mnt/kanboard --token-file ~/.config/kbfs/token
  KBFS_TOKEN_FILE=~/.kbtoken kbfs mount https://kb.example.com/kanboard ~/kb -o ro,umask=077
  kbfs mount https://kb.example.com ~/kb --user alice --token-file ~/.config/kbfs/alice
  kbfs mount work ~/kb -o dir_cache_ttl=30          # remote "work" of the config file
  kbfs mount -f -v work ~/kb                        # foreground, log to stderr

SOURCE is a Kanboard URL or the name of a remote in the config file
(/etc/kbfs/config.toml, or ~/.config/kbfs/config.toml for a user; see README.md).
Precedence: [defaults] < the remote's table < -o < --user/--token-file.
Without -f, kbfs returns once the mount is up (exit 0), or prints why not (exit 1).
"""

EXAMPLES_STATUS = """examples:
  kbfs status                  # every kbfs mount of this machine
  kbfs status ~/kb             # just this one
  kbfs status --json | jq .    # for scripts

For each mount: server and user, the process, files not uploaded yet (and where their
bytes are kept), the content cache and counters.
"""

EXAMPLES_SYNC = """examples:
  kbfs sync                 # every kbfs mount of yours
  kbfs sync ~/kb            # one mount

Uploads now what is not on the server yet (with -o writeback: what close() handed over;
in any mode: uploads that failed and wait for their retry), and waits for it. Exits 0 when
everything is there; otherwise 1, naming each file that is not and why.
"""

EXAMPLES_CLEAR = """examples:
  kbfs clear ~/kb/projects/3/tasks/42          # asks first
  kbfs clear --yes ~/kb/projects/3/files       # no question (scripts)

Removes every attachment of that task or project in Kanboard with one call
(removeAllTaskFiles / removeAllProjectFiles), made by the process serving the mount.
This cannot be undone.
"""

EXAMPLES_UMOUNT = """examples:
  kbfs umount ~/kb
  umount /mnt/kanboard         # as root, the same
"""


def _fail(message: str) -> int:
    print(f"kbfs: {printable(message)}", file=sys.stderr)
    return 1


def _daemonize(keep_stderr: bool = False) -> Callable[[str | None], None]:
    """Fork before any thread or trio exists; the parent exits once the child reports.

    Returns the child's reporter: ``report(None)`` once the mount is up (the parent exits 0),
    ``report(message)`` on failure (the parent prints it and exits 1). ``keep_stderr``: stderr
    is the journal (systemd), and stays the log once the mount is up.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid > 0:
        os.close(write_fd)
        chunks = []
        while chunk := os.read(read_fd, 4096):
            chunks.append(chunk)
        message = b"".join(chunks).decode(errors="replace")
        if message.startswith("OK"):
            os._exit(0)
        sys.stderr.write(message or "kbfs: the mount process ended before the mount was up\n")
        os._exit(1)
    os.close(read_fd)
    os.setsid()

    def report(error: str | None) -> None:
        try:
            os.write(write_fd, b"OK\n" if error is None else f"kbfs: {error}\n".encode())
            os.close(write_fd)
        except OSError:
            pass
        if error is None:
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1) if keep_stderr else (0, 1, 2):
                os.dup2(devnull, fd)
            os.close(devnull)

    return report


def _resolve_source(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """(url, options) from SOURCE (a URL or a remote name), the config file and ``-o``."""
    from kbfs.config import load_config, looks_like_url, searched

    config = load_config(getattr(args, "config", None))
    remote = None if looks_like_url(args.url) else config.remote(args.url)
    if remote is None and not looks_like_url(args.url):
        where = searched(config.path)
        where = f"is {where}" if config.path else f"exists: {where}"
        raise ValueError(f"{args.url!r} is not a URL, and no remote of that name {where}")
    return (remote.url if remote else args.url), config.options(remote, args.o or [])


def cmd_mount(args: argparse.Namespace) -> int:
    # Imports that start nothing, but keep `kbfs --help` fast.
    from kbfs.client.api import Credentials
    from kbfs.config import ConfigError
    from kbfs.credentials import CredentialError, harden_process, load_secret, secret_source
    from kbfs.mount import check_dirs, preflight, state_root
    from kbfs.options import OptionError
    from kbfs.storage.private import DirectoryError, open_log

    try:
        url, options = _resolve_source(args)
        warnings = preflight(url, options)
    except (OptionError, ConfigError, ValueError) as exc:
        return _fail(str(exc))
    mountpoint = Path(args.mountpoint).expanduser().resolve()
    if not mountpoint.is_dir():
        return _fail(f"mount point {mountpoint} is not a directory")
    if os.path.ismount(mountpoint):
        return _fail(f"{mountpoint} is already a mount point")
    user = args.user or options.user or "jsonrpc"
    harden_process()  # no core dump once the secret is in memory
    source = secret_source(args.token_file or options.token_file)  # before KBFS_TOKEN goes
    try:
        secret = load_secret(args.token_file or options.token_file)
    except CredentialError as exc:
        return _fail(str(exc))
    credentials = Credentials(secret=secret, username=user)
    log_file = args.log_file
    journal = not args.foreground and not log_file and stderr_is_journal()
    if not args.foreground and not log_file and not journal:
        log_file = str(state_root(options) / "kbfs.log")
    try:
        check_dirs(options)
        if log_file:  # refused here, on the terminal: a symlink, another user's file
            open_log(Path(log_file)).close()
    except DirectoryError as exc:
        return _fail(str(exc))
    for warning in warnings if log_file or journal else ():  # else the log is on the terminal
        print(f"kbfs: WARNING: {warning}", file=sys.stderr)
    report: Callable[[str | None], None] = lambda error: None  # noqa: E731
    if not args.foreground:
        report = _daemonize(keep_stderr=journal)
    setup_logging(args.log_level or options.log_level, args.verbose, log_file)
    return _serve(url, mountpoint, options, credentials, report, args.foreground, source)


def _serve(url, mountpoint, options, credentials, report, foreground=True, source=None) -> int:  # type: ignore[no-untyped-def]
    import trio

    from kbfs.client.errors import AuthenticationError, KanboardError
    from kbfs.mount import MountRequest, run_mount
    from kbfs.storage.private import DirectoryError

    ready = False

    def on_ready() -> None:
        nonlocal ready
        ready = True
        report(None)

    # SIGHUP re-reads the token, but in a terminal's foreground it is the terminal hanging up.
    hup_reloads = not (foreground and os.isatty(2))
    request = MountRequest(url, mountpoint, options, credentials, source, hup_reloads)
    try:
        trio.run(run_mount, request, on_ready)
    except AuthenticationError:
        message = "the server refused the credentials (HTTP 401): check the token and --user"
    except KanboardError as exc:
        message = f"cannot use {url}: {exc}"
    except DirectoryError as exc:
        message = str(exc)
    except RuntimeError as exc:  # pyfuse3.init failing (no /dev/fuse, busy mount point)
        message = f"cannot mount {mountpoint}: {exc}"
    except KeyboardInterrupt:
        return 130
    else:
        return 0
    if ready:
        log.error("%s", message)
    elif foreground:
        print(f"kbfs: {printable(message)}", file=sys.stderr)
    else:
        report(printable(message))  # the waiting parent prints it: one line, once
    return 1


def cmd_umount(args: argparse.Namespace) -> int:
    for tool in ("fusermount3", "fusermount"):
        if shutil.which(tool):
            proc = subprocess.run([tool, "-u", args.mountpoint], check=False)
            return proc.returncode
    proc = subprocess.run(["umount", args.mountpoint], check=False)
    return proc.returncode


def cmd_status(args: argparse.Namespace) -> int:
    import json

    from kbfs.control import status

    found = list(status.iter_found())
    if args.mountpoint:
        entry = status.mount_containing(Path(args.mountpoint).expanduser().absolute())
        if entry is None:
            return _fail(f"{args.mountpoint} is not on a kbfs mount")
        found = [f for f in found if f.entry.mountpoint == entry.mountpoint]
    for f in found:
        status.refresh(f)  # fresher than the file, which is rewritten every few seconds
    if args.json:
        out = [
            {"mountpoint": f.entry.mountpoint, "status": f.status, "problem": f.problem}
            for f in found
        ]
        print(json.dumps(out, indent=2, sort_keys=True, default=str))
        return 0
    if not found:
        print("no kbfs mounts")
        return 0
    for f in found:  # names and errors come from servers and status files: no escapes run
        f.status, f.problem = printable_tree(f.status), printable_tree(f.problem)
    print(printable_lines("\n\n".join(status.format_found(f) for f in found)))
    return 0


def _container_label(rel: list[str]) -> str | None:
    """ "task 42 of project 3" for projects/3/tasks/42, None if not a files directory."""
    if len(rel) == 3 and rel[0] == "projects" and rel[2] == "files":
        return f"project {rel[1]}'s own files"
    if len(rel) == 4 and rel[0] == "projects" and rel[2] == "tasks":
        return f"task {rel[3]} (project {rel[1]})"
    return None


def cmd_clear(args: argparse.Namespace) -> int:
    from kbfs.control import status

    path = Path(args.dir).expanduser().absolute()
    entry = status.mount_containing(path)
    if entry is None:
        return _fail(f"{args.dir} is not on a kbfs mount")
    rel = [p for p in os.path.relpath(path, entry.mountpoint).split(os.sep) if p != "."]
    label = _container_label(rel)
    if label is None:
        return _fail(
            f"{args.dir} is not a files directory: give MOUNT/projects/ID/files or"
            " MOUNT/projects/ID/tasks/ID"
        )
    try:
        names = os.listdir(path)
    except OSError as exc:
        return _fail(f"cannot list {args.dir}: {exc.strerror}")
    found = status.find_status(entry)
    control = found.control
    if not control or found.problem:
        return _fail(f"cannot reach the kbfs process of {entry.mountpoint}: {found.problem}")
    if not args.yes:
        if not sys.stdin.isatty():
            return _fail("not removing anything without confirmation: add --yes")
        sys.stderr.write(
            f"Remove all {len(names)} file(s) of {label} from Kanboard? This cannot be undone."
            " [y/N] "
        )
        sys.stderr.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            print("kbfs: nothing removed", file=sys.stderr)
            return 1
    try:
        answer = status.ask_daemon(control, {"op": "clear", "path": "/".join(rel)}, owner=entry.uid)
    except status.ControlError as exc:
        return _fail(f"{args.dir}: {exc}")
    print(f"kbfs: removed {printable(answer.get('removed', 0))} file(s) of {label}")
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    """Wait until every file written to this user's kbfs mounts (or the one holding
    MOUNTPOINT) is on the server; exit 1 naming what is not."""
    from kbfs.control import status

    mine = (None, os.getuid())
    found = [f for f in status.iter_found() if f.entry.uid in mine or os.getuid() == 0]
    if args.mountpoint:
        entry = status.mount_containing(Path(args.mountpoint).expanduser().absolute())
        if entry is None:
            return _fail(f"{args.mountpoint} is not on a kbfs mount")
        found = [f for f in found if f.entry.mountpoint == entry.mountpoint]
    if not found:
        print("kbfs: no kbfs mounts of yours")
        return 0
    failed = 0
    for f in found:
        where = printable(str(f.entry.mountpoint))
        if not f.control or f.problem:
            print(f"kbfs: {where}: cannot reach its kbfs process: {f.problem}", file=sys.stderr)
            failed += 1
            continue
        request = {"op": "sync", "timeout": args.timeout}
        try:
            answer = status.ask_daemon(
                f.control, request, timeout=args.timeout + 30, owner=f.entry.uid
            )
        except status.ControlError as exc:
            print(f"kbfs: {where}: {exc}", file=sys.stderr)
            failed += 1
            continue
        left = answer.get("not_uploaded", [])
        for item in left:
            failed += 1
            print(
                f"kbfs: {where}{printable(str(item.get('path')))}: not on the server:"
                f" {printable(str(item.get('why')))}",
                file=sys.stderr,
            )
    return 1 if failed else 0


def cmd_server(rest: list[str]) -> int:
    from kbfs.devserver.serve import main as server_main

    return server_main(rest)


def build_parser() -> argparse.ArgumentParser:
    """The ``kbfs`` command line; ``server`` passes its arguments on unparsed (see main)."""
    # -v/--log-level work before or after the command; SUPPRESS keeps a subcommand's absent
    # flag from resetting what was given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v", "--verbose", action="count", default=argparse.SUPPRESS, help="more log output"
    )
    common.add_argument(
        "--log-level", default=argparse.SUPPRESS, help="DEBUG, INFO, WARNING or ERROR"
    )
    parser = argparse.ArgumentParser(
        prog="kbfs",
        description="Mount a Kanboard server's file attachments as a directory tree.",
        epilog=EXAMPLES_MAIN,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"kbfs {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (
        _add_mount,
        _add_umount,
        _add_status,
        _add_sync,
        _add_clear,
        add_helper_commands,
        _add_demo,
    ):
        add(sub, common)
    add_commands(functools.partial(_subcommand, sub, common), build_parser)  # remotes, completion
    sub.add_parser(
        "server",
        help="run the built-in Kanboard-compatible server (see: kbfs server --help)",
        add_help=False,
    )
    return parser


def _subcommand(
    sub: _Subparsers, common: argparse.ArgumentParser, name: str, **kwargs: Any
) -> argparse.ArgumentParser:
    """A subcommand that shares -v/--log-level and keeps its examples' line breaks."""
    return sub.add_parser(
        name, formatter_class=argparse.RawDescriptionHelpFormatter, parents=[common], **kwargs
    )


def _add_mount(sub: _Subparsers, common: argparse.ArgumentParser) -> None:
    m = _subcommand(
        sub,
        common,
        "mount",
        help="mount a Kanboard server",
        description="Mount a Kanboard server (or a remote of the config file).",
        epilog=EXAMPLES_MOUNT,
    )
    m.add_argument("url", metavar="SOURCE", help="Kanboard URL, or a remote name from the config")
    m.add_argument("mountpoint", metavar="MOUNTPOINT")
    m.add_argument("--token-file", help="file holding the API token (or the user's password)")
    m.add_argument("--user", help="log in as this user (default: the application API token)")
    m.add_argument("--config", metavar="FILE", help="config file (default: see below)")
    m.add_argument("-f", "--foreground", action="store_true", help="stay in the foreground")
    m.add_argument("-o", action="append", metavar="OPT[,OPT...]", help="mount options")
    m.add_argument("--log-file", help="log here (default in the background: the state dir)")
    m.set_defaults(func=cmd_mount)


def _add_umount(sub: _Subparsers, common: argparse.ArgumentParser) -> None:
    u = _subcommand(
        sub, common, "umount", help="unmount (same as fusermount3 -u)", epilog=EXAMPLES_UMOUNT
    )
    u.add_argument("mountpoint")
    u.set_defaults(func=cmd_umount)


def _add_status(sub: _Subparsers, common: argparse.ArgumentParser) -> None:
    st = _subcommand(
        sub,
        common,
        "status",
        help="show every kbfs mount: server, unsaved files, cache",
        epilog=EXAMPLES_STATUS,
    )
    st.add_argument("mountpoint", nargs="?", help="only the mount holding this path")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.set_defaults(func=cmd_status)


def _add_clear(sub: _Subparsers, common: argparse.ArgumentParser) -> None:
    c = _subcommand(
        sub,
        common,
        "clear",
        help="remove all attachments of a task or project (one call)",
        epilog=EXAMPLES_CLEAR,
    )
    c.add_argument(
        "dir", metavar="DIR", help="MOUNT/projects/ID/files or MOUNT/projects/ID/tasks/ID"
    )
    c.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    c.set_defaults(func=cmd_clear)


def _add_sync(sub: _Subparsers, common: argparse.ArgumentParser) -> None:
    c = _subcommand(
        sub,
        common,
        "sync",
        help="wait until everything written to the mounts is on the server",
        epilog=EXAMPLES_SYNC,
    )
    c.add_argument("mountpoint", nargs="?", help="only the mount holding this path")
    c.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="give up after this many seconds (300)",
    )
    c.set_defaults(func=cmd_sync)


def _add_demo(sub: _Subparsers, common: argparse.ArgumentParser) -> None:
    from kbfs import demo

    d = _subcommand(sub, common, "demo", help="mount a built-in demo server with sample data")
    demo.add_parser(d, cmd_mount)


COMMANDS = ("mount", "umount", "status", "sync", "clear", "demo", "server", *HELPER_COMMANDS)
TOOL_COMMANDS = ("remotes", "completion")  # kbfs.completion


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "server":
        return cmd_server(argv[1:])
    if len(argv) >= 2 and argv[0] not in COMMANDS + TOOL_COMMANDS and not argv[0].startswith("-"):
        # mount.fuse3's convention (``mount -t fuse.kbfs`` without our helper installed):
        # it runs ``kbfs SOURCE MOUNTPOINT -o OPTIONS``.
        return run_helper(argv, main)
    args = build_parser().parse_args(argv)
    args.verbose = getattr(args, "verbose", 0)
    args.log_level = getattr(args, "log_level", None)
    if args.log_level and args.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        return _fail(f"bad --log-level {args.log_level!r}: use DEBUG, INFO, WARNING or ERROR")
    if args.command != "mount":
        setup_logging(args.log_level, args.verbose)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
