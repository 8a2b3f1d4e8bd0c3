"""What every benchmark row shares: sizes, the server, mounts, timing tools and the report.

The built-in server and the kbfs mounts come from the test helpers (``tests/kbserver.py``,
``tests/e2e/helpers.py``), so the benchmark starts and cleans up exactly what the end-to-end
tests do; this module only adds what measuring needs on top of them.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import secrets
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

MiB = 1 << 20
ROOT = Path(__file__).resolve().parent.parent

# The helpers are imported from this checkout's tests/, and the checkout leaves sys.path again
# right after: which kbfs the benchmark measures is decided by PYTHONPATH (see kbfs_source).
sys.path.insert(0, str(ROOT))
try:
    from tests.e2e.helpers import Mounted, Mounter
    from tests.kbserver import KanboardServer
finally:
    sys.path.remove(str(ROOT))


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
    rt_tasks: int  # row 9: tasks x files of ``small`` bytes copied out
    rt_files: int
    small: int  # rows 9 and 10: the size of a small file
    imports: int  # row 10: files copied in
    sniff_size: int  # row 11: each of the six extension-less files


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
    rt_tasks=30,
    rt_files=10,
    small=20_000,
    imports=100,
    sniff_size=20 * MiB,
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
    rt_tasks=3,
    rt_files=10,
    small=20_000,
    imports=10,
    sniff_size=2 * MiB,
)

# Uploads and downloads of the full run's files take longer than the tests' default.
HTTP_TIMEOUT = 600.0


def log(message: str) -> None:
    """Progress goes to stderr, so that stdout holds only the results."""
    print(f"bench: {message}", file=sys.stderr, flush=True)


def fmt_bytes(n: int) -> str:
    return f"{n / MiB:.1f} MiB".replace(".0 ", " ") if n >= MiB else f"{n / 1024:.0f} KiB"


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def secs(t: float) -> str:
    return f"{t * 1000:.0f} ms" if t < 10 else f"{t:.1f} s"


# ---------------------------------------------------------------------------------- the server


class RpcError(Exception):
    """A batch item that Kanboard answered with an error, null or false."""


class Server:
    """A Kanboard endpoint: the built-in server we start, or an external one (``--url``).

    Both are a :class:`KanboardServer` from the tests; this adds what the rows need: batches
    split into chunks (10,000 uploads in one request would exceed a real server's body limit),
    and the devserver's control API (request counts, latency) only where it exists.
    """

    def __init__(self, kb: KanboardServer) -> None:
        self.kb = kb
        self.has_control = self._probe_control()

    @classmethod
    def start(cls, workdir: Path, keep_alive: bool) -> Server:
        """``python -m kbfs.devserver`` on a free loopback port, data under ``workdir``."""
        workdir.mkdir(parents=True, exist_ok=True)
        extra = ["--keep-alive"] if keep_alive else []
        return cls(KanboardServer().start(workdir, extra_args=extra, timeout=HTTP_TIMEOUT))

    @classmethod
    def connect(cls, url: str, token_file: Path) -> Server:
        """An existing Kanboard; the token is the app API token (user ``jsonrpc``)."""
        return cls(KanboardServer().connect(url, token_file, timeout=HTTP_TIMEOUT))

    @property
    def url(self) -> str:
        return self.kb.url

    @property
    def token(self) -> str:
        return self.kb.token

    @property
    def token_file(self) -> Path:
        return self.kb.token_file

    def stop(self) -> None:
        self.kb.stop()

    # -- JSON-RPC

    def rpc(self, method: str, params: Any = None) -> Any:
        return self.kb.rpc(method, params)

    def batch(self, calls: Sequence[tuple[str, Any]], chunk: int = 1000) -> list[Any]:
        results: list[Any] = []
        for start in range(0, len(calls), chunk):
            part = list(calls[start : start + chunk])
            answers = self.kb.rpc_batch(part)
            for (method, _), result in zip(part, answers, strict=True):
                if result is None or result is False:
                    raise RpcError(f"batch item {method}: {result!r}")
            results.extend(answers)
        return results

    def project(self, name: str) -> int:
        return self.kb.project(name)

    def task(self, project_id: int, title: str) -> int:
        return self.kb.task(project_id, title)

    def upload(self, project_id: int, task_id: int, name: str, data: bytes) -> int:
        return self.kb.upload_task_file(project_id, task_id, name, data)

    # -- the devserver's control API (absent on a real Kanboard)

    def _probe_control(self) -> bool:
        try:
            return "http_requests" in self.kb.stats()
        except (httpx.HTTPError, ValueError):
            return False

    def requests(self) -> int | None:
        return int(self.kb.stats()["http_requests"]) if self.has_control else None

    def response_bytes(self) -> int | None:
        """Bytes of ``/jsonrpc.php`` answers the server has written so far."""
        return int(self.kb.stats()["response_bytes"]) if self.has_control else None

    def calls(self) -> dict[str, int]:
        """JSON-RPC calls so far, by method (a batch item counts once); empty when unknown."""
        return dict(self.kb.stats()["calls"]) if self.has_control else {}

    def set_latency(self, seconds: float) -> bool:
        if not self.has_control:
            return False
        self.kb.config(latency=seconds)
        return True

    def set_send_buffer(self, size: int | None) -> bool:
        """The server's socket send buffer (``SO_SNDBUF``) for new connections; None: the
        kernel's default."""
        if not self.has_control:
            return False
        self.kb.config(send_buffer=size or 0)
        return True


# ---------------------------------------------------------------------------------- mounts


def daemon_memory(m: Mounted, field_name: str) -> int:
    """A ``/proc/<pid>/status`` memory field (VmRSS, VmHWM) of the mount's daemon, in bytes."""
    for line in Path(f"/proc/{m.proc.pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field_name)


class Mounts:
    """``kbfs mount -f`` daemons through the tests' :class:`Mounter`, reported, never raised.

    The daemon keeps its default log level (DEBUG logging would be part of what is timed).
    A daemon that logged errors is reported on stderr; the run goes on.
    """

    def __init__(self, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.mounter = Mounter(workdir)

    @contextlib.contextmanager
    def mounted(
        self, server: Server, cache_dir: Path | None = None, *extra: str
    ) -> Iterator[Mounted]:
        opts = [f"cache_dir={cache_dir}"] if cache_dir is not None else []
        m = self.mounter(server, *opts, *extra, log_level=None)
        try:
            yield m
        finally:
            self.unmount(m)

    def unmount(self, m: Mounted) -> None:
        self.mounter.unmount(m)
        text = m.log_text()
        if "ERROR" in text or "Traceback" in text:
            log(f"the daemon of {m.path} logged errors:\n{text[-2000:]}")

    def close(self) -> None:
        """Unmount whatever is still mounted (after an error or an interrupt)."""
        try:
            self.mounter.close()
        except AssertionError as exc:  # the tests' verdict on the logs; reported above already
            log(f"unmounting: {exc}"[:2000])


# ---------------------------------------------------------------------------------- tools


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


# ---------------------------------------------------------------------------------- the run


class Bench:
    """One benchmark run: its servers, mounts, scratch directory and report.

    The rows (``rows_*.py``) get it and use its servers, mounts and the curl baselines.
    """

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.sizes = QUICK if args.quick else FULL
        self.workdir = workdir
        self.local = workdir / "local"
        self.local.mkdir()
        self.mounter = Mounts(workdir / "mounts")
        self.caches = Caches()
        self.report = Report()
        self.servers: list[Server] = []
        self.created_projects: list[tuple[Server, int]] = []
        self.tag = secrets.token_hex(3)
        self.server = self.new_server("main")
        self.curlrc = workdir / "curlrc"
        fd = os.open(self.curlrc, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(f'user = "jsonrpc:{self.server.token}"\nsilent\nshow-error\n')

    # -- set-up

    def new_server(self, name: str) -> Server:
        """A server of its own (built-in), or the one ``--url`` names, shared by every row."""
        if self.args.url:
            if self.servers:
                return self.servers[0]
            server = Server.connect(self.args.url, Path(self.args.token_file).expanduser())
            self.servers.append(server)
            return server
        server = Server.start(self.workdir / f"server-{name}", self.args.keep_alive)
        self.servers.append(server)
        return server

    def project(self, server: Server, name: str) -> int:
        """A project named for this run, removed again at the end on an external server."""
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

    # -- baselines

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
        with httpx.Client(timeout=HTTP_TIMEOUT, auth=("jsonrpc", self.server.token)) as client:
            resp = client.post(self.server.url, content=body)
        data = base64.b64decode(json.loads(resp.content)["result"])
        elapsed = time.perf_counter() - started
        if not data:
            raise RuntimeError("naive download returned nothing")
        return elapsed
