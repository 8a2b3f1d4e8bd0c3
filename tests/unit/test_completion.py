"""Shell completion: bash completes subcommands and the config file's remote names, zsh's
script loads and its remote-name function answers; `kbfs remotes` lists the remotes.

The scripts are what `kbfs completion bash|zsh` prints; completion is driven the way the shell
does it (COMP_WORDS/COMP_CWORD and the registered function), and asks the real `kbfs` on PATH.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

KBFS_BIN = Path(sys.executable).parent  # the venv's bin: `kbfs` is installed there


def kbfs(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kbfs", *args], capture_output=True, text=True, env=env, check=False
    )


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    config = tmp_path / "config.toml"
    config.write_text(
        '[remotes.work]\nurl = "https://kb.example.com"\n'
        '[remotes.home]\nurl = "https://kb.home.example/kanboard"\n'
    )
    path = f"{KBFS_BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}"
    return dict(os.environ, KBFS_CONFIG=str(config), PATH=path, HOME=str(tmp_path))


DRIVER = r"""
source "$1"
complete_line() {  # what bash does on <TAB>: the words so far, the one being completed last
  COMP_WORDS=("$@"); COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 )); COMPREPLY=()
  $(complete -p kbfs | sed -E 's/.* -F ([^ ]+) .*/\1/')
  echo "${COMPREPLY[*]}"
}
"""


def bash_complete(script: Path, env: dict[str, str], cwd: Path, *lines: str) -> list[str]:
    calls = "".join(f"complete_line {line}\n" for line in lines)
    r = subprocess.run(
        ["bash", "-c", DRIVER + calls, "bash", str(script)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        check=True,
    )
    assert r.stderr == ""
    return r.stdout.splitlines()


def test_bash_completes_commands_remote_names_and_directories(
    tmp_path: Path, env: dict[str, str]
) -> None:
    r = kbfs("completion", "bash", env=env)
    assert r.returncode == 0, r.stderr
    script = tmp_path / "kbfs.bash"
    script.write_text(r.stdout)
    (tmp_path / "kb-mnt").mkdir()
    (tmp_path / "kb-file").write_text("")
    assert bash_complete(
        script,
        env,
        tmp_path,
        "kbfs mo",  # a subcommand
        "kbfs mount w",  # a remote name, from the config file
        "kbfs mount ''",  # every remote
        "kbfs -v mount work kb",  # the mount point: directories only
        "kbfs mount --to",
        "kbfs completion ''",
        "kbfs re",
    ) == ["mount", "work", "home work", "kb-mnt", "--token-file", "bash zsh", "remotes"]
    # A remote added after the script was generated is completed too: asked for each time.
    config = Path(env["KBFS_CONFIG"])
    config.write_text(config.read_text() + '[remotes.wiki]\nurl = "https://wiki.example"\n')
    assert bash_complete(script, env, tmp_path, "kbfs mount w") == ["wiki work"]


@pytest.mark.skipif(shutil.which("zsh") is None, reason="needs zsh (scripts/bootstrap --test)")
def test_zsh_script_loads_and_completes_remote_names(tmp_path: Path, env: dict[str, str]) -> None:
    r = kbfs("completion", "zsh", env=env)
    assert r.returncode == 0, r.stderr
    script = tmp_path / "_kbfs"
    script.write_text(r.stdout)
    assert "_kbfs_remote_names" in r.stdout
    check = subprocess.run(["zsh", "-n", str(script)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    # Load it as compinit would, then call the remote-name completer with compadd recorded.
    body = (
        "autoload -U compinit && compinit -u -d $HOME/.zcompdump\n"
        f"source {script}\n"
        "compadd() { [[ $1 == -a ]] && print -l -- ${(P)2} }\n"
        "_kbfs_remote_names\n"
    )
    r2 = subprocess.run(["zsh", "-f", "-c", body], capture_output=True, text=True, env=env)
    assert r2.returncode == 0, r2.stderr
    assert r2.stdout.split() == ["home", "work"]


def test_remotes_lists_names_and_urls(env: dict[str, str]) -> None:
    r = kbfs("remotes", env=env)
    assert r.returncode == 0
    assert r.stdout.splitlines() == [
        f"remotes of {env['KBFS_CONFIG']}:",
        "  home  https://kb.home.example/kanboard",
        "  work  https://kb.example.com",
    ]
    assert kbfs("remotes", "--names", env=env).stdout == "home\nwork\n"
    Path(env["KBFS_CONFIG"]).write_text("[remotes.x]\nnope = 1\n")
    bad = kbfs("remotes", "--names", env=env)
    assert bad.returncode == 1 and bad.stdout == "" and "config.toml" in bad.stderr
