"""FileRecord parsing: the quick path (for 100,000-file listings) must agree with the careful
one on every input, valid or not."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kbfs.client import models
from kbfs.client.errors import ProtocolError
from kbfs.client.models import FileRecord, Kind

GOOD = {
    "id": 7,
    "name": "report.pdf",
    "path": "tasks/3/abc",
    "is_image": 0,
    "task_id": 3,
    "date": 1795386716,
    "user_id": 1,
    "size": 1234,
    "username": "admin",
    "user_name": None,
    "etag": "0123abcd",
}


def careful(kind: Kind, value: Any) -> FileRecord | str:
    """The careful path alone (the quick one switched off)."""
    original = models._quick_int
    models._quick_int = lambda _v: -1  # type: ignore[assignment]
    try:
        return FileRecord.from_json(kind, value)
    except ProtocolError as exc:
        return f"error: {exc}"
    finally:
        models._quick_int = original


def parsed(kind: Kind, value: Any) -> FileRecord | str:
    try:
        return FileRecord.from_json(kind, value)
    except ProtocolError as exc:
        return f"error: {exc}"


def test_both_shapes_kanboard_sends() -> None:
    as_strings = {k: (str(v) if isinstance(v, int) else v) for k, v in GOOD.items()}
    a, b = FileRecord.from_json(Kind.TASK, GOOD), FileRecord.from_json(Kind.TASK, as_strings)
    assert a == b
    assert (a.id, a.size, a.task_id, a.project_id, a.is_image) == (7, 1234, 3, None, False)
    assert a.version_key == "0123abcd:1795386716:1234"


@pytest.mark.parametrize(
    "change",
    [
        {"size": -1},
        {"size": "12a"},
        {"id": None},
        {"id": True},
        {"date": 1.0},
        {"date": None},
        {"name": None},
        {"name": 5},
        {"etag": 5},
        {"id": "٣"},  # a digit, but not an ASCII one
        {"id": " 5 "},
    ],
)
def test_odd_values_take_the_careful_path(change: dict[str, Any]) -> None:
    value = {**GOOD, **change}
    assert parsed(Kind.TASK, value) == careful(Kind.TASK, value)


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-3, max_value=2**40),
    st.text(alphabet="0123456789 -x٣", max_size=4),
    st.floats(allow_nan=False, allow_infinity=False),
)


@settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from([Kind.TASK, Kind.PROJECT]),
    fields=st.dictionaries(
        st.sampled_from(
            ["id", "size", "date", "is_image", "user_id", "task_id", "project_id", "name", "path"]
        ),
        scalars,
    ),
)
def test_quick_path_agrees_with_the_careful_one(kind: Kind, fields: dict[str, Any]) -> None:
    value = {**GOOD, "project_id": 2, **fields}
    quick, slow = parsed(kind, value), careful(kind, value)
    assert quick == slow
    if isinstance(quick, FileRecord) and isinstance(slow, FileRecord):
        # Built differently (slot by slot, or by __init__): every slot must match, including
        # version_key, which == leaves out.
        assert all(
            getattr(quick, f.name) == getattr(slow, f.name) for f in dataclasses.fields(slow)
        )
        assert hash(quick) == hash(slow)
