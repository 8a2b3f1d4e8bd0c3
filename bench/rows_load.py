"""Rows 7 and 8: load: parallel cold reads with latency, and the daemon's peak memory.

Row 8 compares with the official ``kanboard`` client when it is installed; it runs in a child
process of its own so that its peak RSS is its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from common import (
    Bench,
    MiB,
    Row,
    daemon_memory,
    fmt_bytes,
    log,
    median,
    same_content,
    secs,
    timed_parallel,
    write_random,
)

# ---------------------------------------------------------------------------------- row 7


def row_parallel(b: Bench) -> None:
    """Row 7: several ``cat``s of different files started together vs one, with latency."""
    s = b.sizes
    server = b.server
    pid = b.project(server, "parallel")
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
            pipes = [["sh", "-c", f"{b.download_pipeline(f)} > /dev/null"] for f in ids]
            b.caches.drop()
            c_single.append(timed_parallel(pipes[:1]))
            b.caches.drop()
            c_parallel.append(timed_parallel(pipes))
            with b.mounter.mounted(server) as m:
                paths = [m.p("projects", pid, "tasks", tid, f"par-{n}.bin") for n in range(s.par_n)]
                for p in paths:
                    p.stat()
                b.caches.drop()
                single.append(timed_parallel([["cat", paths[0]]]))
            with b.mounter.mounted(server) as m:
                paths = [m.p("projects", pid, "tasks", tid, f"par-{n}.bin") for n in range(s.par_n)]
                for p in paths:
                    p.stat()
                b.caches.drop()
                parallel.append(timed_parallel([["cat", p] for p in paths]))
    finally:
        server.set_latency(0)
    one, many = median(single), median(parallel)
    lat = "50 ms latency" if latency else "no latency injected"
    b.report.add(
        Row("7", f"{s.par_n} parallel cold reads of {fmt_bytes(s.par_size)} vs one, {lat}",
            secs(many), secs(one), many / one, 1.5,
            note=f"same for the ceiling pipeline: {secs(median(c_parallel))} vs "
            f"{secs(median(c_single))} = {median(c_parallel) / median(c_single):.2f}")
    )  # fmt: skip


# ---------------------------------------------------------------------------------- row 8

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


def _client_rss(b: Bench, mode: str, path: Path, pid: int, tid: int, file_id: int) -> int:
    """Peak RSS (VmHWM) of the official ``kanboard`` client doing one transfer."""
    env = {
        **os.environ,
        "BENCH_URL": b.server.url,
        "BENCH_TOKEN_FILE": str(b.server.token_file),
        "BENCH_MODE": mode,
        "BENCH_PATH": str(path),
        "BENCH_PROJECT": str(pid),
        "BENCH_TASK": str(tid),
        "BENCH_FILE": str(file_id),
    }
    proc = subprocess.run(
        [sys.executable, "-c", CLIENT_SCRIPT], env=env, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"kanboard client failed: {proc.stderr[-500:]}")
    return int(proc.stdout.split()[0])


def _client_peaks(b: Bench, src: Path, pid: int, tid: int, file_id: int) -> tuple[str, str]:
    """The ``kanboard`` client's peak RSS uploading and downloading, or why there is none."""
    try:
        import kanboard  # noqa: F401
    except ImportError:
        return "n/a (pip install kanboard)", "n/a (pip install kanboard)"
    out = b.local / "client-down.bin"
    c_up = _client_rss(b, "up", src, pid, tid, 0)
    c_down = _client_rss(b, "down", out, pid, tid, file_id)
    out.unlink(missing_ok=True)
    return fmt_bytes(c_up), fmt_bytes(c_down)


def row_memory(b: Bench) -> None:
    """Rows 8a and 8b: a fresh daemon's peak RSS copying a big file in, then reading it."""
    s = b.sizes
    server = b.server
    src = b.local / "rss.bin"
    write_random(src, s.rss_size)
    pid = b.project(server, "rss")
    tid = server.task(pid, "rss")
    up_peak: list[int] = []
    down_peak: list[int] = []
    idle: list[int] = []
    file_id = 0
    for i in range(s.rss_runs):
        log(f"row 8: run {i + 1}/{s.rss_runs}")
        with b.mounter.mounted(server) as m:
            task_dir = m.p("projects", pid, "tasks", tid)
            os.listdir(task_dir)
            idle.append(daemon_memory(m, "VmRSS"))
            subprocess.run(["cp", src, task_dir / f"up-{i}.bin"], check=True)
            up_peak.append(daemon_memory(m, "VmHWM"))
        with b.mounter.mounted(server) as m:
            path = m.p("projects", pid, "tasks", tid, f"up-{i}.bin")
            path.stat()
            idle.append(daemon_memory(m, "VmRSS"))
            subprocess.run(["cat", path], check=True, stdout=subprocess.DEVNULL)
            down_peak.append(daemon_memory(m, "VmHWM"))
            if i == 0 and not same_content(path, src):
                raise RuntimeError("256 MiB round trip changed the bytes")
    for f in server.rpc("getAllTaskFiles", {"task_id": tid}):
        if f["name"] == "up-0.bin":
            file_id = int(f["id"])
    size = fmt_bytes(s.rss_size)
    base = median(idle)
    up, down = median(up_peak), median(down_peak)
    client_up, client_down = _client_peaks(b, src, pid, tid, file_id)
    for key, label, peak, client in (
        ("8a", "up (`cp` in)", up, client_up),
        ("8b", "down (`cat`)", down, client_down),
    ):
        b.report.add(
            Row(key, f"daemon peak RSS, {size} {label}; ratio = (peak-idle)/64 MiB",
                f"peak {fmt_bytes(int(peak))} (idle {fmt_bytes(int(base))})",
                f"`kanboard` client peak {client}",
                (peak - base) / (64 * MiB), 1.0)
        )  # fmt: skip
