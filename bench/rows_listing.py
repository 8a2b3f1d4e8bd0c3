"""Rows 5 and 6: directories: one task with many files, and a whole tree walked by ``find``.

Besides the time, the devserver's request counter shows how many HTTP requests a listing
cost: the number that decides how kbfs behaves against a remote server with latency.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any

from common import Bench, Row, Server, log, median, secs, timed, timed_sh


def _many_files(b: Bench, pid: int, tid: int) -> None:
    """The task of row 5 on the server, and the same files in a local directory."""
    s = b.sizes
    log(f"row 5: creating {s.many} files")
    b.server.batch(
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
    local_dir = b.local / "many"
    local_dir.mkdir()
    for i in range(s.many):
        (local_dir / f"file-{i:05d}.txt").write_bytes(f"content {i}\n".encode())


def row_listing(b: Bench) -> None:
    """Row 5: ``ls -l`` of a big task on a fresh mount vs one raw ``getAllTaskFiles``."""
    s = b.sizes
    server = b.server
    pid = b.project(server, "many")
    tid = server.task(pid, "many")
    _many_files(b, pid, tid)
    body = json.dumps(
        {"jsonrpc": "2.0", "method": "getAllTaskFiles", "id": 1, "params": {"task_id": tid}}
    )
    raw_cmd = b.curl(body, "-o /dev/null")
    local_dir = b.local / "many"
    ls: list[float] = []
    raw: list[float] = []
    local: list[float] = []
    requests: list[int] = []
    for i in range(s.runs):
        log(f"row 5: run {i + 1}/{s.runs}")
        raw.append(timed_sh(raw_cmd)[0])
        local.append(timed(["ls", "-l", local_dir]))
        with b.mounter.mounted(server) as m:
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
    b.report.add(
        Row("5", f"`ls -l` of a {s.many}-file task vs one raw getAllTaskFiles (curl)",
            secs(k) + reqs, secs(r), k / r, 2.0,
            note=f"local `ls -l` of {s.many} files: {secs(median(local))}")
    )  # fmt: skip


def _tree(b: Bench) -> Server:
    """Row 6's tree: projects x tasks, one file in each, on a server of its own (built-in) so
    that the tree is exactly what the row says; returns that server."""
    s = b.sizes
    server = b.new_server("tree")
    log(f"row 6: creating a {s.tree_projects}x{s.tree_tasks} tree")
    projects = [b.project(server, f"tree-{p}") for p in range(s.tree_projects)]
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
        calls.append(("createProjectFile", {"project_id": pid, "filename": "p.txt", "blob": blob}))
    server.batch(calls)
    return server


def row_find(b: Bench) -> None:
    """Row 6: ``find`` over a whole tree with latency, counted in HTTP requests."""
    s = b.sizes
    server = _tree(b)
    latency = server.set_latency(0.020)
    walls: list[float] = []
    requests: list[int] = []
    runs = max(1, min(s.runs, 3))
    try:
        for i in range(runs):
            log(f"row 6: run {i + 1}/{runs}")
            with b.mounter.mounted(server) as m:
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
    b.report.add(
        Row("6", f"`find` over {s.tree_projects}x{s.tree_tasks} tree ({dirs} dirs), {lat}",
            f"{req}{secs(median(walls))}",
            f"one call per directory: {naive_requests} req ≈ "
            f"{secs(naive_requests * 0.020) if latency else '-'}",
            None, None)
    )  # fmt: skip
