"""The configuration file: named remotes, so ``kbfs mount work ~/kb`` needs no URL or flags.

``$XDG_CONFIG_HOME/kbfs/config.toml`` (``~/.config/kbfs/config.toml``) for a user, else
``/etc/kbfs/config.toml``; root reads only the latter (see :func:`default_path`). ``--config``
or ``$KBFS_CONFIG`` names another::

    [defaults]                 # mount options for every remote
    dir_cache_ttl = 10

    [remotes.work]
    url = "https://kanboard.example.com"
    token_file = "/etc/kbfs/work.token"   # relative paths: from this file's directory
    user = "alice"                        # optional: log in as a user, not with the app token
    uid = 1000
    ro = true
    local_names_add = ["*.tmp"]

Every key besides ``url`` is a mount option (README, "Options"), with the same meaning and
checks as on the command line, so the two can never drift apart. Precedence, lowest first:
``[defaults]``, the remote's table, ``-o`` on the command line, ``--user``/``--token-file``.

A mistake is an error naming the file, the line and the key: a typo in a config file must not
mount with silently different settings.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

from kbfs.options import FLAGS, VALUED, MountOptions, OptionError, parse_options

SYSTEM_CONFIG = Path("/etc/kbfs/config.toml")
PATH_KEYS = frozenset({"token_file", "cache_dir", "state_dir", "cafile"})


class ConfigError(ValueError):
    """A bad configuration file; the message names the file, the line and the key."""


@dataclass(frozen=True)
class Remote:
    name: str
    url: str
    specs: tuple[str, ...]  # ``-o`` style option strings, lowest precedence first


@dataclass(frozen=True)
class Config:
    path: Path | None
    defaults: tuple[str, ...] = ()
    remotes: dict[str, Remote] = field(default_factory=dict)

    def remote(self, name: str) -> Remote | None:
        return self.remotes.get(name)

    def options(self, remote: Remote | None, cli_specs: list[str]) -> MountOptions:
        """Defaults, then the remote, then the command line: the last one wins."""
        base = parse_options(list(self.defaults))
        if remote is not None:
            base = parse_options(list(remote.specs), base)
        return parse_options(cli_specs, base)


def _user_file(env: dict[str, str]) -> Path:
    base = env.get("XDG_CONFIG_HOME") or platformdirs.user_config_dir()
    return Path(base) / "kbfs" / "config.toml"


def default_path(env: dict[str, str] | None = None, uid: int | None = None) -> Path | None:
    """The file to read when none is named: the user's, else the system's; None if neither.

    Root reads only the system file. Root's mounts are the system's (fstab, systemd units,
    mount(8)), started with whatever HOME their caller had: a file under root's home that
    silently changed what those mount would be a trap, so root's own file is named in the
    error instead (see :func:`searched`).
    """
    env = dict(os.environ) if env is None else env
    uid = os.getuid() if uid is None else uid
    if env.get("KBFS_CONFIG"):
        return Path(env["KBFS_CONFIG"])
    if uid != 0:
        user_file = _user_file(env)
        if user_file.exists():
            return user_file
    return SYSTEM_CONFIG if SYSTEM_CONFIG.exists() else None


def searched(found: Path | None, env: dict[str, str] | None = None, uid: int | None = None) -> str:
    """Where kbfs looked for remotes (``found``: the file it read, if any), for an error.

    Names every path tried, and root's own file when it exists but was not read, so a
    person can see at once why their remote is unknown.
    """
    env = dict(os.environ) if env is None else env
    uid = os.getuid() if uid is None else uid
    if found is not None:
        text = f"in {found}"
    elif uid != 0:
        text = f"no config file at {_user_file(env)} or {SYSTEM_CONFIG}"
    else:
        text = f"no config file at {SYSTEM_CONFIG}"
    user_file = _user_file(env)
    if uid == 0 and not env.get("KBFS_CONFIG") and found != user_file and user_file.exists():
        text += (
            f"; as root kbfs reads only {SYSTEM_CONFIG}, not {user_file}:"
            f" move it there or add --config {user_file}"
        )
    return text


def _table_of(header: str) -> tuple[str, ...]:
    parts = re.findall(r'"([^"]*)"|\'([^\']*)\'|([^.\s]+)', header)
    return tuple(a or b or c for a, b, c in parts)


def find_line(text: str, table: tuple[str, ...], key: str | None) -> int | None:
    """The line (1-based) of ``key`` in ``[table]``, or of the table header; None if unknown.

    tomllib reports positions only for syntax errors; for a wrong key or value we find it
    ourselves, well enough for files people write by hand.
    """
    current: tuple[str, ...] = ()
    header_line = None
    key_re = re.compile(r"""^\s*(?:"%s"|'%s'|%s)\s*=""" % ((re.escape(key or "\0"),) * 3))
    for number, line in enumerate(text.splitlines(), 1):
        m = re.match(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$", line)
        if m:
            current = _table_of(m.group(1))
            if current == table:
                header_line = number
            continue
        if key is not None and current == table and key_re.match(line):
            return number
    return header_line


def _first_header(text: str, top: str) -> int | None:
    """The line of the first ``[top...]`` header."""
    for number, line in enumerate(text.splitlines(), 1):
        m = re.match(r"^\s*\[+\s*([^\[\]]+?)\s*\]", line)
        if m and _table_of(m.group(1))[:1] == (top,):
            return number
    return None


def _spec(key: str, value: Any, base: Path) -> str | None:
    """One TOML value as an ``-o`` item; raises ValueError with a reason."""
    if key in FLAGS:
        if not isinstance(value, bool):
            raise ValueError("must be true or false")
        return key if value else None
    if isinstance(value, bool):
        raise ValueError("must be a string or a number, not true/false")
    if key in ("local_names", "local_names_add"):
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError("must be a list of name patterns")
        if any(":" in v or "," in v for v in value):
            raise ValueError("patterns cannot hold ':' or ','")
        return f"{key}={':'.join(value)}"
    if key == "umask" and isinstance(value, int):
        value = format(value, "o")  # umask = 0o077 and umask = "077" mean the same
    if not isinstance(value, str | int | float):
        raise ValueError("must be a string or a number")
    text = str(value)
    if "," in text:
        raise ValueError("cannot hold ','")
    if key in PATH_KEYS and text:
        text = str(base / Path(text).expanduser())
    return f"{key}={text}"


def _options_table(
    data: dict[str, Any], table: tuple[str, ...], text: str, path: Path, allow_url: bool
) -> list[str]:
    specs = []
    for key, value in data.items():
        where = find_line(text, table, key)
        at = f"{path}:{where}" if where else str(path)
        if key == "url" and allow_url:
            continue
        if key not in FLAGS and key not in VALUED:
            hint = " (only a remote has a url)" if key == "url" else ""
            raise ConfigError(f"{at}: unknown key {key!r} in [{'.'.join(table)}]{hint}")
        try:
            spec = _spec(key, value, path.parent)
            if spec is not None:
                parse_options([spec])  # the same checks as -o
        except OptionError as exc:
            raise ConfigError(f"{at}: key {key!r}: {exc}") from None
        except ValueError as exc:
            raise ConfigError(f"{at}: key {key!r} {exc}") from None
        if spec is not None:
            specs.append(spec)
    return specs


def _syntax_error(text: str, path: Path, exc: tomllib.TOMLDecodeError) -> str:
    """``FILE:LINE: what is wrong: the line`` (the line shows the key it is about)."""
    message = str(exc)
    m = re.search(r"\(at line (\d+), column \d+\)|\(at end of document\)", message)
    reason = message[: m.start()].strip() if m else message
    lines = text.splitlines()
    number = int(m.group(1)) if m and m.group(1) else len(lines)
    shown = lines[number - 1].strip() if 0 < number <= len(lines) else ""
    return f"{path}:{number}: {reason}" + (f": {shown}" if shown else "")


def parse_config(text: str, path: Path) -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(_syntax_error(text, path, exc)) from None
    for key in data:
        if key not in ("defaults", "remotes"):
            where = find_line(text, (), key) or _first_header(text, key)
            at = f"{path}:{where}" if where else str(path)
            raise ConfigError(
                f"{at}: unknown key {key!r} (expected [defaults] and [remotes.NAME] tables)"
            )
    defaults: list[str] = []
    if "defaults" in data:
        if not isinstance(data["defaults"], dict):
            raise ConfigError(f"{path}: 'defaults' must be a table")
        defaults = _options_table(data["defaults"], ("defaults",), text, path, allow_url=False)
    remotes: dict[str, Remote] = {}
    raw_remotes = data.get("remotes", {})
    if not isinstance(raw_remotes, dict):
        raise ConfigError(f"{path}: 'remotes' must be a table of [remotes.NAME] tables")
    for name, table in raw_remotes.items():
        where = find_line(text, ("remotes", name), None)
        at = f"{path}:{where}" if where else str(path)
        if not isinstance(table, dict):
            raise ConfigError(f"{at}: remote {name!r} must be a table ([remotes.{name}])")
        url = table.get("url")
        if not isinstance(url, str) or not url.strip():
            line = find_line(text, ("remotes", name), "url") or where
            raise ConfigError(f"{path}:{line}: key 'url' missing or empty in [remotes.{name}]")
        specs = _options_table(table, ("remotes", name), text, path, allow_url=True)
        remotes[name] = Remote(name, url.strip(), tuple(specs))
    return Config(path, tuple(defaults), remotes)


def load_config(path: str | os.PathLike[str] | None, *, required: bool = False) -> Config:
    """Read ``path`` (or the default file); an empty Config when there is none to read."""
    p = Path(path).expanduser() if path else default_path()
    if p is None:
        return Config(None)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        if required or path:
            raise ConfigError(f"{p}: no such configuration file") from None
        return Config(None)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read it ({exc.__class__.__name__})") from None
    return parse_config(text, p.resolve())


def looks_like_url(text: str) -> bool:
    """A remote name is a plain word; anything with a scheme, dot, colon or slash is a URL."""
    return bool(re.search(r"[.:/]", text)) or text == "localhost"
