"""Where a running mount publishes its state, and how ``kbfs status`` / ``kbfs clear`` find it.

Each mount daemon (``kbfs.control.publisher``) writes a JSON snapshot
(``<runtime dir>/<key>.json``, rewritten every few seconds, atomically, mode 0600, never
holding the token; removed at exit) and listens on a control socket next to it
(``<key>.sock``). ``key`` is derived from the mount point, so any process that knows a mount
point, e.g. from /proc/self/mountinfo, finds both without a registry. This module is the
reading side and the helpers both sides share; it imports nothing of the filesystem layers.

The runtime dir is ``$XDG_RUNTIME_DIR/kbfs`` for a user session, ``/run/kbfs`` for root
without one (fstab, systemd), else a private ``/tmp/kbfs-UID``. ``kbfs status`` looks in all
of them so that root sees every user's mounts, and believes only a directory, a file and a
socket peer of the user who mounted (mountinfo's ``user_id=``): anyone can make a
``/tmp/kbfs-*`` directory.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import os
import pwd
import socket
import stat
import struct
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FSTYPE = "fuse.kbfs"
STATUS_INTERVAL = 2.0
MAX_STATUS_BYTES = 64 << 20  # a snapshot lists pending files; far below this


def runtime_dir(env: dict[str, str] | None = None, uid: int | None = None) -> Path:
    """This process's runtime dir for kbfs (not created here)."""
    env = dict(os.environ) if env is None else env
    uid = os.getuid() if uid is None else uid
    xdg = env.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isdir(xdg) and os.access(xdg, os.W_OK):
        return Path(xdg) / "kbfs"
    if uid == 0:
        return Path("/run/kbfs")
    return Path(tempfile.gettempdir()) / f"kbfs-{uid}"


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` mode 0700; refuse one that someone else owns (a /tmp squatter)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.lstat()
    if st.st_uid != os.getuid() or not path.is_dir() or path.is_symlink():
        raise PermissionError(f"{path} is not a directory owned by this user")
    if st.st_mode & 0o077:
        path.chmod(0o700)
    return path


def sweep_stale(base: Path) -> None:
    """Remove snapshots (and sockets) of kbfs processes that were killed without cleaning up."""
    for path in base.glob("*.json"):
        try:
            pid = int(json.loads(path.read_text()).get("pid", 0))
        except (OSError, ValueError, AttributeError):
            continue
        if pid and not _pid_alive(pid):
            for stale in (path, path.with_suffix(".sock")):
                with contextlib.suppress(OSError):
                    stale.unlink()


def mount_key(mountpoint: str | os.PathLike[str]) -> str:
    return hashlib.sha256(os.fsencode(mountpoint)).hexdigest()[:16]


def status_path(mountpoint: str | os.PathLike[str], base: Path | None = None) -> Path:
    return (base or runtime_dir()) / f"{mount_key(mountpoint)}.json"


def control_path(mountpoint: str | os.PathLike[str], base: Path | None = None) -> Path:
    return (base or runtime_dir()) / f"{mount_key(mountpoint)}.sock"


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Readers never see half a file: write a private temporary, then rename over."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".status-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:  # mkstemp creates it 0600
            json.dump(data, fh, indent=1, sort_keys=True, default=str)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# ---------------------------------------------------------------------------- finding mounts


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo."""
    out = bytearray()
    raw = field.encode("utf-8", "surrogateescape")
    i = 0
    while i < len(raw):
        if raw[i] == 0x5C and i + 3 < len(raw) and raw[i + 1 : i + 4].isdigit():
            out.append(int(raw[i + 1 : i + 4], 8))
            i += 4
        else:
            out.append(raw[i])
            i += 1
    return os.fsdecode(bytes(out))


@dataclass(frozen=True)
class MountEntry:
    mountpoint: str
    source: str
    options: str

    @property
    def uid(self) -> int | None:
        """Who mounted it (the kernel's ``user_id=``): the only user whose files describe it."""
        for option in self.options.split(","):
            if option.startswith("user_id="):
                with contextlib.suppress(ValueError):
                    return int(option[len("user_id=") :])
        return None


def kbfs_mounts(mountinfo: str = "/proc/self/mountinfo") -> list[MountEntry]:
    """Every kbfs mount visible to this process (fstype fuse.kbfs)."""
    entries = []
    try:
        text = Path(mountinfo).read_text(errors="surrogateescape")
    except OSError:
        return []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields = left.split()
        fs = right.split()
        if len(fields) < 6 or len(fs) < 2 or fs[0] != FSTYPE:
            continue
        entries.append(MountEntry(_unescape(fields[4]), _unescape(fs[1]), fields[5] + "," + fs[-1]))
    return entries


def mount_containing(path: str | os.PathLike[str]) -> MountEntry | None:
    """The kbfs mount that holds ``path`` (the longest mount point that is a prefix)."""
    target = os.path.abspath(path)
    best: MountEntry | None = None
    for entry in kbfs_mounts():
        mp = entry.mountpoint
        if (target == mp or target.startswith(mp.rstrip("/") + "/")) and (
            best is None or len(mp) > len(best.mountpoint)
        ):
            best = entry
    return best


def candidate_dirs() -> list[Path]:
    """Runtime dirs where a mount of any user may have published its status."""
    seen: list[Path] = []
    options = [runtime_dir(), Path("/run/kbfs")]
    options += [Path(p) for p in sorted(glob.glob("/run/user/*/kbfs"))]
    options += [Path(p) for p in sorted(glob.glob(os.path.join(tempfile.gettempdir(), "kbfs-*")))]
    for p in options:
        if p not in seen:
            seen.append(p)
    return seen


@dataclass
class Found:
    """What ``kbfs status`` knows of one mount: its snapshot, or why there is none."""

    entry: MountEntry
    status: dict[str, Any] | None
    problem: str | None
    status_file: Path | None = None
    control: Path | None = None  # the socket beside a trusted status file


def _user_name(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _read_trusted(base: Path, name: str, owner: int) -> dict[str, Any] | None:
    """The snapshot ``base/name`` if both the directory and the file are ``owner``'s.

    Anyone may create a ``/tmp/kbfs-*`` directory and write a snapshot naming any mount point,
    with the path of a control socket they listen on: what another user wrote is never shown,
    nor its socket asked. The directory must be ``owner``'s and writable by no one else (so the
    socket beside the file is the mount's too), and the file ``owner``'s, never a symlink.
    """
    try:
        st = base.lstat()
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != owner or st.st_mode & 0o022:
            return None
        fd = os.open(base / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as fh:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_uid != owner:
                return None
            data = json.loads(fh.read(MAX_STATUS_BYTES))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def find_status(entry: MountEntry) -> Found:
    """The snapshot of one mount, read only from its own user's files (see _read_trusted).

    Another user's mount is listed without details: its files are private to its user, and
    root sees everything.
    """
    owner = os.getuid() if entry.uid is None else entry.uid
    if os.getuid() not in (0, owner):
        return Found(entry, None, f"mounted by {_user_name(owner)}; details for that user and root")
    name = f"{mount_key(entry.mountpoint)}.json"
    for base in candidate_dirs():
        data = _read_trusted(base, name, owner)
        if data is None or data.get("mountpoint") != entry.mountpoint:
            continue
        path, control = base / name, base / f"{mount_key(entry.mountpoint)}.sock"
        try:
            pid = int(data.get("pid", 0))
        except (TypeError, ValueError):
            continue
        if pid and not _pid_alive(pid):
            return Found(entry, data, "the kbfs process has ended (stale status)", path)
        return Found(entry, data, None, path, control)
    try:
        os.stat(entry.mountpoint)
    except OSError as exc:
        if exc.errno == errno.ENOTCONN:
            return Found(
                entry,
                None,
                f"the kbfs process is gone; clear it with: fusermount3 -u {entry.mountpoint}",
            )
    return Found(entry, None, "no status published (kbfs older than this command?)")


# ---------------------------------------------------------------------------- presenting


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def _ago(seconds: float) -> str:
    seconds = int(max(0, seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def format_found(found: Found, now: float | None = None) -> str:
    """A few readable lines for one mount."""
    now = time.time() if now is None else now
    lines = [f"{found.entry.mountpoint}"]
    data = found.status
    if data is None:
        lines.append(f"  {found.problem}")
        return "\n".join(lines)
    vfs = data.get("vfs") or {}
    lines.append(
        f"  server   {vfs.get('server') or data.get('url')} as {data.get('user')}"
        f"{'  (read-only)' if data.get('read_only') else ''}"
        f"{'  (write-back: close() returns before the upload)' if data.get('writeback') else ''}"
    )
    kanboard = vfs.get("kanboard") or {}
    if kanboard:
        rules = kanboard.get("rules") or []
        lines.append(f"  kanboard {kanboard.get('version')}: {rules[0] if rules else ''}")
        lines.extend(f"    {rule}" for rule in rules[1:])
        if kanboard.get("second_waits"):
            lines.append(
                f"    {kanboard['second_waits']} upload(s) waited for the server's next second"
                f" ({kanboard.get('seconds_waited', 0)} s)"
            )
        if kanboard.get("unremovable"):
            lines.append(
                f"    {kanboard['unremovable']} superseded file(s) left on the server: their"
                " stored bytes are missing, or another file shares them"
            )
    lines.append(f"  process  pid {data.get('pid')}, up {_ago(now - data.get('started', now))}")
    if found.problem:
        lines.append(f"  WARNING  {found.problem}")
    pending = vfs.get("pending_uploads") or []
    waiting = [p for p in pending if not p.get("local_only")]
    refused = [p for p in pending if p.get("refused")]
    scratch = [p for p in pending if p.get("local_only") and not p.get("refused")]
    if waiting:
        lines.append(f"  NOT UPLOADED: {len(waiting)} file(s) exist only on this machine:")
        for p in waiting:
            why = p.get("incomplete") or p.get("last_error")
            error = f"  ({why})" if why else ""
            lines.append(f"    {p.get('path')}  {_size(p.get('size', 0))}{error}")
            lines.append(f"      bytes in {p.get('spool_file')}")
    else:
        lines.append("  uploads  everything written has reached the server")
    if refused:
        lines.append(
            f"  REFUSED: {len(refused)} file(s) the server will not take, kept in this"
            " mount only (rename or remove them):"
        )
        for p in refused:
            lines.append(
                f"    {p.get('path')}  {_size(p.get('size', 0))}  (local-only: {p['refused']})"
            )
    if scratch:
        lines.append(f"  local    {len(scratch)} scratch file(s) kept only in this mount")
    for r in vfs.get("recovered") or []:
        if not isinstance(r, dict):
            lines.append(f"  recovered  {r}")
            continue
        size = f"  {_size(r['size'])}" if isinstance(r.get("size"), int) else ""
        reason = f"  ({r['reason']})" if r.get("reason") else ""
        lines.append(f"  recovered  {r.get('path', r.get('name'))}{size}{reason}")
        lines.append(f"      bytes in {r.get('file')}")
    cache = vfs.get("cache") or {}
    if cache:
        lines.append(
            f"  cache    {_size(cache.get('bytes', 0))} of {_size(cache.get('limit', 0))}"
            f" in {cache.get('dir')} ({cache.get('hits', 0)} hits,"
            f" {cache.get('downloads', 0)} downloads)"
        )
    counters = vfs.get("counters") or {}
    if counters:
        lines.append(
            f"  activity {counters.get('uploads', 0)} uploads"
            f" ({counters.get('upload_failures', 0)} failed), {counters.get('removals', 0)}"
            f" removals, {counters.get('http_requests', 0)} HTTP requests"
        )
        if "inodes" in counters:
            lines.append(
                f"  memory   {counters['inodes']} inodes"
                f" ({counters.get('reclaimed', 0)} freed since mounted)"
                + (
                    f", {counters['records']} listed files"
                    f" ({counters.get('listings_dropped', 0)} unused listings dropped)"
                    if "records" in counters
                    else ""
                )
            )
    errors = data.get("errors") or {}
    if errors:
        shown = ", ".join(f"{op} {n}" for op, n in sorted(errors.items(), key=lambda e: -e[1]))
        lines.append(f"  errors   answered to the kernel: {shown}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- control socket


class ControlError(Exception):
    """The daemon could not be asked, or answered with an error (the message says which)."""


def ask_daemon(  # type: ignore[no-untyped-def]
    sock_path: str | os.PathLike[str],
    request: dict[str, Any],
    timeout: float = 120,
    owner: int | None = None,
):
    """One JSON line to the mount daemon, one JSON line back.

    With ``owner``, the process listening must run as that user (SO_PEERCRED): an answer from
    anyone else (``removed 42 file(s)`` while nothing was removed) is never believed.
    """
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(os.fspath(sock_path))
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            peer = struct.unpack("3i", creds)[1]
            if owner is not None and peer != owner:
                raise ControlError(
                    f"{sock_path} is answered by {_user_name(peer)}, not by the mount's user"
                    f" ({_user_name(owner)}); not asking it"
                )
            sock.sendall(json.dumps(request).encode() + b"\n")
            chunks: list[bytes] = []
            while not chunks or not chunks[-1].endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
    except OSError as exc:
        raise ControlError(f"cannot reach the kbfs process ({exc.strerror or exc})") from None
    try:
        answer = json.loads(b"".join(chunks) or b"null")
    except ValueError:
        raise ControlError("the kbfs process sent a garbled answer") from None
    if not isinstance(answer, dict):
        raise ControlError("the kbfs process closed the connection without answering")
    if answer.get("error"):
        raise ControlError(str(answer["error"]))
    return answer


def refresh(found: Found) -> None:
    """Replace a trusted snapshot with a fresher one from its process, if it answers."""
    if found.control is not None and found.problem is None:
        with contextlib.suppress(ControlError):
            found.status = ask_daemon(
                found.control, {"op": "status"}, timeout=5, owner=found.entry.uid
            )


def iter_found() -> Iterator[Found]:
    for entry in kbfs_mounts():
        yield find_status(entry)
