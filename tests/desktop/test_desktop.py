"""A file manager and an office suite on a real mount, as people use them.

Each test asserts the server's state afterwards (through its API, not the mount) and counts what
the program cost in HTTP requests and bytes the server sent; the figures and screenshots are kept
in ``desktop-artifacts/``. Run with ``pytest -m desktop`` after ``scripts/desktop-setup``.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import Mounted, Mounter, wait_for
from tests.kbserver import KanboardServer

pytestmark = [pytest.mark.desktop, pytest.mark.e2e]
Record = Any

TASK = 1  # the sample data's task 1 (project 1): homepage.png, mobile view.png, notes.md


def quiet(kb: KanboardServer, still: float = 2.0, timeout: float = 60) -> dict[str, Any]:
    """Wait until the server got no request for ``still`` seconds; return its counters."""
    deadline = time.monotonic() + timeout
    last, since = kb.stats(), time.monotonic()
    while time.monotonic() - since < still:
        assert time.monotonic() < deadline, "the program never stopped talking to the server"
        time.sleep(0.25)
        now = kb.stats()
        if now != last:
            last, since = now, time.monotonic()
    return last


def writes(stats: dict[str, Any]) -> dict[str, int]:
    calls: dict[str, int] = stats["calls"]
    return {m: n for m, n in calls.items() if m.startswith(("create", "remove"))}


def open_task_folder(desktop: Any, mnt: Mounted) -> Path:
    folder = mnt.p("projects", 1, "tasks", TASK)
    desktop.start("thunar", str(folder))
    desktop.wait_window("Thunar")
    return folder


def test_file_manager_shows_a_task_folder(
    kb_sample: KanboardServer, mounter: Mounter, desktop: Any, record: Record
) -> None:
    """Thunar opens a task folder: it lists it, tumbler thumbnails the two PNGs, nothing is
    written to the server, and the screenshot shows the three files."""
    mnt = mounter(kb_sample)
    kb_sample.reset_stats()
    open_task_folder(desktop, mnt)
    stats = quiet(kb_sample)
    shot = desktop.screenshot("thunar-task-folder.png")
    sizes = {f["name"]: int(f["size"]) for f in kb_sample.task_files(TASK)}
    calls = stats["calls"]
    record("browse", {"screenshot": shot.name, **stats, "attachment_bytes": sizes})
    assert writes(stats) == {}, stats
    assert calls.get("getAllTaskFiles", 0) >= 1, stats
    # Thumbnails read the images once each at most; the text file is not downloaded at all.
    assert calls.get("downloadTaskFile", 0) <= 2, stats
    assert stats["response_bytes"] < 4 * sum(sizes.values()) + 64 * 1024, stats


def test_file_manager_copies_a_file_in(
    kb_sample: KanboardServer, mounter: Mounter, desktop: Any, tmp_path: Path, record: Record
) -> None:
    """Thunar's own copy job (its D-Bus ``CopyInto``, what a paste or a drop runs) puts a file
    into a task folder: one upload with the right bytes, no temporary names on the server."""
    mnt = mounter(kb_sample)
    folder = open_task_folder(desktop, mnt)
    quiet(kb_sample)
    source = tmp_path / "src" / "site plan.bin"
    source.parent.mkdir()
    data = os.urandom(3_000_000)
    source.write_bytes(data)
    before = {f["id"] for f in kb_sample.task_files(TASK)}
    kb_sample.reset_stats()
    desktop.run(
        "gdbus", "call", "--session",
        "--dest", "org.xfce.FileManager",
        "--object-path", "/org/xfce/FileManager",
        "--method", "org.xfce.FileManager.CopyInto",
        "", f"['{source}']", str(folder), desktop.env["DISPLAY"], "",
    )  # fmt: skip
    wait_for(lambda: (folder / source.name).exists(), what="the copy to appear in the mount")
    stats = quiet(kb_sample)
    shot = desktop.screenshot("thunar-after-copy.png")
    record("copy in", {"screenshot": shot.name, "file_bytes": len(data), **stats})
    new = [f for f in kb_sample.task_files(TASK) if f["id"] not in before]
    assert [f["name"] for f in new] == [source.name]
    assert kb_sample.download_task_file(new[0]["id"]) == data
    assert writes(stats) == {"createTaskFile": 1}, stats


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_libreoffice_saves_a_document_in_place(
    kb_sample: KanboardServer, mounter: Mounter, tmp_path: Path, record: Record
) -> None:
    """LibreOffice opens an .odt from the mount and saves it in place (it writes a temporary
    ``lu*.tmp`` beside it and renames it over the document, holding a ``.~lock.*#`` file
    meanwhile): the server ends with one new version holding the edit, and neither the lock
    file nor the temporary was ever uploaded."""
    profile = tmp_path / "lo-profile"
    text = tmp_path / "minutes.txt"
    text.write_text("Minutes of the kick-off\n")
    subprocess.run(
        ["soffice", "--headless", "--norestore", f"-env:UserInstallation={profile.as_uri()}",
         "--convert-to", "odt", "--outdir", str(tmp_path), str(text)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    original = (tmp_path / "minutes.odt").read_bytes()
    old_id = kb_sample.upload_task_file(1, TASK, "minutes.odt", original)
    mnt = mounter(kb_sample)
    document = mnt.p("projects", 1, "tasks", TASK, "minutes.odt")
    assert document.read_bytes() == original
    kb_sample.reset_stats()
    port = free_port()
    office = subprocess.Popen(
        ["soffice", "--headless", "--invisible", "--norestore", "--nologo",
         f"-env:UserInstallation={profile.as_uri()}",
         f"--accept=socket,host=127.0.0.1,port={port};urp;"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        # Debian's python3-uno belongs to the system Python, not to the test's environment.
        edit = subprocess.run(
            ["/usr/bin/python3", str(Path(__file__).with_name("lo_edit.py")), str(port),
             str(document), "Decision: ship on Friday"],
            capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        assert edit.returncode == 0, edit.stderr
    finally:
        office.terminate()
        office.wait(timeout=30)
    stats = quiet(kb_sample)
    records = [f for f in kb_sample.task_files(TASK) if f["name"].endswith(("odt", "tmp", "#"))]
    figures = {"document_bytes": len(original), "records_after": [r["name"] for r in records]}
    record("libreoffice save", {**figures, **stats})
    assert [r["name"] for r in records] == ["minutes.odt"], records
    assert int(records[0]["id"]) != old_id
    saved = kb_sample.download_task_file(int(records[0]["id"]))
    assert b"Decision: ship on Friday" in zipfile.ZipFile(io.BytesIO(saved)).read("content.xml")
    # One upload (the new version, under its own name) and one removal (the old version).
    assert writes(stats) == {"createTaskFile": 1, "removeTaskFile": 1}, stats
    assert not [p for p in mnt.path.rglob("*") if p.name.startswith((".~lock", "lu"))]
