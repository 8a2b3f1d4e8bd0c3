from __future__ import annotations

import os
from pathlib import Path

import pytest

from kbfs.credentials import CredentialError, load_secret
from kbfs.options import OptionError, parse_options


def test_defaults_and_values() -> None:
    o = parse_options([])
    assert (o.uid, o.gid, o.umask, o.read_only) == (os.getuid(), os.getgid(), 0o022, False)
    o = parse_options(["uid=1000,gid=100", "umask=077,ro", "dir_cache_ttl=2.5,cache_size=1G"])
    assert (o.uid, o.gid, o.umask, o.read_only) == (1000, 100, 0o077, True)
    assert o.dir_cache_ttl == 2.5 and o.cache_size == 1 << 30


def test_fstab_only_options_are_ignored() -> None:
    o = parse_options(["_netdev,noauto,nofail,x-systemd.automount,x-systemd.mount-timeout=30"])
    assert o == parse_options([])


@pytest.mark.parametrize("spec", ["bogus", "uid=abc", "umask=999", "timeout=0", "cache_dir="])
def test_bad_options_name_the_option(spec: str) -> None:
    with pytest.raises(OptionError) as err:
        parse_options([spec])
    assert spec.split("=")[0] in str(err.value)


def test_token_sources(tmp_path: Path) -> None:
    f = tmp_path / "tok"
    f.write_text("secret-token\n")
    f.chmod(0o600)
    assert load_secret(str(f), env={}) == "secret-token"
    assert load_secret(None, env={"KBFS_TOKEN_FILE": str(f)}) == "secret-token"
    assert load_secret(None, env={"KBFS_TOKEN": "t2"}) == "t2"
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "kbfs-token").write_text("t3")
    assert load_secret(None, env={"CREDENTIALS_DIRECTORY": str(creds)}) == "t3"
    with pytest.raises(CredentialError, match="no API token"):
        load_secret(None, env={})


def test_world_readable_token_file_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "tok"
    f.write_text("secret-token")
    f.chmod(0o644)
    with pytest.raises(CredentialError, match="chmod 600") as err:
        load_secret(str(f), env={})
    assert "secret-token" not in str(err.value)


def test_user_option_and_fstab_user_flag() -> None:
    assert parse_options(["user=alice"]).user == "alice"
    assert parse_options(["user,users,nouser"]).user is None  # fstab: who may mount


def test_local_name_patterns() -> None:
    o = parse_options([])
    assert o.local_names is None and o.local_names_add == ()
    o = parse_options(["local_names=*.tmp:*.bak", "local_names_add=~*", "local_names_add=.x*"])
    assert o.local_names == ("*.tmp", "*.bak") and o.local_names_add == ("~*", ".x*")
    assert parse_options(["local_names="]).local_names == ()  # nothing is local-only
    with pytest.raises(OptionError, match="local_names_add"):
        parse_options(["local_names_add="])


def test_mount_helper_and_fuse3_extras_are_ignored() -> None:
    # what mount(8) and mount.fuse3 add to the options they pass on
    o = parse_options(["rw,dev,suid,nodev,nosuid,_netdev,nofail,x-systemd.automount,X-mount.mkdir"])
    assert o == parse_options([])


def test_log_level_is_checked() -> None:
    assert parse_options(["log_level=debug"]).log_level == "DEBUG"
    with pytest.raises(OptionError, match="log_level"):
        parse_options(["log_level=LOUD"])


def test_mount_helper_argv() -> None:
    from kbfs.helperargv import UsageError, parse_argv

    pos, opts, flags = parse_argv(
        ["http://h/x", "/mnt/k", "-n", "-sv", "-o", "ro,uid=1", "-t", "fuse.kbfs", "-oumask=077"]
    )
    assert pos == ["http://h/x", "/mnt/k"] and opts == ["ro,uid=1", "umask=077"]
    assert flags == {"n", "s", "v"}
    with pytest.raises(UsageError):
        parse_argv(["a", "b", "-t", "nfs"])
    with pytest.raises(UsageError):
        parse_argv(["a", "b", "-Z"])


def test_max_file_size() -> None:
    """No limit unless asked; a size with a unit; 0 means no limit; a bad size names the option."""
    assert parse_options([]).max_file_size is None
    assert parse_options(["max_file_size=64M"]).max_file_size == 64 << 20
    assert parse_options(["max_file_size=64M", "max_file_size=0"]).max_file_size is None
    with pytest.raises(OptionError, match="max_file_size"):
        parse_options(["max_file_size=lots"])


def test_token_file_of_another_user_is_refused(tmp_path: Path) -> None:
    """As ssh does with a key: a 0600 file that someone else owns is theirs to read and swap."""
    if os.geteuid() != 0:
        pytest.skip("needs root to give the file to another uid")
    f = tmp_path / "tok"
    f.write_text("secret-token")
    f.chmod(0o600)
    os.chown(f, 4242, 4242)
    with pytest.raises(CredentialError, match="belongs to uid 4242") as err:
        load_secret(str(f), env={})
    assert "secret-token" not in str(err.value)


def test_a_huge_token_file_is_refused_unread(tmp_path: Path) -> None:
    f = tmp_path / "tok"
    with open(f, "wb") as out:
        out.truncate(200 << 20)  # sparse: 200 MB that take no disk
    f.chmod(0o600)
    with pytest.raises(CredentialError, match="holds 209715200 bytes"):
        load_secret(str(f), env={})
    f.write_text("t" * 4096)
    assert load_secret(str(f), env={}) == "t" * 4096


def test_proxy_option() -> None:
    assert parse_options([]).proxy is None  # never taken from the environment
    assert parse_options(["proxy=http://proxy.example:3128"]).proxy == "http://proxy.example:3128"
    for bad in ("proxy=socks5://p:1080", "proxy=proxy.example:3128", "proxy=http://"):
        with pytest.raises(OptionError, match="'proxy'"):
            parse_options([bad])


def test_secret_source_rereads_where_the_secret_came_from(tmp_path: Path) -> None:
    from kbfs.credentials import secret_source

    token = tmp_path / "token"
    token.write_text("one\n")
    token.chmod(0o600)
    read = secret_source(str(token), env={})
    assert read is not None and read() == "one"
    token.write_text("two\n")
    assert read() == "two"
    via_env = secret_source(None, env={"KBFS_TOKEN_FILE": str(token)})
    assert via_env is not None and via_env() == "two"
    assert secret_source(None, env={"KBFS_TOKEN": "fixed"}) is None  # cannot change
    token.chmod(0o644)
    with pytest.raises(CredentialError):  # the same checks as at mount time
        read()
