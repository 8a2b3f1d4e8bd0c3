"""The test run keeps kbfs's default directories in pytest's temporary directory (see
tests/conftest.py), so that no test leaves files in the home directory or /run."""

from __future__ import annotations

from pathlib import Path

import pytest

from kbfs.control import status
from kbfs.mount import cache_root, state_root
from kbfs.options import parse_options


def test_default_cache_state_and_runtime_dirs_are_temporary(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    base = tmp_path_factory.getbasetemp().resolve()
    options = parse_options([])
    for path in (cache_root(options), state_root(options), status.runtime_dir()):
        assert Path(path).resolve().is_relative_to(base), path
