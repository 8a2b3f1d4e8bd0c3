"""kbfs benchmark (issue 5): real mounts, measured side by side with their baselines.

Usage::

    .venv/bin/python bench/run.py [--url URL --token-file F] [--quick] [--keep-alive] [--only ROWS]

Without ``--url`` it starts the built-in server (``python -m kbfs.devserver``) on loopback in a
temporary directory, with ``Connection: close`` like PHP's built-in server (``--keep-alive`` to
try the other way). Every number is the median of several runs; the table it prints compares
each kbfs operation with a baseline measured in the same run. See bench/README.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from common import ROOT, Bench, log
from rows_listing import row_find, row_listing
from rows_load import row_memory, row_parallel
from rows_network import row_import, row_readthrough, row_sniff
from rows_transfer import row_write, rows_read

# Which rows each step measures (``--only`` picks steps by these numbers), in table order.
STEPS: list[tuple[set[int], Callable[[Bench], None]]] = [
    ({1, 2, 3}, rows_read),
    ({4}, row_write),
    ({5}, row_listing),
    ({6}, row_find),
    ({7}, row_parallel),
    ({8}, row_memory),
    ({9}, row_readthrough),
    ({10}, row_import),
    ({11}, row_sniff),
]
ROWS = set().union(*(rows for rows, _ in STEPS))

TOOLS = ("curl", "base64", "cut", "fusermount3", "cat", "cp", "ls", "find", "head")


def run(bench: Bench) -> None:
    """The steps ``--only`` asks for (all by default), in table order."""
    s = bench.sizes
    args = bench.args
    log(
        f"{'quick' if args.quick else 'full'} run: {s.runs} runs per row, "
        f"server {bench.server.url} "
        f"({'keep-alive' if args.keep_alive else 'Connection: close'})"
    )
    for rows, step in STEPS:
        if not args.only or rows & args.only:
            step(bench)


def parse_only(text: str) -> set[int]:
    """``--only``: row numbers separated by commas (``9,11``); a number that is no row stands
    for its digits, so ``15`` still means rows 1 and 5 (``1`` is rows 1-3)."""
    rows: set[int] = set()
    for part in text.replace(" ", ",").split(","):
        if not part:
            continue
        if not part.isdigit():
            raise argparse.ArgumentTypeError(f"not a row number: {part!r}")
        rows |= {int(part)} if int(part) in ROWS else {int(d) for d in part}
    if not rows <= ROWS:
        raise argparse.ArgumentTypeError(f"no such row: {sorted(rows - ROWS)}")
    return rows


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--url", help="an existing Kanboard (default: start the built-in server)")
    parser.add_argument("--token-file", help="the app API token (user jsonrpc) for --url")
    parser.add_argument("--quick", action="store_true", help="fewer runs, smaller sizes")
    parser.add_argument(
        "--keep-alive", action="store_true", help="built-in server keeps connections open"
    )
    parser.add_argument(
        "--only",
        type=parse_only,
        default=set(),
        metavar="ROWS",
        help="run only these rows, e.g. 9,11 (15: rows 1 and 5)",
    )
    args = parser.parse_args(argv)
    if args.url and not args.token_file:
        parser.error("--url needs --token-file")
    if args.token_file:  # the run works in a temporary directory (see main)
        args.token_file = str(Path(args.token_file).expanduser().resolve())
    return args


def kbfs_source() -> str:
    """Where the kbfs under test comes from (the children inherit this process's path)."""
    spec = importlib.util.find_spec("kbfs")
    if spec is None or spec.origin is None:
        os.environ["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p
        )
        sys.path.insert(0, str(ROOT))
        spec = importlib.util.find_spec("kbfs")
        if spec is None or spec.origin is None:
            raise RuntimeError("cannot find the kbfs package")
    src = Path(spec.origin).parent.parent
    rev = subprocess.run(
        ["git", "-C", str(src), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    # The commit, never a path of the machine: the output goes into README and RESULTS.md.
    label = f"commit {rev}" if rev else "no git commit known"
    if src.resolve() != ROOT.resolve():
        label += " (not the benchmark's own checkout: PYTHONPATH)"
    return label


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def print_results(bench: Bench, source: str, seconds: float) -> None:
    """The output: a header line, the table (as in RESULTS.md), then the rows' notes."""
    args = bench.args
    print(
        f"kbfs benchmark ({'quick' if args.quick else 'full'}; median of {bench.sizes.runs} runs;"
        f" {os.cpu_count()} cores; "
        f"{'external server' if args.url else 'built-in server'}"
        f"{', keep-alive' if args.keep_alive else ''}; {seconds:.0f} s)\n"
        f"kbfs: {source}\n"
    )
    print(bench.report.table())
    notes = [f"- {r.key}: {r.note}" for r in bench.report.rows if r.note]
    if not bench.caches.ok:
        notes.append("- page cache could not be dropped: 'cold' = fresh cache_dir only")
    if notes:
        print("\n" + "\n".join(notes))


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    for tool in TOOLS:
        if shutil.which(tool) is None:
            print(f"bench: {tool} is needed", file=sys.stderr)
            return 1
    signal.signal(signal.SIGTERM, _terminate)
    source = kbfs_source()
    log(f"kbfs from {source}")
    workdir = Path(tempfile.mkdtemp(prefix="kbfs-bench-"))
    # The servers and daemons run `python -m`, which puts the working directory first on their
    # path: outside any checkout, the kbfs they run is the one PYTHONPATH and the venv name.
    cwd = os.getcwd()
    os.chdir(workdir)
    started = time.monotonic()
    bench: Bench | None = None
    try:
        bench = Bench(args, workdir)
        run(bench)
    finally:
        if bench is not None:
            bench.close()
        os.chdir(cwd)
        shutil.rmtree(workdir, ignore_errors=True)
    assert bench is not None  # Bench() raised otherwise
    print_results(bench, source, time.monotonic() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
