"""Mount options (``-o a=b,c``) parsed into one frozen settings object, with no I/O.

Unknown options are an error naming the option: a typo must not silently mount with defaults.
Options that only mean something to mount(8), fstab or systemd are accepted and ignored.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from dataclasses import dataclass, field

IGNORED = frozenset(
    {
        "defaults",
        "auto",
        "noauto",
        "nouser",
        "users",
        "_netdev",
        "nofail",
        "rw",
        "exec",
        "noexec",
        "suid",
        "nosuid",
        "dev",
        "nodev",
        "async",
        "atime",
        "noatime",
        "relatime",
    }
)
IGNORED_PREFIXES = ("x-systemd.", "x-", "X-", "comment=")
# fstab's bare ``user`` (any user may mount) is a mount(8) matter; ``user=NAME`` is ours.
IGNORED_BARE = frozenset({"user"})


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class OptionError(ValueError):
    """A bad mount option; the message names it."""


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+)\s*([kKmMgGtT]?)(i?[bB])?\s*", text)
    if not m:
        raise ValueError(text)
    factor = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[m.group(2).lower()]
    return int(m.group(1)) * factor


@dataclass(frozen=True)
class MountOptions:
    uid: int = field(default_factory=os.getuid)
    gid: int = field(default_factory=os.getgid)
    umask: int = 0o022
    read_only: bool = False
    allow_other: bool = False
    xattr: bool = True  # noxattr: no user.kanboard.* attributes
    # writeback: close() returns once the bytes are safe in the spool; uploads run in the
    # background, small files several per request (kbfs.upload.writeback).
    writeback: bool = False
    dir_cache_ttl: float = 5.0
    attr_timeout: float = 1.0
    timeout: float = 30.0
    cache_dir: str | None = None
    state_dir: str | None = None
    cache_size: int = 2 << 30
    # Largest file a write may make (None: no limit). Kanboard states no limit through its API;
    # its PHP settings (memory_limit above all) decide, and only the administrator knows them.
    max_file_size: int | None = None
    token_file: str | None = None
    user: str | None = None
    log_level: str | None = None
    cafile: str | None = None
    # An HTTP proxy chosen on purpose; HTTP_PROXY and the like in the environment are ignored.
    proxy: str | None = None
    # Name patterns (fnmatch) of files that stay in the mount and never reach Kanboard: None
    # means kbfs's defaults (editor swap files, lock files, ...); local_names_add extends them.
    local_names: tuple[str, ...] | None = None
    local_names_add: tuple[str, ...] = ()


def _patterns(value: str) -> tuple[str, ...]:
    """``PAT:PAT``: colon-separated, since commas already separate mount options."""
    return tuple(p for p in value.split(":") if p)


_INT = {"uid", "gid"}
_FLOAT = {"dir_cache_ttl", "attr_timeout", "timeout"}
_STR = {"cache_dir", "state_dir", "token_file", "user", "log_level", "cafile"}


FLAGS = frozenset({"ro", "allow_other", "xattr", "noxattr", "writeback"})
VALUED = frozenset(
    _INT
    | _FLOAT
    | _STR
    | {"umask", "cache_size", "max_file_size", "local_names", "local_names_add", "proxy"}
)


def parse_options(specs: list[str], base: MountOptions | None = None) -> MountOptions:
    """Fold ``-o`` strings (each comma-separated) into ``base``."""
    values: dict[str, object] = dict((base or MountOptions()).__dict__)
    for spec in specs:
        for item in spec.split(","):
            item = item.strip()
            if not item:
                continue
            key, eq, value = item.partition("=")
            key = key.strip()
            if (
                key in IGNORED
                or key.startswith(IGNORED_PREFIXES)
                or (key in IGNORED_BARE and not eq)
            ):
                continue
            try:
                if key == "ro":
                    values["read_only"] = True
                elif key == "allow_other":
                    values["allow_other"] = True
                elif key == "writeback":
                    values["writeback"] = True
                elif key in ("xattr", "noxattr"):
                    values["xattr"] = key == "xattr"
                elif key == "umask":
                    values["umask"] = int(value, 8)
                    if not 0 <= values["umask"] <= 0o777:  # type: ignore[operator]
                        raise ValueError(value)
                elif key == "local_names":
                    if not eq:
                        raise ValueError("empty")
                    values["local_names"] = _patterns(value)  # empty: nothing is local-only
                elif key == "local_names_add":
                    if not _patterns(value):
                        raise ValueError("empty")
                    values["local_names_add"] = (
                        *values["local_names_add"],  # type: ignore[misc]
                        *_patterns(value),
                    )
                elif key == "cache_size":
                    values["cache_size"] = parse_size(value)
                elif key == "max_file_size":
                    values["max_file_size"] = parse_size(value) or None  # 0: no limit
                elif key in _INT:
                    values[key] = int(value)
                elif key in _FLOAT:
                    number = float(value)
                    if number < 0:
                        raise ValueError(value)
                    values[key] = number
                elif key == "proxy":
                    parts = urllib.parse.urlsplit(value)
                    if parts.scheme not in ("http", "https") or not parts.hostname:
                        raise ValueError(value)
                    values[key] = value
                elif key == "log_level":
                    if value.upper() not in LOG_LEVELS:
                        raise ValueError(value)
                    values[key] = value.upper()
                elif key in _STR:
                    if not eq or not value:
                        raise ValueError("empty")
                    values[key] = value
                else:
                    raise OptionError(f"unknown mount option {key!r}")
            except ValueError:
                raise OptionError(f"bad value for mount option {key!r}: {value!r}") from None
            if key in ("timeout",) and values["timeout"] == 0:
                raise OptionError("mount option 'timeout' must be greater than 0")
    return MountOptions(**values)  # type: ignore[arg-type]
