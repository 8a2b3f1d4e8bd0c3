"""mount(8)'s helper calling convention, turned into a ``kbfs mount`` command line.

Two routes arrive here: ``/sbin/mount.fuse.kbfs`` (:mod:`kbfs.mounthelper`) and mount.fuse3
running ``kbfs SOURCE MOUNTPOINT -o OPTIONS`` (:func:`kbfs.cli.main`).  Both hand over the
function that runs ``kbfs``, so this module needs neither of them and the imports stay one-way.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from kbfs.options import OptionError, parse_options

__all__ = ["USAGE", "UsageError", "parse_argv", "run_helper"]

USAGE = "usage: mount.fuse.kbfs SOURCE MOUNTPOINT [-sfnvrw] [-N NS] [-o OPTIONS] [-t TYPE]"


class UsageError(Exception):
    """The helper was called wrongly; the message is the one line to print."""


def parse_argv(argv: list[str]) -> tuple[list[str], list[str], set[str]]:
    """(positionals, option strings, flags) from mount(8)'s helper calling convention."""
    positionals: list[str] = []
    options: list[str] = []
    flags: set[str] = set()
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            positionals.extend(argv[i:])
            break
        if not arg.startswith("-") or arg == "-":
            positionals.append(arg)
            continue
        if arg.startswith(("--options=", "--types=")):
            if arg.startswith("--options="):
                options.append(arg.split("=", 1)[1])
            continue
        if arg in ("--options", "--types"):
            if i >= len(argv):
                raise UsageError(f"{arg} needs a value")
            if arg == "--options":
                options.append(argv[i])
            i += 1
            continue
        letters = arg[1:]
        while letters:
            letter, letters = letters[0], letters[1:]
            if letter in "otN":  # take a value: the rest of this word, or the next word
                value = letters
                letters = ""
                if not value:
                    if i >= len(argv):
                        raise UsageError(f"-{letter} needs a value")
                    value = argv[i]
                    i += 1
                if letter == "o":
                    options.append(value)
                elif letter == "t" and value not in ("fuse.kbfs", "kbfs", "fuse"):
                    raise UsageError(f"this helper mounts fuse.kbfs, not {value}")
                # -N NS (mount namespace): mount(8) has already entered it for us.
            elif letter in "sfnvrwi":
                flags.add(letter)
            elif letter == "h":
                raise UsageError(USAGE)
            else:
                raise UsageError(f"unknown flag -{letter}")
    return positionals, options, flags


def run_helper(argv: list[str], run_kbfs: Callable[[list[str]], int]) -> int:
    """Check the helper's arguments and run ``kbfs mount`` through ``run_kbfs`` (the CLI).

    ``mount -f`` only checks the options: nothing is mounted and ``run_kbfs`` is not called.
    """
    try:
        positionals, options, flags = parse_argv(argv)
        if len(positionals) != 2:
            raise UsageError(USAGE)
    except UsageError as exc:
        print(f"mount.fuse.kbfs: {exc}", file=sys.stderr)
        return 1
    source, mountpoint = positionals
    if "r" in flags:
        options.append("ro")
    if "f" in flags:  # mount -f: pretend. Check the options, mount nothing.
        try:
            parse_options(options)
        except OptionError as exc:
            print(f"kbfs: {exc}", file=sys.stderr)
            return 1
        return 0
    args = ["mount", source, mountpoint]
    if options:
        args += ["-o", ",".join(options)]
    if "v" in flags:
        args.append("-v")
    return run_kbfs(args)
