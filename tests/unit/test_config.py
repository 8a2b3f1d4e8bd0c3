"""The config file: remotes, defaults, precedence, and errors that name the line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from kbfs.config import (
    ConfigError,
    default_path,
    load_config,
    looks_like_url,
    parse_config,
    searched,
)

GOOD = """\
# kbfs remotes
[defaults]
dir_cache_ttl = 10
cache_size = "1G"

[remotes.work]
url = "https://kb.example.com"
token_file = "work.token"
user = "alice"
uid = 1000
ro = true
umask = 0o077
local_names_add = ["*.tmp", "*.bak"]

[remotes."other one"]
url = "http://127.0.0.1:8080/jsonrpc.php"
allow_other = false
"""


def test_remotes_defaults_and_precedence(tmp_path: Path) -> None:
    f = tmp_path / "config.toml"
    f.write_text(GOOD)
    config = load_config(f)
    work = config.remote("work")
    assert work is not None and work.url == "https://kb.example.com"
    o = config.options(work, [])
    assert (o.uid, o.umask, o.read_only, o.user) == (1000, 0o077, True, "alice")
    assert o.dir_cache_ttl == 10 and o.cache_size == 1 << 30
    assert o.token_file == str(tmp_path / "work.token")  # relative to the file
    assert o.local_names_add == ("*.tmp", "*.bak")
    # the command line wins over the remote, the remote over [defaults]
    o = config.options(work, ["uid=5,dir_cache_ttl=1"])
    assert (o.uid, o.dir_cache_ttl) == (5, 1.0)
    other = config.remote("other one")
    assert other is not None
    o = config.options(other, [])
    assert (o.allow_other, o.read_only, o.dir_cache_ttl) == (False, False, 10)
    assert config.remote("nope") is None


@pytest.mark.parametrize(
    ("text", "line", "key"),
    [
        ('[remotes.w]\nurl = "x"\nbogus = 1\n', 3, "bogus"),
        ('[remotes.w]\nurl = "x"\n\nuid = "abc"\n', 4, "uid"),
        ('[remotes.w]\nurl = "x"\nro = "yes"\n', 3, "ro"),
        ('[defaults]\nurl = "x"\n', 2, "url"),
        ('[remotes.w]\nuser = "a"\n', 1, "url"),
        ('[remotes.w]\nurl = "x"\ntimeout = 0\n', 3, "timeout"),
        ('[remotes.w]\nurl = "x"\nlog_level = "LOUD"\n', 3, "log_level"),
        ('[remotez.w]\nurl = "x"\n', 1, "remotez"),
        ('[remotes.w]\nurl = "x"\ncache_size = "lots"\n', 3, "cache_size"),
    ],
)
def test_semantic_errors_name_line_and_key(text: str, line: int, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(text, Path("/etc/kbfs/config.toml"))
    message = str(err.value)
    assert message.startswith(f"/etc/kbfs/config.toml:{line}:"), message
    assert repr(key) in message, message


def test_syntax_error_names_line_and_shows_the_key() -> None:
    text = '[remotes.w]\nurl = "x"\ntoken_file = /etc/kbfs/token\n'
    with pytest.raises(ConfigError) as err:
        parse_config(text, Path("/c.toml"))
    message = str(err.value)
    assert message.startswith("/c.toml:3:"), message
    assert "token_file" in message
    assert len(message.splitlines()) == 1


def test_missing_named_file_is_an_error_default_file_is_optional(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_config(tmp_path / "missing.toml")
    assert default_path(env={"XDG_CONFIG_HOME": str(tmp_path)}, uid=1000) in (
        None,
        Path("/etc/kbfs/config.toml"),
    )
    (tmp_path / "kbfs").mkdir()
    (tmp_path / "kbfs" / "config.toml").write_text("")
    assert default_path(env={"XDG_CONFIG_HOME": str(tmp_path)}, uid=1000) == (
        tmp_path / "kbfs" / "config.toml"
    )
    assert default_path(env={"KBFS_CONFIG": "/x.toml"}) == Path("/x.toml")


def test_url_or_remote_name() -> None:
    assert looks_like_url("https://kb.example.com")
    assert looks_like_url("kb.example.com")
    assert looks_like_url("127.0.0.1:8080")
    assert looks_like_url("localhost")
    assert not looks_like_url("work")


def test_unknown_remote_message_names_every_path_tried(tmp_path: Path) -> None:
    """A remote that cannot be found says where kbfs looked; as root, also that the root's
    own file (which exists) was not read and how to use it."""
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    user_file = tmp_path / "kbfs" / "config.toml"
    assert searched(None, env=env, uid=1000) == (
        f"no config file at {user_file} or /etc/kbfs/config.toml"
    )
    assert searched(None, env=env, uid=0) == "no config file at /etc/kbfs/config.toml"
    user_file.parent.mkdir()
    user_file.write_text('[remotes.work]\nurl = "https://kb.example.com"\n')
    message = searched(None, env=env, uid=0)
    assert "/etc/kbfs/config.toml" in message
    assert f"not {user_file}" in message and f"--config {user_file}" in message
    other = tmp_path / "etc.toml"
    assert searched(other, env=env, uid=0).startswith(f"in {other}; as root")
    assert searched(user_file, env=env, uid=1000) == f"in {user_file}"
