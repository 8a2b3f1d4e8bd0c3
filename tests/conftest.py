"""Shared pytest fixtures.

``kb`` / ``kb_sample`` start the built-in devserver (see ``tests/kbserver.py``) as a subprocess;
mount fixtures can build on them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

try:  # tests/ is not a package today; keep working if it becomes one
    from kbserver import KanboardServer
except ImportError:  # pragma: no cover
    from tests.kbserver import KanboardServer


@pytest.fixture
def kb(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[KanboardServer]:
    """A devserver with an empty data directory (only the admin user exists).

    Parametrized indirectly with a Kanboard release (KANBOARD_VERSIONS in tests/e2e/helpers.py),
    it keeps that release's rules (``kbfs server --kanboard-version``); 1.2.53 otherwise.
    """
    version = getattr(request, "param", None)
    server = KanboardServer().start(tmp_path, kanboard_version=version)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def kb_sample(tmp_path: Path) -> Iterator[KanboardServer]:
    """A devserver seeded with ``--sample-data`` (3 projects, tasks, text and PNG attachments)."""
    server = KanboardServer().start(tmp_path, sample_data=True)
    try:
        yield server
    finally:
        server.stop()
