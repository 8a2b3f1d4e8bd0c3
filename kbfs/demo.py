"""``kbfs demo``: the built-in server with sample data on a free loopback port, mounted.

Everything the demo makes lives in one temporary directory (the server's data, the token, the
content cache and the state) and is removed when the demo ends, with three exceptions a person
may care about, each said aloud when it happens:

- files written to the mount that never reached the server (a local-only name such as
  ``.notes.txt.swp``, or an upload that failed) and the recovery folder ``kbfs status`` points
  to: moved to a directory of their own under kbfs's state directory, whose path is printed;
- the mount point: removed only if the demo created it and it is empty;
- a mount point given by the user is left as it was.

The server runs in its own session, so Ctrl-C in the terminal reaches only the mount, which
finishes uploads in flight before unmounting; the server is stopped after that.
"""

from __future__ import annotations

import argparse
import json
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
from types import FrameType

EPILOG = """example:
  kbfs demo /tmp/kb   # then, in another shell: ls -lR /tmp/kb/projects

Ctrl-C (or SIGTERM) unmounts and stops the server; the server's data and the cache go.
Files written to the mount but not uploaded, and the recovery folder, are kept in a
directory of their own under kbfs's state directory; the demo prints where.
"""


def default_mountpoint() -> Path:
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = Path(runtime) if runtime and os.access(runtime, os.W_OK) else Path.home()
    return base / "kbfs-demo"


def add_parser(parser: argparse.ArgumentParser, mount: Callable[[argparse.Namespace], int]) -> None:
    """Fill in the ``demo`` subcommand; ``mount`` is ``kbfs mount``'s command function."""
    # In the epilog, whose lines are kept as written: argparse would wrap a long path in the
    # argument's help at its hyphens.
    parser.epilog = (
        f"default mount point: {default_mountpoint()}\n"
        "  ($XDG_RUNTIME_DIR/kbfs-demo if that directory is writable, else ~/kbfs-demo)\n\n"
        + EPILOG
    )
    parser.add_argument("mountpoint", nargs="?", help="where to mount (default: see below)")
    parser.add_argument("-o", action="append", metavar="OPT[,OPT...]", help="mount options")
    parser.set_defaults(func=lambda args: run_demo(args, mount))


def _say(text: str) -> None:
    print(f"kbfs demo: {text}", flush=True)


def _stop_requested(signum: int, frame: FrameType | None) -> None:
    # Before and after the mount (which handles its own signals), SIGTERM ends the demo
    # through the same clean-up as Ctrl-C.
    raise KeyboardInterrupt


def run_demo(args: argparse.Namespace, mount: Callable[[argparse.Namespace], int]) -> int:
    mountpoint = Path(args.mountpoint or default_mountpoint()).expanduser().absolute()
    created = not mountpoint.exists()
    mountpoint.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="kbfs-demo-"))
    previous = signal.signal(signal.SIGTERM, _stop_requested)
    server = None
    status = 1
    try:
        token_file = workdir / "token"
        fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, os.urandom(24).hex().encode())
        os.close(fd)
        server = _start_server(workdir, token_file)
        url = _wait_for_port(server, workdir / "port")
        if url is None:
            print("kbfs: the built-in server did not start", file=sys.stderr)
            return 1
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
            config=None,
        )
        _say(f"Kanboard-compatible server at {url}")
        _say(f"mounted at {mountpoint}   (try: ls -l {mountpoint}/projects/1/files)")
        _say("press Ctrl-C to unmount and stop")
        if not args.verbose and not args.log_level:
            # The mount's few INFO lines say what a stop does the moment it starts
            # ("SIGINT: finishing uploads in flight, then unmounting").
            logging.getLogger("kbfs.mount").setLevel(logging.INFO)
        status = mount(mount_args)
        _say(f"unmounted {mountpoint}")
    except KeyboardInterrupt:
        status = 130
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the clean-up below runs to its end
        if server is not None:
            _stop_server(server)
        _keep_and_remove(workdir)
        if created:
            try:
                mountpoint.rmdir()  # only if empty and not a mount any more
                _say(f"removed the mount point {mountpoint} (the demo had created it)")
            except OSError:
                pass
        signal.signal(signal.SIGTERM, previous)
    return status


def _start_server(workdir: Path, token_file: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
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
            str(workdir / "port"),
        ],
        stdout=subprocess.DEVNULL,
        start_new_session=True,  # Ctrl-C goes to the mount, which may still be uploading
    )


def _wait_for_port(server: subprocess.Popen[bytes], port_file: Path) -> str | None:
    deadline = time.monotonic() + 20
    while not (port_file.exists() and port_file.read_text().strip()):
        if server.poll() is not None or time.monotonic() > deadline:
            return None
        time.sleep(0.05)
    return f"http://127.0.0.1:{port_file.read_text().strip()}/jsonrpc.php"


def _stop_server(server: subprocess.Popen[bytes]) -> None:
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(timeout=10)
    _say("stopped the built-in server")


def _kept_name(meta_path: Path) -> Path:
    """Where a file not uploaded goes in the kept directory: its path in the mount, as far
    as its record says (``projects/1/tasks/2/name``), else its spool serial."""
    try:
        meta = json.loads(meta_path.read_text())
        name = Path(str(meta["name"])).name
        project = int(meta["project_id"])
        task = meta.get("task_id")
        if not name or name in (".", ".."):
            raise ValueError(name)
    except (OSError, ValueError, KeyError, TypeError):
        return Path("unidentified") / meta_path.with_suffix(".data").name
    where = f"tasks/{int(task)}" if task is not None else "files"
    return Path("projects") / str(project) / where / name


def _keep_and_remove(workdir: Path) -> None:
    """Move what a person may want out of ``workdir`` (see the module docstring), then
    remove the rest."""
    state = workdir / "state"
    moves: list[tuple[Path, Path]] = []
    for data in sorted(state.glob("*/spool/*.data")):
        moves.append((data, _kept_name(data.with_suffix(".json"))))
    for item in sorted(state.glob("*/recovered/*")):
        moves.append((item, Path("recovered") / item.name))
    if moves:
        import platformdirs

        stamp = time.strftime("%Y%m%d-%H%M%S")
        keep = Path(platformdirs.user_state_dir("kbfs")) / f"demo-{stamp}-{os.getpid()}"
        for source, relative in moves:
            target = keep / relative
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            shutil.move(source, target)
        files = sum(1 for _, r in moves if not r.name.endswith(".json"))
        _say(f"kept {files} file(s) not uploaded or set aside for recovery in {keep}")
    shutil.rmtree(workdir, ignore_errors=True)
    _say("removed the demo server's data and the cache")
