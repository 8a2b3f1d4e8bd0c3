"""Shared pytest fixtures.

``kb`` / ``kb_sample`` start the built-in devserver (see ``tests/kbserver.py``) as a subprocess;
mount fixtures can build on them. Tests leave nothing behind outside the checkout and /tmp:
kbfs's default places (cache, state and log, status files) are redirected for the whole run.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

try:  # tests/ is not a package today; keep working if it becomes one
    from kbserver import KanboardServer
except ImportError:  # pragma: no cover
    from tests.kbserver import KanboardServer


@pytest.fixture(scope="session", autouse=True)
def _default_dirs_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Point the XDG cache, state and runtime directories into the session's temporary directory.

    A kbfs process a test starts (mount, status, demo, and the ones mount(8) starts, which
    inherit the environment) would otherwise create ``~/.cache/kbfs``, ``~/.local/state/kbfs``,
    ``$XDG_RUNTIME_DIR/kbfs`` or, as root, ``/run/kbfs`` when a test gives no directory of its own.
    """
    base = tmp_path_factory.mktemp("xdg")
    with pytest.MonkeyPatch.context() as patch:
        for variable, name in (
            ("XDG_CACHE_HOME", "cache"),
            ("XDG_STATE_HOME", "state"),
            ("XDG_RUNTIME_DIR", "run"),
        ):
            path = base / name
            path.mkdir(mode=0o700)
            patch.setenv(variable, str(path))
        yield


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
