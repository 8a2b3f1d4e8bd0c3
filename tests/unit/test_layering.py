"""The architecture of kbfs as a test: its modules form layers, and imports only go down.

Reading the package is easier when each module may rely on what lies beneath it and never on
what uses it; a cycle or an upward import is where that breaks, so both fail this test. The
layer table below is the map of the package: it is checked, so it cannot go stale, and a new
module fails the test until someone decides where it belongs.

How imports are read: every ``.py`` file under ``kbfs/`` is parsed with :mod:`ast` (nothing is
imported). ``import kbfs.x``, ``from kbfs.x import y`` (an edge to ``kbfs.x.y`` when that is a
module, else to ``kbfs.x``), ``from kbfs import x`` and relative imports all count, wherever
they are: at the top, under ``if TYPE_CHECKING:``, or inside a function. A type-only or a
deferred import is still a dependency of the design, even if Python would not trip over it.

The checker (:func:`check_layers`) takes a package directory and a :class:`LayerTable`; the
test of the real package and the tests of the checker on small fake packages share it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# ---------------------------------------------------------------------------------- the table

PACKAGE_DIR = Path(__file__).resolve().parents[2] / "kbfs"

# Top to bottom. A module may import from its own layer (if that makes no cycle) and from
# any layer below; never from a layer above. A name covers a module, or a package and every
# module in it.
LAYERS: tuple[tuple[str, ...], ...] = (
    # 1. the commands people run (helperinstall: kbfs install-helper / uninstall-helper); their
    # man pages and shell completion (from cli's parser)
    (
        "kbfs.cli",
        "kbfs.demo",
        "kbfs.mounthelper",
        "kbfs.helperinstall",
        "kbfs.__main__",
        "kbfs.manpage",
        "kbfs.completion",
    ),
    ("kbfs.mount",),  # 2. sets up and runs one mount
    ("kbfs.control", "kbfs.fs"),  # 3. kbfs status/clear; the pyfuse3 operations
    ("kbfs.vfs",),  # 4. the filesystem without FUSE
    ("kbfs.ops",),  # 5. what the filesystem operations do
    ("kbfs.upload",),  # 6. writing back: uploads, cleanup, lost creates, recovery
    ("kbfs.remote",),  # 7. listings: what the server says exists, fetched when stale
    ("kbfs.namespace",),  # 8. nodes, names and what each directory shows (pure)
    ("kbfs.storage",),  # 9. the content cache and the spool on disk
    ("kbfs.errors",),  # 10. filesystem errors (errno)
    ("kbfs.client",),  # 11. the Kanboard JSON-RPC client
)

# Anyone may import these. A leaf itself imports other leaves, or modules that lie below every
# module that imports the leaf (so that no import goes up through a leaf).
LEAVES: tuple[str, ...] = (
    "kbfs",  # the package itself: only the version
    "kbfs.config",
    "kbfs.options",
    "kbfs.credentials",
    "kbfs.sdnotify",
    "kbfs.safetext",  # control characters of server text escaped before a terminal or the log
    "kbfs.helperargv",  # mount(8) argv -> a kbfs command line; handed the function to run
    "kbfs.logsetup",  # stderr, the journal or a rotated file: stdlib only
)

# Packages apart from the layers: they import nothing of kbfs outside themselves, and nothing
# outside them imports them, unless listed in ALLOWED.
SEPARATE: tuple[str, ...] = (
    "kbfs.devserver",  # the built-in Kanboard server for tests and the benchmark
)

# (importer, imported): imports the rules above would refuse, each with its reason.
ALLOWED: Mapping[tuple[str, str], str] = {
    ("kbfs.cli", "kbfs.devserver.serve"): (
        "`kbfs server` runs the built-in server; the import is deferred to that command"
    ),
}

# (importer, imported): imports refused although the layers would allow them.
FORBIDDEN: Mapping[tuple[str, str], str] = {
    ("kbfs.cli", "kbfs.mounthelper"): (
        "mount.fuse.kbfs (mounthelper) translates mount(8)'s call into a kbfs command line and "
        "hands it to cli; cli does not call back into the helper"
    ),
}


# ---------------------------------------------------------------------------------- the checker


@dataclass(frozen=True)
class LayerTable:
    """Where each module belongs; see LAYERS, LEAVES, SEPARATE, ALLOWED and FORBIDDEN."""

    layers: Sequence[Sequence[str]]
    leaves: Sequence[str] = ()
    separate: Sequence[str] = ()
    allowed: Mapping[tuple[str, str], str] = field(default_factory=dict)
    forbidden: Mapping[tuple[str, str], str] = field(default_factory=dict)


@dataclass(frozen=True)
class Import:
    """One import statement's edge: ``source`` imports ``target`` at ``where`` (file:line)."""

    source: str
    target: str
    where: str


@dataclass
class Findings:
    """What the checker found; empty lists mean the package keeps to its table."""

    cycles: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    unassigned: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        return [*self.unassigned, *self.cycles, *self.violations]


def module_names(package_dir: Path) -> dict[str, Path]:
    """Every module of the package by dotted name (``pkg/a/__init__.py`` is ``pkg.a``)."""
    root = package_dir.name
    modules: dict[str, Path] = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = [root, *path.relative_to(package_dir).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _imported(
    name: str, is_package: bool, node: ast.Import | ast.ImportFrom, modules: Mapping[str, Path]
) -> Iterator[str]:
    """The modules of the package that one import statement in module ``name`` names."""
    root = name.split(".")[0]
    if isinstance(node, ast.Import):
        bases = [alias.name for alias in node.names]
        yield from (b for b in bases if b == root or b.startswith(root + "."))
        return
    if node.level:
        package = name.split(".") if is_package else name.split(".")[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join([*package, node.module] if node.module else package)
    else:
        base = node.module or ""
    if base != root and not base.startswith(root + "."):
        return
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        yield sub if sub in modules else base


def import_edges(package_dir: Path, modules: Mapping[str, Path]) -> list[Import]:
    """Every import between modules of the package, anywhere in a file (see the docstring)."""
    edges: list[Import] = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        where = path.relative_to(package_dir.parent).as_posix()
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            for named in _imported(name, path.name == "__init__.py", node, modules):
                target = _known(named, modules)
                if target != name:
                    edges.append(Import(name, target, f"{where}:{node.lineno}"))
    return edges


def _known(target: str, modules: Mapping[str, Path]) -> str:
    """``target`` or its nearest enclosing module that exists (``import pkg.a.missing``)."""
    parts = target.split(".")
    while len(parts) > 1 and ".".join(parts) not in modules:
        parts.pop()
    return ".".join(parts)


def _covers(entry: str, module: str, root: str) -> bool:
    """A table name covers itself and, except the root package, every module inside it."""
    return module == entry or (entry != root and module.startswith(entry + "."))


def _owner(module: str, entries: Sequence[str], root: str) -> str | None:
    matches = [e for e in entries if _covers(e, module, root)]
    return max(matches, key=len) if matches else None


def find_cycles(edges: Sequence[Import]) -> list[tuple[list[str], list[Import]]]:
    """Each group of modules that import each other in a circle (a strongly connected
    component, by Tarjan), sorted, with the shortest cycle through its first module."""
    graph: dict[str, dict[str, Import]] = {}
    for e in edges:
        graph.setdefault(e.source, {}).setdefault(e.target, e)
        graph.setdefault(e.target, {})
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [(sorted(g), _shortest_cycle(graph, g)) for g in sorted(groups, key=min)]


def _shortest_cycle(graph: Mapping[str, Mapping[str, Import]], group: set[str]) -> list[Import]:
    """The shortest way from the group's first module back to itself, inside the group."""
    start = min(group)
    paths: dict[str, list[Import]] = {start: []}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w, edge in sorted(graph[v].items()):
            if w == start:
                return [*paths[v], edge]
            if w in group and w not in paths:
                paths[w] = [*paths[v], edge]
                queue.append(w)
    raise AssertionError(f"no cycle through {start}")  # a strongly connected group has one


class _Rules:
    """The table applied to one package: who owns a module, and whether an import may be."""

    def __init__(self, table: LayerTable, root: str) -> None:
        self.table = table
        self.root = root
        self.layer = {e: n for n, names in enumerate(table.layers, 1) for e in names}
        self.entries = [*self.layer, *table.leaves, *table.separate]

    def owner(self, module: str) -> str | None:
        return _owner(module, self.entries, self.root)

    def is_leaf(self, module: str) -> bool:
        return self.owner(module) in self.table.leaves

    def layer_of(self, module: str) -> int | None:
        owner = self.owner(module)
        return None if owner is None else self.layer.get(owner)

    def separate(self, module: str) -> str | None:
        return _owner(module, self.table.separate, self.root)

    def pair_in(self, pairs: Mapping[tuple[str, str], str], e: Import) -> str | None:
        for (source, target), reason in pairs.items():
            if _covers(source, e.source, self.root) and _covers(target, e.target, self.root):
                return reason
        return None

    def direct(self, e: Import) -> str | None:
        """Why ``e`` breaks the table by itself (leaves are checked separately), or None."""
        if self.owner(e.source) is None or self.owner(e.target) is None:
            return None  # reported as unassigned
        if self.separate(e.source) != self.separate(e.target):
            if self.pair_in(self.table.allowed, e) is not None:
                return None
            apart = self.separate(e.source) or self.separate(e.target)
            return f"{apart} is separate from the rest of {self.root}: no imports in or out"
        reason = self.pair_in(self.table.forbidden, e)
        if reason is not None:
            return f"forbidden: {reason}"
        src, dst = self.layer_of(e.source), self.layer_of(e.target)
        if src is not None and dst is not None and dst < src:
            return f"layer {src} imports from layer {dst}, which is higher"
        return None


def _through_leaves(rules: _Rules, edges: Sequence[Import]) -> list[str]:
    """Upward imports that pass through leaves: X imports leaf L, and L (or a leaf it imports)
    imports a module of a layer above X's."""
    out: dict[str, list[Import]] = {}
    for e in edges:
        out.setdefault(e.source, []).append(e)
    found: list[str] = []
    for e in edges:
        src = rules.layer_of(e.source)
        if src is None or not rules.is_leaf(e.target):
            continue
        seen, todo = {e.target}, [e.target]
        while todo:
            for step in out.get(todo.pop(), []):
                dst = rules.layer_of(step.target)
                if rules.is_leaf(step.target) and step.target not in seen:
                    seen.add(step.target)
                    todo.append(step.target)
                elif dst is not None and dst < src:
                    found.append(  # one line per leaf import and upward step
                        f"{e.where}: {e.source} (layer {src}) imports leaf {e.target}, and "
                        f"{step.where}: {step.source} imports {step.target} (layer {dst}), "
                        "which is higher: a leaf may import only what lies below its users"
                    )
    return list(dict.fromkeys(found))


def check_layers(package_dir: Path, table: LayerTable) -> Findings:
    """Read the package under ``package_dir`` and hold its imports against ``table``."""
    root = package_dir.name
    modules = module_names(package_dir)
    edges = import_edges(package_dir, modules)
    rules = _Rules(table, root)
    findings = Findings()
    for name in modules:
        if rules.owner(name) is None:
            findings.unassigned.append(
                f"{name} is in no layer: assign it to a layer, a leaf or a separate package "
                "in the table at the top of tests/unit/test_layering.py"
            )
    for group, cycle in find_cycles(edges):
        steps = " -> ".join([cycle[0].source, *(e.target for e in cycle)])
        wheres = ", ".join(e.where for e in cycle)
        tangle = f"; all in one circle: {', '.join(group)}" if len(group) > len(cycle) else ""
        findings.cycles.append(f"import cycle: {steps} ({wheres}){tangle}")
    for e in edges:
        reason = rules.direct(e)
        if reason is not None:
            findings.violations.append(f"{e.where}: {e.source} imports {e.target}: {reason}")
    findings.violations.extend(_through_leaves(rules, edges))
    return findings


# ---------------------------------------------------------------------------------- the package


def test_kbfs_imports_follow_the_layers() -> None:
    table = LayerTable(LAYERS, LEAVES, SEPARATE, ALLOWED, FORBIDDEN)
    problems = check_layers(PACKAGE_DIR, table).problems()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


# ---------------------------------------------------------------------------------- the checker

FAKE = LayerTable(
    layers=(("fake.top",), ("fake.middle", "fake.side"), ("fake.bottom",)),
    leaves=("fake", "fake.util"),
    separate=("fake.apart",),
    allowed={("fake.top", "fake.apart.entry"): "the one door in"},
    forbidden={("fake.middle", "fake.side"): "side calls middle, never the other way"},
)


def _package(tmp_path: Path, files: Mapping[str, str]) -> Path:
    """A fake package ``fake`` under ``tmp_path``: every module of FAKE, plus ``files``.

    ``files`` maps a path inside the package to its source; by default modules are empty.
    """
    package = tmp_path / "fake"
    defaults = {
        "__init__.py": "",
        "top.py": "",
        "middle.py": "",
        "side.py": "",
        "bottom/__init__.py": "",
        "bottom/core.py": "",
        "util.py": "",
        "apart/__init__.py": "",
        "apart/entry.py": "",
    }
    for rel, text in {**defaults, **files}.items():
        path = package / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return package


def test_checker_accepts_a_clean_package(tmp_path: Path) -> None:
    package = _package(
        tmp_path,
        {
            "top.py": "import fake.middle\nfrom fake import util\nfrom fake.apart import entry\n",
            "middle.py": "from fake.bottom.core import thing\nfrom .util import helper\n",
            "side.py": "from . import middle\n",  # the same layer, no cycle
            "bottom/__init__.py": "from .core import thing\n",  # a package shows its module
            "bottom/core.py": "from .. import util\n",
            "util.py": "import fake\n",
            "apart/entry.py": "from fake.apart import __doc__\n",
        },
    )
    assert check_layers(package, FAKE).problems() == []


def test_checker_reports_a_cycle_with_its_path(tmp_path: Path) -> None:
    package = _package(
        tmp_path,
        {
            "middle.py": "import fake.bottom.core\n",
            "bottom/__init__.py": "from fake.bottom import core\n",
            "bottom/core.py": "def later():\n    from fake.side import x\n",
            "side.py": "\n\nfrom fake import middle\n",
        },
    )
    findings = check_layers(package, FAKE)
    assert findings.cycles == [
        "import cycle: fake.bottom.core -> fake.side -> fake.middle -> fake.bottom.core "
        "(fake/bottom/core.py:2, fake/side.py:3, fake/middle.py:1)"
    ]
    # bottom/__init__ importing its own module is no cycle; the upward import is reported too
    assert findings.violations == [
        "fake/bottom/core.py:2: fake.bottom.core imports fake.side: "
        "layer 3 imports from layer 2, which is higher"
    ]


def test_checker_reports_an_upward_import(tmp_path: Path) -> None:
    package = _package(tmp_path, {"bottom/core.py": "from fake.top import main\n"})
    findings = check_layers(package, FAKE)
    assert findings.cycles == findings.unassigned == []
    assert findings.violations == [
        "fake/bottom/core.py:1: fake.bottom.core imports fake.top: "
        "layer 3 imports from layer 1, which is higher"
    ]


def test_checker_counts_type_checking_imports(tmp_path: Path) -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from ..middle import Thing\n"  # relative, two levels up, from a package module
    )
    package = _package(tmp_path, {"bottom/core.py": source})
    assert check_layers(package, FAKE).problems() == [
        "fake/bottom/core.py:3: fake.bottom.core imports fake.middle: "
        "layer 3 imports from layer 2, which is higher"
    ]


def test_checker_names_an_unassigned_module(tmp_path: Path) -> None:
    package = _package(tmp_path, {"newcomer.py": "import fake.top\n", "extra/__init__.py": ""})
    findings = check_layers(package, FAKE)
    assert [p.split(" ")[0] for p in findings.unassigned] == ["fake.extra", "fake.newcomer"]
    assert all("assign it" in p for p in findings.unassigned)
    assert findings.cycles == findings.violations == []


def test_checker_applies_forbidden_and_separate(tmp_path: Path) -> None:
    package = _package(
        tmp_path,
        {
            "middle.py": "import fake.side\n",  # same layer, but forbidden
            "side.py": "import fake.apart\n",  # into the separate package, not allowed
            "apart/entry.py": "from fake.bottom import core\n",  # out of it
        },
    )
    assert check_layers(package, FAKE).violations == [
        "fake/apart/entry.py:1: fake.apart.entry imports fake.bottom.core: "
        "fake.apart is separate from the rest of fake: no imports in or out",
        "fake/middle.py:1: fake.middle imports fake.side: "
        "forbidden: side calls middle, never the other way",
        "fake/side.py:1: fake.side imports fake.apart: "
        "fake.apart is separate from the rest of fake: no imports in or out",
    ]


def test_checker_sees_upward_imports_through_a_leaf(tmp_path: Path) -> None:
    package = _package(
        tmp_path,
        {
            "util.py": "from fake import middle\n",
            "bottom/core.py": "import fake.util\n",  # bottom would reach middle through util
            "top.py": "import fake.util\n",  # top may: middle lies below it
        },
    )
    assert check_layers(package, FAKE).violations == [
        "fake/bottom/core.py:1: fake.bottom.core (layer 3) imports leaf fake.util, and "
        "fake/util.py:1: fake.util imports fake.middle (layer 2), which is higher: "
        "a leaf may import only what lies below its users"
    ]


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ("import fake.bottom.core as c\n", "fake.bottom.core"),
        ("from fake.bottom import core\n", "fake.bottom.core"),
        ("from fake.bottom import something\n", "fake.bottom"),
        ("from fake.bottom.missing import x\n", "fake.bottom"),
        ("from .bottom.core import x\n", "fake.bottom.core"),
        ("from . import util\n", "fake.util"),
    ],
)
def test_checker_resolves_import_forms(tmp_path: Path, source: str, target: str) -> None:
    package = _package(tmp_path, {"middle.py": source})
    edges = import_edges(package, module_names(package))
    assert [(e.source, e.target) for e in edges] == [("fake.middle", target)]
