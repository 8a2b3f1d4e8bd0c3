"""``kbfs completion bash|zsh`` and ``kbfs remotes``: shell completion made from the parser.

The scripts come from the argument parser through shtab, so a new subcommand or option is
completed without anyone editing a script. What the parser cannot know is filled in here:
SOURCE of ``kbfs mount`` completes to the remote names of the configuration file, which the
script asks ``kbfs remotes --names`` for at the moment of completion (a remote added later is
completed without regenerating anything); mount points and directories complete to
directories, token, log and config files to files.

shtab is imported only by :func:`script`: building the parser (the man page build hook does)
needs nothing outside the standard library.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

SHELLS = ("bash", "zsh")

PREAMBLE = {
    "bash": """
# SOURCE of `kbfs mount`: the remotes of the config file, asked for when completing.
_kbfs_remote_names() {
  compgen -W "$(command kbfs remotes --names 2>/dev/null)" -- "$1"
}
""",
    "zsh": """
# SOURCE of `kbfs mount`: the remotes of the config file, asked for when completing.
_kbfs_remote_names() {
  local -a names
  names=(${(f)"$(command kbfs remotes --names 2>/dev/null)"})
  compadd -a names
}
""",
}

# shtab's form: the function each shell calls, and the text that defines it.
REMOTE_NAMES = {"bash": "_kbfs_remote_names", "zsh": "_kbfs_remote_names", "preamble": PREAMBLE}

DIRECTORY_DESTS = frozenset({"mountpoint", "dir", "sbin", "bin"})
FILE_DESTS = frozenset({"token_file", "log_file", "config"})

EXAMPLES_COMPLETION = """install (then open a new shell):
  kbfs completion bash > ~/.local/share/bash-completion/completions/kbfs
  kbfs completion zsh > ~/.zfunc/_kbfs     # with fpath+=(~/.zfunc) before compinit in ~/.zshrc
"""

EXAMPLES_REMOTES = """examples:
  kbfs remotes              # name and URL of each remote, and which file they come from
  kbfs remotes --names      # one name a line (what shell completion uses)
"""


def add_commands(
    make: Callable[..., argparse.ArgumentParser],
    build_parser: Callable[[], argparse.ArgumentParser],
) -> None:
    """Add ``remotes`` and ``completion`` with ``make(name, **kwargs)`` (cli's subcommand
    factory); ``build_parser`` gives the whole parser the scripts are made from."""
    r = make("remotes", help="list the remotes of the config file", epilog=EXAMPLES_REMOTES)
    r.add_argument("--names", action="store_true", help="names only, one a line")
    r.add_argument("--config", metavar="FILE", help="config file (default: as for mount)")
    r.set_defaults(func=cmd_remotes)
    c = make(
        "completion", help="print the bash or zsh completion script", epilog=EXAMPLES_COMPLETION
    )
    c.add_argument("shell", choices=SHELLS, help="bash or zsh")
    c.set_defaults(func=lambda args: print_script(build_parser(), args.shell))


def cmd_remotes(args: argparse.Namespace) -> int:
    from kbfs.config import ConfigError, load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"kbfs: {exc}", file=sys.stderr)
        return 1
    if args.names:
        print("".join(f"{name}\n" for name in sorted(config.remotes)), end="")
        return 0
    if config.path is None:
        print("no config file: see the README's Configuration file")
        return 0
    print(f"remotes of {config.path}:" if config.remotes else f"no remotes in {config.path}")
    width = max((len(n) for n in config.remotes), default=0)
    for name in sorted(config.remotes):
        print(f"  {name:{width}}  {config.remotes[name].url}")
    return 0


def _annotate(parser: argparse.ArgumentParser, command: str = "") -> None:
    """Tell shtab what each argument completes to (its ``complete`` attribute)."""
    import shtab

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                _annotate(sub, name)
        elif command == "mount" and action.dest == "url":
            action.complete = REMOTE_NAMES  # type: ignore[attr-defined]
        elif action.dest in DIRECTORY_DESTS:
            action.complete = shtab.DIRECTORY  # type: ignore[attr-defined]
        elif action.dest in FILE_DESTS:
            action.complete = shtab.FILE  # type: ignore[attr-defined]


def script(parser: argparse.ArgumentParser, shell: str) -> str:
    """The completion script of ``shell`` for ``parser``."""
    import shtab

    _annotate(parser)
    return str(shtab.complete(parser, shell=shell))


def print_script(parser: argparse.ArgumentParser, shell: str) -> int:
    sys.stdout.write(script(parser, shell))
    return 0
