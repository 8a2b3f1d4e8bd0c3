"""The manual pages kbfs(1) and mount.fuse.kbfs(8), written from the argument parser.

``setup.py`` runs this at build time and the wheel installs the pages under
``share/man/man1`` and ``share/man/man8`` of its prefix. Every subcommand, every option of the
parser and every ``-o`` mount option comes from the code, so a page cannot miss one; a mount
option without a line in :data:`OPTION_DOCS` stops the build rather than ship a page without it.
The parser is handed in (:func:`pages`), so this module needs nothing of ``kbfs.cli``.
"""

from __future__ import annotations

import argparse

from kbfs import __version__
from kbfs.helperargv import USAGE as HELPER_USAGE
from kbfs.options import FLAGS, IGNORED, VALUED

# -o option -> (how it is written, what it does); README's table says the same for readers.
OPTION_DOCS: dict[str, tuple[str, str]] = {
    "uid": ("uid=N", "owner shown for every file (default: the mounting user)"),
    "gid": ("gid=N", "group shown for every file (default: the mounting user's)"),
    "umask": ("umask=OCTAL", "modes: files 0666 & ~umask, directories 0777 & ~umask (022)"),
    "ro": ("ro", "read-only mount"),
    "allow_other": (
        "allow_other",
        "let other users see the mount (needs user_allow_other in /etc/fuse.conf)",
    ),
    "dir_cache_ttl": (
        "dir_cache_ttl=SECONDS",
        "how long a directory listing is reused before asking the server again (5)",
    ),
    "attr_timeout": ("attr_timeout=SECONDS", "how long the kernel caches entries (1)"),
    "timeout": ("timeout=SECONDS", "time before a server call counts as failed (30)"),
    "cache_dir": ("cache_dir=DIR", "where downloaded contents are cached (XDG cache dir)"),
    "state_dir": (
        "state_dir=DIR",
        "where unsaved uploads are spooled and the background log is kept (XDG state dir)",
    ),
    "cache_size": ("cache_size=SIZE", "content cache bound, e.g. 500M or 2G (2G)"),
    "max_file_size": (
        "max_file_size=SIZE",
        "a write past this size fails with EFBIG and the file is never uploaded (no default:"
        " Kanboard's PHP memory_limit decides; a file needs about 3x its size)",
    ),
    "token_file": ("token_file=FILE", "the same as --token-file"),
    "user": ("user=NAME", "the same as --user"),
    "log_level": ("log_level=LEVEL", "DEBUG, INFO, WARNING (the default) or ERROR"),
    "cafile": ("cafile=FILE", "CA bundle for a server with a private certificate"),
    "proxy": (
        "proxy=URL",
        "an HTTP(S) proxy to use on purpose; proxy variables in the environment are ignored",
    ),
    "local_names": (
        "local_names=PAT:PAT",
        "shell patterns of names that stay in the mount and never reach Kanboard"
        " (default: editor swap, lock and backup files); empty turns that off",
    ),
    "local_names_add": ("local_names_add=PAT:PAT", "patterns added to local_names' defaults"),
    "writeback": (
        "writeback",
        "close() returns once the bytes are safe in the local spool; uploads run in the"
        " background, small files several per request; fsync() and kbfs sync wait for them",
    ),
    "xattr": ("xattr", "show user.kanboard.* extended attributes (the default)"),
    "noxattr": ("noxattr", "no user.kanboard.* extended attributes"),
}

GLOBAL_DESTS = frozenset({"help", "verbose", "log_level", "version"})


def roff(text: str) -> str:
    """Text as roff source: backslashes and minus signs escaped (so ``-o`` stays an ASCII
    hyphen-minus that can be searched and pasted), no line read as a request."""
    text = text.replace("\\", "\\e").replace("-", "\\-").replace("'", "\\(aq")
    return "\n".join(
        ("\\&" + line) if line.startswith((".", "'")) else line for line in text.split("\n")
    )


def _para(text: str) -> str:
    return f".PP\n{roff(text)}\n"


def _example(text: str) -> str:
    """Preformatted: the epilogs' examples keep their line breaks."""
    return f".PP\n.nf\n.RS 2\n{roff(text.strip(chr(10)))}\n.RE\n.fi\n"


def _tagged(tag: str, text: str) -> str:
    return f".TP\n.B {roff(tag)}\n{roff(text)}\n"


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """(name, help, parser) of each subcommand, in the order ``kbfs --help`` lists them."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._get_subactions()}
            return [(name, helps.get(name, ""), sub) for name, sub in action.choices.items()]
    return []


def _usage(parser: argparse.ArgumentParser) -> str:
    return " ".join(parser.format_usage().removeprefix("usage:").split())


def _option_label(action: argparse.Action) -> str:
    if not action.option_strings:
        return str(action.metavar or action.dest)
    if action.nargs == 0:
        return ", ".join(action.option_strings)
    metavar = action.metavar or action.dest.upper()
    return ", ".join(f"{s} {metavar}" for s in action.option_strings)


def _arguments(parser: argparse.ArgumentParser, skip: frozenset[str]) -> str:
    out = []
    for action in parser._actions:
        if action.dest in skip or action.help == argparse.SUPPRESS:
            continue
        if isinstance(action, argparse._SubParsersAction):
            continue
        out.append(_tagged(_option_label(action), action.help or ""))
    return "".join(out)


def _mount_options() -> str:
    missing = sorted((FLAGS | VALUED) - OPTION_DOCS.keys())
    unknown = sorted(OPTION_DOCS.keys() - (FLAGS | VALUED))
    if missing or unknown:
        raise ValueError(
            f"kbfs.manpage.OPTION_DOCS is out of date: no text for {missing}, unknown {unknown}"
        )
    out = [_tagged(*OPTION_DOCS[name]) for name in sorted(OPTION_DOCS)]
    ignored = ", ".join(sorted(IGNORED))
    out.append(
        _para(
            "Accepted and ignored, since they matter to mount(8), fstab or systemd only: "
            f"{ignored}, a bare user, x-systemd.* and other x-* options. Any other option "
            "is an error naming it."
        )
    )
    return "".join(out)


def _header(name: str, section: int, summary: str) -> str:
    return (
        f'.TH {name.upper()} {section} "" "kbfs {__version__}" "kbfs"\n'
        ".nh\n"  # no hyphenation: option names stay whole, searchable
        f".SH NAME\n{roff(name)} \\- {roff(summary)}\n"
    )


FILES = [
    ("~/.config/kbfs/config.toml, /etc/kbfs/config.toml", "named remotes and their options"),
    (
        "~/.local/state/kbfs/",
        "the background log kbfs.log (rotated at 5 MiB, 3 kept) and, per server, the spool of "
        "files not uploaded yet (spool/) and what the server refused for good (recovered/)",
    ),
    ("~/.cache/kbfs/", "downloaded contents (a cache: safe to delete while nothing is mounted)"),
    ("$XDG_RUNTIME_DIR/kbfs/, /run/kbfs/", "status files and control sockets of running mounts"),
]

ENVIRONMENT = [
    ("KBFS_TOKEN_FILE, KBFS_TOKEN", "the API token (file, or the token itself)"),
    ("KBFS_CONFIG", "the configuration file to read"),
    ("JOURNAL_STREAM", "set by systemd: a background mount then logs to the journal"),
]


def kbfs_page(parser: argparse.ArgumentParser) -> str:
    """kbfs(1): every subcommand with its arguments and examples, and the mount options."""
    out = [_header("kbfs", 1, "mount a Kanboard server's file attachments as a directory tree")]
    out.append(f".SH SYNOPSIS\n{roff(_usage(parser))}\n")
    out.append(f".SH DESCRIPTION\n{roff(parser.description or '')}\n")
    out.append(_para("Global options, before or after the command:"))
    out.append(_arguments(parser, frozenset({"help"})))
    out.append(".SH COMMANDS\n")
    for name, summary, sub in _subcommands(parser):
        out.append(f'.SS "kbfs {roff(name)}"\n{roff(summary)}\n')
        if name == "server":
            out.append(_para("Its arguments are listed by: kbfs server --help"))
            continue
        out.append(_para("usage: " + _usage(sub)))
        if sub.description:
            out.append(_para(sub.description))
        out.append(_arguments(sub, GLOBAL_DESTS))
        if sub.epilog:
            out.append(_example(sub.epilog))
    out.append(".SH MOUNT OPTIONS\n")
    out.append(
        _para("Given with -o OPT[,OPT...] or as keys of a remote in the configuration file:")
    )
    out.append(_mount_options())
    out.append(".SH FILES\n" + "".join(_tagged(*f) for f in FILES))
    out.append(".SH ENVIRONMENT\n" + "".join(_tagged(*e) for e in ENVIRONMENT))
    out.append(
        ".SH EXIT STATUS\n"
        + roff("0 on success; 1 with one line on stderr saying why not. A mount without -f ")
        + roff("returns only once the mount is up.")
        + "\n"
    )
    out.append(".SH EXAMPLES\n" + _example(parser.epilog or ""))
    out.append(".SH SEE ALSO\n.BR mount.fuse.kbfs (8),\n.BR fusermount3 (1),\n.BR fstab (5)\n")
    return "".join(out)


def helper_page() -> str:
    """mount.fuse.kbfs(8): mount(8), /etc/fstab and systemd .mount units."""
    out = [_header("mount.fuse.kbfs", 8, "mount(8) helper for kbfs, the Kanboard filesystem")]
    out.append(".SH SYNOPSIS\n")
    out.append(roff("mount -t fuse.kbfs SOURCE MOUNTPOINT -o OPTIONS") + "\n.br\n")
    out.append(roff(HELPER_USAGE.removeprefix("usage: ")) + "\n")
    out.append(
        ".SH DESCRIPTION\n"
        + roff(
            "mount(8) runs this helper for file systems of type fuse.kbfs: from the command "
            "line, /etc/fstab or a systemd .mount unit. SOURCE is a Kanboard URL or the name "
            "of a remote in the configuration file. It runs kbfs mount in the background and "
            "returns once the mount is up (exit 0), or prints one line saying why not. "
            "kbfs install-helper puts it in /sbin."
        )
        + "\n"
    )
    out.append(".SH OPTIONS\n" + _mount_options())
    out.append(
        ".SH FSTAB\n"
        + _example(
            "https://kanboard.example.com /mnt/kanboard fuse.kbfs "
            "token_file=/etc/kbfs/token,uid=1000,gid=1000,_netdev,noauto,"
            "x-systemd.automount 0 0"
        )
        + _para(
            "The token file must be readable by its owner only. A background mount logs to "
            "the journal under systemd (journalctl -u mnt-kanboard.mount), else to "
            "kbfs.log in the state directory."
        )
    )
    out.append(
        ".SH SEE ALSO\n.BR kbfs (1),\n.BR mount (8),\n.BR fstab (5),\n.BR systemd.mount (5)\n"
    )
    return "".join(out)


def pages(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Relative path under share/man -> page source."""
    return {"man1/kbfs.1": kbfs_page(parser), "man8/mount.fuse.kbfs.8": helper_page()}
