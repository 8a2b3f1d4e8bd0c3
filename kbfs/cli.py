"""Command line: ``kbfs mount | umount | demo | server``.

Argument parsing and process plumbing only (daemonizing, logging set-up, exit codes); the mount
itself is ``kbfs.mount``. Errors a person can act on end as one line on stderr and exit 1.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from kbfs import __version__

log = logging.getLogger("kbfs")

EXAMPLES_MOUNT = """examples:
  kbfs mount https://kanboard.example.com /mnt/kanboard --token-file ~/.config/kbfs/token
  KBFS_TOKEN_FILE=~/.kbtoken kbfs mount https://kb.example.com/kanboard ~/kb -o ro,umask=077
  kbfs mount https://kb.example.com ~/kb --user alice --token-file ~/.config/kbfs/alice
"""


def _setup_logging(level: str | None, verbose: int, log_file: str | None = None) -> None:
    name = (level or ("DEBUG" if verbose > 1 else "INFO" if verbose else "WARNING")).upper()
    handler: logging.Handler
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log_file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("kbfs: %(levelname)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, name, logging.INFO))
    # httpx logs every request at INFO; that is our DEBUG.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)


def _fail(message: str) -> int:
    print(f"kbfs: {message}", file=sys.stderr)
    return 1


def _daemonize() -> Callable[[str | None], None]:
    """Fork before any thread or trio exists; the parent exits once the child reports.

    Returns the child's reporter: ``report(None)`` once the mount is up (the parent exits 0),
    ``report(message)`` on failure (the parent prints it and exits 1).
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
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            os.close(devnull)

    return report


def cmd_mount(args: argparse.Namespace) -> int:
    # Imports that start nothing, but keep `kbfs --help` fast.
    from kbfs.client.api import Credentials
    from kbfs.credentials import CredentialError, load_secret
    from kbfs.options import OptionError, parse_options

    try:
        options = parse_options(args.o or [])
    except OptionError as exc:
        return _fail(str(exc))
    mountpoint = Path(args.mountpoint).expanduser().resolve()
    if not mountpoint.is_dir():
        return _fail(f"mount point {mountpoint} is not a directory")
    if os.path.ismount(mountpoint):
        return _fail(f"{mountpoint} is already a mount point")
    user = args.user or options.user or "jsonrpc"
    try:
        secret = load_secret(args.token_file or options.token_file)
    except CredentialError as exc:
        return _fail(str(exc))
    credentials = Credentials(secret=secret, username=user)
    log_file = args.log_file
    if not args.foreground and not log_file:
        from kbfs.mount import state_root

        log_file = str(state_root(options) / "kbfs.log")
    report: Callable[[str | None], None] = lambda error: None  # noqa: E731
    if not args.foreground:
        report = _daemonize()
    _setup_logging(args.log_level or options.log_level, args.verbose, log_file)
    return _serve(args.url, mountpoint, options, credentials, report)


def _serve(url, mountpoint, options, credentials, report) -> int:  # type: ignore[no-untyped-def]
    import trio

    from kbfs.client.errors import AuthenticationError, KanboardError
    from kbfs.mount import MountRequest, run_mount

    ready = False

    def on_ready() -> None:
        nonlocal ready
        ready = True
        report(None)

    request = MountRequest(url, mountpoint, options, credentials)
    try:
        trio.run(run_mount, request, on_ready)
    except AuthenticationError:
        message = "the server refused the credentials (HTTP 401): check the token and --user"
    except KanboardError as exc:
        message = f"cannot use {url}: {exc}"
    except RuntimeError as exc:  # pyfuse3.init failing (no /dev/fuse, busy mount point)
        message = f"cannot mount {mountpoint}: {exc}"
    except KeyboardInterrupt:
        return 130
    else:
        return 0
    if ready:
        log.error("%s", message)
    else:
        report(message)
        print(f"kbfs: {message}", file=sys.stderr)
    return 1


def cmd_umount(args: argparse.Namespace) -> int:
    for tool in ("fusermount3", "fusermount"):
        if shutil.which(tool):
            proc = subprocess.run([tool, "-u", args.mountpoint], check=False)
            return proc.returncode
    proc = subprocess.run(["umount", args.mountpoint], check=False)
    return proc.returncode


def _default_demo_mountpoint() -> Path:
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = Path(runtime) if runtime and os.access(runtime, os.W_OK) else Path.home()
    return base / "kbfs-demo"


def cmd_demo(args: argparse.Namespace) -> int:
    """Built-in server with sample data on a free loopback port, mounted; Ctrl-C ends both."""
    mountpoint = Path(args.mountpoint or _default_demo_mountpoint()).expanduser()
    mountpoint.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="kbfs-demo-"))
    token_file = workdir / "token"
    fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, os.urandom(24).hex().encode())
    os.close(fd)
    port_file = workdir / "port"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kbfs.devserver",
            "--listen",
            "127.0.0.1:0",
            "--data",
            str(workdir / "data"),
            "--token-file",
            str(token_file),
            "--sample-data",
            "--port-file",
            str(port_file),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while not (port_file.exists() and port_file.read_text().strip()):
            if server.poll() is not None or time.monotonic() > deadline:
                return _fail("the built-in server did not start")
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port_file.read_text().strip()}/jsonrpc.php"
        mount_args = argparse.Namespace(
            url=url,
            mountpoint=str(mountpoint),
            token_file=str(token_file),
            user=None,
            foreground=True,
            o=[f"cache_dir={workdir / 'cache'}", f"state_dir={workdir / 'state'}"] + (args.o or []),
            log_level=args.log_level,
            log_file=None,
            verbose=args.verbose,
        )
        print(f"kbfs demo: Kanboard-compatible server at {url}")
        print(f"kbfs demo: mounted at {mountpoint}   (try: ls -l {mountpoint}/projects/1/files)")
        print("kbfs demo: press Ctrl-C to unmount and stop", flush=True)
        return cmd_mount(mount_args)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(workdir, ignore_errors=True)


def cmd_server(rest: list[str]) -> int:
    from kbfs.devserver.serve import main as server_main

    return server_main(rest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kbfs",
        description="Mount a Kanboard server's file attachments as a directory tree.",
        epilog="examples:\n  kbfs demo\n  kbfs mount https://kb.example.com ~/kb "
        "--token-file ~/.config/kbfs/token\n  kbfs umount ~/kb",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"kbfs {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def logging_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
        p.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR")

    m = sub.add_parser(
        "mount",
        help="mount a Kanboard server",
        epilog=EXAMPLES_MOUNT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    m.add_argument("url", help="Kanboard URL (https://host, .../jsonrpc.php, or a sub-path)")
    m.add_argument("mountpoint")
    m.add_argument("--token-file", help="file holding the API token (or the user's password)")
    m.add_argument("--user", help="log in as this user (default: the application API token)")
    m.add_argument("-f", "--foreground", action="store_true", help="stay in the foreground")
    m.add_argument("-o", action="append", metavar="OPT[,OPT...]", help="mount options")
    m.add_argument("--log-file", help="log here (default in the background: the state dir)")
    logging_args(m)
    m.set_defaults(func=cmd_mount)

    u = sub.add_parser("umount", help="unmount (same as fusermount3 -u)")
    u.add_argument("mountpoint")
    u.set_defaults(func=cmd_umount)

    d = sub.add_parser(
        "demo",
        help="mount a built-in demo server with sample data",
        epilog="example:\n  kbfs demo /tmp/kb   # then, in another shell: ls -lR /tmp/kb/projects",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d.add_argument("mountpoint", nargs="?", help="default: $XDG_RUNTIME_DIR/kbfs-demo or ~")
    d.add_argument("-o", action="append", metavar="OPT[,OPT...]", help="mount options")
    logging_args(d)
    d.set_defaults(func=cmd_demo)

    sub.add_parser(
        "server",
        help="run the built-in Kanboard-compatible server (see: kbfs server --help)",
        add_help=False,
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "server":
        return cmd_server(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        _setup_logging(args.log_level, args.verbose)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
