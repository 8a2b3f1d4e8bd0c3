"""Model-based test: random sequences of file operations on the mount and on an in-memory model
of the intended semantics (a dict of name -> bytes), compared after every step; at the end the
server must hold exactly the model. Shrunk failures are kept below as @example cases."""

from __future__ import annotations

import errno
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.e2e.helpers import Mounted, Mounter

NAMES = ["a.txt", "b.txt", "c", "d d.md"]
contents = st.binary(min_size=1, max_size=300).filter(lambda b: b != b"0")


@dataclass(frozen=True)
class Write:
    name: str
    data: bytes


@dataclass(frozen=True)
class Append:
    name: str
    data: bytes


@dataclass(frozen=True)
class Rename:
    src: str
    dst: str


@dataclass(frozen=True)
class Unlink:
    name: str


names = st.sampled_from(NAMES)
ops = st.one_of(
    st.builds(Write, names, contents),
    st.builds(Append, names, contents),
    st.builds(Rename, names, names),
    st.builds(Unlink, names),
)


def apply(d: Path, model: dict[str, bytes], op: object) -> None:
    """Run ``op`` on the mount and on the model; errors must match the model's."""
    if isinstance(op, Write):
        with open(d / op.name, "wb") as f:
            f.write(op.data)
        model[op.name] = op.data
    elif isinstance(op, Append):
        with open(d / op.name, "ab") as f:
            f.write(op.data)
        model[op.name] = model.get(op.name, b"") + op.data
    elif isinstance(op, Rename):
        if op.src not in model:
            with pytest.raises(FileNotFoundError):
                os.rename(d / op.src, d / op.dst)
            return
        os.rename(d / op.src, d / op.dst)
        if op.src != op.dst:
            model[op.dst] = model.pop(op.src)
    elif isinstance(op, Unlink):
        if op.name not in model:
            with pytest.raises(OSError) as err:
                os.unlink(d / op.name)
            assert err.value.errno == errno.ENOENT
            return
        os.unlink(d / op.name)
        del model[op.name]


def check(d: Path, model: dict[str, bytes]) -> None:
    assert sorted(os.listdir(d)) == sorted(model)
    for name, data in model.items():
        assert (d / name).read_bytes() == data, name


@pytest.fixture
def model_mount(kb, mounter: Mounter) -> tuple[object, Mounted, int]:  # type: ignore[no-untyped-def]
    project = kb.project("model")
    return kb, mounter(kb, ttl=0.05), project


@pytest.mark.timeout(600)
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(ops, max_size=20))
@example(steps=[Write("a.txt", b"x"), Rename("a.txt", "b.txt"), Write("a.txt", b"y")])
@example(steps=[Write("a.txt", b"x"), Write("b.txt", b"y"), Rename("a.txt", "b.txt")])
@example(steps=[Write("a.txt", b"x"), Append("a.txt", b"y"), Rename("a.txt", "a.txt")])
# a reused id with the same name, size and second as a removed file (kanboard-api §7)
@example(steps=[Write("c", b"\x00"), Rename("c", "a.txt"), Unlink("a.txt"), Write("c", b"\x00")])
def test_mount_behaves_like_the_model(model_mount, steps: list[object]) -> None:  # type: ignore[no-untyped-def]
    kb, m, project = model_mount
    task = kb.task(project, "example")
    time.sleep(0.1)  # past the listing cache time: the new task is visible
    d = m.p("projects", project, "tasks", task)
    model: dict[str, bytes] = {}
    for op in steps:
        apply(d, model, op)
        check(d, model)
    on_server = {f["name"]: kb.download_task_file(f["id"]) for f in kb.task_files(task)}
    assert len(kb.task_files(task)) == len(on_server)  # no duplicate names
    assert on_server == model
