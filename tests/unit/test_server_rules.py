"""kbfs.client.versions (which rules a getVersion answer implies) and kbfs.client.servertime
(the server's clock as its answers prove it)."""

from __future__ import annotations

import json

import httpx
import pytest
import trio

from kbfs.client.api import Credentials, KanboardClient
from kbfs.client.errors import NotFound
from kbfs.client.models import Container
from kbfs.client.servertime import ServerClock
from kbfs.client.versions import ServerRules, parse_version

OLD = ("keeps_shared_bytes", "has_etag", "refuses_missing_bytes_removal",
       "checks_task_on_create", "checks_project_files")  # fmt: skip


@pytest.mark.parametrize(
    ("text", "release"),
    [
        ("1.2.20", (1, 2, 20)),
        ("v1.2.53", (1, 2, 53)),  # the official Docker images (kanboard-api §12)
        ("1.2.53-kbfs-devserver", (1, 2, 53)),
        ("master.4a3b2c1", None),  # untagged archives: 1.2.22 or older
        ("main.unknown_revision", None),
        ("nightly", None),
        ("", None),
        (None, None),
    ],
)
def test_version_forms(text: str | None, release: tuple[int, int, int] | None) -> None:
    assert parse_version(text) == release


def test_unknown_release_gets_the_oldest_rules() -> None:
    """Assuming a newer server than the real one is what loses data (kanboard-api §12)."""
    for version in ("main.abc", None, "1.2.20"):
        rules = ServerRules.of(version)
        assert not any(getattr(rules, name) for name in OLD), version
    assert "unknown" in ServerRules.of("main.abc").describe()[0]


@pytest.mark.parametrize(
    ("version", "true_from"),
    [("1.2.27", 0), ("1.2.28", 1), ("1.2.37", 1), ("1.2.38", 2), ("1.2.41", 2),
     ("1.2.42", 3), ("1.2.46", 3), ("1.2.47", 4), ("1.2.49", 4), ("1.2.50", 5), ("1.2.53", 5)],
)  # fmt: skip
def test_each_rule_from_its_release(version: str, true_from: int) -> None:
    """kanboard-api §12: #1 1.2.28, #2 1.2.38, #3 1.2.42, #4 1.2.47, #6 1.2.50."""
    rules = ServerRules.of(version)
    assert [getattr(rules, name) for name in OLD] == [i < true_from for i in range(5)]
    assert len(rules.describe()) == 6


class Mono:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_server_clock_is_a_lower_bound() -> None:
    mono = Mono()
    clock = ServerClock(mono)
    assert clock.now() is None and not clock.passed(0)
    clock.observe_http_date("Sun, 29 Nov 2026 23:00:00 GMT")
    base = clock.now()
    assert base is not None
    clock.observe(base - 0.5)  # a slower answer proves less: ignored
    assert clock.now() == base
    mono.t += 0.7
    assert clock.now() == pytest.approx(base + 0.7)
    assert not clock.passed(int(base))
    mono.t += 0.3
    assert clock.passed(int(base))
    clock.observe(base + 10)  # a record dated later than the header: the bound moves up
    assert clock.now() == pytest.approx(base + 10)
    clock.observe(base - 100)  # the server's clock was set back: start again from there
    assert clock.now() == pytest.approx(base - 100)
    clock.observe_http_date("not a date")
    assert clock.now() == pytest.approx(base - 100)


async def test_wait_past_sleeps_until_the_next_server_second(autojump_clock: object) -> None:
    clock = ServerClock(trio.current_time)
    clock.observe(1000.25)
    assert await clock.wait_past(999) == 0.0
    waited = await clock.wait_past(1000)
    assert waited == pytest.approx(0.75, abs=1e-3)
    assert clock.passed(1000) and clock.waits == 1
    assert await clock.wait_past(1000) == 0.0


async def test_the_client_learns_the_server_clock_from_date_headers() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            json={"jsonrpc": "2.0", "id": 1, "result": "v1.2.27"},
            headers={"Date": "Sun, 29 Nov 2026 23:00:00 GMT"},
        )

    client = KanboardClient(
        "http://kb.test", Credentials("t0ken"), transport=httpx.MockTransport(handler)
    )
    async with client:
        assert client.server_clock.now() is None
        assert not client.rules.keeps_shared_bytes  # oldest rules until asked
        rules = await client.read_rules()
    assert rules.release == (1, 2, 27) and client.rules is rules
    now = client.server_clock.now()
    assert now is not None and 1_795_993_200 <= now < 1_795_993_260


async def test_old_release_answers_are_understood() -> None:
    """kanboard-api §12 row 6, §2.5: before 1.2.50 getProjectFile answers null for none and another
    project's row for a wrong pair (G05, G07); before 1.2.36 getProjectUserRole answers null
    for no role (Q05); under PHP 7 ids are strings (§5)."""
    other_project = {"id": 4, "project_id": 9, "name": "x", "path": "projects/9/a", "size": 1,
                     "is_image": 0, "user_id": 0, "date": 1}  # fmt: skip
    answers = {
        ("getProjectFile", 3): None,
        ("getProjectFile", 4): other_project,
        ("getProjectUserRole", 1): None,
        ("getTaskFile", 5): {"id": "5", "task_id": "7", "name": "s", "path": "tasks/7/b",
                             "size": "2", "is_image": "0", "user_id": "0", "date": "9"},
    }  # fmt: skip

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        params = body["params"]
        key = params.get("file_id", params.get("project_id"))
        result = answers[(body["method"], key)]
        return httpx.Response(200, json={"jsonrpc": "2.0", "id": body["id"], "result": result})

    client = KanboardClient(
        "http://kb.test", Credentials("t0ken"), transport=httpx.MockTransport(handler)
    )
    async with client:
        with pytest.raises(NotFound):
            await client.get_file(Container(1), 3)
        with pytest.raises(NotFound):  # the row of project 9, asked as a file of project 1
            await client.get_file(Container(1), 4)
        assert await client.get_project_user_role(1, 2) is None
        record = await client.get_file(Container(1, 7), 5)
        assert (record.id, record.size, record.etag, record.path) == (5, 2, None, "tasks/7/b")
