"""systemd's readiness protocol (sd_notify), in a few lines instead of a dependency.

A ``Type=notify`` unit (``systemd/kbfs@.service``) starts ``kbfs mount -f`` and waits for
``READY=1``: only then are units ordered after it started, so nothing looks at the mount point
before the mount is up. ``STOPPING=1`` tells systemd the stop is ours (uploads draining), and
``STATUS=`` lines show up in ``systemctl status``. Outside systemd ($NOTIFY_SOCKET unset) every
call is a no-op, so callers need not care where they run.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


def notify_socket_address(env: Mapping[str, str] | None = None) -> str | bytes | None:
    """The address from $NOTIFY_SOCKET: a path, or (leading ``@``) an abstract socket name."""
    value = (os.environ if env is None else env).get("NOTIFY_SOCKET", "")
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None  # vsock and other families are not used for services on one machine


def notify(*fields: str, env: Mapping[str, str] | None = None) -> bool:
    """Send ``KEY=VALUE`` fields as one datagram; True if sent, False outside systemd.

    Failures are logged, never raised: a lost notification must not take the mount down
    (systemd's start timeout reports a missing READY=1 on its own).
    """
    address = notify_socket_address(env)
    if address is None:
        return False
    message = "\n".join(f.replace("\n", " ") for f in fields).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message)
    except OSError as exc:
        log.warning("could not notify systemd: %s", exc)
        return False
    return True


def ready(status: str) -> bool:
    return notify("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")


def stopping(status: str) -> bool:
    return notify("STOPPING=1", f"STATUS={status}")


def status(text: str) -> bool:
    return notify(f"STATUS={text}")
