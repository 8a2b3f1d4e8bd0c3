"""Where the API token (or a user's password) comes from: a file, the environment, or systemd.

Never from argv: a command line is readable by every user of the machine through /proc. A token
file that group or others can read is refused, as ssh refuses such a key: the secret may already
have leaked, and the user should know.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import resource
import stat
from collections.abc import Callable
from pathlib import Path

SYSTEMD_CREDENTIAL = "kbfs-token"
MAX_SECRET_BYTES = 4096
PR_SET_DUMPABLE = 4  # <linux/prctl.h>


class CredentialError(Exception):
    """The secret could not be read; the message says from where and why."""


def read_secret_file(path: str | os.PathLike[str], *, check_mode: bool = True) -> str:
    """The secret in ``path``, checked on the opened file (no race with a rename).

    As ssh does with a private key, the file must belong to the user who mounts: a file
    someone else owns, even a 0600 one, is a secret that user can read and replace. And it
    must be small: a token is a few dozen bytes, and a huge file would only cost memory.
    """
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise CredentialError(f"token file {p} does not exist") from None
    except PermissionError:
        raise CredentialError(f"token file {p} is not readable by this user") from None
    except OSError as exc:
        raise CredentialError(f"cannot open token file {p}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise CredentialError(f"token file {p} is not a regular file")
        if check_mode and st.st_uid != os.geteuid():
            raise CredentialError(
                f"token file {p} belongs to uid {st.st_uid}, not to this user (uid"
                f" {os.geteuid()}); run: chown {os.geteuid()} {p}"
            )
        if check_mode and st.st_mode & 0o077:
            raise CredentialError(
                f"token file {p} is readable by group or others"
                f" (mode {stat.S_IMODE(st.st_mode):04o}); run: chmod 600 {p}"
            )
        if st.st_size > MAX_SECRET_BYTES:
            raise CredentialError(
                f"token file {p} holds {st.st_size} bytes; a token is at most"
                f" {MAX_SECRET_BYTES} (is this the right file?)"
            )
        try:
            secret = fh.read(MAX_SECRET_BYTES + 1).decode("utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise CredentialError(f"cannot read token file {p}: {exc.__class__.__name__}") from None
    if not secret:
        raise CredentialError(f"token file {p} is empty")
    return secret


def load_secret(token_file: str | None, env: dict[str, str] | None = None) -> str:
    """The secret, from (in order) ``token_file``, $KBFS_TOKEN_FILE, $KBFS_TOKEN, or systemd's
    $CREDENTIALS_DIRECTORY/kbfs-token."""
    own = env is None
    env = dict(os.environ) if env is None else env
    if token_file:
        return read_secret_file(token_file)
    if env.get("KBFS_TOKEN_FILE"):
        return read_secret_file(env["KBFS_TOKEN_FILE"])
    if env.get("KBFS_TOKEN"):
        if len(env["KBFS_TOKEN"]) > MAX_SECRET_BYTES:
            raise CredentialError(f"KBFS_TOKEN is longer than {MAX_SECRET_BYTES} bytes")
        if own:
            _forget_env_token()
        return env["KBFS_TOKEN"].strip()
    creds = env.get("CREDENTIALS_DIRECTORY")
    if creds and (Path(creds) / SYSTEMD_CREDENTIAL).exists():
        # systemd makes credential files private to the unit; their mode is its business.
        return read_secret_file(Path(creds) / SYSTEMD_CREDENTIAL, check_mode=False)
    raise CredentialError(
        "no API token: give --token-file FILE, or set KBFS_TOKEN_FILE or KBFS_TOKEN"
    )


def harden_process() -> None:
    """No core dump of a process that will hold the secret (a core file has it in clear).

    Non-dumpable also keeps other processes of the same user from attaching a debugger or
    reading this one's memory. Best effort: a mount never fails for it.
    """
    with contextlib.suppress(OSError, ValueError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)


def _forget_env_token() -> None:
    """Remove ``KBFS_TOKEN`` from this process once read: no child inherits it, and its value
    is overwritten where the kernel shows it (/proc/PID/environ is the process's original
    environment block, which unsetting a variable leaves as it was)."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        libc = ctypes.CDLL(None)
        address = ctypes.c_void_p.in_dll(libc, "environ").value or 0
        environ = ctypes.cast(address, ctypes.POINTER(ctypes.c_void_p))
        prefix = b"KBFS_TOKEN="
        i = 0
        while address and environ[i]:
            entry = ctypes.string_at(environ[i])
            if entry.startswith(prefix):
                ctypes.memset(environ[i] + len(prefix), 0, len(entry) - len(prefix))
            i += 1
    os.environ.pop("KBFS_TOKEN", None)


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
