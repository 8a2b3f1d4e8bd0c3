"""End-to-end smoke tests of the devserver subprocess through tests/kbserver.py."""

from __future__ import annotations

import json

import httpx
import pytest

try:
    from kbserver import KanboardServer, RpcFailure
except ImportError:  # pragma: no cover
    from tests.kbserver import KanboardServer, RpcFailure


def test_file_roundtrip(kb: KanboardServer) -> None:
    pid = kb.project("alpha")
    tid = kb.task(pid, "first task")
    fid = kb.upload_task_file(pid, tid, "hello.txt", b"Hello, world!\n")
    assert kb.download_task_file(fid) == b"Hello, world!\n"
    [row] = kb.task_files(tid)
    assert row["name"] == "hello.txt" and row["size"] == 14 and row["username"] is None
    pfid = kb.upload_project_file(pid, "spec.txt", b"project spec")
    assert kb.download_project_file(pid, pfid) == b"project spec"
    assert [f["name"] for f in kb.project_files(pid)] == ["spec.txt"]


def test_sample_data(kb_sample: KanboardServer) -> None:
    projects = kb_sample.rpc("getAllProjects")
    assert len(projects) == 3
    images = 0
    for project in projects:
        for status in (0, 1):
            for task in kb_sample.rpc("getAllTasks", [project["id"], status]):
                for f in kb_sample.task_files(task["id"]):
                    data = kb_sample.download_task_file(f["id"])
                    assert len(data) == f["size"]
                    if f["is_image"]:
                        assert data.startswith(b"\x89PNG\r\n\x1a\n")
                        images += 1
    assert images >= 3
    assert (
        kb_sample.rpc("getMe", user="alice", password=kb_sample.passwords["alice"])["username"]
        == "alice"
    )


def test_stats_and_faults(kb: KanboardServer) -> None:
    kb.reset_stats()
    kb.rpc("getVersion")
    batch = json.dumps([{"jsonrpc": "2.0", "method": "getVersion", "id": 1}] * 3)
    answer = kb.http.post(kb.url, content=batch, auth=("jsonrpc", kb.token)).content
    stats = kb.stats()
    single = len(json.dumps({"jsonrpc": "2.0", "result": "1.2.53", "id": None}).encode())
    assert stats["response_bytes"] - len(answer) in range(single - 8, single + 8)
    del stats["response_bytes"]
    assert stats == {"http_requests": 2, "calls": {"getVersion": 4}}

    kb.fault("getVersion", "http500")
    assert kb.raw({"jsonrpc": "2.0", "method": "getVersion", "id": 1}) == (500, "")
    assert kb.rpc("getVersion")  # count=1: consumed

    kb.fault("*", "false", count=2)
    assert kb.rpc("getAllProjects") is False
    assert kb.rpc("getVersion") is False
    assert kb.rpc("getAllProjects") == []

    kb.fault("getVersion", "html")
    status, text = kb.raw({"jsonrpc": "2.0", "method": "getVersion", "id": 1})
    assert status == 200 and "<b>Fatal error</b>" in text

    kb.fault("getVersion", "drop")
    with pytest.raises(httpx.RemoteProtocolError):
        kb.rpc("getVersion")

    kb.fault("getVersion", "http401")
    with pytest.raises(RpcFailure) as info:
        kb.rpc("getVersion")
    assert info.value.status == 401

    kb.fault("getVersion", "rpc_error", count=5)
    kb.clear_faults()
    assert kb.rpc("getVersion")


def test_control_requires_token(kb: KanboardServer) -> None:
    resp = httpx.get(f"{kb.base_url}/_devserver/stats")
    assert resp.status_code == 401
    resp = httpx.get(f"{kb.base_url}/_devserver/stats", auth=("jsonrpc", "wrong"))
    assert resp.status_code == 401


def test_connection_close_and_max_body(kb: KanboardServer) -> None:
    resp = kb.http.post(
        kb.url, json={"jsonrpc": "2.0", "method": "getVersion", "id": 1}, auth=("jsonrpc", kb.token)
    )
    assert resp.headers["connection"] == "close"
    assert resp.headers["content-type"] == "application/json"
    kb.config(max_body=1000)
    pid = kb.project("p")
    tid = kb.task(pid, "t")
    with pytest.raises(RpcFailure) as info:
        kb.upload_task_file(pid, tid, "big.bin", b"x" * 2000)
    assert info.value.status == 500 and info.value.payload == ""
    kb.config(max_body=None)
    assert kb.upload_task_file(pid, tid, "big.bin", b"x" * 2000)


def test_state_survives_restart(kb: KanboardServer, tmp_path) -> None:  # type: ignore[no-untyped-def]
    pid = kb.project("persist")
    tid = kb.task(pid, "t")
    fid = kb.upload_task_file(pid, tid, "keep.txt", b"kept")
    kb.stop()
    kb.start(tmp_path)
    assert kb.download_task_file(fid) == b"kept"
