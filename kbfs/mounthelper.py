"""``mount.fuse.kbfs``: what mount(8), /etc/fstab and systemd .mount units run.

``mount -t fuse.kbfs URL /mnt/kanboard -o token_file=/etc/kbfs/token,ro`` makes mount(8) run
``/sbin/mount.fuse.kbfs URL /mnt/kanboard [-sfnvrw] [-N NS] -o OPTIONS [-t TYPE]`` (installed by
``kbfs install-helper``). Without the helper, mount(8) falls back to Debian's mount.fuse3,
which runs ``kbfs URL /mnt/kanboard -o OPTIONS``; ``kbfs.cli.main`` sends that here too.

Both become ``kbfs mount`` in background mode, which exits 0 only once the mount is up and
otherwise prints one line saying why. Options that belong to mount(8), fstab or systemd
(``_netdev``, ``nofail``, ``x-systemd.*``, mount.fuse3's ``dev,suid``, ...) are ignored by the
option parser; mount(8)'s flags ``-n`` (no mtab: systemd always passes it), ``-s`` (sloppy)
and ``-v`` are accepted.
"""

from __future__ import annotations

import sys

USAGE = "usage: mount.fuse.kbfs SOURCE MOUNTPOINT [-sfnvrw] [-N NS] [-o OPTIONS] [-t TYPE]"


class UsageError(Exception):
    pass


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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
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
        from kbfs.options import OptionError, parse_options

        try:
            parse_options(options)
        except OptionError as exc:
            print(f"kbfs: {exc}", file=sys.stderr)
            return 1
        return 0
    from kbfs.cli import main as cli_main

    args = ["mount", source, mountpoint]
    if options:
        args += ["-o", ",".join(options)]
    if "v" in flags:
        args.append("-v")
    return cli_main(args)


if __name__ == "__main__":
    sys.exit(main())
