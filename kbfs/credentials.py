"""Where the API token (or a user's password) comes from: a file, the environment, or systemd.

Never from argv: a command line is readable by every user of the machine through /proc. A token
file that group or others can read is refused, as ssh refuses such a key: the secret may already
have leaked, and the user should know.
"""

from __future__ import annotations

import functools
import os
import stat
from collections.abc import Callable
from pathlib import Path

SYSTEMD_CREDENTIAL = "kbfs-token"


class CredentialError(Exception):
    """The secret could not be read; the message says from where and why."""


def read_secret_file(path: str | os.PathLike[str], *, check_mode: bool = True) -> str:
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise CredentialError(f"token file {p} does not exist") from None
    except PermissionError:
        raise CredentialError(f"token file {p} is not readable by this user") from None
    if not stat.S_ISREG(st.st_mode):
        raise CredentialError(f"token file {p} is not a regular file")
    if check_mode and st.st_mode & 0o077:
        raise CredentialError(
            f"token file {p} is readable by group or others (mode {stat.S_IMODE(st.st_mode):04o});"
            f" run: chmod 600 {p}"
        )
    try:
        secret = p.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise CredentialError(f"cannot read token file {p}: {exc.__class__.__name__}") from None
    if not secret:
        raise CredentialError(f"token file {p} is empty")
    return secret


def load_secret(token_file: str | None, env: dict[str, str] | None = None) -> str:
    """The secret, from (in order) ``token_file``, $KBFS_TOKEN_FILE, $KBFS_TOKEN, or systemd's
    $CREDENTIALS_DIRECTORY/kbfs-token."""
    env = dict(os.environ) if env is None else env
    if token_file:
        return read_secret_file(token_file)
    if env.get("KBFS_TOKEN_FILE"):
        return read_secret_file(env["KBFS_TOKEN_FILE"])
    if env.get("KBFS_TOKEN"):
        return env["KBFS_TOKEN"].strip()
    creds = env.get("CREDENTIALS_DIRECTORY")
    if creds and (Path(creds) / SYSTEMD_CREDENTIAL).exists():
        # systemd makes credential files private to the unit; their mode is its business.
        return read_secret_file(Path(creds) / SYSTEMD_CREDENTIAL, check_mode=False)
    raise CredentialError(
        "no API token: give --token-file FILE, or set KBFS_TOKEN_FILE or KBFS_TOKEN"
    )


def secret_source(
    token_file: str | None, env: dict[str, str] | None = None
) -> Callable[[], str] | None:
    """A function that reads the secret again from where :func:`load_secret` found it, with the
    same checks (a rotated token is picked up without a remount); None for ``$KBFS_TOKEN``,
    which a running process cannot see change."""
    env = dict(os.environ) if env is None else env
    if token_file:
        return functools.partial(read_secret_file, token_file)
    if env.get("KBFS_TOKEN_FILE"):
        return functools.partial(read_secret_file, env["KBFS_TOKEN_FILE"])
    if env.get("KBFS_TOKEN"):
        return None
    creds = env.get("CREDENTIALS_DIRECTORY")
    if creds and (Path(creds) / SYSTEMD_CREDENTIAL).exists():
        return functools.partial(
            read_secret_file, Path(creds) / SYSTEMD_CREDENTIAL, check_mode=False
        )
    return None
