"""The namespace owns what a user sees: no code outside ``kbfs/namespace/`` writes its fields.

The fields of ``Node`` and ``ContainerDir`` that decide which file shows at which name carry
the namespace's invariants (see ``kbfs.namespace.tree``). They used to be written from four
files at about a hundred places, and each durability bug was a write that broke one of them.
This test reads every module outside the namespace package with :mod:`ast` and fails on any
write to such a field: an assignment (``x.linked = ...``, ``x.local[k] = ...``, ``del``), an
augmented assignment, or a call of a mutating method on it (``x.doomed.add(...)``).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[2] / "kbfs"
OWNER = PACKAGE_DIR / "namespace"

# Node: linked, record, pending, stale, hides, discarded; ContainerDir: the rest (its
# change journal is written by its own methods only, through note_add / note_remove).
FIELDS = frozenset(
    {
        "linked",
        "record",
        "pending",
        "stale",
        "hides",
        "discarded",
        "local",
        "doomed",
        "hidden",
        "lost",
        "records",
        "entries",
        "ours",
    }
)
MUTATORS = frozenset(
    {"append", "add", "discard", "pop", "remove", "clear", "update", "setdefault", "extend",
     "insert", "popitem", "__setitem__", "__delitem__"}
)  # fmt: skip


def _field_of(target: ast.expr) -> str | None:
    """The namespace field a write target changes (``x.f``, ``x.f[k]``), or None."""
    if isinstance(target, ast.Subscript):
        target = target.value
    if isinstance(target, ast.Attribute) and target.attr in FIELDS:
        return target.attr
    return None


def writes(source: str) -> list[tuple[int, str]]:
    """(line, field) of every write to a namespace field in ``source``."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        elif isinstance(node, ast.Delete):
            targets = list(node.targets)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in MUTATORS
        ):
            targets = [node.func.value]
        for target in targets:
            for part in target.elts if isinstance(target, ast.Tuple) else [target]:
                name = _field_of(part)
                if name is not None:
                    found.append((node.lineno, name))
    return found


def test_no_namespace_field_is_written_outside_the_namespace() -> None:
    offenders = [
        f"{path.relative_to(PACKAGE_DIR.parent)}:{line}: writes .{name}"
        for path in sorted(PACKAGE_DIR.rglob("*.py"))
        if OWNER not in path.parents and "devserver" not in path.parts
        for line, name in writes(path.read_text())
    ]
    assert offenders == [], "\n".join(offenders)


def test_the_check_finds_each_kind_of_write() -> None:
    source = """
node.linked = False
state.local[name] = 3
del state.local[name]
state.doomed.add(key)
node.stale += more
a.hides, b.x = None, 1
node.mode_override = 5
print(node.record)
"""
    assert sorted(writes(source)) == [
        (2, "linked"),
        (3, "local"),
        (4, "local"),
        (5, "doomed"),
        (6, "stale"),
        (7, "hides"),
    ]
