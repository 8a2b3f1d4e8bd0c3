"""kbfs benchmark (issue 5): real mounts, measured side by side with their baselines.

Usage::

    .venv/bin/python bench/run.py [--url URL --token-file F] [--quick] [--keep-alive]

Without ``--url`` it starts the built-in server (``python -m kbfs.devserver``) on loopback in a
temporary directory, with ``Connection: close`` like PHP's built-in server (``--keep-alive`` to
try the other way). Every number is the median of several runs; the table it prints compares
each kbfs operation with a baseline measured in the same run. See bench/README.md.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ctypes
import importlib.util
import json
import mmap
import os
import re
import secrets
import shlex
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

MiB = 1 << 20
ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Sizes:
    runs: int
    big: int  # rows 1-4: the "64 MiB" file
    many: int  # row 5: files in one task
    tree_projects: int  # row 6
    tree_tasks: int
    par_n: int  # row 7: parallel readers
    par_size: int
    rss_size: int  # row 8
    rss_runs: int


FULL = Sizes(
    runs=5,
    big=64 * MiB,
    many=10_000,
    tree_projects=20,
    tree_tasks=50,
    par_n=8,
    par_size=8 * MiB,
    rss_size=256 * MiB,
    rss_runs=2,
)
QUICK = Sizes(
    runs=2,
    big=4 * MiB,
    many=500,
    tree_projects=3,
    tree_tasks=4,
    par_n=8,
    par_size=1 * MiB,
    rss_size=16 * MiB,
    rss_runs=1,
)


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def fmt_bytes(n: int) -> str:
    return f"{n / MiB:.1f} MiB".replace(".0 ", " ") if n >= MiB else f"{n / 1024:.0f} KiB"


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


# ---------------------------------------------------------------------------------- the server


class RpcError(Exception):
    pass


class Server:
    """A Kanboard endpoint: the built-in server we start, or an external one (``--url``)."""

    def __init__(self, url: str, token: str, token_file: Path) -> None:
        self.url = url
        self.token = token
        self.token_file = token_file
        self.proc: subprocess.Popen[str] | None = None
        self.http = httpx.Client(timeout=600, auth=("jsonrpc", token))
        self._id = 0
        self.has_control = self._probe_control()

    @classmethod
    def start(cls, workdir: Path, keep_alive: bool) -> Server:
        """``python -m kbfs.devserver`` on a free loopback port, data under ``workdir``."""
        workdir.mkdir(parents=True, exist_ok=True)
        token = "kbdev-bench-" + secrets.token_hex(16)
        token_file = workdir / "token"
        fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(token + "\n")
        args = [
            sys.executable, "-m", "kbfs.devserver",
            "--listen", "127.0.0.1:0",
            "--data", str(workdir / "data"),
            "--token-file", str(token_file),
        ]  # fmt: skip
        if keep_alive:
            args.append("--keep-alive")
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, cwd=workdir)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        prefix = "kbfs devserver listening on "
        if not line.startswith(prefix):
            proc.terminate()
            proc.wait(10)
            raise RuntimeError(f"the devserver did not start: {line!r}")
        server = cls(line[len(prefix) :].strip(), token, token_file)
        server.proc = proc
        return server

    def stop(self) -> None:
        self.http.close()
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self.proc = None

    # -- JSON-RPC

    def rpc(self, method: str, params: Any = None) -> Any:
        self._id += 1
        body: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": self._id}
        if params is not None:
            body["params"] = params
        resp = self.http.post(self.url, content=json.dumps(body).encode())
        payload = resp.json() if resp.status_code == 200 else None
        if not isinstance(payload, dict) or "error" in payload:
            raise RpcError(f"{method}: HTTP {resp.status_code}: {resp.text[:200]!r}")
        return payload["result"]

    def batch(self, calls: Sequence[tuple[str, Any]], chunk: int = 1000) -> list[Any]:
        results: list[Any] = []
        for start in range(0, len(calls), chunk):
            part = calls[start : start + chunk]
            body = []
            for method, params in part:
                self._id += 1
                body.append({"jsonrpc": "2.0", "method": method, "id": self._id, "params": params})
            resp = self.http.post(self.url, content=json.dumps(body).encode())
            payload = resp.json()
            if resp.status_code != 200 or not isinstance(payload, list):
                raise RpcError(f"batch: HTTP {resp.status_code}: {resp.text[:200]!r}")
            by_id = {item.get("id"): item for item in payload}
            first = self._id - len(part) + 1
            for i in range(len(part)):
                item = by_id.get(first + i, {})
                if "error" in item or item.get("result") in (None, False):
                    raise RpcError(f"batch item {part[i][0]}: {item!r}"[:300])
                results.append(item["result"])
        return results

    def project(self, name: str) -> int:
        return int(self.rpc("createProject", {"name": name}))

    def task(self, project_id: int, title: str) -> int:
        return int(self.rpc("createTask", {"project_id": project_id, "title": title}))

    def upload(self, project_id: int, task_id: int, name: str, data: bytes) -> int:
        params = {
            "project_id": project_id,
            "task_id": task_id,
            "filename": name,
            "blob": base64.b64encode(data).decode(),
        }
        result = self.rpc("createTaskFile", params)
        if not result:
            raise RpcError(f"createTaskFile {name}: {result!r}")
        return int(result)

    # -- the devserver's control API (absent on a real Kanboard)

    def _control(self, name: str, data: dict[str, Any] | None = None) -> Any:
        base = self.url.rsplit("/", 1)[0]
        url = f"{base}/_devserver/{name}"
        resp = self.http.get(url) if data is None else self.http.post(url, json=data)
        resp.raise_for_status()
        return resp.json()

    def _probe_control(self) -> bool:
        try:
            return "http_requests" in self._control("stats")
        except (httpx.HTTPError, ValueError):
            return False

    def requests(self) -> int | None:
        return int(self._control("stats")["http_requests"]) if self.has_control else None

    def set_latency(self, seconds: float) -> bool:
        if not self.has_control:
            return False
        self._control("config", {"latency": seconds})
        return True


# ---------------------------------------------------------------------------------- mounts


def _fusermount(*args: str) -> None:
    subprocess.run(["fusermount3", *args], check=False, capture_output=True)


@dataclass
class Mount:
    path: Path
    proc: subprocess.Popen[bytes]
    log: Path

    def status(self, field_name: str) -> int:
        """A ``/proc/<pid>/status`` memory field (VmRSS, VmHWM) in bytes."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) * 1024
        raise KeyError(field_name)

    def p(self, *parts: object) -> Path:
        return self.path.joinpath(*(str(x) for x in parts))


class Mounter:
    """Starts ``kbfs mount -f`` daemons and guarantees they are unmounted and gone."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.n = 0
        self.live: list[Mount] = []

    def mount(self, server: Server, cache_dir: Path | None = None) -> Mount:
        self.n += 1
        base = self.workdir / f"mount{self.n}"
        mnt = base / "mnt"
        mnt.mkdir(parents=True)
        cache = cache_dir or base / "cache"
        log_file = base / "kbfs.log"
        cmd = [
            sys.executable, "-m", "kbfs", "mount", server.url, str(mnt),
            "--token-file", str(server.token_file), "-f", "--log-file", str(log_file),
            "-o", f"cache_dir={cache},state_dir={base / 'state'}",
        ]  # fmt: skip
        with (base / "stderr").open("wb") as err_file:
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err_file, cwd=base)
        m = Mount(mnt, proc, log_file)
        self.live.append(m)
        deadline = time.monotonic() + 30
        while not os.path.ismount(mnt):
            if proc.poll() is not None:
                err = (base / "stderr").read_text(errors="replace")
                raise RuntimeError(f"kbfs mount exited {proc.returncode}: {err.strip()}")
            if time.monotonic() > deadline:
                raise RuntimeError("the mount did not come up within 30 s")
            time.sleep(0.01)
        return m

    def unmount(self, m: Mount) -> None:
        if os.path.ismount(m.path):
            _fusermount("-u", str(m.path))
        try:
            m.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            _fusermount("-uz", str(m.path))
            m.proc.kill()
            m.proc.wait(timeout=10)
        if os.path.ismount(m.path):
            _fusermount("-uz", str(m.path))
        if m in self.live:
            self.live.remove(m)
        text = m.log.read_text(errors="replace") if m.log.exists() else ""
        if "ERROR" in text or "Traceback" in text:
            log(f"the daemon of {m.path} logged errors:\n{text[-2000:]}")

    @contextlib.contextmanager
    def mounted(self, server: Server, cache_dir: Path | None = None) -> Iterator[Mount]:
        m = self.mount(server, cache_dir)
        try:
            yield m
        finally:
            self.unmount(m)

    def close(self) -> None:
        for m in list(self.live):
            try:
                self.unmount(m)
            except Exception as exc:  # keep unmounting the others
                log(f"unmounting {m.path}: {exc}")


# ---------------------------------------------------------------------------------- helpers


class Caches:
    """Drops the kernel page cache (root only); remembers whether it could."""

    def __init__(self) -> None:
        self.ok = True

    def drop(self) -> None:
        if not self.ok:
            return
        os.sync()
        try:
            Path("/proc/sys/vm/drop_caches").write_text("3\n")
        except OSError:
            self.ok = False
            log("cannot drop the page cache (not root?): 'cold' means a fresh cache_dir only")


def timed(cmd: Sequence[str | os.PathLike[str]], check: bool = True) -> float:
    started = time.perf_counter()
    subprocess.run([str(c) for c in cmd], stdout=subprocess.DEVNULL, check=check)
    return time.perf_counter() - started


def timed_sh(script: str) -> tuple[float, str]:
    """Run a shell pipeline; (seconds, its stdout). Fails on a non-zero exit."""
    started = time.perf_counter()
    proc = subprocess.run(["sh", "-c", script], capture_output=True, check=False)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"pipeline failed ({proc.returncode}): {proc.stderr[-300:]!r}")
    return elapsed, proc.stdout.decode(errors="replace")


def timed_parallel(cmds: Sequence[Sequence[str | os.PathLike[str]]]) -> float:
    started = time.perf_counter()
    procs = [subprocess.Popen([str(c) for c in cmd], stdout=subprocess.DEVNULL) for cmd in cmds]
    codes = [p.wait() for p in procs]
    elapsed = time.perf_counter() - started
    if any(codes):
        raise RuntimeError(f"parallel commands failed: {codes}")
    return elapsed


def write_random(path: Path, size: int) -> None:
    with path.open("wb") as fh:
        left = size
        while left:
            n = min(left, 8 * MiB)
            fh.write(os.urandom(n))
            left -= n


def same_content(a: Path, b: Path) -> bool:
    return subprocess.run(["cmp", "-s", str(a), str(b)], check=False).returncode == 0


def page_cache_folios(path: Path) -> str | None:
    """How the kernel holds ``path`` in its page cache, e.g. ``16384 x 4 KiB``, ``32 x 2 MiB``.

    A cached read costs per folio, so the folio size explains row 2: Linux gives a FUSE file
    4 KiB pages only (until the upstream change "fuse: enable large folios (if writeback cache
    is unused)"), ext4 gives up to 2 MiB. Read from /proc/self/pagemap and /proc/kpageflags
    (root only); None where that is not possible.
    """
    page = os.sysconf("SC_PAGE_SIZE")
    size = path.stat().st_size
    pages = (size + page - 1) // page
    if not pages:
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [
        ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long
    ]  # fmt: skip
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    fd = os.open(path, os.O_RDONLY)
    try:
        base = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if base in (None, ctypes.c_void_p(-1).value):
            return None
        try:
            view = (ctypes.c_char * size).from_address(base)
            for i in range(pages):
                view[i * page]  # map each page (they are in the page cache already)
            with open("/proc/self/pagemap", "rb") as pm, open("/proc/kpageflags", "rb") as kf:
                pm.seek(base // page * 8)
                entries = struct.unpack(f"{pages}Q", pm.read(pages * 8))
                folios: Counter[int] = Counter()
                run = 0
                for entry in entries:
                    kf.seek((entry & ((1 << 55) - 1)) * 8)
                    (flags,) = struct.unpack("Q", kf.read(8))
                    if flags & (1 << 16):  # KPF_COMPOUND_TAIL: same folio as the page before
                        run += 1
                        continue
                    if run:
                        folios[run] += 1
                    run = 1
                folios[run] += 1
        finally:
            libc.munmap(base, size)
    except OSError:
        return None
    finally:
        os.close(fd)
    return ", ".join(f"{n} x {fmt_bytes(k * page)}" for k, n in sorted(folios.items()))


# ---------------------------------------------------------------------------------- results


@dataclass
class Row:
    key: str
    what: str
    kbfs: str
    reference: str
    ratio: float | None
    target: float | None
    note: str = ""

    @property
    def verdict(self) -> str:
        if self.ratio is None or self.target is None:
            return "-"
        return "ok" if self.ratio <= self.target else "MISSED"


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, row: Row) -> None:
        self.rows.append(row)
        ratio = "-" if row.ratio is None else f"{row.ratio:.2f}"
        log(f"row {row.key}: {row.kbfs} vs {row.reference}: {ratio} ({row.verdict})")

    def table(self) -> str:
        lines = [
            "| # | measurement | kbfs | baseline | ratio | target | verdict |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            ratio = "-" if r.ratio is None else f"{r.ratio:.2f}"
            target = "-" if r.target is None else f"≤ {r.target:g}"
            lines.append(
                f"| {r.key} | {r.what} | {r.kbfs} | {r.reference} | {ratio} | {target} "
                f"| {r.verdict} |"
            )
        return "\n".join(lines)


def secs(t: float) -> str:
    return f"{t * 1000:.0f} ms" if t < 10 else f"{t:.1f} s"


# ---------------------------------------------------------------------------------- benchmark


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.sizes = QUICK if args.quick else FULL
        self.workdir = workdir
        self.local = workdir / "local"
        self.local.mkdir()
        self.mounter = Mounter(workdir / "mounts")
        self.caches = Caches()
        self.report = Report()
        self.servers: list[Server] = []
        self.created_projects: list[tuple[Server, int]] = []
        self.tag = secrets.token_hex(3)
        self.server = self._server("main")
        self.curlrc = workdir / "curlrc"
        fd = os.open(self.curlrc, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(f'user = "jsonrpc:{self.server.token}"\nsilent\nshow-error\n')

    # -- set-up

    def _server(self, name: str) -> Server:
        if self.args.url:
            if self.servers:
                return self.servers[0]
            token_file = Path(self.args.token_file).expanduser()
            token = token_file.read_text().strip()
            server = Server(self.args.url, token, token_file)
            self.servers.append(server)
            return server
        server = Server.start(self.workdir / f"server-{name}", self.args.keep_alive)
        self.servers.append(server)
        return server

    def _project(self, server: Server, name: str) -> int:
        pid = server.project(f"kbfs-bench-{self.tag}-{name}")
        self.created_projects.append((server, pid))
        return pid

    def close(self) -> None:
        self.mounter.close()
        if self.args.url:
            for server, pid in self.created_projects:
                with contextlib.suppress(Exception):
                    server.rpc("removeProject", {"project_id": pid})
        for server in self.servers:
            server.stop()

    def curl(self, body: str, tail: str) -> str:
        """A curl command line (auth from the 0600 config file, never in argv)."""
        return (
            f"curl -K {shlex.quote(str(self.curlrc))} -d {shlex.quote(body)} "
            f"{shlex.quote(self.server.url)} {tail}"
        )

    def download_pipeline(self, file_id: int, url: str | None = None) -> str:
        body = json.dumps(
            {
                "jsonrpc": "2.0",
                "method": "downloadTaskFile",
                "id": 1,
                "params": {"file_id": file_id},
            }
        )
        # The answer is {"jsonrpc":"2.0","result":"<base64>","id":1}: field 8 between quotes.
        target = shlex.quote(url or self.server.url)
        return (
            f"curl -K {shlex.quote(str(self.curlrc))} -d {shlex.quote(body)} {target}"
            " | cut -d'\"' -f8 | base64 -d"
        )

    def upload_pipeline(self, project_id: int, task_id: int, name: str, source: Path) -> str:
        head = (
            '{"jsonrpc":"2.0","method":"createTaskFile","id":1,"params":'
            f'{{"project_id":{project_id},"task_id":{task_id},"filename":"{name}","blob":"'
        )
        return (
            f"{{ printf '%s' {shlex.quote(head)}; base64 -w0 {shlex.quote(str(source))};"
            " printf '\"}}'; } | "
            f"curl -K {shlex.quote(str(self.curlrc))} --data-binary @- -H 'Expect:' "
            f"{shlex.quote(self.server.url)}"
        )

    def naive_download(self, file_id: int) -> float:
        """One httpx POST, json.loads, b64decode (a fresh connection, like the others)."""
        body = json.dumps(
            {
                "jsonrpc": "2.0",
                "method": "downloadTaskFile",
                "id": 1,
                "params": {"file_id": file_id},
            }
        ).encode()
        started = time.perf_counter()
        with httpx.Client(timeout=600, auth=("jsonrpc", self.server.token)) as client:
            resp = client.post(self.server.url, content=body)
        data = base64.b64decode(json.loads(resp.content)["result"])
        elapsed = time.perf_counter() - started
        if not data:
            raise RuntimeError("naive download returned nothing")
        return elapsed

    # -- rows 1-3: reading one big file

    def rows_read(self) -> None:
        s = self.sizes
        server = self.server
        big = self.local / "big.bin"
        write_random(big, s.big)
        pid = self._project(server, "read")
        tid = server.task(pid, "read")
        fid = server.upload(pid, tid, "big.bin", big.read_bytes())
        # Check the ceiling pipeline once: it must really produce the file.
        out = self.workdir / "ceiling.out"
        timed_sh(f"{self.download_pipeline(fid)} > {shlex.quote(str(out))}")
        if not same_content(out, big):
            raise RuntimeError("the download ceiling pipeline does not produce the file")
        out.unlink()
        size = fmt_bytes(s.big)
        cold: list[float] = []
        ceiling: list[float] = []
        naive: list[float] = []
        warm: list[float] = []
        local: list[float] = []
        remount: list[float] = []
        folios: tuple[str | None, str | None] = (None, None)
        first: list[float] = []
        for i in range(s.runs):
            log(f"rows 1-3: run {i + 1}/{s.runs}")
            self.caches.drop()
            ceiling.append(timed_sh(f"{self.download_pipeline(fid)} > /dev/null")[0])
            self.caches.drop()
            naive.append(self.naive_download(fid))
            cache = self.workdir / f"read-cache-{i}"
            with self.mounter.mounted(server, cache) as m:
                path = m.p("projects", pid, "tasks", tid, "big.bin")
                path.stat()  # listings are not part of the read
                self.caches.drop()
                cold.append(timed(["cat", path]))
                warm.append(timed(["cat", path]))
                timed(["cat", big])  # the local copy is warm too
                local.append(timed(["cat", big]))
                if i == 0:
                    if not same_content(path, big):
                        raise RuntimeError("the mount served different bytes")
                    folios = (page_cache_folios(path), page_cache_folios(big))
            with self.mounter.mounted(server, cache) as m:
                path = m.p("projects", pid, "tasks", tid, "big.bin")
                path.stat()
                remount.append(timed(["cat", path]))
            with self.mounter.mounted(server) as m:  # an empty cache: the file is cold again
                path = m.p("projects", pid, "tasks", tid, "big.bin")
                path.stat()
                self.caches.drop()
                timed(["head", "-c", "0", "/dev/null"])  # head itself is not what is measured
                first.append(timed(["head", "-c", "100", path]))
        c, ce, nv = median(cold), median(ceiling), median(naive)
        self.report.add(
            Row(
                "1a", f"cold `cat` {size} vs ceiling pipeline (curl｜cut｜base64 -d)",
                secs(c), secs(ce), c / ce, 1.25,
            )
        )  # fmt: skip
        self.report.add(
            Row(
                "1b", f"cold `cat` {size} vs naive Python client (httpx, json, b64decode)",
                secs(c), secs(nv), c / nv, 0.8,
            )
        )  # fmt: skip
        f = median(first)
        self.report.add(
            Row("1c", f"first 100 bytes of a cold {size} file (`head -c 100`) vs cold `cat`",
                secs(f), secs(c), f / c, 0.1)
        )  # fmt: skip
        w, lo = median(warm), median(local)
        note = ""
        if folios[0] and folios[1]:
            note = f"page cache folios: kbfs file {folios[0]}; local copy {folios[1]}"
        self.report.add(
            Row("2", f"warm `cat` {size} (fresh open) vs `cat` of a local copy",
                secs(w), secs(lo), w / lo, 1.2, note=note)
        )  # fmt: skip
        r = median(remount)
        self.report.add(
            Row("3", f"`cat` {size} after remount (disk cache) vs local copy",
                secs(r), secs(lo), r / lo, 5)
        )  # fmt: skip

    # -- row 4: writing one big file

    def row_write(self) -> None:
        s = self.sizes
        server = self.server
        big = self.local / "big.bin"
        pid = self._project(server, "write")
        tid = server.task(pid, "write")
        kbfs: list[float] = []
        ceiling: list[float] = []
        with self.mounter.mounted(server) as m:
            task_dir = m.p("projects", pid, "tasks", tid)
            os.listdir(task_dir)
            for i in range(s.runs):
                log(f"row 4: run {i + 1}/{s.runs}")
                timed(["cat", big])  # source warm for both
                t, out = timed_sh(self.upload_pipeline(pid, tid, f"ceiling-{i}.bin", big))
                if not re.search(r'"result":\s*\d+', out):
                    raise RuntimeError(f"upload ceiling failed: {out[:200]!r}")
                ceiling.append(t)
                kbfs.append(timed(["cp", big, task_dir / f"kbfs-{i}.bin"]))
            files = {f["name"]: f for f in server.rpc("getAllTaskFiles", {"task_id": tid})}
            for i in range(s.runs):
                if int(files[f"kbfs-{i}.bin"]["size"]) != s.big:
                    raise RuntimeError("the upload through the mount has the wrong size")
        k, ce = median(kbfs), median(ceiling)
        self.report.add(
            Row("4", f"`cp` {fmt_bytes(s.big)} into a task vs upload ceiling pipeline",
                secs(k), secs(ce), k / ce, 1.25)
        )  # fmt: skip

    # -- row 5: a big directory

    def row_listing(self) -> None:
        s = self.sizes
        server = self.server
        pid = self._project(server, "many")
        tid = server.task(pid, "many")
        log(f"row 5: creating {s.many} files")
        server.batch(
            [
                (
                    "createTaskFile",
                    {
                        "project_id": pid,
                        "task_id": tid,
                        "filename": f"file-{i:05d}.txt",
                        "blob": base64.b64encode(f"content {i}\n".encode()).decode(),
                    },
                )
                for i in range(s.many)
            ]
        )
        body = json.dumps(
            {"jsonrpc": "2.0", "method": "getAllTaskFiles", "id": 1, "params": {"task_id": tid}}
        )
        raw_cmd = self.curl(body, "-o /dev/null")
        local_dir = self.local / "many"
        local_dir.mkdir()
        for i in range(s.many):
            (local_dir / f"file-{i:05d}.txt").write_bytes(f"content {i}\n".encode())
        ls: list[float] = []
        raw: list[float] = []
        local: list[float] = []
        requests: list[int] = []
        for i in range(s.runs):
            log(f"row 5: run {i + 1}/{s.runs}")
            raw.append(timed_sh(raw_cmd)[0])
            local.append(timed(["ls", "-l", local_dir]))
            with self.mounter.mounted(server) as m:
                task_dir = m.p("projects", pid, "tasks", tid)
                task_dir.stat()  # path lookups are not part of the listing
                before = server.requests()
                ls.append(timed(["ls", "-l", task_dir]))
                after = server.requests()
                if before is not None and after is not None:
                    requests.append(after - before)
                if i == 0:
                    n = len(os.listdir(task_dir))
                    if n != s.many:
                        raise RuntimeError(f"the mount lists {n} files, expected {s.many}")
        k, r = median(ls), median(raw)
        reqs = f", {median(requests):g} HTTP req" if requests else ""
        self.report.add(
            Row("5", f"`ls -l` of a {s.many}-file task vs one raw getAllTaskFiles (curl)",
                secs(k) + reqs, secs(r), k / r, 2.0,
                note=f"local `ls -l` of {s.many} files: {secs(median(local))}")
        )  # fmt: skip

    # -- row 6: walking a tree

    def row_find(self) -> None:
        s = self.sizes
        server = self._server("tree")
        log(f"row 6: creating a {s.tree_projects}x{s.tree_tasks} tree")
        projects = [self._project(server, f"tree-{p}") for p in range(s.tree_projects)]
        tasks = server.batch(
            [
                ("createTask", {"project_id": p, "title": f"task {t}"})
                for p in projects
                for t in range(s.tree_tasks)
            ]
        )
        calls: list[tuple[str, Any]] = []
        for n, tid in enumerate(tasks):
            pid = projects[n // s.tree_tasks]
            blob = base64.b64encode(f"task {tid}\n".encode()).decode()
            calls.append(
                (
                    "createTaskFile",
                    {"project_id": pid, "task_id": tid, "filename": "notes.txt", "blob": blob},
                )
            )
        for pid in projects:
            blob = base64.b64encode(b"project file\n").decode()
            calls.append(
                ("createProjectFile", {"project_id": pid, "filename": "p.txt", "blob": blob})
            )
        server.batch(calls)
        latency = server.set_latency(0.020)
        walls: list[float] = []
        requests: list[int] = []
        runs = max(1, min(s.runs, 3))
        try:
            for i in range(runs):
                log(f"row 6: run {i + 1}/{runs}")
                with self.mounter.mounted(server) as m:
                    before = server.requests()
                    proc_t = timed(["find", m.path])
                    after = server.requests()
                    walls.append(proc_t)
                    if before is not None and after is not None:
                        requests.append(after - before)
        finally:
            server.set_latency(0)
        # projects/ + per project: <id>/, files/, tasks/ and one directory per task
        dirs = 1 + s.tree_projects * (3 + s.tree_tasks)
        naive_requests = 1 + s.tree_projects * 2 + s.tree_projects * s.tree_tasks
        req = f"{median(requests):g} HTTP req, " if requests else ""
        lat = "20 ms latency" if latency else "no latency injected (external server)"
        self.report.add(
            Row("6", f"`find` over {s.tree_projects}x{s.tree_tasks} tree ({dirs} dirs), {lat}",
                f"{req}{secs(median(walls))}",
                f"one call per directory: {naive_requests} req ≈ "
                f"{secs(naive_requests * 0.020) if latency else '-'}",
                None, None)
        )  # fmt: skip

    # -- row 7: parallel cold reads

    def row_parallel(self) -> None:
        s = self.sizes
        server = self.server
        pid = self._project(server, "parallel")
        tid = server.task(pid, "parallel")
        ids = []
        for n in range(s.par_n):
            data = os.urandom(s.par_size)
            ids.append(server.upload(pid, tid, f"par-{n}.bin", data))
        latency = server.set_latency(0.050)
        single: list[float] = []
        parallel: list[float] = []
        c_single: list[float] = []
        c_parallel: list[float] = []
        try:
            for i in range(s.runs):
                log(f"row 7: run {i + 1}/{s.runs}")
                pipes = [["sh", "-c", f"{self.download_pipeline(f)} > /dev/null"] for f in ids]
                self.caches.drop()
                c_single.append(timed_parallel(pipes[:1]))
                self.caches.drop()
                c_parallel.append(timed_parallel(pipes))
                with self.mounter.mounted(server) as m:
                    paths = [
                        m.p("projects", pid, "tasks", tid, f"par-{n}.bin") for n in range(s.par_n)
                    ]
                    for p in paths:
                        p.stat()
                    self.caches.drop()
                    single.append(timed_parallel([["cat", paths[0]]]))
                with self.mounter.mounted(server) as m:
                    paths = [
                        m.p("projects", pid, "tasks", tid, f"par-{n}.bin") for n in range(s.par_n)
                    ]
                    for p in paths:
                        p.stat()
                    self.caches.drop()
                    parallel.append(timed_parallel([["cat", p] for p in paths]))
        finally:
            server.set_latency(0)
        one, many = median(single), median(parallel)
        lat = "50 ms latency" if latency else "no latency injected"
        self.report.add(
            Row("7", f"{s.par_n} parallel cold reads of {fmt_bytes(s.par_size)} vs one, {lat}",
                secs(many), secs(one), many / one, 1.5,
                note=f"same for the ceiling pipeline: {secs(median(c_parallel))} vs "
                f"{secs(median(c_single))} = {median(c_parallel) / median(c_single):.2f}")
        )  # fmt: skip

    # -- row 8: memory

    def _client_rss(self, mode: str, path: Path, pid: int, tid: int, file_id: int) -> int:
        """Peak RSS (VmHWM) of the official ``kanboard`` client doing one transfer."""
        script = CLIENT_SCRIPT
        env = {
            **os.environ,
            "BENCH_URL": self.server.url,
            "BENCH_TOKEN_FILE": str(self.server.token_file),
            "BENCH_MODE": mode,
            "BENCH_PATH": str(path),
            "BENCH_PROJECT": str(pid),
            "BENCH_TASK": str(tid),
            "BENCH_FILE": str(file_id),
        }
        proc = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            raise RuntimeError(f"kanboard client failed: {proc.stderr[-500:]}")
        return int(proc.stdout.split()[0])

    def row_memory(self) -> None:
        s = self.sizes
        server = self.server
        src = self.local / "rss.bin"
        write_random(src, s.rss_size)
        pid = self._project(server, "rss")
        tid = server.task(pid, "rss")
        up_peak: list[int] = []
        down_peak: list[int] = []
        idle: list[int] = []
        file_id = 0
        for i in range(s.rss_runs):
            log(f"row 8: run {i + 1}/{s.rss_runs}")
            with self.mounter.mounted(server) as m:
                task_dir = m.p("projects", pid, "tasks", tid)
                os.listdir(task_dir)
                idle.append(m.status("VmRSS"))
                subprocess.run(["cp", src, task_dir / f"up-{i}.bin"], check=True)
                up_peak.append(m.status("VmHWM"))
            with self.mounter.mounted(server) as m:
                path = m.p("projects", pid, "tasks", tid, f"up-{i}.bin")
                path.stat()
                idle.append(m.status("VmRSS"))
                subprocess.run(["cat", path], check=True, stdout=subprocess.DEVNULL)
                down_peak.append(m.status("VmHWM"))
                if i == 0 and not same_content(path, src):
                    raise RuntimeError("256 MiB round trip changed the bytes")
        for f in server.rpc("getAllTaskFiles", {"task_id": tid}):
            if f["name"] == "up-0.bin":
                file_id = int(f["id"])
        size = fmt_bytes(s.rss_size)
        base = median(idle)
        up, down = median(up_peak), median(down_peak)
        try:
            import kanboard  # noqa: F401

            out = self.local / "client-down.bin"
            c_up = self._client_rss("up", src, pid, tid, 0)
            c_down = self._client_rss("down", out, pid, tid, file_id)
            out.unlink(missing_ok=True)
            client_up, client_down = fmt_bytes(c_up), fmt_bytes(c_down)
        except ImportError:
            client_up = client_down = "n/a (pip install kanboard)"
        for key, label, peak, client in (
            ("8a", "up (`cp` in)", up, client_up),
            ("8b", "down (`cat`)", down, client_down),
        ):
            self.report.add(
                Row(key, f"daemon peak RSS, {size} {label}; ratio = (peak-idle)/64 MiB",
                    f"peak {fmt_bytes(int(peak))} (idle {fmt_bytes(int(base))})",
                    f"`kanboard` client peak {client}",
                    (peak - base) / (64 * MiB), 1.0)
            )  # fmt: skip

    # -- all

    def run(self) -> None:
        s = self.sizes
        log(
            f"{'quick' if self.args.quick else 'full'} run: {s.runs} runs per row, "
            f"server {self.server.url} "
            f"({'keep-alive' if self.args.keep_alive else 'Connection: close'})"
        )
        steps: list[tuple[str, Callable[[], None]]] = [
            ("123", self.rows_read),
            ("4", self.row_write),
            ("5", self.row_listing),
            ("6", self.row_find),
            ("7", self.row_parallel),
            ("8", self.row_memory),
        ]
        for rows, step in steps:
            if not self.args.only or set(rows) & set(self.args.only):
                step()


CLIENT_SCRIPT = r"""
import base64, os, sys
import kanboard

def status(name):
    for line in open("/proc/self/status"):
        if line.startswith(name + ":"):
            return int(line.split()[1]) * 1024

token = open(os.environ["BENCH_TOKEN_FILE"]).read().strip()
kb = kanboard.Client(os.environ["BENCH_URL"], "jsonrpc", token, timeout=600)
path = os.environ["BENCH_PATH"]
if os.environ["BENCH_MODE"] == "up":
    with open(path, "rb") as fh:
        blob = base64.b64encode(fh.read()).decode()
    result = kb.create_task_file(
        project_id=int(os.environ["BENCH_PROJECT"]), task_id=int(os.environ["BENCH_TASK"]),
        filename="client-up.bin", blob=blob,
    )
    assert result, result
else:
    data = base64.b64decode(kb.download_task_file(file_id=int(os.environ["BENCH_FILE"])))
    with open(path, "wb") as fh:
        fh.write(data)
print(status("VmHWM"))
"""


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--url", help="an existing Kanboard (default: start the built-in server)")
    parser.add_argument("--token-file", help="the app API token (user jsonrpc) for --url")
    parser.add_argument("--quick", action="store_true", help="fewer runs, smaller sizes")
    parser.add_argument(
        "--keep-alive", action="store_true", help="built-in server keeps connections open"
    )
    parser.add_argument(
        "--only", default="", metavar="ROWS", help="run only these rows, e.g. 15 (for profiling)"
    )
    args = parser.parse_args(argv)
    if args.url and not args.token_file:
        parser.error("--url needs --token-file")
    return args


def kbfs_source() -> str:
    """Where the kbfs under test comes from (the children inherit this process's path)."""
    spec = importlib.util.find_spec("kbfs")
    if spec is None or spec.origin is None:
        os.environ["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p
        )
        sys.path.insert(0, str(ROOT))
        spec = importlib.util.find_spec("kbfs")
        if spec is None or spec.origin is None:
            raise RuntimeError("cannot find the kbfs package")
    src = Path(spec.origin).parent.parent
    rev = subprocess.run(
        ["git", "-C", str(src), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return f"{src}" + (f" ({rev})" if rev else "")


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    for tool in ("curl", "base64", "cut", "fusermount3", "cat", "cp", "ls", "find", "head"):
        if shutil.which(tool) is None:
            print(f"bench: {tool} is needed", file=sys.stderr)
            return 1
    signal.signal(signal.SIGTERM, _terminate)
    source = kbfs_source()
    log(f"kbfs from {source}")
    workdir = Path(tempfile.mkdtemp(prefix="kbfs-bench-"))
    started = time.monotonic()
    bench: Bench | None = None
    try:
        bench = Bench(args, workdir)
        bench.run()
    finally:
        if bench is not None:
            bench.close()
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"kbfs benchmark ({'quick' if args.quick else 'full'}; median of {bench.sizes.runs} runs;"
        f" {os.cpu_count()} cores; "
        f"{'external server' if args.url else 'built-in server'}"
        f"{', keep-alive' if args.keep_alive else ''}; {time.monotonic() - started:.0f} s)\n"
        f"kbfs: {source}\n"
    )
    print(bench.report.table())
    notes = [f"- {r.key}: {r.note}" for r in bench.report.rows if r.note]
    if not bench.caches.ok:
        notes.append("- page cache could not be dropped: 'cold' = fresh cache_dir only")
    if notes:
        print("\n" + "\n".join(notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
